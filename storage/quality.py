"""Cameras' picture quality in the database: the state now, its changes, reference views.

Written by the worker that runs the camera (``runtime/quality.py``) when the state or its
problems change, never per check; read by the status API. A change appends
``camera.degraded`` (a problem raised; ``data.problems`` holds all raised ones) or
``camera.restored`` (the last problem cleared) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.events import append_events
from storage.models import CameraQuality, CameraQualityChange, CameraQualityReference, utcnow

__all__ = [
    "QualityChange",
    "QualityOrders",
    "expect_ptz",
    "get_quality",
    "latest_reference",
    "load_references",
    "quality_orders",
    "record_quality",
    "reference_taken",
    "request_reference",
    "save_reference",
]


@dataclass(frozen=True)
class QualityChange:
    """What one camera's checks changed: its state and raised problems (JSON-ready:
    ``{"kind", "since", "score", "tamper"}``), the kinds just raised and cleared."""

    camera_id: str
    grid_code: str | None
    state: str
    problems: list[dict[str, Any]]
    raised: list[str]
    cleared: list[str]
    at: datetime


def record_quality(session: Session, change: QualityChange) -> None:
    """Store the camera's quality; log a state change and append its events."""
    row = session.get(CameraQuality, change.camera_id)
    previous = row.state if row is not None else None
    if row is None:
        row = CameraQuality(camera_id=change.camera_id, since=change.at)
        session.add(row)
    if previous != change.state:
        row.since = change.at
        session.add(
            CameraQualityChange(camera_id=change.camera_id, state=change.state, at=change.at)
        )
    row.state, row.problems, row.updated_at = change.state, change.problems, utcnow()
    data = {"camera_id": change.camera_id, "state": change.state, "problems": change.problems}
    events: list[tuple[str, dict[str, Any], str | None]] = []
    if change.raised:
        events.append(("camera.degraded", data | {"raised": change.raised}, change.grid_code))
    if previous == "degraded" and change.state != "degraded":
        # Also when a worker taking the camera over finds it healthy (it cleared nothing)
        # or a PTZ move voids what was raised (state unknown): it is no longer degraded.
        events.append(("camera.restored", data | {"cleared": change.cleared}, change.grid_code))
    append_events(session, events)


def get_quality(session: Session, camera_id: str) -> dict[str, Any] | None:
    """``{"state", "since", "problems", "reference_at", "reference_requested_at"}`` as
    stored, or ``None`` before the first check."""
    row = session.get(CameraQuality, camera_id)
    if row is None:
        return None
    learnt = select(func.max(CameraQualityReference.learnt_at)).where(
        CameraQualityReference.camera_id == camera_id
    )
    return {
        "state": row.state,
        "since": row.since,
        "problems": row.problems,
        "reference_at": session.scalar(learnt),
        "reference_requested_at": row.reference_requested_at,
    }


def _row(session: Session, camera_id: str, at: datetime) -> CameraQuality:
    row = session.get(CameraQuality, camera_id)
    if row is None:
        row = CameraQuality(camera_id=camera_id, state="unknown", problems=[], since=at)
        session.add(row)
    return row


def request_reference(session: Session, camera_id: str, at: datetime) -> None:
    """Ask the camera's worker to take its next checked frame as the reference view."""
    _row(session, camera_id, at).reference_requested_at = at


def expect_ptz(session: Session, camera_id: str, until: datetime) -> None:
    """A PTZ move was ordered: the camera's view changes until ``until``."""
    row = _row(session, camera_id, utcnow())
    if row.ptz_until is None or row.ptz_until < until:
        row.ptz_until = until


@dataclass(frozen=True)
class QualityOrders:
    """What the API asked of a camera's quality checks, for its worker to apply."""

    reference_requested_at: datetime | None
    ptz_until: datetime | None


def quality_orders(
    session: Session, camera_ids: Collection[str], now: datetime
) -> dict[str, QualityOrders]:
    """Pending reference requests and PTZ moves not over at ``now`` of these cameras (one
    query per worker poll)."""
    if not camera_ids:
        return {}
    query = select(
        CameraQuality.camera_id,
        CameraQuality.reference_requested_at,
        CameraQuality.ptz_until,
    ).where(
        CameraQuality.camera_id.in_(camera_ids),
        CameraQuality.reference_requested_at.is_not(None) | (CameraQuality.ptz_until > now),
    )
    return {cid: QualityOrders(ref, ptz) for cid, ref, ptz in session.execute(query)}


def reference_taken(session: Session, camera_id: str, requested_at: datetime) -> None:
    """Clear a request once served (unless a newer one came meanwhile)."""
    session.execute(
        update(CameraQuality)
        .where(
            CameraQuality.camera_id == camera_id,
            CameraQuality.reference_requested_at == requested_at,
        )
        .values(reference_requested_at=None)
    )


def save_reference(
    session: Session, camera_id: str, monochrome: bool, data: bytes, learnt_at: datetime
) -> None:
    """Keep a camera's reference view of one picture mode (replacing the previous one)."""
    row = session.get(CameraQualityReference, (camera_id, monochrome))
    if row is None:
        session.add(
            CameraQualityReference(
                camera_id=camera_id, monochrome=monochrome, data=data, learnt_at=learnt_at
            )
        )
    else:
        row.data, row.learnt_at = data, learnt_at


def latest_reference(session: Session, camera_id: str) -> bytes | None:
    """The camera's most recently learnt reference view, or ``None``."""
    ref = CameraQualityReference
    query = (
        select(ref.data).where(ref.camera_id == camera_id).order_by(ref.learnt_at.desc()).limit(1)
    )
    return session.scalar(query)


def load_references(session: Session, camera_id: str) -> list[bytes]:
    """A camera's stored reference views (none before its first healthy minute)."""
    query = select(CameraQualityReference.data).where(CameraQualityReference.camera_id == camera_id)
    return list(session.scalars(query))
