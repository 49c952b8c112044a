"""Internal routes: what the processes of one installation ask each other, on every role.

- A camera process that reads a GB/T 28181 channel but does not hold the SIP endpoint asks
  the holder to INVITE the channel to *its own* media address, and later to BYE the call
  (``runtime/gb28181.py``, ``docs/deployment.md``).
- A node that does not run a camera forwards a viewer's WHEP offer, and its DELETE, to the
  worker that does (``runtime/live.py``); the viewer's rights were checked, and the view
  audited, by the node the viewer asked.

These routes are not part of the public API: they are left out of the OpenAPI document,
and every request must carry the token derived from the installation's key
(:func:`runtime.internal.internal_token`), compared in constant time; without it, 401
before anything else is looked at.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ServicesDep
from api.routes.webrtc import http_error
from ingest.errors import IngestError
from live.errors import LiveError
from runtime.gb28181 import BYE_PATH, INVITE_PATH, Gb28181, NotTheEndpoint
from runtime.internal import INTERNAL_HEADER, token_matches
from runtime.live import LIVE_PATH
from runtime.process import Process


async def _peer_only(request: Request, services: ServicesDep) -> None:
    """401 unless the caller is a process of this installation (no I/O: async)."""
    if not token_matches(services.secrets, request.headers.get(INTERNAL_HEADER)):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "internal route: missing or wrong token")


router = APIRouter(include_in_schema=False, dependencies=[Depends(_peer_only)])


async def _gb28181(request: Request) -> Gb28181:
    process: Process = request.app.state.process
    if process.gb28181 is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "GB/T 28181 is not enabled in this process"
        )
    return process.gb28181


Gb28181Dep = Annotated[Gb28181, Depends(_gb28181)]
_ID = r"^\d{20}$"


class InviteIn(BaseModel):
    """Where the asking process receives the channel's media."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(pattern=_ID)
    channel_id: str = Field(pattern=_ID)
    # Written into the SDP: an address or a host name, nothing that could break a line.
    media_host: str = Field(pattern=r"^[0-9A-Za-z.:\-]{1,253}$")
    media_port: int = Field(ge=1, le=65535)
    tcp: bool = False


class CallOut(BaseModel):
    """The call: its Call-ID (to BYE it) and the SSRC its RTP carries (None: unknown)."""

    call_id: str
    ssrc: int | None


class ByeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(min_length=1, max_length=200)


@router.post(INVITE_PATH)
async def invite(body: InviteIn, gb: Gb28181Dep) -> CallOut:
    """INVITE a channel for another process: 503 when this one does not hold the
    endpoint (the caller retries, finding the holder again), 502 when the device fails."""
    try:
        call = await gb.invite_here(
            body.device_id, body.channel_id, body.media_host, body.media_port, tcp=body.tcp
        )
    except NotTheEndpoint as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(err)) from None
    except IngestError as err:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(err)) from None
    return CallOut(call_id=call.call_id, ssrc=call.media_ssrc)


@router.post(BYE_PATH, status_code=status.HTTP_204_NO_CONTENT)
async def bye(body: ByeIn, gb: Gb28181Dep) -> None:
    """End a call this process's endpoint opened (204 also for one ended already)."""
    try:
        await gb.bye_here(body.call_id)
    except NotTheEndpoint as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(err)) from None


class OfferIn(BaseModel):
    """A viewer's WHEP offer, forwarded by the node the viewer asked."""

    model_config = ConfigDict(extra="forbid")

    offer: str = Field(min_length=1, max_length=256 * 1024)
    viewer: str = Field(min_length=1, max_length=200)  # for the logs; audited by the sender


class AnswerOut(BaseModel):
    answer: str
    session_id: str


@router.post(LIVE_PATH + "/{camera_id}", status_code=status.HTTP_201_CREATED)
async def live_offer(camera_id: str, body: OfferIn, request: Request) -> AnswerOut:
    """Answer a forwarded offer from this process's live view only (never forwarded on:
    503 when the camera does not run here, and the sender looks its worker up again)."""
    process: Process = request.app.state.process
    try:
        session, answer = await process.live.open(camera_id, body.offer, body.viewer)
    except LiveError as err:
        raise http_error(err) from None
    return AnswerOut(answer=answer, session_id=session.id)


@router.delete(LIVE_PATH + "/{camera_id}/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def live_close(camera_id: str, session_id: str, request: Request) -> None:
    """End a forwarded session (404 when it has ended already)."""
    process: Process = request.app.state.process
    if not await process.live.close(session_id, camera_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live session {session_id}")
