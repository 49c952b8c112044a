"""Incidents, their review history and the state of their evidence clip."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from config.errors import XueliangError
from storage.events import append_event
from storage.models import Incident, IncidentAction, utcnow
from storage.objects import key_segment

#: review action → (states it applies to, resulting state)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "acknowledge": (frozenset({"new"}), "acknowledged"),
    "resolve": (frozenset({"new", "acknowledged"}), "resolved"),
    "dismiss": (frozenset({"new", "acknowledged"}), "dismissed"),
    "reopen": (frozenset({"resolved", "dismissed"}), "acknowledged"),
}


class ReviewConflict(XueliangError):
    """The review action does not apply to the incident's current status."""


class BadCursor(XueliangError, ValueError):
    """The pagination cursor is not one this service issued."""


def new_incident_id() -> str:
    return "inc_" + uuid.uuid4().hex[:16]


def clip_key(camera_id: str, started_at: datetime, incident_id: str, ext: str = "mp4") -> str:
    """``clips/{camera_id}/{YYYY}/{MM}/{DD}/{incident_id}.mp4`` (UTC date of the start).

    Each id must be one key segment (``InvalidObjectKey`` otherwise): no id leaves its folder.
    """
    name = f"{key_segment(incident_id, 'incident id')}.{key_segment(ext, 'extension')}"
    return f"clips/{key_segment(camera_id, 'camera id')}/{started_at:%Y/%m/%d}/{name}"


def snapshot_key(camera_id: str, started_at: datetime, incident_id: str) -> str:
    name = f"{key_segment(incident_id, 'incident id')}.jpg"
    return f"snapshots/{key_segment(camera_id, 'camera id')}/{started_at:%Y/%m/%d}/{name}"


def incident_fields(row: Incident) -> dict[str, Any]:
    """An incident's own fields, built once: the event payload (:func:`summary`) and the
    API's body both start from these."""
    return {
        "id": row.id,
        "camera_id": row.camera_id,
        "grid_code": row.grid_code,
        "type": row.type,
        "status": row.status,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "end_reason": row.end_reason,
        "peak_persons": row.peak_persons,
        # The alarm column holds a device's alarm, or for a tamper incident what the
        # picture-quality check found ({"kind", "score"}).
        "alarm": row.alarm if row.type != "tamper" else None,
        "tamper": row.alarm if row.type == "tamper" else None,
    }


def summary(row: Incident) -> dict[str, Any]:
    """The event payload describing an incident (ids and state, not the whole record)."""
    fields = incident_fields(row)
    return fields | {
        "started_at": row.started_at.isoformat(),
        "ended_at": row.ended_at.isoformat() if row.ended_at else None,
        "clip_state": row.clip_state,
    }


@dataclass(frozen=True)
class NewIncident:
    camera_id: str
    grid_code: str | None
    type: str
    started_at: datetime
    incident_id: str = ""
    spool_host: str | None = None
    #: A ``device_alarm``'s fields (GB/T 28181 Notify/Alarm).
    alarm: dict[str, Any] | None = None
    #: False for an incident that will have no clip (an alarm of a camera not run here).
    clip: bool = True


def create_incident(session: Session, new: NewIncident) -> Incident:
    row = Incident(
        id=new.incident_id or new_incident_id(),
        camera_id=new.camera_id,
        grid_code=new.grid_code,
        type=new.type,
        status="new",
        started_at=new.started_at,
        clip_state="pending" if new.clip else None,
        spool_host=new.spool_host,
        alarm=new.alarm,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    session.add(row)
    session.add(IncidentAction(incident_id=row.id, at=utcnow(), actor="system", action="created"))
    session.flush()
    append_event(session, "incident.created", summary(row), row.grid_code)
    return row


def end_incident(
    session: Session,
    incident_id: str,
    ended_at: datetime,
    peak_motion: float | None = None,
    peak_persons: int | None = None,
) -> Incident | None:
    row = session.get(Incident, incident_id)
    if row is None:
        return None
    row.ended_at = ended_at
    row.peak_motion = peak_motion
    row.peak_persons = peak_persons if peak_persons is not None else row.peak_persons
    row.updated_at = utcnow()
    append_event(session, "incident.updated", summary(row), row.grid_code)
    return row


@dataclass(frozen=True)
class ArchivedClip:
    clip_key: str
    sha256: str
    size: int
    duration_s: float
    snapshot_key: str | None
    snapshot_sha256: str | None


def mark_archived(session: Session, incident_id: str, clip: ArchivedClip) -> Incident | None:
    """Record a clip verified in the object store; idempotent (one event however often)."""
    row = session.get(Incident, incident_id)
    if row is None:
        return None
    if row.clip_state == "archived" and row.clip_sha256 == clip.sha256:
        return row
    row.clip_key, row.clip_sha256 = clip.clip_key, clip.sha256
    row.clip_size, row.clip_duration_s = clip.size, clip.duration_s
    row.snapshot_key, row.snapshot_sha256 = clip.snapshot_key, clip.snapshot_sha256
    row.clip_state, row.clip_error = "archived", None
    row.updated_at = utcnow()
    data = summary(row) | {
        "clip": {
            "key": clip.clip_key,
            "sha256": clip.sha256,
            "size": clip.size,
            "duration_s": clip.duration_s,
        }
    }
    append_event(session, "incident.clip_archived", data, row.grid_code)
    return row


def mark_clip_failed(session: Session, incident_id: str, error: str) -> None:
    row = session.get(Incident, incident_id)
    if row is not None and row.clip_state != "archived":
        row.clip_state, row.clip_error, row.updated_at = "failed", error, utcnow()


def review(
    session: Session, incident_id: str, action: str, actor: str, note: str | None
) -> Incident | None:
    row = session.get(Incident, incident_id)
    if row is None:
        return None
    allowed_from, target = TRANSITIONS[action]
    if row.status not in allowed_from:
        raise ReviewConflict(
            f"cannot {action} an incident that is {row.status} "
            f"(applies to: {', '.join(sorted(allowed_from))})"
        )
    row.status, row.updated_at = target, utcnow()
    session.add(
        IncidentAction(incident_id=row.id, at=utcnow(), actor=actor, action=action, note=note)
    )
    append_event(session, "incident.updated", summary(row), row.grid_code)
    return row


def history(session: Session, incident_id: str) -> list[IncidentAction]:
    query = (
        select(IncidentAction)
        .where(IncidentAction.incident_id == incident_id)
        .order_by(IncidentAction.id)
    )
    return list(session.scalars(query))


@dataclass(frozen=True)
class IncidentFilter:
    """``grid_codes``: when given, an incident's grid must be one of them (resolve a subtree
    first with ``storage.grids.subtree_codes``; an empty collection matches nothing)."""

    camera_id: str | None = None
    grid_codes: Collection[str] | None = None
    type: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_incidents(
    session: Session, f: IncidentFilter, limit: int, cursor: str | None
) -> tuple[list[Incident], str | None]:
    """Newest first, keyset-paginated on (started_at, id) so pages stay fast and stable.

    The grid filter is a list of codes, not a subquery: PostgreSQL then estimates it from
    its statistics and walks ``ix_incidents_grid_started`` for a small subtree instead of
    testing every incident of ``ix_incidents_started`` against a recursive CTE. The keyset
    is a row comparison, which PostgreSQL turns into an index bound (``started_at <= :at``
    on every index ending in ``started_at``); an ``OR`` of the two cases is only a filter,
    so page *k* read every newer row (bench/README.md, "Incidents API").
    """
    query = select(Incident).order_by(Incident.started_at.desc(), Incident.id.desc())
    conditions = [
        c
        for c in (
            Incident.camera_id == f.camera_id if f.camera_id else None,
            Incident.type == f.type if f.type else None,
            Incident.status == f.status if f.status else None,
            Incident.started_at >= f.since if f.since else None,
            Incident.started_at < f.until if f.until else None,
        )
        if c is not None
    ]
    if f.grid_codes is not None:
        conditions.append(Incident.grid_code.in_(sorted(f.grid_codes)))
    if cursor:
        at, last_id = decode_cursor(cursor)
        conditions.append(tuple_(Incident.started_at, Incident.id) < (at, last_id))
    rows = list(session.scalars(query.where(*conditions).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]) if more and rows else None


def encode_cursor(row: Incident) -> str:
    raw = f"{row.started_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, last_id = raw.split("|", 1)
        return datetime.fromisoformat(at), last_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as err:
        raise BadCursor("invalid cursor: pass the next_cursor of a previous page") from err


def pending_clips(session: Session, limit: int = 100) -> list[Incident]:
    query = (
        select(Incident)
        .where(Incident.clip_state == "pending", Incident.ended_at.is_not(None))
        .order_by(Incident.started_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def close_interrupted(session: Session, camera_ids: Sequence[str]) -> int:
    """Incidents of these cameras left open by a worker that died (or this one, restarted).

    Their packets are in the dead process's spool, on its host: the incident is closed at
    its last update and its clip marked failed with the reason, rather than shown as in
    progress forever, until that host starts again and recovers the clip from its journal
    (:func:`recover_clip`). Called when a worker takes a camera over.
    """
    query = select(Incident).where(Incident.ended_at.is_(None), Incident.camera_id.in_(camera_ids))
    return sum(_fail(session, row, row.updated_at) for row in session.scalars(query))


def recover_clip(session: Session, incident_id: str, last_frame_at: datetime) -> Incident | None:
    """A clip rebuilt from the journal a dead process left: the incident gets it back.

    An incident that was still open when its process died — or that another worker closed
    since as interrupted (:func:`close_interrupted`) — ends at its last recorded frame with
    ``end_reason`` ``process_died``; one that had ended normally keeps its end (only its
    post-roll was cut short). Its clip is pending again, for the archiver. ``None`` when
    the incident is gone or its clip archived already (nothing to do).
    """
    row = session.get(Incident, incident_id)
    if row is None or row.clip_state == "archived":
        return None
    if row.end_reason is None and (row.ended_at is None or row.clip_state == "failed"):
        row.ended_at = last_frame_at
        row.end_reason = "process_died"
    row.clip_state, row.clip_error, row.updated_at = "pending", None, utcnow()
    append_event(session, "incident.updated", summary(row), row.grid_code)
    return row


def fail_lost_clips(session: Session, spool_id: str, spooled: set[str]) -> int:
    """At start-up: clips this spool (``host:/dir``, ``runtime.cameras.spool_identity``) was
    writing when its process stopped, missing from it. Other workers' pending clips, on this
    host or not, are theirs to finish."""
    query = select(Incident).where(
        Incident.clip_state == "pending",
        Incident.ended_at.is_not(None),
        Incident.spool_host == spool_id,
    )
    return sum(_fail(session, row, None) for row in session.scalars(query) if row.id not in spooled)


def _fail(session: Session, row: Incident, ended_at: datetime | None) -> int:
    if row.ended_at is None:
        row.ended_at = ended_at or utcnow()
    row.clip_state = "failed"
    row.clip_error = "the service stopped while this incident was being recorded"
    row.updated_at = utcnow()
    append_event(session, "incident.updated", summary(row), row.grid_code)
    return 1


def expired_clips(session: Session, before: datetime, limit: int = 500) -> list[Incident]:
    """Archived clips of incidents that started before ``before``, oldest first."""
    query = (
        select(Incident)
        .where(Incident.clip_state == "archived", Incident.started_at < before)
        .order_by(Incident.started_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def mark_expired(session: Session, incident_id: str) -> None:
    """The clip and snapshot were removed by retention; the incident record stays."""
    row = session.get(Incident, incident_id)
    if row is None or row.clip_state != "archived":
        return
    row.clip_state, row.updated_at = "expired", utcnow()
    append_event(session, "incident.updated", summary(row), row.grid_code)
