"""Cameras: the registry integrators manage, with live status and snapshot (the
availability report is api/routes/availability.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import cv2
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from analytics.quality import reference_from_bytes
from api.deps import CamerasDep, ServicesDep, require
from api.openapi import BAD_CURSOR, error
from api.routes.onvif import OnvifRegistration, onvif_snapshot, register_onvif_camera
from api.schemas.cameras import (
    CSV_FIELD,
    AnalyticsIn,
    CameraCreate,
    CameraList,
    CameraOrder,
    CameraOut,
    CameraPatch,
    CameraStatusOut,
    Gb28181ChannelIn,
    ImportItem,
    ImportOut,
    ImportProblem,
    Location,
    QualityOut,
    RecordingIn,
    ReferenceRequestOut,
    State,
    ZoneIn,
    csv_items,
    problem,
)
from api.scope import allows, check_visible, visible_grid_codes
from config.errors import XueliangError
from ingest.egress import EgressRefused, IPAddress, Purpose, host_of
from ingest.redact import redact_url
from runtime.process import CameraControl
from runtime.services import Services
from storage import cameras as repo
from storage import gb28181
from storage.audit import audit
from storage.cameras import national_id
from storage.gb28181 import ChannelView
from storage.grids import place_camera
from storage.models import Camera, utcnow
from storage.quality import get_quality, latest_reference, request_reference
from storage.tokens import Principal

router = APIRouter(prefix="/cameras", tags=["cameras"])
Integrator = Annotated[Principal, Depends(require("integrator"))]
Viewer = Annotated[Principal, Depends(require("integrator", "operator", "grid_platform"))]
Maintainer = Annotated[Principal, Depends(require("integrator", "operator"))]
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
    if not _scheme_allowed(services, url):
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


def _url_columns(services: Services, url: str | None) -> tuple[str | None, str | None]:
    """A stream URL as stored: encrypted (it carries the password), and redacted to show."""
    return (services.secrets.encrypt(url), redact_url(url)) if url else (None, None)


def _set_url(services: Services, row: Camera, which: str, url: str | None) -> None:
    enc, shown = _url_columns(services, url)
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
    for name, url in _stream_urls(body):
        await services.egress.check_url_async(name, url, Purpose.CAMERA)
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
    loc, msg = _channel_problem(session, channel)
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, [{"loc": loc, "msg": msg, "type": "value_error"}]
    )


def _channel_problem(session: Session, channel: Gb28181ChannelIn) -> tuple[list[str], str]:
    """Where and why a channel that is not known is refused."""
    if gb28181.get_device(session, channel.device_id) is None:
        msg = f"no GB/T 28181 device {channel.device_id}: it has not registered yet"
        return ["body", "gb28181", "device_id"], msg
    msg = (
        f"device {channel.device_id} has no channel {channel.channel_id} in its catalog "
        "(POST /gb28181/devices/{device_id}/catalog asks it again)"
    )
    return ["body", "gb28181", "channel_id"], msg


@router.get("", response_model=CameraList, responses={400: BAD_CURSOR})
async def list_cameras(
    services: ServicesDep,
    who: Viewer,
    grid_code: Annotated[
        str | None, Query(max_length=64, description="This grid and every grid below it.")
    ] = None,
    state: Annotated[
        State | None,
        Query(
            description="As `GET /cameras/{id}/status` says: a camera without status yet is "
            "`connecting`, a disabled one `disabled`."
        ),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Part of the name, national ID or id (any case).",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="A `next_cursor` of this list.")] = None,
    order: Annotated[
        CameraOrder, Query(description="`created`: newest first; `name`: by name.")
    ] = "created",
) -> CameraList:
    """One page of the cameras in the caller's grid scope (default 100, at most 1000); follow
    `next_cursor` for the next. A camera added while you page appears on no page or once,
    never twice, and none is skipped."""
    f = repo.CameraFilter(grid_code=grid_code, scope=who.grid_scope, state=state, q=q)
    return await run_in_threadpool(_camera_page, services, f, limit, cursor, order)


def _camera_page(
    services: Services, f: repo.CameraFilter, limit: int, cursor: str | None, order: CameraOrder
) -> CameraList:
    with services.db.session() as session:
        rows, next_cursor = repo.page_cameras(session, f, limit, cursor, order)
        return CameraList(items=[_out(r) for r in rows], next_cursor=next_cursor)


_IMPORT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "array", "items": {"$ref": "#/components/schemas/CameraCreate"}}
        },
        "text/csv": {
            "schema": {"type": "string"},
            "example": "name,rtsp_url,lat,lon,national_id\n"
            "east gate,rtsp://user:pw@192.0.2.7/main,43.65,122.24,15050200001320000001\n",
        },
    },
}


@router.post(
    "/import",
    status_code=status.HTTP_201_CREATED,
    response_model=ImportOut,
    responses={415: error("The body is neither `application/json` nor `text/csv`.")},
    openapi_extra={"requestBody": _IMPORT_BODY},
)
async def import_cameras(
    request: Request, services: ServicesDep, cameras: CamerasDep, who: Integrator
) -> ImportOut:
    """Register many cameras at once, all or none: a JSON array of `POST /cameras` bodies,
    or CSV (`Content-Type: text/csv`) with a header row naming some of the columns name,
    rtsp_url, substream_url, gb28181_device_id, gb28181_channel_id, lat, lon, grid_code,
    national_id, enabled.

    Every row is checked before any is created: a 422 lists each problem as `{"line",
    "field", "msg"}` — `line` is the CSV line (the header is line 1) or the camera's
    position in the JSON array (from 1). ONVIF cameras are refused (each is probed over the
    network: register them with `POST /cameras`); GB/T 28181 channels must be known. A
    scoped token may only place cameras in its grid (403). 20,000 cameras fit in one call
    within the server's body limit (`server.max_body_bytes`, 8 MiB by default).
    """
    content_type, body = request.headers.get("content-type", ""), await request.body()
    # Parsing megabytes of CSV takes a while: in the worker thread, with the rest.
    out = await asyncio.to_thread(_import, services, content_type, body, who)
    if out.created:
        cameras.changed()
    return out


def _import_items(content_type: str, body: bytes) -> list[ImportItem]:
    """The rows of an import body (a 422 lists every row a CSV's shape already refuses)."""
    kind = content_type.split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body is not UTF-8") from None
    if kind == "text/csv":
        items, problems = csv_items(text)
        _refuse(problems)
        return items
    if kind not in ("", "application/json"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "send application/json or text/csv"
        )
    try:
        parsed = json.loads(text)
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body is not JSON") from None
    if not isinstance(parsed, list):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "the body must be a JSON array of cameras (or CSV, with Content-Type: text/csv)",
        )
    return [ImportItem(i + 1, fields) for i, fields in enumerate(parsed)]


def _refuse(problems: list[ImportProblem]) -> None:
    if problems:
        detail = [p.model_dump() for p in sorted(problems, key=lambda p: p.line)]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


@dataclass(frozen=True)
class _Valid:
    item: ImportItem
    body: CameraCreate
    channel: ChannelView | None


def _import(services: Services, content_type: str, body: bytes, who: Principal) -> ImportOut:
    """Check every row, then place and insert them all in one transaction, audited once."""
    bodies, problems = _validated(services, _import_items(content_type, body))
    with services.tx() as session:
        valid = _with_channels(session, bodies, problems)
        _refuse(problems)
        now = utcnow()
        rows = [_import_row(services, v, now) for v in valid]
        repo.place_new_cameras(session, rows)
        placed = [(v.item.line, r["grid_code"]) for v, r in zip(valid, rows, strict=True)]
        _check_import_scope(session, who, placed)
        repo.insert_cameras(session, rows)
        ids = [r["id"] for r in rows]
        if ids:
            audit(session, who.name, "import", "camera", f"{len(ids)} cameras", {"ids": ids})
    return ImportOut(created=len(ids), ids=ids)


def _validated(
    services: Services, items: list[ImportItem]
) -> tuple[list[tuple[ImportItem, CameraCreate]], list[ImportProblem]]:
    """Each row as a :class:`CameraCreate`, and every problem of every row."""
    bodies: list[tuple[ImportItem, CameraCreate]] = []
    problems: list[ImportProblem] = []
    seen: dict[str, int] = {}  # national ID → the line that has it
    for item in items:
        found = _row_problems(services, item)
        if isinstance(found, list):
            problems += found
            continue
        nid = found.national_id or (found.gb28181.channel_id if found.gb28181 else None)
        if nid is not None and nid in seen:
            field = "national_id" if found.national_id else _field(item, "gb28181.channel_id")
            problems.append(
                problem(item.line, field, f"national_id {nid} is also on line {seen[nid]}")
            )
            continue
        if nid is not None:
            seen[nid] = item.line
        bodies.append((item, found))
    return _egress_checked(services, bodies, problems)


def _stream_urls(body: CameraCreate) -> tuple[tuple[str, str | None], ...]:
    return (("rtsp_url", body.rtsp_url), ("substream_url", body.substream_url))


def _egress_checked(
    services: Services,
    bodies: list[tuple[ImportItem, CameraCreate]],
    problems: list[ImportProblem],
) -> tuple[list[tuple[ImportItem, CameraCreate]], list[ImportProblem]]:
    """The rows whose URLs the egress policy lets through; the others become problems.
    Every host is looked up at once (a city's import names thousands)."""
    hosts = [host_of(url) for _, body in bodies for _, url in _stream_urls(body)]
    addresses = services.egress.resolve_all(h for h in hosts if h is not None)
    kept = []
    for item, body in bodies:
        refused = _egress_problems(services, item, body, addresses)
        problems += refused
        if not refused:
            kept.append((item, body))
    return kept, problems


def _row_problems(services: Services, item: ImportItem) -> CameraCreate | list[ImportProblem]:
    """The row as a camera, or what is wrong with it (never echoing a value: URLs hold
    passwords)."""
    if not isinstance(item.fields, dict):
        return [problem(item.line, "", "must be a camera object")]
    if item.fields.get("onvif") is not None:
        msg = "ONVIF cameras are probed one by one: register them with POST /cameras"
        return [problem(item.line, "onvif", msg)]
    try:
        body = CameraCreate.model_validate(item.fields)
    except ValidationError as err:
        return [
            problem(item.line, _field(item, ".".join(str(p) for p in e["loc"])), e["msg"])
            for e in err.errors(include_input=False, include_url=False)
        ]
    refused = [
        problem(item.line, _field(item, name), "file:// sources are disabled on this server")
        for name, url in (("rtsp_url", body.rtsp_url), ("substream_url", body.substream_url))
        if not _scheme_allowed(services, url)
    ]
    return refused or body


def _egress_problems(
    services: Services,
    item: ImportItem,
    body: CameraCreate,
    addresses: dict[str, list[IPAddress]],
) -> list[ImportProblem]:
    """The row's URLs the egress policy refuses, by the addresses their hosts name."""
    found = []
    for name, url in _stream_urls(body):
        host = host_of(url)
        if host is None:
            continue
        try:
            services.egress.judge(name, host, Purpose.CAMERA, addresses.get(host, []))
        except EgressRefused as err:
            found.append(problem(item.line, _field(item, name), err.reason))
    return found


def _field(item: ImportItem, name: str) -> str:
    """A field as the row names it: a CSV row by its column."""
    return CSV_FIELD.get(name, name) if item.csv else name


def _scheme_allowed(services: Services, url: str | None) -> bool:
    """False for a file:// URL unless file sources are allowed (urlsplit: schemes are
    case-insensitive, "FILE:///etc/passwd" is a file URL too)."""
    scheme = urlsplit(url).scheme.lower() if url else ""
    return scheme != "file" or services.settings.ingest.allow_file_sources


def _with_channels(
    session: Session,
    bodies: list[tuple[ImportItem, CameraCreate]],
    problems: list[ImportProblem],
) -> list[_Valid]:
    """Each camera with its GB/T 28181 channel; an unknown channel is a problem of its row."""
    valid = []
    for item, body in bodies:
        channel = None
        if body.gb28181 is not None:
            channel = gb28181.get_channel(session, body.gb28181.device_id, body.gb28181.channel_id)
            if channel is None:
                loc, msg = _channel_problem(session, body.gb28181)
                problems.append(problem(item.line, _field(item, ".".join(loc[1:])), msg))
                continue
        valid.append(_Valid(item, body, channel))
    return valid


def _import_row(services: Services, v: _Valid, now: datetime) -> dict[str, Any]:
    """The ``cameras`` row of an imported camera, its URLs encrypted (and redacted to show)."""
    body, channel = v.body, v.channel
    lat, lon = (channel.latitude, channel.longitude) if channel else (None, None)
    if body.location is not None:
        lat, lon = body.location.lat, body.location.lon
    main_enc, main_shown = _url_columns(services, body.rtsp_url)
    sub_enc, sub_shown = _url_columns(services, body.substream_url)
    return {
        "id": repo.new_camera_id(),
        "name": body.name,
        "main_url_enc": main_enc,
        "main_url_shown": main_shown,
        "sub_url_enc": sub_enc,
        "sub_url_shown": sub_shown,
        "onvif": None,
        "gb28181": body.gb28181.model_dump() if body.gb28181 else None,
        "grid_code": body.grid_code,
        "grid_auto": False,
        "lat": lat,
        "lon": lon,
        "national_id": body.national_id,
        "zones": [z.model_dump() for z in body.zones],
        # Most rows leave these out: their defaults are dumped once, not 20,000 times.
        "analytics": _dump(body, "analytics", _DEFAULT_ANALYTICS),
        "recording": _dump(body, "recording", _DEFAULT_RECORDING),
        "enabled": body.enabled,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }


_DEFAULT_ANALYTICS = AnalyticsIn().model_dump()
_DEFAULT_RECORDING = RecordingIn().model_dump()


def _dump(body: CameraCreate, field: str, default: dict[str, Any]) -> dict[str, Any]:
    if field not in body.model_fields_set:
        return default
    value: dict[str, Any] = getattr(body, field).model_dump()
    return value


def _check_import_scope(
    session: Session, who: Principal, placed: list[tuple[int, str | None]]
) -> None:
    """A scoped caller may only place cameras inside its scope (403 naming the rows)."""
    visible = visible_grid_codes(session, who)
    codes = None if visible is None else set(visible)
    outside = [
        f"line {line}: " + (f"grid {code}" if code else "no grid")
        for line, code in placed
        if not allows(codes, code)
    ]
    if outside:
        shown = "; ".join(outside[:20]) + (
            f"; and {len(outside) - 20} more" if len(outside) > 20 else ""
        )
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"outside your token's scope ({who.grid_scope}): {shown}",
        )


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
    for name, url in (("rtsp_url", body.rtsp_url), ("substream_url", body.substream_url)):
        services.egress.check_url(name, url, Purpose.CAMERA)  # patched fields only
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
        out = CameraStatusOut.model_validate(st, from_attributes=True)
        quality = get_quality(session, camera_id)
        if quality is not None and out.state == "online":  # else: nothing to judge
            out.quality = QualityOut.model_validate(quality)
        return out


@router.post(
    "/{camera_id}/quality/reference",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReferenceRequestOut,
)
def quality_reference(
    camera_id: str, services: ServicesDep, cameras: CamerasDep, who: Maintainer
) -> ReferenceRequestOut:
    """Take the camera's current picture as its reference view (after maintenance, a new
    mounting, a scene that changed for good). The worker running the camera takes its next
    checked frame, within a second here or ``workers`` poll time (5 s) on another node;
    `quality.reference_at` in the status then moves past `requested_at`."""
    at = utcnow()
    with services.tx() as session:
        row = _camera(session, camera_id, who)
        if not row.enabled:
            raise HTTPException(status.HTTP_409_CONFLICT, f"camera {camera_id} is disabled")
        request_reference(session, camera_id, at)
        audit(session, who.name, "quality_reference", "camera", camera_id)
    cameras.changed()
    return ReferenceRequestOut(requested_at=at)


@router.get(
    "/{camera_id}/quality/reference.jpg",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}},
        404: {"description": "No such camera, or no reference view learnt yet."},
    },
)
async def quality_reference_image(camera_id: str, services: ServicesDep, who: Watcher) -> Response:
    """The reference view the picture checks compare with (grey, 180 px high): shown beside
    the current snapshot, it tells whether the camera was turned, covered or defocused."""
    jpeg = await run_in_threadpool(_reference_jpeg, services, camera_id, who)
    if jpeg is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"camera {camera_id} has no reference view yet: it is learnt after about a "
            "minute of healthy picture, or on POST .../quality/reference",
        )
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


def _reference_jpeg(services: Services, camera_id: str, who: Principal) -> bytes | None:
    with services.db.session() as session:
        _camera(session, camera_id, who)
        stored = latest_reference(session, camera_id)
    if stored is None:
        return None
    ok, jpeg = cv2.imencode(
        ".jpg", reference_from_bytes(stored).gray, [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    return jpeg.tobytes() if ok else None


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
