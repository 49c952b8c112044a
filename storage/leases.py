"""Camera leases: how worker processes share the cameras of one installation.

Each worker heartbeats its row in ``workers`` and renews the leases it holds. A camera is
taken only when unleased or its lease has expired (a conditional UPDATE, atomic on SQLite
and PostgreSQL alike), so each camera has at most one live holder. Workers take up to a
fair share (enabled cameras / live workers, rounded up) and give back what is above it, so
cameras spread out when workers join and are taken over when one dies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, literal, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.models import Camera, CameraLease, UTCDateTime, Worker

#: Held (PostgreSQL, until commit) by a worker taking cameras it does not hold yet.
LEASE_TAKE_LOCK = 0x58554C03


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    role: str
    started_at: datetime
    last_seen: datetime
    cameras: list[str]


def heartbeat(session: Session, worker: Worker, now: datetime) -> None:
    """Insert or refresh this worker's row."""
    row = session.get(Worker, worker.id)
    if row is None:
        session.add(worker)
    else:
        row.last_seen = now


def live_workers(session: Session, now: datetime, lease_s: float) -> list[WorkerInfo]:
    cutoff = now - timedelta(seconds=lease_s)
    rows = session.scalars(select(Worker).where(Worker.last_seen >= cutoff).order_by(Worker.id))
    leases = session.execute(
        select(CameraLease.worker_id, CameraLease.camera_id)
        .where(CameraLease.expires_at >= now)
        .order_by(CameraLease.camera_id)
    ).all()
    held: dict[str, list[str]] = {}
    for worker_id, camera_id in leases:
        held.setdefault(worker_id, []).append(camera_id)
    return [
        WorkerInfo(r.id, r.host, r.pid, r.role, r.started_at, r.last_seen, held.get(r.id, []))
        for r in rows
    ]


@dataclass(frozen=True)
class Renewed:
    """The cameras a worker holds after renewing, and its fair share of the enabled ones."""

    cameras: list[str]
    share: int

    @property
    def surplus(self) -> list[str]:
        return self.cameras[self.share :]


def renew(session: Session, worker_id: str, now: datetime, lease_s: float) -> Renewed:
    """Renew every lease ``worker_id`` holds (one UPDATE) and say what its fair share is
    (enabled cameras / live workers, rounded up). Set-based, so its cost does not grow
    with the cameras other workers hold (tests/scale: 40 workers, 20,000 cameras).

    Cameras above the share (a worker joined) are the ``surplus``: the caller stops
    analysing them first and only then calls :func:`release`, so the next holder never
    starts while this one still runs (no duplicate incidents).
    """
    expires = now + timedelta(seconds=lease_s)
    cutoff = now - timedelta(seconds=lease_s)
    enabled = select(Camera.id).where(Camera.enabled.is_(True))
    count = session.scalar(select(func.count()).select_from(enabled.subquery())) or 0
    alive = session.scalar(
        select(func.count()).select_from(Worker).where(Worker.last_seen >= cutoff)
    )
    share = math.ceil(count / max(1, alive or 1))
    # Leases of deleted or disabled cameras go: ours, and expired ones of anybody.
    session.execute(
        delete(CameraLease).where(
            CameraLease.camera_id.not_in(enabled),
            or_(CameraLease.worker_id == worker_id, CameraLease.expires_at < now),
        )
    )
    mine = session.scalars(
        update(CameraLease)
        .where(CameraLease.worker_id == worker_id)
        .values(expires_at=expires)
        .returning(CameraLease.camera_id)
    )
    return Renewed(sorted(mine), share)


def take(
    session: Session, worker_id: str, now: datetime, lease_s: float, wanted: int
) -> list[str] | None:
    """Lease up to ``wanted`` more cameras: expired leases first (their worker died), then
    cameras nobody holds, each in one statement, in a random order.

    On PostgreSQL one worker takes at a time: workers inserting the same free cameras at
    once deadlocked on the unique index, whatever the order (tests/unit/test_leases.py).
    A worker that finds another one taking gets ``None`` at once instead of queueing (40
    workers queued behind each other at a city's cold start, tests/scale); it tries again
    a moment later (``runtime.leasing``).
    """
    if wanted <= 0:
        return []
    if session.get_bind().dialect.name == "postgresql":
        got = session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LEASE_TAKE_LOCK})
        if not got:
            return None
    expires = now + timedelta(seconds=lease_s)
    enabled = select(Camera.id).where(Camera.enabled.is_(True))
    taken = _take_expired(session, worker_id, now, expires, wanted, enabled)
    if len(taken) < wanted:
        taken += _take_free(session, worker_id, now, expires, wanted - len(taken))
    return taken


def _take_expired(
    session: Session,
    worker_id: str,
    now: datetime,
    expires: datetime,
    wanted: int,
    enabled: Select[Any],
) -> list[str]:
    """Take over up to ``wanted`` expired leases (their worker died or let them go)."""
    candidates = (
        select(CameraLease.camera_id)
        .where(CameraLease.expires_at < now, CameraLease.camera_id.in_(enabled))
        .order_by(func.random())
        .limit(wanted)
    )
    return list(
        session.scalars(
            update(CameraLease)
            .where(CameraLease.camera_id.in_(candidates), CameraLease.expires_at < now)
            .values(worker_id=worker_id, expires_at=expires, acquired_at=now)
            .returning(CameraLease.camera_id)
        )
    )


def _take_free(
    session: Session, worker_id: str, now: datetime, expires: datetime, wanted: int
) -> list[str]:
    """Lease up to ``wanted`` enabled cameras nobody holds; a camera another worker
    inserts first is skipped (ON CONFLICT DO NOTHING), not an error."""
    held = select(CameraLease.camera_id).where(CameraLease.camera_id == Camera.id)
    chosen = (
        select(Camera.id)
        .where(Camera.enabled.is_(True), ~held.exists())
        .order_by(func.random())
        .limit(wanted)
        .subquery()
    )
    free = select(
        chosen.c.id,
        literal(worker_id),
        literal(expires, UTCDateTime()),
        literal(now, UTCDateTime()),
    ).order_by(chosen.c.id)
    columns = ["camera_id", "worker_id", "expires_at", "acquired_at"]
    stmt = _insert(session)(CameraLease).from_select(columns, free)
    return list(session.scalars(stmt.on_conflict_do_nothing().returning(CameraLease.camera_id)))


def _insert(session: Session) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT DO NOTHING (PostgreSQL, SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert
    return sqlite_insert


def release(session: Session, worker_id: str, camera_ids: list[str]) -> None:
    """Give cameras back (after this worker stopped analysing them)."""
    session.execute(
        delete(CameraLease).where(
            CameraLease.worker_id == worker_id, CameraLease.camera_id.in_(camera_ids)
        )
    )


@dataclass(frozen=True)
class CameraHolder:
    """The worker whose lease on a camera is current, and where it is reached."""

    worker_id: str
    url: str | None


def holder(session: Session, camera_id: str, now: datetime) -> CameraHolder | None:
    """Who runs ``camera_id`` now: the holder of its unexpired lease (``None``: nobody, e.g.
    its worker died and the lease has not been taken over yet)."""
    row = session.execute(
        select(CameraLease.worker_id, Worker.url)
        .join(Worker, Worker.id == CameraLease.worker_id, isouter=True)
        .where(CameraLease.camera_id == camera_id, CameraLease.expires_at >= now)
    ).first()
    return CameraHolder(row.worker_id, row.url) if row is not None else None


def release_all(session: Session, worker_id: str) -> None:
    """On a clean shutdown: give the cameras back at once instead of after the lease time."""
    session.execute(delete(CameraLease).where(CameraLease.worker_id == worker_id))
    session.execute(delete(Worker).where(Worker.id == worker_id))
