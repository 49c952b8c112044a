"""``xueliang analyze FILE``: the analytics run offline on a file (placeholder)."""

from __future__ import annotations

from pathlib import Path


def run_analyze(path: Path, as_json: bool = False) -> int:
    raise NotImplementedError("xueliang analyze is being built")
