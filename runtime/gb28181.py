"""GB/T 28181 in a process: the SIP endpoint with its database side, and its cameras' media.

:class:`Gb28181` is built by the composition root before the camera runtime and hands it
two things: a source factory that reads ``gb28181://DEVICE/CHANNEL`` cameras through the
endpoint (:class:`~ingest.gb28181.media.Gb28181Source`), and the feed of device alarms the
camera runtime turns into ``device_alarm`` incidents (with a clip when it runs the camera).
:class:`DatabaseRegistry` is the endpoint's durable side: every registration, keepalive and
catalog is a transaction of ``storage.gb28181``, so any process can answer for a device.

The endpoint runs in one process of an installation (``gb28181.enabled`` on a camera role;
``docs/deployment.md``). Its media is received by the process that runs the camera.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from config.settings import GB28181Settings
from ingest.camera import SourceFactory
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
    MediaConfig,
    MediaStats,
    PortPool,
    parse_channel_url,
)
from ingest.sources import Source, SourceOptions, open_source
from runtime.metrics import Gb28181Collector
from runtime.services import Services
from storage import gb28181 as repo
from storage.cameras import channel_camera
from storage.grids import place_camera
from storage.models import Camera, utcnow

__all__ = ["AlarmFeed", "DatabaseRegistry", "DeviceAlarm", "Gb28181", "alarm_fields"]

log = logging.getLogger(__name__)

_ALARM_QUEUE = 1000


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


class _LoopSignalling:
    """The endpoint as a reader thread sees it: blocking calls run on the event loop."""

    def __init__(self, endpoint: SipEndpoint, loop: asyncio.AbstractEventLoop, timeout_s: float):
        self._endpoint, self._loop, self._timeout_s = endpoint, loop, timeout_s

    def invite(
        self,
        device_id: str,
        channel_id: str,
        media_host: str,
        media_port: int,
        *,
        tcp: bool,
        stop: threading.Event,
    ) -> Call:
        work = self._endpoint.invite(device_id, channel_id, media_host, media_port, tcp=tcp)
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        deadline = time.monotonic() + self._timeout_s + 2
        # Polled, not one long wait: a camera stopped meanwhile (shutdown, removal) must
        # not wait for a device that does not answer.
        while not stop.wait(0.05):
            if future.done():
                return future.result()
            if time.monotonic() > deadline:
                break
        future.cancel()
        if stop.is_set():
            raise StreamEndedError(f"INVITE of {channel_id} abandoned: the camera was stopped")
        raise CameraUnreachableError(f"INVITE of {channel_id} got no answer")

    def bye(self, call: Call) -> None:
        future = asyncio.run_coroutine_threadsafe(self._endpoint.bye(call), self._loop)
        try:
            future.result(self._timeout_s + 2)
        except Exception as err:  # best effort: the device may be gone
            log.debug("BYE of %s failed: %s", call.channel_id, err)


@dataclass
class Gb28181:
    """The GB/T 28181 part of a process: endpoint, media ports, counters, alarm feed."""

    services: Services
    settings: GB28181Settings
    alarms: AlarmFeed = field(default_factory=lambda: asyncio.Queue(_ALARM_QUEUE))
    media_stats: MediaStats = field(default_factory=MediaStats)
    registry: DatabaseRegistry = field(init=False)
    endpoint: SipEndpoint = field(init=False)
    ports: PortPool = field(init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.registry = DatabaseRegistry(self.services, s, self.alarms)
        self.endpoint = SipEndpoint(_endpoint_config(self.services, s), self.registry)
        self.ports = PortPool(*s.media_port_range)

    @property
    def sip_stats(self) -> EndpointStats:
        return self.endpoint.stats

    async def run(self) -> None:
        self._loop = self.registry.loop = asyncio.get_running_loop()
        collector = Gb28181Collector(self.endpoint.stats, self.media_stats)
        self.services.registry.register(collector)
        try:
            await self.endpoint.run()
        finally:
            self.services.registry.unregister(collector)

    def sources(self, url: str, options: SourceOptions) -> Source:
        """The camera runtime's source factory: GB/T 28181 channels here, the rest as usual."""
        channel = parse_channel_url(url)
        if channel is None or self._loop is None:
            return open_source(url, options)
        s = self.settings
        signalling = _LoopSignalling(self.endpoint, self._loop, s.invite_timeout_s)
        media = MediaConfig(
            bind_host=s.host,
            advertised_host=s.media_host or s.host,
            ports=s.media_port_range,
            tcp=s.media_transport == "tcp",
        )
        return Gb28181Source(*channel, signalling, media, self.ports, options, self.media_stats)


def gb28181_sources(gb: Gb28181 | None) -> SourceFactory:
    """The source factory of a process: with GB/T 28181 when it runs the endpoint."""
    return gb.sources if gb is not None else open_source


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
