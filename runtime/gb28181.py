"""GB/T 28181 in a process: the SIP endpoint (when this process holds it), and channel media.

Devices register to one SIP address, but cameras are spread over worker processes by
leases. Every camera process with ``gb28181.enabled`` builds a :class:`Gb28181`:

- **Active/standby endpoint.** Each competes for the service lease ``gb28181-sip``
  (:mod:`storage.service_leases`), renewed every ``workers.lease_s / 3`` like camera
  leases. Only the holder binds the SIP port and runs :class:`SipEndpoint`; it stops
  serving before its lease can expire when it cannot renew it (fencing), and a standby
  takes over once it has expired. Device state is in the database already
  (:class:`DatabaseRegistry`), so the new holder only waits for devices to re-register or
  keep alive; nonces are derived from the shared key, so it can check them.
- **Media in every camera process.** The camera runtime's source factory reads
  ``gb28181://DEVICE/CHANNEL`` cameras (:class:`~ingest.gb28181.media.Gb28181Source`) on
  this process's media ports, with ``gb28181.media_host`` in the SDP. The INVITE and BYE
  go to the endpoint: directly when this process holds it, else over HTTP to the holder
  (the lease row's ``url``, its ``server.advertise_url``; routes in
  ``api/routes/internal.py``, authenticated with a token derived from the installation's
  key). So media goes straight to the process that analyses it.
- **Alarms** arrive at the holder and are fed to its camera runtime, which records the
  ``device_alarm`` incident with a clip when it runs the channel's camera, without one
  when another process does (``docs/deployment.md``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.exc import SQLAlchemyError

from config.errors import XueliangError
from config.settings import GB28181Settings
from ingest.errors import CameraUnreachableError, StreamEndedError
from ingest.gb28181.endpoint import (
    Call,
    DevicePeer,
    DevicePolicy,
    EndpointConfig,
    EndpointStats,
    SipEndpoint,
)
from ingest.gb28181.manscdp import Alarm, CatalogItem, DeviceInfo
from ingest.gb28181.media import (
    Gb28181Source,
    MediaCall,
    MediaConfig,
    MediaStats,
    PortPool,
    parse_channel_url,
)
from ingest.sources import Source, SourceOptions, open_source
from runtime.internal import advertise_url, internal_client, refusal
from runtime.metrics import Gb28181Collector
from runtime.services import Services
from storage import gb28181 as repo
from storage import service_leases
from storage.cameras import channel_camera
from storage.grids import place_camera
from storage.models import Camera, utcnow
from storage.secrets import SecretBox

__all__ = [
    "BYE_PATH",
    "INVITE_PATH",
    "SERVICE",
    "AlarmFeed",
    "DatabaseRegistry",
    "DeviceAlarm",
    "Gb28181",
    "NotTheEndpoint",
    "alarm_fields",
]

log = logging.getLogger(__name__)

_ALARM_QUEUE = 1000
#: The service lease of the SIP endpoint (one holder per installation).
SERVICE = "gb28181-sip"
#: The internal routes a camera process calls on the endpoint's holder.
INVITE_PATH = "/internal/gb28181/invite"
BYE_PATH = "/internal/gb28181/bye"
#: Fencing: stop serving when the lease could not be renewed for this part of its time.
_FENCE = 0.8


class NotTheEndpoint(XueliangError):
    """This process does not run the SIP endpoint now (another one holds its lease)."""


@dataclass(frozen=True, slots=True)
class DeviceAlarm:
    """An alarm a device reported, for the camera runtime to turn into an incident."""

    device_id: str
    alarm: Alarm
    at: float  # wall clock when it arrived


AlarmFeed = asyncio.Queue[DeviceAlarm]


def alarm_fields(item: DeviceAlarm) -> dict[str, Any]:
    """The ``alarm`` object of a ``device_alarm`` incident."""
    a = item.alarm
    return {
        "priority": a.priority,
        "method": a.method,
        "type": a.type,
        "description": a.description,
        "time": a.time,
        "device_id": item.device_id,
        "channel_id": a.device_id,
    }


@dataclass
class DatabaseRegistry:
    """The endpoint's :class:`~ingest.gb28181.endpoint.DeviceRegistry` on the database."""

    services: Services
    settings: GB28181Settings
    alarms: AlarmFeed
    loop: asyncio.AbstractEventLoop | None = None

    def policy(self, device_id: str) -> DevicePolicy:
        with self.services.db.session() as session:
            device = repo.get_device(session, device_id)
            password = repo.device_password(session, device_id, self.services.secrets)
        if device is None:
            return DevicePolicy(known=False, enabled=True, password=None)
        return DevicePolicy(known=True, enabled=device.enabled, password=password)

    def register(self, device_id: str, peer: DevicePeer, contact: str, expires_s: int) -> bool:
        now = utcnow()
        with self.services.tx() as session:
            change = repo.register(
                session,
                device_id,
                transport=peer.transport,
                address=f"{peer.host}:{peer.port}",
                contact=contact or f"sip:{device_id}@{peer.host}:{peer.port}",
                expires_at=now + timedelta(seconds=expires_s),
                now=now,
                accept_unknown=self.settings.allow_unknown,
            )
        return change.accepted and change.changed

    def unregister(self, device_id: str) -> None:
        with self.services.tx() as session:
            repo.unregister(session, device_id, utcnow())

    def keepalive(self, device_id: str, peer: DevicePeer | None) -> bool:
        address = f"{peer.host}:{peer.port}" if peer is not None else None
        with self.services.tx() as session:
            return repo.keepalive(session, device_id, utcnow(), address)

    def catalog(self, device_id: str, items: Sequence[CatalogItem]) -> None:
        with self.services.tx() as session:
            change = repo.replace_catalog(session, device_id, items, utcnow())
            if change is not None and self.settings.auto_cameras and change.added:
                _cameras_for(session, device_id, change.added)

    def device_info(self, info: DeviceInfo) -> None:
        with self.services.tx() as session:
            repo.set_device_info(
                session, info.device_id, info.name, info.manufacturer, info.model, info.firmware
            )

    def alarm(self, device_id: str, alarm: Alarm) -> None:
        item = DeviceAlarm(device_id, alarm, utcnow().timestamp())
        if self.loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self.loop.call_soon_threadsafe(self._enqueue, item)

    def _enqueue(self, item: DeviceAlarm) -> None:
        try:
            self.alarms.put_nowait(item)
        except asyncio.QueueFull:
            log.error("GB/T 28181: alarm of %s dropped: the alarm queue is full", item.device_id)

    def expire(self, deadline_s: float) -> list[str]:
        with self.services.tx() as session:
            return repo.expire(session, utcnow(), deadline_s)

    def peer(self, device_id: str) -> DevicePeer | None:
        with self.services.db.session() as session:
            device = repo.get_device(session, device_id)
        if device is None or not device.online or not device.address:
            return None
        host, _, port = device.address.rpartition(":")
        if (device.transport or "").upper() == "TCP":
            return DevicePeer(host, int(port), "TCP")
        return DevicePeer(host, int(port), "UDP")


def _cameras_for(session: Any, device_id: str, channel_ids: Sequence[str]) -> None:
    """One camera per new channel (``gb28181.auto_cameras``), placed by its coordinates."""
    taken = {
        (c.gb28181 or {}).get("channel_id")
        for c in session.query(Camera).filter(Camera.gb28181.is_not(None))
    }
    for channel_id in channel_ids:
        channel = repo.get_channel(session, device_id, channel_id)
        if channel is None or channel_id in taken:
            continue
        row = channel_camera(channel)
        session.add(row)
        place_camera(session, row, grid_given=False)
        log.info("GB/T 28181: camera %s made for channel %s", row.id, channel_id)


class _HolderClient:
    """The endpoint as a process that does not hold it reaches it: the internal HTTP routes
    of the holder (``api/routes/internal.py``), with the installation's internal token."""

    def __init__(self, box: SecretBox, timeout_s: float) -> None:
        self._box, self._timeout_s = box, timeout_s
        self._http: httpx.AsyncClient | None = None

    def open(self) -> None:
        self._http = internal_client(self._box, self._timeout_s)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def invite(self, url: str, body: dict[str, Any]) -> MediaCall:
        """Ask the holder at ``url`` to INVITE; its answer names the call and its SSRC."""
        response = await self._post(url + INVITE_PATH, body)
        if response.status_code != 200:
            raise CameraUnreachableError(
                f"INVITE of {body['channel_id']} through the endpoint at {url}: "
                + refusal(response)
            )
        return _media_call(response)

    async def bye(self, url: str, call_id: str) -> None:
        """Ask the holder at ``url`` to BYE (best effort, as a BYE always is)."""
        try:
            response = await self._post(url + BYE_PATH, {"call_id": call_id})
        except CameraUnreachableError as err:
            log.debug("BYE of call %s not sent: %s", call_id, err)
            return
        if response.status_code >= 300:
            log.debug("BYE of call %s through %s: %s", call_id, url, refusal(response))

    async def _post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        if self._http is None:
            raise CameraUnreachableError("GB/T 28181: the process is not started")
        try:
            return await self._http.post(url, json=body)
        except httpx.HTTPError as err:
            raise CameraUnreachableError(
                f"the GB/T 28181 endpoint at {url} did not answer: {str(err) or type(err).__name__}"
            ) from err


def _media_call(response: httpx.Response) -> MediaCall:
    try:
        data = response.json()
        ssrc = data.get("ssrc")
        return MediaCall(str(data["call_id"]), int(ssrc) if ssrc is not None else None)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CameraUnreachableError(f"unusable answer of the GB/T 28181 endpoint: {err}") from err


class _LoopSignalling:
    """The endpoint as a reader thread sees it: blocking calls, run on the event loop, where
    :class:`Gb28181` sends them to the endpoint here or to the process that holds it."""

    def __init__(self, gb: Gb28181, loop: asyncio.AbstractEventLoop, timeout_s: float):
        self._gb, self._loop, self._timeout_s = gb, loop, timeout_s
        #: Where each open call was made: the holder's URL, or None for this process.
        self._via: dict[str, str | None] = {}

    def invite(
        self,
        device_id: str,
        channel_id: str,
        media_host: str,
        media_port: int,
        *,
        tcp: bool,
        stop: threading.Event,
    ) -> MediaCall:
        work = self._gb.open_call(device_id, channel_id, media_host, media_port, tcp=tcp)
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        # The device's answer, plus an HTTP hop when the endpoint runs elsewhere.
        deadline = time.monotonic() + self._timeout_s + 5
        # Polled, not one long wait: a camera stopped meanwhile (shutdown, removal) must
        # not wait for a device that does not answer.
        while not stop.wait(0.05):
            if future.done():
                call, via = future.result()
                self._via[call.call_id] = via
                return call
            if time.monotonic() > deadline:
                break
        # Not cancelled: the INVITE may be answered at the endpoint all the same, and a call
        # nobody ends has the device streaming to a closed port. It is ended once made.
        future.add_done_callback(self._end_abandoned)
        if stop.is_set():
            raise StreamEndedError(f"INVITE of {channel_id} abandoned: the camera was stopped")
        raise CameraUnreachableError(f"INVITE of {channel_id} got no answer")

    def _end_abandoned(self, future: Any) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        call, via = future.result()
        with contextlib.suppress(RuntimeError):  # the loop is closing
            asyncio.run_coroutine_threadsafe(self._gb.end_call(call, via), self._loop)

    def bye(self, call: MediaCall) -> None:
        """Send the BYE without waiting for its answer: a BYE is best effort, and a reader
        thread waiting on a device that is gone held up stopping its camera (and a shutdown)
        for the whole transaction timeout."""
        via = self._via.pop(call.call_id, None)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to send with
            future = asyncio.run_coroutine_threadsafe(self._gb.end_call(call, via), self._loop)
            future.add_done_callback(functools.partial(_bye_done, call.call_id))


def _bye_done(call_id: str, future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("BYE of call %s failed: %s", call_id, future.exception())


@dataclass
class Gb28181:
    """The GB/T 28181 part of a camera process: the endpoint while it holds its lease, the
    media ports and source factory always, counters, and the alarm feed."""

    services: Services
    settings: GB28181Settings
    alarms: AlarmFeed = field(default_factory=lambda: asyncio.Queue(_ALARM_QUEUE))
    media_stats: MediaStats = field(default_factory=MediaStats)
    #: SIP counters, kept over every tenure of the endpoint in this process.
    sip_stats: EndpointStats = field(default_factory=EndpointStats)
    registry: DatabaseRegistry = field(init=False)
    ports: PortPool = field(init=False)
    #: This process, as the lease names its holder.
    holder_id: str = field(init=False)
    #: Where the other processes reach this one (``server.advertise_url``).
    url: str = field(init=False)
    _client: _HolderClient = field(init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _serving: SipEndpoint | None = field(default=None, init=False)
    _tenure: asyncio.Task[None] | None = field(default=None, init=False)
    #: Calls the endpoint opened in this process, by Call-ID (ended by BYE, here or remote).
    _calls: dict[str, Call] = field(default_factory=dict, init=False)
    _lease_ok: float = field(default=0.0, init=False)
    _paused_until: float = field(default=0.0, init=False)
    _announced: bool | None = field(default=None, init=False)
    _collector: Gb28181Collector | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.registry = DatabaseRegistry(self.services, s, self.alarms)
        self.ports = PortPool(*s.media_port_range)
        self.holder_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.url = advertise_url(self.services.settings.server)
        self._client = _HolderClient(self.services.secrets, s.invite_timeout_s + 3)

    @property
    def endpoint(self) -> SipEndpoint:
        """The SIP endpoint this process runs; :class:`NotTheEndpoint` in a standby."""
        if self._serving is None:
            raise NotTheEndpoint(
                "the GB/T 28181 SIP endpoint does not run in this process now: another "
                "process of the installation holds it (or it is starting)"
            )
        return self._serving

    @property
    def _lease_s(self) -> float:
        return self.services.settings.workers.lease_s

    # --- the lease: active or standby ------------------------------------------------------
    async def start(self) -> None:
        """Bind to the running loop and compete for the endpoint once: a process that wins
        it serves SIP before it answers HTTP."""
        if self._loop is not None:
            return
        self._loop = self.registry.loop = asyncio.get_running_loop()
        self._collector = Gb28181Collector(self.sip_stats, self.media_stats)
        self.services.registry.register(self._collector)
        self._client.open()
        await self._keep_lease()

    async def run(self) -> None:
        """Renew the lease (or wait to take it) every ``lease_s / 3`` until cancelled; then
        stop the endpoint and give the lease back, so a standby takes over at once."""
        await self.start()
        try:
            while True:
                await asyncio.sleep(self._lease_s / 3)
                await self._keep_lease()
        finally:
            await self._stop_serving()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._release)
            await self._client.aclose()
            if self._collector is not None:
                self.services.registry.unregister(self._collector)

    async def _keep_lease(self) -> None:
        """One round: renew or take the lease; serve SIP exactly while holding it."""
        if self._tenure is not None and self._tenure.done():
            await self._endpoint_failed()
        if time.monotonic() < self._paused_until:
            return
        held = await self._claim()
        if held and self._tenure is None:
            await self._start_serving()
        elif not held and self._tenure is not None:
            log.warning("GB/T 28181: the SIP endpoint's lease is lost; stopping the endpoint")
            await self._stop_serving()
        self._announce(held)

    async def _claim(self) -> bool:
        began = time.monotonic()  # the lease runs from before the claim: err early
        try:
            held = await asyncio.to_thread(self._claim_now)
        except Exception as err:
            log.warning("GB/T 28181: cannot renew the SIP endpoint's lease: %s", err)
            # Serve on while the lease surely runs; stop before another process may take it
            # (two endpoints would answer one device).
            fresh = time.monotonic() - self._lease_ok < self._lease_s * _FENCE
            return self._tenure is not None and fresh
        if held:
            self._lease_ok = began
        return held

    async def _start_serving(self) -> None:
        """A tenure: a fresh endpoint (a stopped one cannot restart) on the shared counters."""
        config = _endpoint_config(self.services, self.settings)
        endpoint = SipEndpoint(config, self.registry, stats=self.sip_stats)
        self._tenure = asyncio.create_task(endpoint.run(), name="gb28181-sip")
        started = asyncio.create_task(endpoint.wait_started())
        try:
            await asyncio.wait({self._tenure, started}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
        if self._tenure.done():  # its port is taken
            await self._endpoint_failed()
            return
        self._serving = endpoint

    async def _endpoint_failed(self) -> None:
        """The endpoint ended by itself (port taken, a crash): hand the lease on, and let
        another process have it for a lease time before competing again."""
        task, self._tenure, self._serving = self._tenure, None, None
        error = task.exception() if task is not None and not task.cancelled() else None
        log.error(
            "GB/T 28181: the SIP endpoint on %s:%d stopped: %s; handing its lease on",
            self.settings.host,
            self.settings.port,
            error,
        )
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._release)
        self._paused_until = time.monotonic() + self._lease_s

    async def _stop_serving(self) -> None:
        task, self._tenure, self._serving = self._tenure, None, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.error("GB/T 28181: the SIP endpoint failed: %s", task.exception())

    def _announce(self, held: bool) -> None:
        if held == self._announced:
            return
        self._announced = held
        if held:
            log.info(
                "GB/T 28181: this process (%s, %s) holds the SIP endpoint", self.holder_id, self.url
            )
        else:
            log.info("GB/T 28181: standing by; another process holds the SIP endpoint")

    def _claim_now(self) -> bool:
        with self.services.db.session() as session:
            return service_leases.claim(
                session, SERVICE, self.holder_id, self.url, utcnow(), self._lease_s
            )

    def _release(self) -> None:
        with self.services.db.session() as session:
            service_leases.release(session, SERVICE, self.holder_id)

    def _holder(self) -> service_leases.LeaseHolder | None:
        with self.services.db.session() as session:
            return service_leases.current_holder(session, SERVICE, utcnow())

    # --- calls ------------------------------------------------------------------------------
    async def invite_here(
        self, device_id: str, channel_id: str, media_host: str, media_port: int, *, tcp: bool
    ) -> MediaCall:
        """INVITE with the endpoint this process runs (:class:`NotTheEndpoint` in a
        standby); the internal route calls it for the other processes."""
        call = await self.endpoint.invite(device_id, channel_id, media_host, media_port, tcp=tcp)
        self._calls[call.invite.call_id] = call
        return MediaCall(call.invite.call_id, call.media_ssrc)

    async def bye_here(self, call_id: str) -> None:
        """End a call this process's endpoint opened; nothing for a call it does not know
        (ended already). :class:`NotTheEndpoint` in a standby: the dialog is gone with it."""
        call = self._calls.pop(call_id, None)
        endpoint = self.endpoint
        if call is not None:
            await endpoint.bye(call)

    async def open_call(
        self, device_id: str, channel_id: str, media_host: str, media_port: int, *, tcp: bool
    ) -> tuple[MediaCall, str | None]:
        """INVITE through the endpoint wherever it runs; with the holder's URL the call must
        be ended at (None: here)."""
        if self._serving is not None:
            return await self.invite_here(
                device_id, channel_id, media_host, media_port, tcp=tcp
            ), None
        url = await self._holder_url()
        body = {
            "device_id": device_id,
            "channel_id": channel_id,
            "media_host": media_host,
            "media_port": media_port,
            "tcp": tcp,
        }
        return await self._client.invite(url, body), url

    async def end_call(self, call: MediaCall, via: str | None) -> None:
        """BYE a call where it was opened (best effort: the endpoint may have moved)."""
        if via is not None:
            await self._client.bye(via, call.call_id)
            return
        try:
            await self.bye_here(call.call_id)
        except NotTheEndpoint:
            log.debug("BYE of call %s not sent: the endpoint moved", call.call_id)

    async def _holder_url(self) -> str:
        try:
            holder = await asyncio.to_thread(self._holder)
        except SQLAlchemyError as err:
            raise CameraUnreachableError(f"cannot find the GB/T 28181 endpoint: {err}") from err
        if holder is None:
            raise CameraUnreachableError(
                "no process holds the GB/T 28181 SIP endpoint now (a take-over is under way, "
                "or gb28181.enabled is set on no camera process)"
            )
        if holder.holder == self.holder_id:
            raise CameraUnreachableError("the GB/T 28181 SIP endpoint is starting here")
        return holder.url

    def sources(self, url: str, options: SourceOptions) -> Source:
        """The camera runtime's source factory: GB/T 28181 channels here, the rest as usual."""
        channel = parse_channel_url(url)
        if channel is None or self._loop is None:
            return open_source(url, options)
        s = self.settings
        signalling = _LoopSignalling(self, self._loop, s.invite_timeout_s)
        media = MediaConfig(
            bind_host=s.host,
            advertised_host=s.media_host or s.host,
            ports=s.media_port_range,
            tcp=s.media_transport == "tcp",
        )
        return Gb28181Source(*channel, signalling, media, self.ports, options, self.media_stats)


def _endpoint_config(services: Services, s: GB28181Settings) -> EndpointConfig:
    return EndpointConfig(
        sip_id=s.sip_id,
        domain=s.domain,
        host=s.host,
        port=s.port,
        password=s.password.get_secret_value() if s.password else None,
        keepalive_s=s.keepalive_s,
        keepalive_misses=s.keepalive_misses,
        allow_unknown=s.allow_unknown,
        invite_timeout_s=s.invite_timeout_s,
        nonce_secret=_nonce_secret(services),
    )


def _nonce_secret(services: Services) -> bytes:
    """Shared by every process of the installation: derived from the credential key."""
    return services.secrets.derive(b"gb28181-nonce")
