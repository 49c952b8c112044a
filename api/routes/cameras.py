"""Cameras: the registry integrators manage, with live status, snapshot and availability."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from sqlalchemy.orm import Session

from api.deps import CamerasDep, ServicesDep, require
from api.routes.onvif import OnvifRegistration, onvif_snapshot, register_onvif_camera
from api.schemas.cameras import (
    AnalyticsIn,
    AvailabilityReport,
    CameraAvailability,
    CameraCreate,
    CameraList,
    CameraOut,
    CameraPatch,
    CameraStatusOut,
    Gb28181ChannelIn,
    Location,
    RecordingIn,
    ZoneIn,
)
from api.scope import allows, check_visible, visible_grid_codes
from config.errors import XueliangError
from ingest.redact import redact_url
from runtime.process import CameraControl
from runtime.services import Services
from storage import cameras as repo
from storage import gb28181
from storage.audit import audit
from storage.cameras import national_id
from storage.grids import place_camera
from storage.models import Camera, utcnow
from storage.tokens import Principal

router = APIRouter(prefix="/cameras", tags=["cameras"])
Integrator = Annotated[Principal, Depends(require("integrator"))]
Viewer = Annotated[Principal, Depends(require("integrator", "operator", "grid_platform"))]
Watcher = Annotated[Principal, Depends(require("integrator", "operator"))]


def _out(row: Camera) -> CameraOut:
    return CameraOut(
        id=row.id,
        name=row.name,
        rtsp_url=None if row.gb28181 else row.main_url_shown,
        gb28181=Gb28181ChannelIn.model_validate(row.gb28181) if row.gb28181 else None,
        substream_url=row.sub_url_shown,
        grid_code=row.grid_code,
        location=Location(lat=row.lat, lon=row.lon)
        if row.lat is not None and row.lon is not None
        else None,
        national_id=national_id(row),
        zones=[ZoneIn.model_validate(z) for z in row.zones],
        analytics=AnalyticsIn.model_validate(row.analytics),
        recording=RecordingIn.model_validate(row.recording),
        enabled=row.enabled,
        ptz=bool(row.onvif and row.onvif.get("device", {}).get("ptz")),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _camera(session: Session, camera_id: str, who: Principal) -> Camera:
    """The camera, if it exists and lies in the caller's grid scope (else 404)."""
    row = repo.get_camera(session, camera_id)
    not_found = f"no camera {camera_id}"
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, not_found)
    check_visible(visible_grid_codes(session, who), row.grid_code, not_found)
    return row


def _placed(session: Session, row: Camera, who: Principal, grid_given: bool) -> None:
    """Set the camera's grid (given, or the smallest containing its location); a scoped
    caller may only place cameras inside its scope."""
    place_camera(session, row, grid_given=grid_given)
    if not allows(visible_grid_codes(session, who), row.grid_code):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"grid {row.grid_code} is outside your token's scope ({who.grid_scope})",
        )


def _check_scheme(services: Services, field: str, url: str | None) -> None:
    # urlsplit: schemes are case-insensitive ("FILE:///etc/passwd" is a file URL too).
    scheme = urlsplit(url).scheme.lower() if url else ""
    if scheme == "file" and not services.settings.ingest.allow_file_sources:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["body", field],
                    "msg": "file:// sources are disabled on this server; use an rtsp:// URL",
                    "type": "value_error",
                }
            ],
        )


def _keep_password(new_url: str, old_encrypted: str | None, services: Services) -> str:
    """A URL sent back with the password shown as *** keeps the stored password."""
    parts = urlsplit(new_url)
    if parts.password != "***" or not old_encrypted:
        return new_url
    old = urlsplit(services.secrets.decrypt(old_encrypted))
    if old.password is None:
        return new_url
    netloc = parts.netloc.replace(":***@", f":{old.password}@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _set_url(services: Services, row: Camera, which: str, url: str | None) -> None:
    enc = services.secrets.encrypt(url) if url else None
    shown = redact_url(url) if url else None
    if which == "main":
        row.main_url_enc, row.main_url_shown = enc, shown
    else:
        row.sub_url_enc, row.sub_url_shown = enc, shown


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CameraOut)
async def create_camera(
    body: CameraCreate, services: ServicesDep, cameras: CamerasDep, who: Integrator
) -> CameraOut:
    """Register a camera by its stream URLs, or by its ONVIF address and login.

    An ONVIF camera is probed first: one the probe cannot use is not created, and the 422
    says why (unreachable, wrong password, not ONVIF, no media, timeout).
    """
    _check_scheme(services, "rtsp_url", body.rtsp_url)
    _check_scheme(services, "substream_url", body.substream_url)
    found = None
    if body.onvif is not None:
        found = await register_onvif_camera(services, body.onvif)
    if body.gb28181 is not None:
        return await _create_channel_camera(services, cameras, body, body.gb28181, who)
    out = await asyncio.to_thread(_insert_camera, services, body, who, found)
    cameras.changed()
    return out


def _insert_camera(
    services: Services, body: CameraCreate, who: Principal, found: OnvifRegistration | None
) -> CameraOut:
    now = utcnow()
    row = Camera(
        id=repo.new_camera_id(),
        name=body.name,
        grid_code=body.grid_code,
        lat=body.location.lat if body.location else None,
        lon=body.location.lon if body.location else None,
        national_id=body.national_id,
        zones=[z.model_dump() for z in body.zones],
        analytics=body.analytics.model_dump(),
        recording=body.recording.model_dump(),
        enabled=body.enabled,
        onvif=found.onvif if found else None,
        created_at=now,
        updated_at=now,
    )
    _set_url(services, row, "main", found.main_url if found else body.rtsp_url)
    _set_url(services, row, "sub", found.sub_url if found else body.substream_url)
    with services.tx() as session:
        session.add(row)
        _placed(session, row, who, grid_given=body.grid_code is not None)
        audit(session, who.name, "create", "camera", row.id)
    return _out(row)


async def _create_channel_camera(
    services: Services,
    cameras: CameraControl,
    body: CameraCreate,
    channel: Gb28181ChannelIn,
    who: Principal,
) -> CameraOut:
    out = await asyncio.to_thread(_insert_channel_camera, services, body, channel, who)
    cameras.changed()
    return out


def _insert_channel_camera(
    services: Services, body: CameraCreate, channel: Gb28181ChannelIn, who: Principal
) -> CameraOut:
    with services.tx() as session:
        found = gb28181.get_channel(session, channel.device_id, channel.channel_id)
        if found is None:
            raise _unknown_channel(session, channel)
        row = repo.channel_camera(found, body.name)
        if body.location is not None:
            row.lat, row.lon = body.location.lat, body.location.lon
        row.grid_code = body.grid_code
        row.national_id = body.national_id
        row.zones = [z.model_dump() for z in body.zones]
        row.analytics = body.analytics.model_dump()
        row.recording = body.recording.model_dump()
        row.enabled = body.enabled
        session.add(row)
        _placed(session, row, who, grid_given=body.grid_code is not None)
        audit(session, who.name, "create", "camera", row.id, {"gb28181": channel.model_dump()})
        return _out(row)


def _unknown_channel(session: Session, channel: Gb28181ChannelIn) -> HTTPException:
    if gb28181.get_device(session, channel.device_id) is None:
        msg = f"no GB/T 28181 device {channel.device_id}: it has not registered yet"
        loc = ["body", "gb28181", "device_id"]
    else:
        msg = (
            f"device {channel.device_id} has no channel {channel.channel_id} in its catalog "
            "(POST /gb28181/devices/{device_id}/catalog asks it again)"
        )
        loc = ["body", "gb28181", "channel_id"]
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, [{"loc": loc, "msg": msg, "type": "value_error"}]
    )


@router.get("", response_model=CameraList)
def list_cameras(services: ServicesDep, who: Viewer) -> CameraList:
    with services.db.session() as session:
        return CameraList(items=[_out(r) for r in _visible_cameras(session, who)])


def _visible_cameras(session: Session, who: Principal) -> list[Camera]:
    visible = visible_grid_codes(session, who)
    return [c for c in repo.list_cameras(session) if allows(visible, c.grid_code)]


@router.get("/availability", response_model=AvailabilityReport)
def availability(
    services: ServicesDep,
    who: Viewer,
    since: Annotated[datetime | None, Query(description="Default: 24 h before `until`.")] = None,
    until: Annotated[datetime | None, Query(description="Default: now.")] = None,
) -> AvailabilityReport:
    """Share of time each camera was online over a period, and in total."""
    until = _aware(until) if until else datetime.now(UTC)
    since = _aware(since) if since else until - timedelta(days=1)
    if since >= until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since must be before until")
    with services.db.session() as session:
        cams = _visible_cameras(session, who)
        names = {c.id: c.name for c in cams}
        rows = repo.availability(session, names, since, until)
    items = [
        CameraAvailability(
            camera_id=a.camera_id, name=names[a.camera_id], online_s=a.online_s, ratio=a.ratio
        )
        for a in rows
    ]
    period = sum(a.period_s for a in rows)
    return AvailabilityReport(
        since=since,
        until=until,
        cameras=items,
        total_ratio=sum(a.online_s for a in rows) / period if period else 0.0,
        cameras_at_or_above_98=sum(1 for a in rows if a.ratio >= 0.98),
    )


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@router.get("/{camera_id}", response_model=CameraOut)
def get_camera(camera_id: str, services: ServicesDep, who: Viewer) -> CameraOut:
    with services.db.session() as session:
        return _out(_camera(session, camera_id, who))


@router.patch("/{camera_id}", response_model=CameraOut)
def patch_camera(
    camera_id: str, body: CameraPatch, services: ServicesDep, cameras: CamerasDep, who: Integrator
) -> CameraOut:
    _check_scheme(services, "rtsp_url", body.rtsp_url)
    _check_scheme(services, "substream_url", body.substream_url)
    changes = body.model_dump(exclude_unset=True)
    with services.tx() as session:
        row = _camera(session, camera_id, who)
        if "rtsp_url" in changes:
            _set_url(
                services,
                row,
                "main",
                _keep_password(changes["rtsp_url"], row.main_url_enc, services),
            )
        if "substream_url" in changes:
            url = changes["substream_url"]
            _set_url(services, row, "sub", url and _keep_password(url, row.sub_url_enc, services))
        if "location" in changes:
            loc = changes["location"]
            row.lat, row.lon = (loc["lat"], loc["lon"]) if loc else (None, None)
        for key in (
            "name",
            "grid_code",
            "national_id",
            "zones",
            "analytics",
            "recording",
            "enabled",
        ):
            if key in changes:
                setattr(row, key, changes[key] if changes[key] is not None else _empty(key))
        if "location" in changes or "grid_code" in changes:
            _placed(session, row, who, grid_given="grid_code" in changes)
        row.version += 1
        row.updated_at = utcnow()
        audit(session, who.name, "update", "camera", camera_id, {"fields": sorted(changes)})
        out = _out(row)
    cameras.changed()
    return out


def _empty(key: str) -> object:
    return {
        "zones": [],
        "analytics": AnalyticsIn().model_dump(),
        "recording": RecordingIn().model_dump(),
    }.get(key)


@router.delete("/{camera_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_camera(
    camera_id: str, services: ServicesDep, cameras: CamerasDep, who: Integrator
) -> None:
    with services.tx() as session:
        _camera(session, camera_id, who)
        repo.delete_camera(session, camera_id)
        audit(session, who.name, "delete", "camera", camera_id)
    cameras.changed()


@router.get("/{camera_id}/status", response_model=CameraStatusOut)
def camera_status(camera_id: str, services: ServicesDep, who: Viewer) -> CameraStatusOut:
    with services.db.session() as session:
        row = _camera(session, camera_id, who)
        st = repo.get_status(session, camera_id)
        if not row.enabled:
            return CameraStatusOut(state="disabled")
        if st is None:
            return CameraStatusOut(state="connecting")
        return CameraStatusOut.model_validate(st, from_attributes=True)


def _onvif_known(services: Services, camera_id: str, who: Principal) -> bool:
    with services.db.session() as session:
        return bool(_camera(session, camera_id, who).onvif)


@router.get(
    "/{camera_id}/snapshot.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 503: {"description": "No frame yet."}},
)
async def snapshot(
    camera_id: str, services: ServicesDep, cameras: CamerasDep, who: Watcher
) -> Response:
    """The latest frame; from the camera's ONVIF snapshot URI when its stream is down."""
    has_onvif = await asyncio.to_thread(_onvif_known, services, camera_id, who)
    jpeg = await asyncio.to_thread(cameras.snapshot, camera_id)
    if jpeg is None and has_onvif:
        with contextlib.suppress(XueliangError):
            jpeg = await onvif_snapshot(services, camera_id)
    if jpeg is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "no frame from this camera yet: see GET /cameras/{id}/status for why",
        )
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
