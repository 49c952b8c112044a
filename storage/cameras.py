"""Camera registry, live status, and the definition of availability (the report itself is
storage/availability.py)."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.gb28181 import ChannelView
from storage.grids import grid_index, subtree_query
from storage.incidents import BadCursor
from storage.models import (
    Camera,
    CameraQuality,
    CameraQualityReference,
    CameraStateChange,
    CameraStatus,
    utcnow,
)

ONLINE = "online"


def new_camera_id() -> str:
    return "cam_" + uuid.uuid4().hex[:12]


def get_camera(session: Session, camera_id: str) -> Camera | None:
    return session.get(Camera, camera_id)


def list_cameras(
    session: Session, grid_codes: Sequence[str] | None = None, enabled_only: bool = False
) -> list[Camera]:
    query = select(Camera).order_by(Camera.created_at, Camera.id)
    if grid_codes is not None:
        query = query.where(Camera.grid_code.in_(grid_codes))
    if enabled_only:
        query = query.where(Camera.enabled.is_(True))
    return list(session.scalars(query))


CameraOrder = Literal["created", "name"]


class BadCameraCursor(BadCursor):
    """The pagination cursor is not one this service issued (or was issued for another order)."""


@dataclass(frozen=True)
class CameraFilter:
    """What a page of cameras is limited to; each given condition must hold."""

    #: This grid's subtree.
    grid_code: str | None = None
    #: And this grid's subtree too (a scoped token's): cameras without a grid are outside.
    scope: str | None = None
    #: connecting | online | offline | disabled, as ``GET /cameras/{id}/status`` says.
    state: str | None = None
    #: A case-insensitive substring of the name, the national ID or the id.
    q: str | None = None
    #: Only enabled cameras that are not 完好: not online, or online with a degraded picture.
    problem: bool = False


def page_cameras(
    session: Session, f: CameraFilter, limit: int, cursor: str | None, order: CameraOrder
) -> tuple[list[Camera], str | None]:
    """A page of cameras, keyset-paginated: newest first on (created_at, id), or by name on
    (name, id) — ``ix_cameras_created`` and ``ix_cameras_name``; no OFFSET, so page *k* of a
    city costs what page 1 does and a camera added meanwhile neither repeats nor hides one.

    The grid conditions are subqueries (a city's subtree can be thousands of codes, too
    many to bind); 20,000 cameras are few enough that a blind estimate of the recursive CTE
    cannot send PostgreSQL far wrong (unlike incidents, ``storage.incidents``).
    """
    keys = (Camera.created_at, Camera.id) if order == "created" else (Camera.name, Camera.id)
    query = select(Camera).where(*_conditions(f))
    if f.state is not None or f.problem:
        query = query.outerjoin(CameraStatus, CameraStatus.camera_id == Camera.id)
    if f.problem:
        query = query.outerjoin(CameraQuality, CameraQuality.camera_id == Camera.id).where(
            Camera.enabled.is_(True),
            or_(
                func.coalesce(CameraStatus.state, "connecting") != ONLINE,
                CameraQuality.state == "degraded",
            ),
        )
    if order == "created":
        query = query.order_by(Camera.created_at.desc(), Camera.id.desc())
    else:
        query = query.order_by(Camera.name, Camera.id)
    if cursor:
        after = _decode_cursor(cursor, order)
        query = query.where(tuple_(*keys) < after if order == "created" else tuple_(*keys) > after)
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, _encode_cursor(rows[-1], order) if more and rows else None


def effective_state() -> ColumnElement[str]:
    """A camera's state as ``GET /cameras/{id}/status`` answers it: ``disabled`` when
    disabled, else its status row's, ``connecting`` without one (in a query outer-joining
    ``camera_status``)."""
    return case(
        (Camera.enabled.is_(False), "disabled"),
        else_=func.coalesce(CameraStatus.state, "connecting"),
    )


def _conditions(f: CameraFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    for name, code in (("grid_subtree", f.grid_code), ("scope_subtree", f.scope)):
        if code is not None:
            conditions.append(Camera.grid_code.in_(subtree_query(code, name)))
    if f.state is not None:
        conditions.append(effective_state() == f.state)
    if f.q:
        conditions.append(
            or_(
                *(
                    col.icontains(f.q, autoescape=True)
                    for col in (Camera.name, Camera.national_id, Camera.id)
                )
            )
        )
    return conditions


def _encode_cursor(row: Camera, order: CameraOrder) -> str:
    key = row.created_at.isoformat() if order == "created" else row.name
    raw = json.dumps([order, key, row.id], ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, order: CameraOrder) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        kind, key, last_id = json.loads(raw)
        if kind != order or not isinstance(key, str) or not isinstance(last_id, str):
            raise ValueError(kind)
        return (datetime.fromisoformat(key) if order == "created" else key), last_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as err:
        raise BadCameraCursor(
            "invalid cursor: pass the next_cursor of a previous page, with the same order"
        ) from err


def place_new_cameras(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """:func:`storage.grids.place_camera` for many new cameras (rows of ``cameras`` as
    dicts): a given ``grid_code`` sticks; a camera with a location and none gets the smallest
    grid containing it, from one grid index and one vectorised query; else no grid."""
    located = [
        r for r in rows if r["grid_code"] is None and r["lat"] is not None and r["lon"] is not None
    ]
    for row in rows:
        row["grid_auto"] = False
    points = [(float(r["lon"]), float(r["lat"])) for r in located]
    for row, code in zip(located, grid_index(session).locate_many(points), strict=True):
        row["grid_code"], row["grid_auto"] = code, True


def insert_cameras(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert many new cameras at once (rows of ``cameras`` as dicts, every column given)."""
    if rows:
        session.execute(insert(Camera), list(rows))


def cameras_by_id(session: Session, camera_ids: Sequence[str]) -> list[Camera]:
    """These cameras (the ones that exist), e.g. those a worker holds leases on."""
    return list(session.scalars(select(Camera).where(Camera.id.in_(camera_ids))))


def channel_camera(channel: ChannelView, name: str | None = None) -> Camera:
    """A new camera row fed by a GB/T 28181 channel, at its coordinates (the caller sets
    its encrypted URL, ``ingest.gb28181.media.channel_url``)."""
    now = utcnow()
    return Camera(
        id=new_camera_id(),
        name=name or channel.name or channel.channel_id,
        gb28181={"device_id": channel.device_id, "channel_id": channel.channel_id},
        lat=channel.latitude,
        lon=channel.longitude,
        zones=[],
        analytics={},
        recording={},
        enabled=True,
        created_at=now,
        updated_at=now,
    )


def channel_cameras(session: Session) -> dict[tuple[str, str], str]:
    """The camera of each GB/T 28181 channel that feeds one: ``(device, channel) -> id``."""
    found: dict[tuple[str, str], str] = {}
    rows = session.scalars(
        select(Camera).where(Camera.gb28181.is_not(None)).order_by(Camera.created_at)
    )
    for row in rows:
        link = row.gb28181 or {}
        found.setdefault((str(link.get("device_id")), str(link.get("channel_id"))), row.id)
    return found


def camera_of_channel(session: Session, device_id: str, channel_id: str) -> str | None:
    """The camera fed by a GB/T 28181 channel, if any (the oldest, should there be two)."""
    rows = session.scalars(
        select(Camera).where(Camera.gb28181.is_not(None)).order_by(Camera.created_at)
    )
    wanted = {"device_id": device_id, "channel_id": channel_id}
    return next((r.id for r in rows if r.gb28181 == wanted), None)


def delete_camera(session: Session, camera_id: str) -> bool:
    row = session.get(Camera, camera_id)
    if row is None:
        return False
    session.execute(delete(CameraStatus).where(CameraStatus.camera_id == camera_id))
    session.delete(row)
    return True


@dataclass(frozen=True)
class StatusUpdate:
    state: str
    fps: float | None = None
    last_frame_at: datetime | None = None
    reconnects: int = 0
    frames_dropped: int = 0
    last_error: str | None = None
    worker_id: str | None = None


def record_status(
    session: Session, camera_id: str, update: StatusUpdate, at: datetime | None = None
) -> str | None:
    """Store the camera's status; log a transition. Returns the previous state."""
    at = at or utcnow()
    row = session.get(CameraStatus, camera_id)
    previous = row.state if row else None
    if row is None:
        row = CameraStatus(camera_id=camera_id, state=update.state, since=at)
        session.add(row)
    if previous != update.state:
        row.since = at
        session.add(CameraStateChange(camera_id=camera_id, state=update.state, at=at))
    row.state = update.state
    row.fps = update.fps
    row.last_frame_at = update.last_frame_at
    row.reconnects = update.reconnects
    row.frames_dropped = update.frames_dropped
    row.last_error = update.last_error
    row.worker_id = update.worker_id
    row.updated_at = at
    return previous


def update_measurements(
    session: Session, updates: Mapping[str, StatusUpdate], at: datetime
) -> None:
    """Store running cameras' measurements in one executemany, in camera order (the order
    transitions lock rows in, so the two never deadlock). A row whose state is not the
    update's is left alone: its transition is being written, with its own measurements."""
    if not updates:
        return
    stmt = (
        update(CameraStatus)
        .where(CameraStatus.camera_id == bindparam("cid"), CameraStatus.state == bindparam("st"))
        .values(
            fps=bindparam("fps"),
            last_frame_at=bindparam("lfa"),
            reconnects=bindparam("rc"),
            frames_dropped=bindparam("fd"),
            last_error=bindparam("err"),
            worker_id=bindparam("wid"),
            updated_at=bindparam("at"),
        )
    )
    rows = [
        {
            "cid": cid,
            "st": u.state,
            "fps": u.fps,
            "lfa": u.last_frame_at,
            "rc": u.reconnects,
            "fd": u.frames_dropped,
            "err": u.last_error,
            "wid": u.worker_id,
            "at": at,
        }
        for cid, u in sorted(updates.items())
    ]
    session.connection().execute(stmt, rows)


def get_status(session: Session, camera_id: str) -> CameraStatus | None:
    return session.get(CameraStatus, camera_id)


def record_transitions(
    session: Session, changes: Sequence[tuple[str, StatusUpdate, datetime]]
) -> None:
    """Store many cameras' state changes, in order, as :func:`record_status` would one by
    one, in a fixed number of statements: create missing status rows and lock them all in
    camera order (two workers writing one camera at a hand-over wait for each other in one
    order instead of deadlocking), then one UPDATE (executemany) and one INSERT into the
    transition log. Row by row through the ORM, 500 changes cost 1,000 round trips: under
    a city's load a worker's transaction stayed open half a minute, holding its locks and
    the database's vacuum horizon (tests/scale)."""
    if not changes:
        return
    ids = sorted({cid for cid, _, _ in changes})
    first_at = min(at for _, _, at in changes)
    insert_ = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    rows = [
        {"camera_id": cid, "state": "", "since": first_at, "updated_at": first_at} for cid in ids
    ]
    session.execute(insert_(CameraStatus).values(rows).on_conflict_do_nothing())
    locked = session.execute(
        select(CameraStatus.camera_id, CameraStatus.state, CameraStatus.since)
        .where(CameraStatus.camera_id.in_(ids))
        .order_by(CameraStatus.camera_id)
        .with_for_update()
    ).all()
    state = {cid: (st, since) for cid, st, since in locked}
    final: dict[str, dict[str, Any]] = {}
    log: list[dict[str, Any]] = []
    for cid, u, at in changes:
        previous, since = state[cid]
        if previous != u.state:
            since = at
            log.append({"camera_id": cid, "state": u.state, "at": at})
        state[cid] = (u.state, since)
        final[cid] = {
            "cid": cid,
            "state": u.state,
            "since": since,
            "fps": u.fps,
            "last_frame_at": u.last_frame_at,
            "reconnects": u.reconnects,
            "frames_dropped": u.frames_dropped,
            "last_error": u.last_error,
            "worker_id": u.worker_id,
            "updated_at": at,
        }
    stmt = (
        update(CameraStatus)
        .where(CameraStatus.camera_id == bindparam("cid"))
        .values({k: bindparam(k) for k in next(iter(final.values())) if k != "cid"})
    )
    session.connection().execute(stmt, [final[cid] for cid in sorted(final)])
    if log:
        session.execute(insert(CameraStateChange).values(log))


def online_seconds(
    changes: Sequence[tuple[str, datetime]], since: datetime, until: datetime
) -> float:
    """Seconds online within [since, until), given ordered (state, at) transitions.

    The definition the availability report (``storage.availability``, in SQL) follows and
    is tested against. Before its first transition a camera was not yet registered: that
    time counts as not online, so a camera added mid-period is measured over the whole
    period.
    """
    total = 0.0
    for i, (state, at) in enumerate(changes):
        end = changes[i + 1][1] if i + 1 < len(changes) else until
        if state != ONLINE:
            continue
        lo, hi = max(at, since), min(end, until)
        if hi > lo:
            total += (hi - lo).total_seconds()
    return total


def national_id(camera: Camera) -> str | None:
    """The camera's national 20-digit ID: as set on it, else its GB/T 28181 channel's."""
    return camera.national_id or (camera.gb28181 or {}).get("channel_id")


def health_of(
    session: Session, camera_ids: Sequence[str]
) -> dict[str, tuple[CameraStatus | None, CameraQuality | None]]:
    """Each camera's status row and picture-quality row (either may not exist yet)."""
    statuses = session.scalars(select(CameraStatus).where(CameraStatus.camera_id.in_(camera_ids)))
    pictures = session.scalars(select(CameraQuality).where(CameraQuality.camera_id.in_(camera_ids)))
    by_status = {s.camera_id: s for s in statuses}
    by_picture = {q.camera_id: q for q in pictures}
    return {i: (by_status.get(i), by_picture.get(i)) for i in camera_ids}


def reference_times(session: Session, camera_ids: Sequence[str]) -> dict[str, datetime]:
    """When each camera's latest picture reference view was taken (cameras without none)."""
    ref = CameraQualityReference
    rows = session.execute(
        select(ref.camera_id, func.max(ref.learnt_at))
        .where(ref.camera_id.in_(camera_ids))
        .group_by(ref.camera_id)
    )
    return {camera_id: at for camera_id, at in rows}
