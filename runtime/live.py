"""Live view from any node: a camera run here is served here, any other by its worker.

Cameras are spread over workers by leases (``storage/leases.py``), but a browser's WHEP
offer reaches whichever node the load balancer picked, often an ``api`` node that runs no
camera. :class:`LiveRouter` answers the offer with this process's
:class:`~live.webrtc.LiveService` when the camera runs here; otherwise it looks up the
holder of the camera's lease and its URL (``workers.url``, the worker's
``server.advertise_url``) and forwards the offer over the internal routes
(``api/routes/internal.py``, :mod:`runtime.internal`). The answer names the worker's own
ICE candidates, so the media goes straight from the worker to the browser; only the two
HTTP exchanges (offer, DELETE) pass through this node.

Nothing about a forwarded session is remembered here: its DELETE is forwarded to whoever
holds the camera's lease then. When the worker dies its viewers' connections fail; the
console reconnects, and once another worker has taken the lease over the new offer is
forwarded there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from live.errors import BadOfferError, LiveError, LiveUnavailableError, NoCommonCodecError
from live.webrtc import LiveService
from runtime.internal import internal_client, refusal
from runtime.services import Services
from storage.leases import CameraHolder, holder
from storage.models import utcnow

__all__ = ["LIVE_PATH", "LiveAnswer", "LiveForwardError", "LiveRouter"]

log = logging.getLogger(__name__)

#: The internal route a worker answers forwarded offers on: ``{LIVE_PATH}/{camera_id}``.
LIVE_PATH = "/internal/live"
#: aiortc gathers its ICE candidates before it answers: allow for that and a busy worker.
FORWARD_TIMEOUT_S = 15.0


class LiveForwardError(LiveError):
    """The worker running the camera refused the forwarded offer for a reason the viewer
    cannot fix by retrying (e.g. the processes do not share ``secrets.camera_key``)."""


@dataclass(frozen=True, slots=True)
class LiveAnswer:
    """The SDP answer, the session to DELETE, and the worker that serves it (``None``:
    this process)."""

    sdp: str
    session_id: str
    worker_url: str | None = None


class LiveRouter:
    """Opens and closes live sessions wherever their camera runs.

    ``runs_here(camera_id)`` says whether this process runs the camera (the camera
    runtime's ring lookup); ``url`` is this process's own advertised URL, so a lease held
    here for a camera not started yet is not forwarded to itself.
    """

    def __init__(
        self,
        live: LiveService,
        services: Services,
        runs_here: Callable[[str], bool],
        url: str,
        timeout_s: float = FORWARD_TIMEOUT_S,
    ) -> None:
        self._live = live
        self._services = services
        self._runs_here = runs_here
        self._url = url
        self._timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    async def open(self, camera_id: str, offer: str, viewer: str) -> LiveAnswer:
        """Answer ``offer`` here, or through the worker that runs the camera."""
        if self._runs_here(camera_id):
            session, sdp = await self._live.open(camera_id, offer, viewer)
            return LiveAnswer(sdp, session.id)
        url = await self._worker_url(camera_id)
        response = await self._send(
            "POST", f"{url}{LIVE_PATH}/{camera_id}", json={"offer": offer, "viewer": viewer}
        )
        if response.status_code != 201:
            raise _error(response, camera_id, url)
        try:
            body = response.json()
            answer = LiveAnswer(str(body["answer"]), str(body["session_id"]), url)
        except (ValueError, KeyError, TypeError) as err:
            raise LiveForwardError(f"unusable answer from the worker at {url}: {err}") from err
        log.info("camera %s: live view for %s forwarded to %s", camera_id, viewer, url)
        return answer

    async def close(self, camera_id: str, session_id: str) -> bool:
        """End a session here, or at the camera's worker; False when nobody has it."""
        if await self._live.close(session_id, camera_id):
            return True
        if self._runs_here(camera_id):
            return False
        try:
            url = await self._worker_url(camera_id)
            response = await self._send("DELETE", f"{url}{LIVE_PATH}/{camera_id}/{session_id}")
        except LiveUnavailableError:
            return False  # the worker is gone, and its sessions with it
        return response.status_code == 204

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _worker_url(self, camera_id: str) -> str:
        """The URL of the worker holding the camera's lease; 503-style errors when none
        can take the offer now (the console retries)."""
        found = await asyncio.to_thread(self._holder, camera_id)
        if found is None:
            raise LiveUnavailableError(
                f"camera {camera_id} is not run by any worker now (disabled, or its worker "
                "stopped and another takes it over within workers.lease_s)"
            )
        if found.url is None:
            raise LiveUnavailableError(
                f"worker {found.worker_id} running camera {camera_id} has not said where it "
                "is reached: upgrade it (it records server.advertise_url in workers.url)"
            )
        if found.url.rstrip("/") == self._url:
            raise LiveUnavailableError(f"camera {camera_id} is starting in this process")
        return found.url.rstrip("/")

    def _holder(self, camera_id: str) -> CameraHolder | None:
        with self._services.db.session() as session:
            return holder(session, camera_id, utcnow())

    async def _send(
        self, method: str, url: str, json: dict[str, str] | None = None
    ) -> httpx.Response:
        if self._http is None:
            self._http = internal_client(self._services.secrets, self._timeout_s)
        try:
            return await self._http.request(method, url, json=json)
        except httpx.HTTPError as err:
            raise LiveUnavailableError(
                f"the worker at {url} did not answer ({str(err) or type(err).__name__}); "
                "if it stopped, another takes its cameras over within workers.lease_s"
            ) from err


def _error(response: httpx.Response, camera_id: str, url: str) -> LiveError:
    """The worker's refusal as the live error the viewer's route maps back to HTTP."""
    said = f"camera {camera_id} at {url}: {refusal(response)}"
    if response.status_code == 503:
        return LiveUnavailableError(said)
    if response.status_code == 422:
        return NoCommonCodecError(said)
    if response.status_code == 400:
        return BadOfferError(said)
    return LiveForwardError(said)
