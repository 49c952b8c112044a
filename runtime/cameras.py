"""The camera side of a process: keeps the registry's cameras running and analysed.

The registry (database) is the source of truth: the runtime polls it, and is woken when this
process changes it, then reconciles the ingest engine and one analysis pipeline per camera.
Camera state is written back to the database (status, transitions for availability,
``camera.online``/``camera.offline`` events), never kept only in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
from sqlalchemy.orm import Session

from analytics.motion import MotionConfig
from analytics.persons import DetectorConfig, PersonDetector
from analytics.quality import Kind, QualityConfig, QualityResult, Threshold
from analytics.rules import RuleConfig
from analytics.zones import parse_zones
from config.settings import QualitySettings
from ingest.camera import CameraState, CameraStatus, SourceFactory
from ingest.gb28181.media import channel_url
from ingest.manager import CameraManager
from ingest.recorder import ClipRecorder, RecorderConfig
from ingest.ring import PacketRing
from ingest.sources import open_source
from ingest.types import CameraStreamConfig
from runtime.analysis import AnalysisConfig, CameraAnalysis, CrowdConfig
from runtime.archiver import Archiver
from runtime.camera_state import StateChange, StateWriter
from runtime.gb28181 import AlarmFeed, DeviceAlarm, alarm_fields
from runtime.internal import advertise_url
from runtime.leasing import LeaseKeeper, WorkerIdentity
from runtime.metrics import CameraCollector, QualityCollector
from runtime.recovery import recover_clips
from runtime.services import Services
from storage import cameras as repo
from storage.incidents import (
    NewIncident,
    close_interrupted,
    create_incident,
    end_incident,
    fail_lost_clips,
)
from storage.models import Camera, utcnow
from storage.quality import QualityOrders, quality_orders
from storage.spool import ClipSpool

log = logging.getLogger(__name__)

POLL_S = 5.0  # registry changes made by other processes are seen within this delay
STATUS_FLUSH_S = 2.0


@dataclass(frozen=True)
class CameraPlan:
    """A camera as this process should run it."""

    stream: CameraStreamConfig
    analysis: AnalysisConfig
    version: int


@dataclass
class _Running:
    version: int
    ring: PacketRing
    recorder: ClipRecorder
    analysis: CameraAnalysis
    task: asyncio.Task[None]


class CameraRuntime:
    """Runs every enabled camera of the registry in this process."""

    def __init__(
        self,
        services: Services,
        archiver: Archiver,
        role: str = "all",
        *,
        source_factory: SourceFactory = open_source,
        alarms: AlarmFeed | None = None,
    ) -> None:
        # One OpenCV thread per caller, for the whole process: parallelism comes from the
        # cameras. OpenCV's own pool splits each small frame across the cores and its
        # workers spin between calls (bench/README.md: ~0.2-0.7 % of a core per camera).
        cv2.setNumThreads(1)
        self.services = services
        self.archiver = archiver
        self.host = socket.gethostname()
        self.worker_id = f"{self.host}:{os.getpid()}:{secrets.token_hex(3)}"
        #: Whose spool an incident's clip is in: the host and the spool's directory, since
        #: several workers may share a host (each restarted one judges only its own clips).
        self.spool_id = spool_identity(self.host, archiver.spool.root)
        self.role = role
        self.lease_s = services.settings.workers.lease_s
        #: Where the other processes reach this one (an ``api`` node forwarding live view).
        self.url = advertise_url(services.settings.server)
        identity = WorkerIdentity(self.worker_id, self.host, role, self.url, utcnow())
        self.leases = LeaseKeeper(services, identity, self.lease_s, on_taken=self._taken)
        self.states = StateWriter(services, self._status_update)
        self.manager = CameraManager(
            listener=self, sink_factory=self._ring_for, source_factory=source_factory
        )
        self._alarms = alarms
        self._rings: dict[str, PacketRing] = {}
        self._plans: dict[str, CameraPlan] = {}
        self._detector: PersonDetector | None = None
        self._running: dict[str, _Running] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # Hooks for the API (through runtime.process.CameraControl) ----------------------------
    def changed(self) -> None:
        """The registry changed (any thread): reconcile now."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def on_state(
        self, camera_id: str, old: CameraState, new: CameraState, error: str | None, at: datetime
    ) -> None:
        """CameraListener: queue the write; the writer keeps the order of transitions."""
        self.states.put(StateChange(camera_id, old, new, error, at))

    # Main loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        collector = CameraCollector(self.manager.statuses)
        self.services.registry.register(collector)
        quality = QualityCollector(self._quality_results)
        self.services.registry.register(quality)
        # Before any camera runs or is taken over: clips a crash interrupted come back
        # from their journals first, then what is still missing is failed.
        await asyncio.to_thread(self._recover_clips)
        await asyncio.to_thread(self._fail_lost_clips)
        await self._renew_leases()
        helpers = [
            asyncio.create_task(self._lease_loop(), name="camera-leases"),
            asyncio.create_task(self.states.run(), name="camera-states"),
            asyncio.create_task(self._flush_statuses(), name="camera-status"),
        ]
        if self._alarms is not None:
            helpers.append(asyncio.create_task(self._alarm_loop(self._alarms), name="alarms"))
        try:
            while True:
                self._wake.clear()
                await self._renew_leases()  # a camera just added is taken at once
                self._wake.clear()
                plans, orders = await asyncio.to_thread(self._load_plans)
                await self._reconcile(plans)
                for cid, order in orders.items():
                    if (running := self._running.get(cid)) is not None:
                        running.analysis.quality_orders(order)
                await self._release_surplus()
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel
                # that lands as the wake-up fires, and this loop then never stopped.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):
                        await self._wake.wait()
        finally:
            self.services.registry.unregister(collector)
            self.services.registry.unregister(quality)
            for task in helpers:
                task.cancel()
            await self._shutdown()

    def _quality_results(self) -> dict[str, QualityResult]:
        results = {cid: r.analysis.quality for cid, r in list(self._running.items())}
        return {cid: q for cid, q in results.items() if q is not None}

    async def _reconcile(self, plans: dict[str, CameraPlan]) -> None:
        self._plans = plans
        if self._detector is None and any(p.analysis.crowd for p in plans.values()):
            self._detector = await asyncio.to_thread(self._load_detector)
        # Removed cameras' pipelines stop first, while their streams still run: the clips of
        # the incidents they end get their post-roll instead of waiting for packets that
        # would never come (30 s, blocking this loop while other removed cameras went on
        # making incidents; found by the soak test, tests/soak).
        gone = [c for c in self._running if c not in plans]
        await asyncio.gather(*(self._stop_analysis(cid) for cid in gone))
        await self.manager.apply({cid: p.stream for cid, p in plans.items()})
        for cid in gone:
            self._rings.pop(cid, None)
        for cid, plan in plans.items():
            running = self._running.get(cid)
            if running is not None and running.version == plan.version:
                continue
            if running is not None:
                await self._stop_analysis(cid)
            self._start_analysis(plan)

    def _start_analysis(self, plan: CameraPlan) -> None:
        cid = plan.stream.camera_id
        ring = self._ring_for(cid)
        recorder = ClipRecorder(
            ring,
            self.archiver.spool.root,
            camera_id=cid,
            config=RecorderConfig(max_clip_s=self.services.settings.recording.max_clip_s + 120),
        )
        analysis = CameraAnalysis(
            plan.analysis,
            self.services,
            self.manager.frames(cid),
            recorder,
            self.archiver,
            self.spool_id,
            self._detector,
        )
        task = asyncio.create_task(analysis.run(), name=f"analysis-{cid}")
        task.add_done_callback(_report_crash)
        self._running[cid] = _Running(plan.version, ring, recorder, analysis, task)

    async def _stop_analysis(self, camera_id: str) -> None:
        running = self._running.get(camera_id)
        if running is None:
            return
        running.task.cancel()
        # asyncio.wait, not `suppress(CancelledError): await task`: that also swallowed a
        # cancel of this runtime landing meanwhile, and the service never shut down. The
        # entry stays in _running until closed, so a shutdown cut short here finishes it.
        await asyncio.wait([running.task])
        await running.recorder.aclose()
        self._running.pop(camera_id, None)

    async def _shutdown(self) -> None:
        # In parallel: each pipeline may wait up to post_s for its last clip to complete.
        await asyncio.gather(*(self._stop_analysis(cid) for cid in list(self._running)))
        await self.manager.aclose()
        await self.states.drain()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.leases.release_all)

    # Device alarms (GB/T 28181) --------------------------------------------------------------
    async def _alarm_loop(self, alarms: AlarmFeed) -> None:
        while True:
            item = await alarms.get()
            try:
                await self._raise_alarm(item)
            except Exception:
                log.exception("alarm of device %s not recorded", item.device_id)

    async def _raise_alarm(self, item: DeviceAlarm) -> None:
        """A ``device_alarm`` incident on the alarm channel's camera: with its clip when
        the camera runs here, else (no camera, or run elsewhere) the record alone."""
        fields = alarm_fields(item)
        camera_id = await asyncio.to_thread(self._alarm_camera, item)
        running = self._running.get(camera_id) if camera_id else None
        if running is not None:
            await running.analysis.raise_alarm("device_alarm", fields, item.at)
            return
        await asyncio.to_thread(self._record_alarm, camera_id, item, fields)

    def _alarm_camera(self, item: DeviceAlarm) -> str | None:
        with self.services.db.session() as session:
            return repo.camera_of_channel(session, item.device_id, item.alarm.device_id)

    def _record_alarm(
        self, camera_id: str | None, item: DeviceAlarm, fields: dict[str, Any]
    ) -> None:
        at = datetime.fromtimestamp(item.at, UTC)
        with self.services.tx() as session:
            grid = None
            if camera_id is not None:
                camera = repo.get_camera(session, camera_id)
                grid = camera.grid_code if camera else None
            new = NewIncident(
                camera_id=camera_id or item.alarm.device_id,
                grid_code=grid,
                type="device_alarm",
                started_at=at,
                alarm=fields,
                clip=False,
            )
            row = create_incident(session, new)
            end_incident(session, row.id, at)

    # Leases: which cameras this worker runs ------------------------------------------------
    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.leases.next_renewal_s())
            await self._renew_leases()

    async def _release_surplus(self) -> None:
        """Hand back cameras above our share, now that their pipelines have stopped."""
        done = sorted(c for c in self.leases.surplus if c not in self._running)
        if not done:
            return
        try:
            await asyncio.to_thread(self.leases.release, done)
            log.info(
                "worker %s: handed back %d camera(s) above its share", self.worker_id, len(done)
            )
        except Exception as err:
            log.warning("worker %s: cannot release cameras yet: %s", self.worker_id, err)

    async def _renew_leases(self) -> None:
        if await self.leases.renew():
            self._wake.set()

    def _taken(self, session: Session, camera_ids: list[str]) -> None:
        """Cameras taken over: incidents their previous holder left open are closed."""
        close_interrupted(session, camera_ids)

    def ring(self, camera_id: str) -> PacketRing | None:
        """The pre-roll ring of a camera run here (live view reads it), else ``None``."""
        if camera_id not in self.manager.camera_ids():
            return None  # a camera another worker runs
        return self._ring_for(camera_id)

    def snapshot(self, camera_id: str) -> bytes | None:
        """The latest JPEG of a camera run here, else ``None``."""
        return self.manager.snapshot_jpeg(camera_id)

    def _ring_for(self, camera_id: str) -> PacketRing:
        ring = self._rings.get(camera_id)
        if ring is None:
            # Long enough for pre-roll + the time it takes to confirm an incident (a few
            # frames for motion, the dwell time for a gathering) + a GOP.
            plan = self._plans.get(camera_id)
            pre_s = plan.analysis.pre_s if plan else self.services.settings.recording.pre_s
            crowd = plan.analysis.crowd if plan else None
            capacity = pre_s + max(20.0, (crowd.dwell_s + 10.0) if crowd else 0.0)
            ring = self._rings[camera_id] = PacketRing(capacity, camera_id=camera_id)
        return ring

    def _load_detector(self) -> PersonDetector:
        """The person detector: loaded once per process, shared by every camera."""
        path = self.services.settings.crowd.model_path
        config = DetectorConfig.yolo(path) if path else None
        detector = PersonDetector.load(config)
        log.info("person detector %s loaded", detector.name)
        return detector

    # Registry → plans ----------------------------------------------------------------------
    def _load_plans(self) -> tuple[dict[str, CameraPlan], dict[str, QualityOrders]]:
        """The plans of the cameras leased here, and what the API asked of their quality
        checks (reference requests, PTZ moves)."""
        leased = sorted(self.leases.held)
        with self.services.db.session() as session:
            rows = repo.cameras_by_id(session, leased) if leased else []
            orders = quality_orders(session, leased, utcnow())
        plans = {}
        for row in (r for r in rows if r.enabled):
            try:
                plans[row.id] = self._plan(row)
            except Exception as err:  # a bad row must not stop the other cameras
                log.error("camera %s: cannot run it: %s", row.id, err)
        return plans, orders

    def _plan(self, row: Camera) -> CameraPlan:
        s = self.services.settings
        stream = CameraStreamConfig(
            camera_id=row.id,
            main_url=self._main_url(row),
            sub_url=self.services.secrets.decrypt(row.sub_url_enc) if row.sub_url_enc else None,
            analysis_fps=s.ingest.analysis_fps,
            open_timeout_s=s.ingest.open_timeout_s,
            read_timeout_s=s.ingest.read_timeout_s,
            stall_timeout_s=s.ingest.stall_timeout_s,
            backoff_initial_s=s.ingest.backoff_initial_s,
            backoff_max_s=s.ingest.backoff_max_s,
            stable_after_s=s.ingest.stable_after_s,
            permanent_retry_s=s.ingest.auth_retry_s,
            allow_file_sources=s.ingest.allow_file_sources,
            egress=self.services.egress,
        )
        motion = row.analytics.get("motion", {})
        motion_cfg = MotionConfig(
            **{k: motion[k] for k in ("sensitivity", "min_area") if motion.get(k) is not None}
        )
        crowd = row.analytics.get("crowd", {})
        quality = row.analytics.get("quality") or {}
        crowd_cfg = (
            CrowdConfig(
                threshold=int(crowd.get("threshold", 5)),
                dwell_s=float(crowd.get("dwell_s", 10)),
                quiet_s=s.crowd.quiet_s,
                fps=s.crowd.fps,
            )
            if crowd.get("enabled")
            else None
        )
        analysis = AnalysisConfig(
            crowd=crowd_cfg,
            camera_id=row.id,
            grid_code=row.grid_code,
            motion_enabled=bool(motion.get("enabled", True)),
            motion=motion_cfg,
            zones=parse_zones(row.zones),
            rules=RuleConfig(
                start_frames=s.incidents.start_frames,
                quiet_s=s.incidents.quiet_s,
                max_len_s=s.incidents.max_len_s,
            ),
            pre_s=float(row.recording.get("pre_s", s.recording.pre_s)),
            post_s=float(row.recording.get("post_s", s.recording.post_s)),
            quality=_quality_config(s.quality, quality),
            quality_every_s=s.quality.every_s,
            tamper_incidents=_tamper_incidents(s.quality, quality),
        )
        return CameraPlan(stream=stream, analysis=analysis, version=row.version)

    def _main_url(self, row: Camera) -> str:
        if row.gb28181:  # no secret in it: derived, not stored
            return channel_url(row.gb28181["device_id"], row.gb28181["channel_id"])
        if row.main_url_enc is None:
            raise ValueError("no stream URL")
        return self.services.secrets.decrypt(row.main_url_enc)

    # State to the database -----------------------------------------------------------------
    def _status_update(
        self, camera_id: str, state: CameraState, error: str | None
    ) -> repo.StatusUpdate:
        try:
            st = self.manager.status(camera_id)
        except KeyError:
            return repo.StatusUpdate(state=state.value, last_error=error, worker_id=self.worker_id)
        return repo.StatusUpdate(
            state=state.value,
            fps=st.fps,
            last_frame_at=st.last_frame_at,
            reconnects=st.reconnects,
            frames_dropped=st.frames_dropped,
            last_error=error if error is not None else st.last_error,
            worker_id=self.worker_id,
        )

    async def _flush_statuses(self) -> None:
        """Measurements (fps, last frame, drops) go to the database every few seconds."""
        while True:
            await asyncio.sleep(STATUS_FLUSH_S)
            statuses = self.manager.statuses()
            try:
                await asyncio.to_thread(self._flush, statuses)
            except Exception:
                log.exception("camera statuses not recorded")

    def _flush(self, statuses: Mapping[str, CameraStatus]) -> None:
        """One transaction for every camera of this worker (not one per camera).

        Works from the ``statuses`` snapshot: a camera removed meanwhile is no longer in the
        manager (asking it raised, and the whole flush was lost; found by bench_gb28181).
        """
        self.states.flush({cid: (st.state, st.last_error) for cid, st in statuses.items()})

    def _recover_clips(self) -> None:
        done = recover_clips(self.services, self.archiver.spool)
        if done.recovered:
            self.services.hub.notify()
        if done.recovered or done.bad:
            log.warning(
                "clips interrupted by the last stop: %d recovered from their journals, "
                "%d journals unusable (kept as .bad), %d with nothing left to recover",
                len(done.recovered),
                done.bad,
                done.removed,
            )

    def _fail_lost_clips(self) -> None:
        """Clips this host was writing when it last stopped cannot be finished: say so."""
        spooled = {e.incident_id for e in self.archiver.spool.entries()}
        with self.services.tx() as session:
            failed = fail_lost_clips(session, self.spool_id, spooled)
        if failed:
            log.warning("%d clip(s) were interrupted by the last stop", failed)


def spool_identity(host: str, spool: Path) -> str:
    """``host:/abs/spool/dir`` (at most 200 characters: a long path is shortened to a hash)."""
    path = str(spool.resolve())
    ident = f"{host}:{path}"
    if len(ident) <= 200:
        return ident
    return f"{host[:150]}:sha256:{hashlib.sha256(path.encode()).hexdigest()[:40]}"


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s crashed", task.get_name(), exc_info=task.exception())


def build_spool(services: Services) -> ClipSpool:
    return ClipSpool(services.settings.spool_path)


#: The picture diagnoses a camera may set thresholds for (``analytics.quality.Kind``).
KINDS = frozenset(k.value for k in Kind)


def _quality_config(q: QualitySettings, camera: dict[str, Any]) -> QualityConfig | None:
    """The installation's picture-check settings, with the camera's own thresholds
    (``analytics.quality``, validated by ``api.schemas.cameras.QualitySettingsIn``)."""
    if not q.enabled or camera.get("enabled") is False:
        return None
    defaults = QualityConfig(hold_s=q.hold_s, clear_s=q.clear_s, learn_s=q.learn_s)
    own: dict[str, Threshold] = {}
    for kind, given in (camera.get("thresholds") or {}).items():
        if given is None or kind not in KINDS:
            continue
        default: Threshold = getattr(defaults, kind)
        raise_at = float(given["raise_at"])
        clear_at = given.get("clear_at")
        if clear_at is None:  # the default hysteresis, scaled to the camera's raise_at
            clear_at = raise_at * default.clear_at / default.raise_at
        hold_s = given.get("hold_s")
        own[kind] = Threshold(
            raise_at, float(clear_at), default.hold_s if hold_s is None else hold_s
        )
    return dataclasses.replace(defaults, **own)  # type: ignore[arg-type]


def _tamper_incidents(q: QualitySettings, camera: dict[str, Any]) -> bool:
    own = camera.get("tamper_incidents")
    return q.tamper_incidents if own is None else bool(own)
