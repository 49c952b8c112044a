"""Crash recovery of clips: the journals a dead process left in its spool become clips.

Every incident's clip is journaled to the spool while it records
(:mod:`storage.journal`, ``ingest/recorder.py``). When the process dies mid-clip (SIGKILL,
OOM, power cut), the journal stays; at the next start of a camera process on the same
host (same data dir), before its cameras run, :func:`recover_clips` turns each journal
into the MP4 the clip would have been — cut at its last complete record, muxed like any
clip (:func:`storage.clips.write_mp4`) — takes the snapshot from the clip's frame at the
incident's start (the peak frame died with the process), spools both for the archiver
(upload, SHA-256 check, ``incident.clip_archived``) and marks the incident
(:func:`storage.incidents.recover_clip`).

A journal whose clip had reached the spool before the crash is only removed; one that
cannot be read or muxed is renamed ``*.journal.bad`` and left for a person to look at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from runtime.analysis import write_jpeg
from runtime.services import Services
from storage.clips import ClipError, ClipFileInfo, frame_at, write_mp4
from storage.incidents import clip_key, recover_clip, snapshot_key
from storage.journal import JOURNAL_SUFFIX, Journal, read_journal
from storage.spool import ClipSpool, SpoolEntry, SpoolPathError

__all__ = ["Recovery", "recover_clips"]

log = logging.getLogger(__name__)


@dataclass
class Recovery:
    """What :func:`recover_clips` did."""

    recovered: list[str]  # incident ids whose clips were rebuilt and spooled
    removed: int = 0  # journals with nothing left to recover
    bad: int = 0  # journals that could not be used (renamed *.journal.bad)


def recover_clips(services: Services, spool: ClipSpool) -> Recovery:
    """Rebuild and spool the clips of every journal in ``spool``'s directory."""
    result = Recovery([])
    spooled = {entry.incident_id for entry in spool.entries()}
    for path in sorted(spool.root.glob("*" + JOURNAL_SUFFIX)):
        try:
            incident_id = _recover(services, spool, path, spooled)
        except (ClipError, OSError, SpoolPathError) as err:
            log.error("clip journal %s cannot be recovered: %s (kept as .bad)", path.name, err)
            path.rename(path.with_name(path.name + ".bad"))
            result.bad += 1
            continue
        if incident_id is None:
            result.removed += 1
        else:
            result.recovered.append(incident_id)
    return result


def _recover(services: Services, spool: ClipSpool, path: Path, spooled: set[str]) -> str | None:
    """Spool the clip of one journal; its incident id, or ``None`` when there was nothing
    to recover (the journal is then removed)."""
    journal = read_journal(path)
    header = journal.header
    incident_id = header.incident_id
    if incident_id is None or incident_id in spooled or not journal.packets:
        path.unlink()
        return None
    clip = write_mp4(spool.file_path(header.clip_name), header.params, journal.packets)
    entry = _spool_if_wanted(services, spool, journal, clip)
    path.unlink()
    if entry is None:
        clip.path.unlink(missing_ok=True)
        return None
    log.warning(
        "camera %s: clip of incident %s recovered after the process died: %.1f s, %d frames "
        "(%d bytes cut off by the crash)",
        header.camera_id,
        incident_id,
        clip.duration_s,
        clip.frames,
        journal.torn_bytes,
    )
    return incident_id


def _snapshot(
    spool: ClipSpool, incident_id: str, clip: ClipFileInfo, at_s: float
) -> tuple[str, str] | None:
    """The incident's snapshot, lost with the process: the clip's frame where the incident
    started (``at_s`` into it), as a JPEG in the spool; (path, SHA-256) or ``None``."""
    image = frame_at(clip.path, at_s)
    if image is None:
        return None
    path = spool.file_path(f"{incident_id}.jpg")
    return str(path), write_jpeg(path, image)


def _spool_if_wanted(
    services: Services, spool: ClipSpool, journal: Journal, clip: ClipFileInfo
) -> SpoolEntry | None:
    """Mark the incident and add the clip to the spool, in that order: a crash in between
    leaves a pending clip that the start-up check fails, never an archived one without a
    record."""
    incident_id = journal.header.incident_id
    assert incident_id is not None
    last_frame = datetime.fromtimestamp(clip.last_wallclock, UTC)
    with services.tx() as session:
        row = recover_clip(session, incident_id, last_frame)
        if row is None:
            return None
        started_at = row.started_at  # naive on SQLite: UTC
        started = (started_at if started_at.tzinfo else started_at.replace(tzinfo=UTC)).timestamp()
        snapshot = _snapshot(spool, incident_id, clip, started - clip.first_wallclock)
        entry = SpoolEntry(
            incident_id=incident_id,
            camera_id=row.camera_id,
            clip_path=str(clip.path),
            clip_key=clip_key(row.camera_id, row.started_at, incident_id),
            clip_sha256=clip.sha256,
            clip_size=clip.size,
            duration_s=clip.duration_s,
            snapshot_path=snapshot[0] if snapshot else None,
            snapshot_key=snapshot_key(row.camera_id, row.started_at, incident_id)
            if snapshot
            else None,
            snapshot_sha256=snapshot[1] if snapshot else None,
        )
    spool.add(entry)
    return entry
