"""ONVIF: discovery on the network, what a camera's probe found, PTZ and device snapshots.

Cameras are registered by ONVIF address and password through ``POST /cameras`` with an
``onvif`` field, which calls :func:`register_onvif_camera`. What the probe found is kept
in the camera's ``onvif`` column: the device's identity and profiles, the chosen profile
tokens and the login, the password encrypted (``password_enc``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from api.deps import CamerasDep, ServicesDep, require
from api.schemas.onvif import (
    DiscoveredOut,
    DiscoverIn,
    DiscoverOut,
    OnvifIn,
    OnvifOut,
    OnvifRefreshIn,
    ProfileOut,
    PtzIn,
    PtzOut,
)
from ingest import discovery
from ingest import onvif as ov
from ingest.egress import EgressPolicy, Purpose
from ingest.redact import redact_url
from runtime.services import Services
from storage import cameras as repo
from storage.audit import audit
from storage.models import Camera, utcnow
from storage.quality import expect_ptz
from storage.tokens import Principal

log = logging.getLogger(__name__)

router = APIRouter(tags=["onvif"])
Integrator = Annotated[Principal, Depends(require("integrator"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Watcher = Annotated[Principal, Depends(require("integrator", "operator"))]


@dataclass(frozen=True)
class OnvifRegistration:
    """What ``POST /cameras`` stores for a camera registered through ONVIF."""

    main_url: str  # with credentials, stored encrypted
    sub_url: str | None
    onvif: dict[str, Any]  # the camera's ``onvif`` column


async def register_onvif_camera(services: Services, body: OnvifIn) -> OnvifRegistration:
    """Probe the device and choose its streams; raises an ``OnvifError`` (422) if it can't."""
    password = body.password.get_secret_value()
    login = _Login(body.host, body.port, body.username, password, services.egress)
    return await _probe_and_choose(services, login, body.profile_token, body.sub_profile_token)


@dataclass(frozen=True)
class _Login:
    host: str
    port: int
    username: str
    password: str
    egress: EgressPolicy | None = None

    def target(self, timeout: float = ov.DEFAULT_TIMEOUT_S) -> ov.Target:
        return ov.Target(self.host, self.port, self.username, self.password, timeout, self.egress)


async def _probe_and_choose(
    services: Services, login: _Login, main_token: str | None, sub_token: str | None
) -> OnvifRegistration:
    await services.egress.check_async("onvif.host", login.host, Purpose.CAMERA)
    device = await ov.probe(
        login.host, login.port, login.username, login.password, egress=services.egress
    )
    main, sub = ov.choose_profiles(device, main_token, sub_token)
    assert main.stream_uri is not None
    # The device chooses its stream URIs: they may point anywhere.
    for profile in (main, sub):
        uri = profile.stream_uri if profile else None
        await services.egress.check_url_async("onvif.stream_uri", uri, Purpose.CAMERA)
    stored = {
        "host": login.host,
        "port": login.port,
        "username": login.username,
        "password_enc": services.secrets.encrypt(login.password),
        "profile_token": main_token,
        "sub_profile_token": sub_token,
        "device": device.to_dict(),
        "main_profile": main.token,
        "sub_profile": sub.token if sub else None,
        "probed_at": utcnow().isoformat(),
    }
    return OnvifRegistration(
        main_url=ov.with_credentials(main.stream_uri, login.username, login.password),
        sub_url=ov.with_credentials(sub.stream_uri, login.username, login.password)
        if sub and sub.stream_uri
        else None,
        onvif=stored,
    )


def _login(services: Services, stored: dict[str, Any]) -> _Login:
    return _Login(
        stored["host"],
        int(stored["port"]),
        stored["username"],
        services.secrets.decrypt(stored["password_enc"]),
        services.egress,
    )


def _onvif_out(camera_id: str, stored: dict[str, Any]) -> OnvifOut:
    device = ov.OnvifDevice.from_dict(stored["device"])
    return OnvifOut(
        camera_id=camera_id,
        host=stored["host"],
        port=stored["port"],
        username=stored["username"],
        manufacturer=device.manufacturer,
        model=device.model,
        firmware=device.firmware,
        serial=device.serial,
        hardware_id=device.hardware_id,
        ptz=device.ptz,
        profiles=[ProfileOut.model_validate(p, from_attributes=True) for p in device.profiles],
        main_profile=stored["main_profile"],
        sub_profile=stored["sub_profile"],
        snapshot_uri=device.snapshot_uri,
        probed_at=stored["probed_at"],
    )


def _onvif_of(services: Services, camera_id: str) -> dict[str, Any]:
    """The camera's ``onvif`` column; 404 for an unknown camera or one not added by ONVIF."""
    with services.db.session() as session:
        row = repo.get_camera(session, camera_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no camera {camera_id}")
        if not row.onvif:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"camera {camera_id} was not registered through ONVIF (it has no onvif data)",
            )
        return dict(row.onvif)


@router.get("/cameras/{camera_id}/onvif", response_model=OnvifOut)
def get_onvif(camera_id: str, services: ServicesDep, _: Integrator) -> OnvifOut:
    """What the last probe of the camera found; the password is never shown."""
    return _onvif_out(camera_id, _onvif_of(services, camera_id))


@router.post("/cameras/{camera_id}/onvif/refresh", response_model=OnvifOut)
async def refresh_onvif(
    camera_id: str,
    services: ServicesDep,
    cameras: CamerasDep,
    who: Integrator,
    body: OnvifRefreshIn | None = None,
) -> OnvifOut:
    """Probe the camera again (firmware updates change stream URIs) and follow its streams."""
    body = body or OnvifRefreshIn()
    stored = await asyncio.to_thread(_onvif_of, services, camera_id)
    login = _login(services, stored)
    if body.username is not None:
        login = replace(login, username=body.username)
    if body.password is not None:
        login = replace(login, password=body.password.get_secret_value())
    fields = body.model_fields_set
    main = body.profile_token if "profile_token" in fields else stored["profile_token"]
    sub = body.sub_profile_token if "sub_profile_token" in fields else stored["sub_profile_token"]
    found = await _probe_and_choose(services, login, main, sub)
    await asyncio.to_thread(_save_refresh, services, camera_id, found, who.name)
    cameras.changed()
    return _onvif_out(camera_id, found.onvif)


def _save_refresh(services: Services, camera_id: str, found: OnvifRegistration, actor: str) -> None:
    with services.tx() as session:
        row = repo.get_camera(session, camera_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no camera {camera_id}")
        streams_changed = _set_streams(services, row, found)
        row.onvif = found.onvif
        row.updated_at = utcnow()
        if streams_changed:
            row.version += 1  # the camera runtime reconnects to the new URIs
        audit(
            session,
            actor,
            "onvif_refresh",
            "camera",
            camera_id,
            {"streams_changed": streams_changed},
        )


def _set_streams(services: Services, row: Camera, found: OnvifRegistration) -> bool:
    """Store the chosen stream URLs (encrypted, and redacted for display); True if changed."""
    old_main = services.secrets.decrypt(row.main_url_enc) if row.main_url_enc else None
    old_sub = services.secrets.decrypt(row.sub_url_enc) if row.sub_url_enc else None
    if (old_main, old_sub) == (found.main_url, found.sub_url):
        return False
    row.main_url_enc = services.secrets.encrypt(found.main_url)
    row.main_url_shown = redact_url(found.main_url)
    row.sub_url_enc = services.secrets.encrypt(found.sub_url) if found.sub_url else None
    row.sub_url_shown = redact_url(found.sub_url) if found.sub_url else None
    return True


# --- discovery ----------------------------------------------------------------------------


@router.post("/onvif/discover", response_model=DiscoverOut)
async def discover_onvif(body: DiscoverIn, services: ServicesDep, _: Integrator) -> DiscoverOut:
    """WS-Discovery on the segment of ``interface``: the ONVIF cameras that answer."""
    started = time.monotonic()
    found = await discovery.discover(str(body.interface), body.timeout_s)
    known = await asyncio.to_thread(_registered, services)
    items = [_discovered_out(d, known) for d in found]
    return DiscoverOut(items=items, duration_s=round(time.monotonic() - started, 3))


def _registered(services: Services) -> dict[tuple[str, int], list[str]]:
    """Camera ids by the (host, port) of their ONVIF service."""
    known: dict[tuple[str, int], list[str]] = {}
    with services.db.session() as session:
        for row in repo.list_cameras(session):
            if row.onvif:
                key = (str(row.onvif["host"]).lower(), int(row.onvif["port"]))
                known.setdefault(key, []).append(row.id)
    return known


def _discovered_out(
    device: discovery.DiscoveredDevice, known: dict[tuple[str, int], list[str]]
) -> DiscoveredOut:
    ids = known.get((device.host.lower(), device.port), [])
    return DiscoveredOut(
        address=device.address,
        host=device.host,
        port=device.port,
        endpoint=device.endpoint,
        name=device.name,
        hardware=device.hardware,
        location=device.location,
        scopes=list(device.scopes),
        registered=bool(ids),
        camera_ids=ids,
    )


# --- PTZ ----------------------------------------------------------------------------------

#: How long a preset move may take, and how long after a move the picture settles
#: (focus, exposure): the picture-quality checks pause for the move plus this.
PRESET_MOVE_S = 10.0
PTZ_SETTLE_S = 5.0


class PtzStops:
    """The pending "stop after the duration" of each camera's last move.

    Many cameras ignore the ONVIF move timeout, so the service stops them itself. A new
    command for the same camera cancels the pending stop: an operator steering with short
    moves is not interrupted by the stop of the previous one.
    """

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Task[None]] = {}

    def cancel(self, camera_id: str) -> None:
        task = self._pending.pop(camera_id, None)
        if task is not None:
            task.cancel()

    def schedule(self, camera_id: str, delay_s: float, stop: Callable[[], Awaitable[None]]) -> None:
        self.cancel(camera_id)

        async def later() -> None:
            await asyncio.sleep(delay_s)
            try:
                await stop()
            except ov.OnvifError as err:
                log.warning("camera %s: PTZ stop after a move failed: %s", camera_id, err)
            finally:
                if self._pending.get(camera_id) is task:
                    del self._pending[camera_id]

        task = asyncio.create_task(later(), name=f"ptz-stop-{camera_id}")
        self._pending[camera_id] = task


def get_ptz_stops(request: Request) -> PtzStops:
    stops: PtzStops | None = getattr(request.app.state, "ptz_stops", None)
    if stops is None:
        stops = request.app.state.ptz_stops = PtzStops()
    return stops


@router.post("/cameras/{camera_id}/ptz", response_model=PtzOut)
async def ptz(
    camera_id: str,
    body: PtzIn,
    services: ServicesDep,
    who: Operator,
    stops: Annotated[PtzStops, Depends(get_ptz_stops)],
    cameras: CamerasDep,
) -> PtzOut:
    """Move (for ``duration_s``, then stop), stop, or go to a preset."""
    stored = await asyncio.to_thread(_onvif_of, services, camera_id)
    if not stored["device"].get("ptz"):
        raise ov.OnvifError(f"camera {camera_id} has no PTZ (its probe found no PTZ service)")
    target = _login(services, stored).target()
    await services.egress.check_async("onvif.host", target.host, Purpose.CAMERA)
    profile = stored["main_profile"]
    # The picture will move: its quality checks must not call it displaced (issue #17).
    moving_s = body.duration_s if body.action == "move" else PRESET_MOVE_S
    await asyncio.to_thread(_expect_ptz, services, camera_id, moving_s + PTZ_SETTLE_S)
    cameras.changed()
    stops.cancel(camera_id)
    if body.action == "move":
        velocity = ov.Velocity(body.pan, body.tilt, body.zoom)
        await ov.ptz_move(target, profile, velocity, body.duration_s)
        stops.schedule(camera_id, body.duration_s, lambda: ov.ptz_stop(target, profile))
    elif body.action == "stop":
        await ov.ptz_stop(target, profile)
    else:
        assert body.preset_token is not None  # PtzIn checks it
        await ov.ptz_preset(target, profile, body.preset_token)
    await asyncio.to_thread(_audit_ptz, services, who.name, camera_id, body)
    stops_after = body.duration_s if body.action == "move" else None
    return PtzOut(camera_id=camera_id, action=body.action, stops_after_s=stops_after)


def _expect_ptz(services: Services, camera_id: str, for_s: float) -> None:
    with services.db.session() as session:
        expect_ptz(session, camera_id, utcnow() + timedelta(seconds=for_s))


def _audit_ptz(services: Services, actor: str, camera_id: str, body: PtzIn) -> None:
    with services.db.session() as session:
        audit(session, actor, "ptz", "camera", camera_id, body.model_dump(exclude_none=True))


# --- snapshots ----------------------------------------------------------------------------


async def onvif_snapshot(services: Services, camera_id: str) -> bytes:
    """A JPEG from the camera's ONVIF snapshot URI (works while its stream is down)."""
    stored = await asyncio.to_thread(_onvif_of, services, camera_id)
    uri = ov.OnvifDevice.from_dict(stored["device"]).snapshot_uri
    if uri is None:
        raise ov.OnvifError(f"camera {camera_id} offers no ONVIF snapshot URI")
    login = _login(services, stored)
    await services.egress.check_url_async("onvif.snapshot_uri", uri, Purpose.CAMERA)
    return await ov.fetch_snapshot(uri, login.username, login.password)


@router.get(
    "/cameras/{camera_id}/onvif/snapshot.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def snapshot_from_device(camera_id: str, services: ServicesDep, _: Watcher) -> Response:
    """A JPEG taken by the camera itself, through its ONVIF snapshot URI."""
    jpeg = await onvif_snapshot(services, camera_id)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
