"""GB/T 28181 devices: what registered, their channels, and what an integrator sets.

Any process answers from the database (``storage.gb28181``); asking a device for its
catalog needs the SIP endpoint, which runs in one process (``docs/deployment.md``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from sqlalchemy.orm import Session

from api.deps import ServicesDep, require
from api.schemas.gb28181 import ChannelOut, DeviceList, DeviceOut, DevicePut
from config.errors import XueliangError
from runtime.process import Process
from runtime.services import Services
from storage import gb28181 as repo
from storage.audit import audit
from storage.cameras import channel_cameras
from storage.tokens import Principal

router = APIRouter(prefix="/gb28181", tags=["GB/T 28181"])
Integrator = Annotated[Principal, Depends(require("integrator"))]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such device."}}


def _out(device: repo.DeviceView, cameras: dict[tuple[str, str], str]) -> DeviceOut:
    channels = [
        ChannelOut(
            channel_id=c.channel_id,
            name=c.name,
            manufacturer=c.manufacturer,
            model=c.model,
            civil_code=c.civil_code,
            parent_id=c.parent_id,
            status=c.status,
            longitude=c.longitude,
            latitude=c.latitude,
            camera_id=cameras.get((c.device_id, c.channel_id)),
        )
        for c in device.channels
    ]
    fields = {k: getattr(device, k) for k in DeviceOut.model_fields if k != "channels"}
    return DeviceOut(**fields, channels=channels)


def _device(session: Session, device_id: str) -> repo.DeviceView:
    device = repo.get_device(session, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no GB/T 28181 device {device_id}")
    return device


@router.get("/devices", response_model=DeviceList)
def list_devices(services: ServicesDep, _: Integrator) -> DeviceList:
    """Every device with its channels and the cameras they feed."""
    with services.db.session() as session:
        devices = repo.list_devices(session)
        cameras = channel_cameras(session)
    return DeviceList(items=[_out(d, cameras) for d in devices])


@router.get("/devices/{device_id}", response_model=DeviceOut, responses=NOT_FOUND)
def get_device(device_id: str, services: ServicesDep, _: Integrator) -> DeviceOut:
    with services.db.session() as session:
        return _out(_device(session, device_id), channel_cameras(session))


@router.put(
    "/devices/{device_id}",
    response_model=DeviceOut,
    responses={201: {"model": DeviceOut, "description": "Created."}},
)
def put_device(
    device_id: str, body: DevicePut, response: Response, services: ServicesDep, who: Integrator
) -> DeviceOut:
    """Create a device before it registers (needed when ``gb28181.allow_unknown`` is off),
    or set its own password, name, or whether it may register."""
    try:
        return _put(services, device_id, body, response, who)
    except repo.InvalidValue as err:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["path" if err.field == "device_id" else "body", err.field],
                    "msg": str(err),
                    "type": "value_error",
                }
            ],
        ) from None


def _put(
    services: Services, device_id: str, body: DevicePut, response: Response, who: Principal
) -> DeviceOut:
    password = body.password.get_secret_value() if body.password is not None else None
    box = services.secrets
    with services.tx() as session:
        if repo.get_device(session, device_id) is None:
            repo.create_device(
                session,
                device_id,
                box=box,
                password=password,
                enabled=body.enabled if body.enabled is not None else True,
                name=body.name,
            )
            response.status_code = status.HTTP_201_CREATED
        else:
            repo.update_device(
                session,
                device_id,
                box=box,
                password=password if password is not None else repo.UNSET,
                enabled=body.enabled if body.enabled is not None else repo.UNSET,
                name=body.name if body.name is not None else repo.UNSET,
            )
        changed = sorted(body.model_dump(exclude_unset=True))
        audit(session, who.name, "update", "gb28181_device", device_id, {"fields": changed})
        return _out(_device(session, device_id), channel_cameras(session))


@router.delete("/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def delete_device(device_id: str, services: ServicesDep, who: Integrator) -> None:
    """Forget a device and its channels (its cameras stay, offline, until deleted)."""
    with services.tx() as session:
        if not repo.delete_device(session, device_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no GB/T 28181 device {device_id}")
        audit(session, who.name, "delete", "gb28181_device", device_id)


@router.post(
    "/devices/{device_id}/catalog",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, 503: {"description": "The SIP endpoint does not run here."}},
)
async def query_catalog(
    device_id: str, request: Request, services: ServicesDep, _: Integrator
) -> dict[str, str]:
    """Ask the device for its catalog again; the channels change when it answers
    (event ``gb28181.catalog``)."""
    await asyncio.to_thread(_exists, services, device_id)
    process: Process = request.app.state.process
    if process.gb28181 is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the GB/T 28181 endpoint does not run in this process (gb28181.enabled)",
        )
    try:
        await process.gb28181.endpoint.query_catalog(device_id)
    except XueliangError as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(err)) from None
    return {"status": "requested"}


def _exists(services: Services, device_id: str) -> None:
    with services.db.session() as session:
        _device(session, device_id)
