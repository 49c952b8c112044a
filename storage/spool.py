"""The local clip spool: evidence waits here until the object store has verified it.

Each spooled incident is a manifest (JSON, written atomically) beside its clip and snapshot
files. A manifest is removed only after the objects it names were uploaded and verified and
the database recorded them, so a storage outage or a crash loses nothing: on start-up the
spool is drained again. Keys are deterministic, so re-uploading after a crash overwrites the
same objects instead of duplicating them.

Nothing the spool writes, reads or deletes lies outside its root: file names and incident
ids are single path segments (no '/', '\\', '..', leading '.', NUL or control character),
an entry's files must resolve (symlinks followed) into the root, and its object keys must
be valid keys (:func:`storage.objects.validate_key`). A manifest that breaks these rules
(edited by hand, or written by something else) is logged and left alone: it is never
uploaded from, and its files are never deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from storage.durable import write_atomic
from storage.journal import JOURNAL_SUFFIX
from storage.objects import validate_key

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"
MAX_NAME_BYTES = 200  # below NAME_MAX (255) with room for the manifest suffixes
_UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


class SpoolPathError(ValueError):
    """A file name, incident id, path or key that would leave the spool (or the bucket)."""


def check_name(name: str, what: str = "spool file name") -> str:
    """Return ``name`` if it is one safe path segment, else raise :class:`SpoolPathError`."""
    problem = None
    if not isinstance(name, str) or not name:
        problem = "it is empty"
    elif _UNSAFE_NAME.search(name):
        problem = "it contains '/', a backslash, NUL or another control character"
    elif name.startswith("."):
        problem = "it starts with '.' ('..', hidden and temporary names are reserved)"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        problem = f"it is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        raise SpoolPathError(f"bad {what} {name!r:.80}: {problem}")
    return name


@dataclass(frozen=True)
class SpoolUsage:
    bytes: int  # every file in the spool
    open_clips: int  # journals of clips still recording (or left by a crash)
    free_bytes: int  # room left on the spool's file system


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
        """Where to write a file that will be spooled (same file system: atomic renames).

        ``name`` must be a single safe segment (:func:`check_name`), else
        :class:`SpoolPathError`.
        """
        return self.root / check_name(name)

    def check(self, entry: SpoolEntry) -> None:
        """Raise :class:`SpoolPathError` unless every path and key of ``entry`` stays in
        the spool root and the store's key space."""
        check_name(entry.incident_id, "incident id")
        for path in (entry.clip_path, entry.snapshot_path):
            if path is not None:
                self._inside(path)
        for key in (entry.clip_key, entry.snapshot_key):
            if key is not None:
                try:
                    validate_key(key)
                except ValueError as err:
                    raise SpoolPathError(str(err)) from None

    def add(self, entry: SpoolEntry) -> None:
        """Record an entry durably (fsync + rename) before anyone is told it exists.

        Raises :class:`SpoolPathError` (and writes nothing) for an entry :meth:`check`
        refuses.
        """
        self.check(entry)
        path = self._manifest(entry.incident_id)
        write_atomic(path, json.dumps(asdict(entry)).encode())

    def update(self, entry: SpoolEntry) -> None:
        self.add(entry)

    def entries(self) -> list[SpoolEntry]:
        """Every pending entry, oldest first; unreadable manifests are logged and kept."""
        found = []
        for path in sorted(self.root.glob("*" + MANIFEST_SUFFIX), key=_mtime):
            try:
                entry = SpoolEntry(**json.loads(path.read_text(encoding="utf-8")))
                self.check(entry)
                if path.name != f"{entry.incident_id}{MANIFEST_SUFFIX}":
                    raise SpoolPathError(f"manifest of {entry.incident_id!r:.80} misnamed")
                found.append(entry)
            except (OSError, ValueError, TypeError) as err:
                log.error(
                    "spool manifest %s unreadable (%s); left in place for a person", path, err
                )
        return found

    def depth(self) -> int:
        """How many entries wait (cheap: counts manifests)."""
        return sum(1 for _ in self.root.glob("*" + MANIFEST_SUFFIX))

    def usage(self) -> SpoolUsage:
        """What the spool holds on disk (its files, the journals of open clips among
        them) and the room left on its file system."""
        used = journals = 0
        with os.scandir(self.root) as it:
            for item in it:
                with contextlib.suppress(OSError):  # removed meanwhile
                    if item.is_file(follow_symlinks=False):
                        used += item.stat(follow_symlinks=False).st_size
                        journals += item.name.endswith(JOURNAL_SUFFIX)
        return SpoolUsage(used, journals, shutil.disk_usage(self.root).free)

    def remove(self, entry: SpoolEntry) -> None:
        """Forget an entry once archived: manifest first, so a crash never leaves a manifest
        pointing at deleted files. :class:`SpoolPathError` (nothing removed) for an entry
        naming files outside the spool."""
        self.check(entry)
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
        return self.root / f"{check_name(incident_id, 'incident id')}{MANIFEST_SUFFIX}"

    def _inside(self, path: str) -> Path:
        """``path`` if it names a file directly in the root (symlinks resolved)."""
        if not isinstance(path, str) or not path or "\x00" in path:
            raise SpoolPathError(f"spooled file {path!r:.80} is not a path")
        resolved = Path(os.path.realpath(path))
        if resolved.parent != Path(os.path.realpath(self.root)):
            raise SpoolPathError(f"spooled file {path!r:.80} lies outside the spool {self.root}")
        check_name(resolved.name)
        return resolved


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
