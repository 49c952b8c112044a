"""The folders are the architecture: each package imports only what its docstring allows.

Walks every module's imports (top level and inside functions) and checks them against the
rules below, which are the ones each package's ``__init__`` docstring states; checks that
``docs/architecture.md`` names only files that exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What each top-level package may import of Xueliang (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "config": frozenset(),
    "analytics": frozenset({"config"}),
    "storage": frozenset({"config"}),
    "ingest": frozenset({"config", "storage"}),
    "live": frozenset({"config", "ingest", "storage"}),
    "delivery": frozenset({"config", "storage", "ingest"}),
    "runtime": frozenset({"config", "analytics", "storage", "ingest", "live", "delivery"}),
    "api": frozenset({"config", "analytics", "storage", "ingest", "live", "delivery", "runtime"}),
    "cli": frozenset(
        {"config", "analytics", "storage", "ingest", "live", "delivery", "runtime", "api"}
    ),
}
PACKAGES = frozenset(ALLOWED)


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


def _imported_packages(path: Path) -> set[str]:
    """The top-level Xueliang packages a module imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & PACKAGES


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    bad = {
        str(path.relative_to(ROOT)): sorted(_imported_packages(path) - allowed)
        for path in _modules(package)
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_rule_catches_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from api.app import create_app\n    import runtime.cameras\n")
    assert _imported_packages(module) == {"api", "runtime"}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_says_what_it_holds_and_may_import(package: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
    assert doc, f"{package}/__init__.py has no docstring"
    assert "May import" in doc
    named = set(re.findall(r"``(\w+)", doc.split("May import", 1)[1])) & PACKAGES
    if package == "cli":
        return  # "every package"
    assert named == set(ALLOWED[package]), f"{package}: docstring {named} vs rule"


def test_no_route_reaches_into_the_runtime() -> None:
    pattern = re.compile(r"runtime\._ring|services\.on_|services\.cameras_changed")
    hits = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in _modules("api")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []


def test_architecture_doc_names_files_that_exist() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:[a-z_]+/)+[a-z_0-9]+\.(?:py|md|js))`", text))
    assert len(paths) >= 15, "the frame-path table names the files of each stage"
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert missing == []
