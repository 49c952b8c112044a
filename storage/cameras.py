"""Camera registry, live status and the availability report."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.gb28181 import ChannelView
from storage.models import Camera, CameraStateChange, CameraStatus, utcnow

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


def get_status(session: Session, camera_id: str) -> CameraStatus | None:
    return session.get(CameraStatus, camera_id)


def get_statuses(session: Session, camera_ids: Sequence[str]) -> dict[str, CameraStatus]:
    """The stored status rows of these cameras (cameras without one are left out)."""
    query = select(CameraStatus).where(CameraStatus.camera_id.in_(camera_ids))
    return {row.camera_id: row for row in session.scalars(query)}


@dataclass(frozen=True)
class Availability:
    camera_id: str
    online_s: float
    period_s: float

    @property
    def ratio(self) -> float:
        return self.online_s / self.period_s if self.period_s > 0 else 0.0


def availability(
    session: Session, camera_ids: Iterable[str], since: datetime, until: datetime
) -> list[Availability]:
    """Share of [since, until) each camera spent online, from its logged transitions."""
    ids = list(camera_ids)
    rows = session.execute(
        select(CameraStateChange.camera_id, CameraStateChange.state, CameraStateChange.at)
        .where(CameraStateChange.camera_id.in_(ids), CameraStateChange.at < until)
        .order_by(CameraStateChange.camera_id, CameraStateChange.at, CameraStateChange.id)
    ).all()
    by_camera: dict[str, list[tuple[str, datetime]]] = {i: [] for i in ids}
    for camera_id, state, at in rows:
        by_camera[camera_id].append((state, at))
    return [
        Availability(cid, online_seconds(changes, since, until), (until - since).total_seconds())
        for cid, changes in by_camera.items()
    ]


def online_seconds(
    changes: Sequence[tuple[str, datetime]], since: datetime, until: datetime
) -> float:
    """Seconds online within [since, until), given ordered (state, at) transitions.

    Before its first transition a camera was not yet registered: that time counts as not
    online, so a camera added mid-period is measured over the whole period.
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
