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

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import Camera, CameraLease, Worker


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
class Holding:
    """The cameras a worker holds, and the one it should hand back (above its share)."""

    cameras: list[str]
    surplus: list[str]


def balance(session: Session, worker_id: str, now: datetime, lease_s: float) -> Holding:
    """Renew and acquire leases for ``worker_id`` up to its fair share.

    Cameras above the share (a worker joined) are reported as ``surplus``: the caller stops
    analysing them first and only then calls :func:`release`, so the next holder never
    starts while this one still runs (no duplicate incidents).
    """
    expires = now + timedelta(seconds=lease_s)
    enabled = list(session.scalars(select(Camera.id).where(Camera.enabled.is_(True))))
    cutoff = now - timedelta(seconds=lease_s)
    alive = session.scalar(
        select(func.count()).select_from(Worker).where(Worker.last_seen >= cutoff)
    )
    share = math.ceil(len(enabled) / max(1, alive or 1))
    # Leases of deleted or disabled cameras go.
    session.execute(delete(CameraLease).where(CameraLease.camera_id.not_in(enabled)))
    mine = list(
        session.scalars(
            select(CameraLease.camera_id)
            .where(CameraLease.worker_id == worker_id)
            .order_by(CameraLease.camera_id)
        )
    )
    if mine:
        session.execute(
            update(CameraLease)
            .where(CameraLease.worker_id == worker_id, CameraLease.camera_id.in_(mine))
            .values(expires_at=expires)
        )
    for camera_id in enabled:
        if len(mine) >= share:
            break
        if camera_id not in mine and _take(session, camera_id, worker_id, now, expires):
            mine.append(camera_id)
    mine.sort()
    return Holding(cameras=mine, surplus=mine[share:])


def release(session: Session, worker_id: str, camera_ids: list[str]) -> None:
    """Give cameras back (after this worker stopped analysing them)."""
    session.execute(
        delete(CameraLease).where(
            CameraLease.worker_id == worker_id, CameraLease.camera_id.in_(camera_ids)
        )
    )


def _take(
    session: Session, camera_id: str, worker_id: str, now: datetime, expires: datetime
) -> bool:
    taken = session.execute(
        update(CameraLease)
        .where(CameraLease.camera_id == camera_id, CameraLease.expires_at < now)
        .values(worker_id=worker_id, expires_at=expires, acquired_at=now)
    )
    if taken.rowcount:  # type: ignore[attr-defined]
        return True
    if session.get(CameraLease, camera_id) is not None:
        return False  # held by a live worker
    try:
        with session.begin_nested():
            session.execute(
                insert(CameraLease).values(
                    camera_id=camera_id, worker_id=worker_id, expires_at=expires, acquired_at=now
                )
            )
    except IntegrityError:
        return False  # another worker inserted it first
    return True


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
