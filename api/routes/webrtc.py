"""Live view, WHEP style: the browser POSTs an SDP offer, gets the answer and a session URL.

Any node answers: the process's :class:`~runtime.live.LiveRouter` serves a camera run here
from its :class:`~live.webrtc.LiveService`, and forwards the offer (and the DELETE) of any
other to the worker holding the camera's lease, whose media then goes straight to the
browser. Who may watch is decided, and audited, here.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from api.deps import LiveDep, ServicesDep, require
from api.scope import allows, visible_grid_codes
from live.errors import BadOfferError, LiveError, LiveUnavailableError, NoCommonCodecError
from runtime.live import LiveForwardError
from runtime.services import Services
from storage import cameras as repo
from storage.audit import audit
from storage.tokens import Principal

SDP = "application/sdp"
#: The largest SDP offer read. A browser's is 2–10 KB (Chromium with every codec and a
#: dozen candidates: ~8 KB); parsing one is linear, but a peer connection per megabyte of
#: garbage is not worth accepting.
MAX_OFFER_BYTES = 64 * 1024


router = APIRouter(prefix="/cameras", tags=["live view"])
Operator = Annotated[Principal, Depends(require("operator"))]


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
        413: {"description": f"The offer is larger than {MAX_OFFER_BYTES} bytes."},
        415: {"description": "Content-Type is not application/sdp."},
        422: {"description": "The browser offers no H.264 (packetization-mode 1)."},
        502: {"description": "The worker running the camera refused the forwarded offer."},
        503: {
            "description": "No worker runs the camera now, or it has no video yet (retry "
            "after `Retry-After`)."
        },
    },
)
async def start_live_view(
    camera_id: str, request: Request, services: ServicesDep, live: LiveDep, who: Operator
) -> Response:
    """Start watching a camera: its H.264 passed through when browsers decode it (8-bit
    4:2:0), as one of the browser's offered H.264 payload types, else transcoded once per
    camera. Any node answers (the offer goes to the camera's worker). Every start is
    audited."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != SDP:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"send the SDP offer as {SDP}")
    offer = (await _offer_bytes(request)).decode("utf-8", errors="replace")
    if not await asyncio.to_thread(_watch_allowed, services, who, camera_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no camera {camera_id}")
    try:
        answer = await live.open(camera_id, offer, who.name)
    except LiveError as err:
        raise http_error(err) from None
    location = _session_url(camera_id, answer.session_id)
    return Response(
        answer.sdp,
        status_code=status.HTTP_201_CREATED,
        media_type=SDP,
        headers={"Location": location, "Cache-Control": "no-store"},
    )


@router.delete(
    "/{camera_id}/webrtc/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such session (already ended)."}},
)
async def stop_live_view(camera_id: str, session_id: str, live: LiveDep, _: Operator) -> None:
    """End a live session; the camera's upstream stays as long as others watch."""
    if not await live.close(camera_id, session_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live session {session_id}")


async def _offer_bytes(request: Request) -> bytes:
    """The body, read no further than :data:`MAX_OFFER_BYTES` (413 beyond)."""
    too_large = HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE, f"an SDP offer is at most {MAX_OFFER_BYTES} bytes"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_OFFER_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_OFFER_BYTES:
            raise too_large
    return bytes(body)


def _watch_allowed(services: Services, who: Principal, camera_id: str) -> bool:
    """Whether the camera exists within the caller's grid scope; records the view in the
    audit log (who watched what is as traceable as who downloaded a clip)."""
    with services.tx() as session:
        camera = repo.get_camera(session, camera_id)
        if camera is None or not allows(visible_grid_codes(session, who), camera.grid_code):
            return False
        audit(session, who.name, "live_view", "camera", camera_id)
    return True


def http_error(err: LiveError) -> HTTPException:
    """Live errors as HTTP (the app's handlers would make every XueliangError a 422)."""
    if isinstance(err, BadOfferError):
        return HTTPException(status.HTTP_400_BAD_REQUEST, str(err))
    if isinstance(err, NoCommonCodecError):
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err))
    if isinstance(err, LiveUnavailableError):
        return HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(err), headers={"Retry-After": "2"}
        )
    if isinstance(err, LiveForwardError):
        return HTTPException(status.HTTP_502_BAD_GATEWAY, str(err))
    return HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(err))
