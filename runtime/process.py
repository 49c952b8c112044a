"""The composition root: one function builds everything a process runs for its role.

:func:`build_process` maps the settings to adapters (:class:`~runtime.services.Services`),
builds the background workers (delivery, retention, and for camera roles the archiver and
the camera runtime) and the live-view service, and hands each part what it needs: the live
view gets the camera runtime's ring lookup (and its router, for cameras run elsewhere, the
database's leases), the API gets a :class:`CameraControl`. Nothing
is patched onto a shared object after construction, and no part reaches into another's
private attributes. :meth:`Process.running` is the lifespan: start-up checks, the workers'
tasks, and an orderly shutdown (live sessions first, then the workers, then the adapters).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from config.errors import XueliangError
from config.settings import Settings
from delivery.worker import DeliveryWorker
from ingest.onvif import warm_up as warm_onvif
from ingest.ring import PacketRing
from ingest.sources import open_source
from live.webrtc import LiveService
from runtime.archiver import Archiver
from runtime.audit_anchor import AnchorWorker
from runtime.cameras import CameraRuntime, build_spool
from runtime.cases import CaseDeadlineWorker
from runtime.gb28181 import Gb28181
from runtime.internal import advertise_url
from runtime.live import LiveRouter
from runtime.metrics import CaseCollector, SpoolCollector
from runtime.retention import RetentionWorker
from runtime.roles import ROLES
from runtime.services import Services
from storage.case_flow import CaseCounts, case_counts
from storage.event_notify import EventListener

__all__ = ["ROLES", "CameraControl", "Process", "build_process"]

log = logging.getLogger(__name__)


class Worker(Protocol):
    """A background part of the process: runs until cancelled."""

    async def run(self) -> None: ...


class CameraControl(Protocol):
    """What the API may ask of the cameras this process runs."""

    def changed(self) -> None:
        """The camera registry changed: reconcile now rather than at the next poll."""

    def snapshot(self, camera_id: str) -> bytes | None:
        """The latest JPEG of a camera run here, or ``None``."""


class _NoCameras:
    """An API-only process: cameras run on workers, which see changes at their next poll."""

    def changed(self) -> None:
        return None

    def snapshot(self, camera_id: str) -> bytes | None:
        return None


@dataclass
class Process:
    """Everything one process runs, built by :func:`build_process`."""

    services: Services
    role: str
    live: LiveService
    #: Live view from this node: here when the camera runs here, else through its worker.
    live_router: LiveRouter
    workers: list[Worker]
    archiver: Archiver
    cameras: CameraRuntime | None = None
    #: GB/T 28181 (``gb28181.enabled``): channel media here, and the SIP endpoint while
    #: this process holds its lease.
    gb28181: Gb28181 | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)

    @property
    def camera_control(self) -> CameraControl:
        return self.cameras if self.cameras is not None else _NoCameras()

    @property
    def serves_api(self) -> bool:
        return self.role != "worker"

    def _case_counts(self) -> CaseCounts:
        with self.services.db.session() as session:
            return case_counts(session)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start-up checks and the workers' tasks; stops them all on exit."""
        self.services.hub.bind(asyncio.get_running_loop())
        await asyncio.to_thread(self.services.start)
        # Parsing the ONVIF WSDLs takes seconds: do it now, not in the first request.
        warm = asyncio.create_task(warm_onvif(), name="onvif-warm-up")
        collector = SpoolCollector(self.archiver.spool)
        self.services.registry.register(collector)
        cases = CaseCollector(self._case_counts) if self.serves_api else None
        if cases is not None:
            self.services.registry.register(cases)
        if self.gb28181 is not None:
            # Before HTTP is answered: the process that wins the endpoint already serves SIP.
            await self.gb28181.start()
        self._tasks = [asyncio.create_task(w.run(), name=type(w).__name__) for w in self.workers]
        try:
            yield
        finally:
            # Viewers first, while their cameras still run; then the workers.
            await self.live.aclose()
            await self.live_router.aclose()
            for task in [*self._tasks, warm]:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.services.registry.unregister(collector)
            if cases is not None:
                self.services.registry.unregister(cases)
            self.services.close()


def build_process(
    settings: Settings, services: Services | None = None, role: str = "all"
) -> Process:
    """Build the parts of a process of ``role`` (one of :data:`ROLES`)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    services = services or Services.from_settings(settings)
    archiver = Archiver(services, build_spool(services))
    workers: list[Worker] = [
        DeliveryWorker(services),
        RetentionWorker(services),
        CaseDeadlineWorker(services),
        AnchorWorker(services),
    ]
    if services.db.dialect == "postgresql":
        # Other processes' events wake this one's SSE streams and delivery at their commit.
        workers.append(EventListener(settings.database_url, services.hub.notify))
    cameras: CameraRuntime | None = None
    gb: Gb28181 | None = None
    if role in ("all", "worker"):
        if settings.workers.simulated_cameras:
            raise XueliangError(
                "workers.simulated_cameras is set: it is for the city simulator (tests/scale) "
                "only; unset XUELIANG_WORKERS__SIMULATED_CAMERAS to run real cameras"
            )
        if settings.gb28181.enabled:
            # Devices register to one SIP address: every such camera process competes for
            # the endpoint's lease and only the holder runs it; each reads the media of the
            # channel cameras it runs, asking the holder to INVITE them to its own address.
            gb = Gb28181(services, settings.gb28181)
            workers.append(gb)
        # The spool lives on the host that records; only camera workers upload from it.
        cameras = CameraRuntime(
            services,
            archiver,
            role,
            source_factory=gb.sources if gb is not None else open_source,
            alarms=gb.alarms if gb is not None else None,
        )
        workers += [archiver, cameras]
    ring = cameras.ring if cameras is not None else _no_ring
    live = LiveService(ring)
    router = LiveRouter(
        live,
        services,
        lambda camera_id: ring(camera_id) is not None,
        advertise_url(settings.server),
    )
    return Process(services, role, live, router, workers, archiver, cameras, gb)


def _no_ring(camera_id: str) -> PacketRing | None:
    return None
