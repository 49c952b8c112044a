"""Live view, WHEP style: the browser POSTs an SDP offer, gets the answer and a session URL.

The sessions live in an :class:`~ingest.live.LiveService` created by this router's
lifespan (FastAPI merges it into the app's, inside it: the camera runtime exists by then,
and every peer connection is closed before the cameras stop).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response, status

from api.deps import ServicesDep, require
from api.scope import allows, visible_grid_codes
from api.services import Services
from ingest.live import (
    BadOfferError,
    LiveError,
    LiveService,
    LiveUnavailableError,
    NoCommonCodecError,
)
from ingest.ring import PacketRing
from storage import cameras as repo
from storage.audit import audit
from storage.tokens import Principal

SDP = "application/sdp"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    def ring_for(camera_id: str) -> PacketRing | None:
        runtime = getattr(app.state, "runtime", None)
        if runtime is None or camera_id not in runtime.manager.camera_ids():
            return None  # an API-only process, or a camera another worker runs
        ring: PacketRing = runtime._ring(camera_id)
        return ring

    app.state.live = LiveService(ring_for)
    try:
        yield
    finally:
        await app.state.live.aclose()


router = APIRouter(prefix="/cameras", tags=["live view"], lifespan=_lifespan)
Operator = Annotated[Principal, Depends(require("operator"))]


def _live(request: Request) -> LiveService:
    live: LiveService | None = getattr(request.app.state, "live", None)
    if live is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "live view is not running")
    return live


def _session_url(camera_id: str, session_id: str) -> str:
    return f"/api/v1/cameras/{camera_id}/webrtc/{session_id}"


@router.post(
    "/{camera_id}/webrtc",
    status_code=status.HTTP_201_CREATED,
    response_class=Response,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {SDP: {"schema": {"type": "string", "description": "SDP offer"}}},
        }
    },
    responses={
        201: {
            "content": {SDP: {"schema": {"type": "string"}}},
            "description": "The SDP answer; `Location` is the session to DELETE.",
        },
        400: {"description": "The body is not a usable SDP offer."},
        404: {"description": "No such camera."},
        415: {"description": "Content-Type is not application/sdp."},
        422: {"description": "The browser offers no H.264 (packetization-mode 1)."},
        503: {"description": "The camera is not run here or has no video yet."},
    },
)
async def start_live_view(
    camera_id: str, request: Request, services: ServicesDep, who: Operator
) -> Response:
    """Start watching a camera: H.264 passed through from the camera when the browser can
    decode it, else transcoded once per camera. Every start is audited."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != SDP:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"send the SDP offer as {SDP}")
    offer = (await request.body()).decode("utf-8", errors="replace")
    if not await asyncio.to_thread(_watch_allowed, services, who, camera_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no camera {camera_id}")
    try:
        session, answer = await _live(request).open(camera_id, offer, who.name)
    except LiveError as err:
        raise _http(err) from None
    location = _session_url(camera_id, session.id)
    return Response(
        answer,
        status_code=status.HTTP_201_CREATED,
        media_type=SDP,
        headers={"Location": location, "Cache-Control": "no-store"},
    )


@router.delete(
    "/{camera_id}/webrtc/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such session (already ended)."}},
)
async def stop_live_view(camera_id: str, session_id: str, request: Request, _: Operator) -> None:
    """End a live session; the camera's upstream stays as long as others watch."""
    if not await _live(request).close(session_id, camera_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live session {session_id}")


def _watch_allowed(services: Services, who: Principal, camera_id: str) -> bool:
    """Whether the camera exists within the caller's grid scope; records the view in the
    audit log (who watched what is as traceable as who downloaded a clip)."""
    with services.tx() as session:
        camera = repo.get_camera(session, camera_id)
        if camera is None or not allows(visible_grid_codes(session, who), camera.grid_code):
            return False
        audit(session, who.name, "live_view", "camera", camera_id)
    return True


def _http(err: LiveError) -> HTTPException:
    """Live errors as HTTP (the app's handlers would make every XueliangError a 422)."""
    if isinstance(err, BadOfferError):
        return HTTPException(status.HTTP_400_BAD_REQUEST, str(err))
    if isinstance(err, NoCommonCodecError):
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err))
    if isinstance(err, LiveUnavailableError):
        return HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(err), headers={"Retry-After": "2"}
        )
    return HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(err))
