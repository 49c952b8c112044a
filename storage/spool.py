"""The local clip spool: evidence waits here until the object store has verified it.

Each spooled incident is a manifest (JSON, written atomically) beside its clip and snapshot
files. A manifest is removed only after the objects it names were uploaded and verified and
the database recorded them, so a storage outage or a crash loses nothing: on start-up the
spool is drained again. Keys are deterministic, so re-uploading after a crash overwrites the
same objects instead of duplicating them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class SpoolEntry:
    """One incident's evidence waiting for upload."""

    incident_id: str
    camera_id: str
    clip_path: str
    clip_key: str
    clip_sha256: str
    clip_size: int
    duration_s: float
    snapshot_path: str | None = None
    snapshot_key: str | None = None
    snapshot_sha256: str | None = None
    attempts: int = 0


class ClipSpool:
    """A directory of :class:`SpoolEntry` manifests and the files they name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def file_path(self, name: str) -> Path:
        """Where to write a file that will be spooled (same file system: atomic renames)."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad spool file name {name!r}")
        return self.root / name

    def add(self, entry: SpoolEntry) -> None:
        """Record an entry durably (fsync + rename) before anyone is told it exists."""
        path = self._manifest(entry.incident_id)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(asdict(entry), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.root)

    def update(self, entry: SpoolEntry) -> None:
        self.add(entry)

    def entries(self) -> list[SpoolEntry]:
        """Every pending entry, oldest first; unreadable manifests are logged and kept."""
        found = []
        for path in sorted(self.root.glob("*" + MANIFEST_SUFFIX), key=_mtime):
            try:
                found.append(SpoolEntry(**json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError) as err:
                log.error(
                    "spool manifest %s unreadable (%s); left in place for a person", path, err
                )
        return found

    def depth(self) -> int:
        """How many entries wait (cheap: counts manifests)."""
        return sum(1 for _ in self.root.glob("*" + MANIFEST_SUFFIX))

    def remove(self, entry: SpoolEntry) -> None:
        """Forget an entry once archived: manifest first, so a crash never leaves a manifest
        pointing at deleted files."""
        with contextlib.suppress(FileNotFoundError):
            self._manifest(entry.incident_id).unlink()
        for name in (entry.clip_path, entry.snapshot_path):
            if name:
                with contextlib.suppress(FileNotFoundError):
                    Path(name).unlink()

    def quarantine(self, entry: SpoolEntry) -> Path:
        """Set an entry aside (kept on disk for a person to inspect); it is no longer retried."""
        path = self._manifest(entry.incident_id)
        target = path.with_name(path.name + ".quarantined")
        os.replace(path, target)
        return target

    def _manifest(self, incident_id: str) -> Path:
        return self.root / f"{incident_id}{MANIFEST_SUFFIX}"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
