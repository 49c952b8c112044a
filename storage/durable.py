"""Durable file writes: the one place that does temp file, fsync, rename, fsync the folder.

A file written with :func:`write_atomic` is either absent or complete after a crash or a
power cut: the data is flushed before the rename, and the rename itself is made durable by
syncing the directory entry (the directory is data too). Blocking: call it from a thread,
never from the event loop.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["fsync_dir", "replace_durably", "write_atomic"]


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably (file created with ``mode``)."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        replace_durably(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def replace_durably(source: Path, target: Path) -> None:
    """Rename a file that is already fsynced over ``target``, and sync the folder entry."""
    os.replace(source, target)
    fsync_dir(target.parent)


def fsync_dir(directory: Path) -> None:
    """Make renames and creations in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
