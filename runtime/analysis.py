"""One camera's analysis: frames → motion / persons → incident rules → clips → the spool.

Pure analytics (motion, person counting, rules) decide; this module only moves their
results to the database, the recorder and the archive. Blocking work (cv2, the detector,
SQL) runs in threads. A camera may have several incidents open at once: one for motion,
one per crowd zone, each with its own clip job and snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from analytics.crowd import CrowdResult, CrowdRules, PersonCounter, draw_boxes
from analytics.incidents import Ended, IncidentEvent, Peak, Started
from analytics.motion import MotionConfig, MotionDetector, MotionResult
from analytics.persons import PersonDetector
from analytics.quality import Problem, QualityConfig, QualityResult
from analytics.rules import IncidentRules, RuleConfig
from analytics.zones import Zone
from ingest.recorder import ClipJob, ClipRecorder, ClipResult
from ingest.slot import FrameSlot
from ingest.types import Frame
from runtime.archiver import Archiver
from runtime.quality import QualityWatch
from runtime.services import Services
from storage.clips import frame_at
from storage.durable import write_atomic
from storage.incidents import (
    NewIncident,
    clip_key,
    create_incident,
    end_incident,
    mark_clip_failed,
    new_incident_id,
    snapshot_key,
)
from storage.quality import QualityOrders
from storage.spool import SpoolEntry

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
MOTION = "motion"
TAMPER = "tamper"


@dataclass(frozen=True)
class CrowdConfig:
    """Gathering detection: ``threshold`` persons in a zone for ``dwell_s`` seconds."""

    threshold: int
    dwell_s: float
    quiet_s: float
    #: Person detection runs at most this often, and only while there was motion in the
    #: last ``motion_hold_s`` seconds, a gathering is open, or ``idle_every_s`` passed
    #: (a crowd standing still moves little): cost stays bounded per camera.
    fps: float = 1.0
    motion_hold_s: float = 10.0
    idle_every_s: float = 5.0


@dataclass(frozen=True)
class AnalysisConfig:
    """What one camera's analysis needs, built from its registry row and the settings."""

    camera_id: str
    grid_code: str | None
    motion_enabled: bool
    motion: MotionConfig
    zones: tuple[Zone, ...]
    rules: RuleConfig
    pre_s: float
    post_s: float
    crowd: CrowdConfig | None = None
    #: Picture quality diagnostics, checked every ``quality_every_s`` (None: off).
    quality: QualityConfig | None = None
    quality_every_s: float = 1.0
    tamper_incidents: bool = True


@dataclass
class _Open:
    """An incident in progress on this camera."""

    incident_id: str
    type: str
    started_at: datetime
    job: ClipJob | None
    #: The best frame so far: a drawn BGR image, or the analysed frame itself (converted to
    #: BGR only when the snapshot is written).
    peak_image: Image | Frame | None = None
    peak_score: float = 0.0


@dataclass
class CameraAnalysis:
    """Consumes a camera's analysis frames until cancelled."""

    config: AnalysisConfig
    services: Services
    frames: FrameSlot[Frame]
    recorder: ClipRecorder
    archiver: Archiver
    spool_host: str
    detector: PersonDetector | None = None
    _rules: IncidentRules = field(init=False)
    _motion: MotionDetector = field(init=False)
    _counter: PersonCounter | None = field(default=None, init=False)
    _crowd_rules: dict[str, CrowdRules] = field(default_factory=dict, init=False)
    _open: dict[str, _Open] = field(default_factory=dict, init=False)
    _early_peak: dict[str, tuple[Image | Frame, float]] = field(default_factory=dict, init=False)
    _finishing: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _last_frame: Frame | None = field(default=None, init=False)
    _last_motion: float = field(default=-1e18, init=False)
    _last_detect: float = field(default=-1e18, init=False)
    _quality: QualityWatch | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        config = self.config
        self._rules = IncidentRules(config.rules)
        self._motion = MotionDetector(config.motion, config.zones)
        if config.crowd is not None and self.detector is not None:
            self._counter = PersonCounter(self.detector, config.zones)
        if config.quality is not None:
            self._quality = QualityWatch(
                config.camera_id,
                config.grid_code,
                self.services,
                config.quality,
                config.quality_every_s,
                self._on_tamper if config.tamper_incidents else None,
            )

    @property
    def camera_id(self) -> str:
        return self.config.camera_id

    def quality_orders(self, orders: QualityOrders) -> None:
        """What the API asked of the quality checks (a reference, a PTZ move): applied
        at the next check; nothing when quality checks are off."""
        if self._quality is not None:
            self._quality.apply(orders)

    @property
    def quality(self) -> QualityResult | None:
        """The latest picture-quality check, ``None`` before the first (or when off)."""
        return self._quality.last if self._quality is not None else None

    async def run(self) -> None:
        try:
            while True:
                frame = await self.frames.get()
                self._last_frame = frame
                await self._analyse(frame)
        finally:
            # A removed camera's slot closes (ending this loop) while the runtime cancels
            # this task too: a cancel landing inside _stop() left incidents open and their
            # clips pending for ever (found by the soak test, tests/soak).
            await _finish_despite_cancel(self._stop())

    async def _analyse(self, frame: Frame) -> None:
        ts = frame.wallclock
        # Motion reads the luma plane; BGR is made only for the person detector and the
        # incident's snapshot.
        result = await asyncio.to_thread(self._detect_motion, frame)
        if result.motion:
            self._last_motion = ts
        if self.config.motion_enabled:
            await self._on_motion(frame, result)
        if self._counter is not None and self._detection_due(ts):
            self._last_detect = ts
            crowd = await asyncio.to_thread(self._counter.count, frame.image, ts)
            await self._on_crowd(frame, crowd)
        if self._quality is not None:
            await self._quality.maybe_check(frame)

    async def _on_tamper(self, problem: Problem, at: float) -> None:
        # A moment with the usual clip around it; the snapshot shows the damaged picture.
        alarm = {"kind": problem.kind.value, "score": round(problem.score, 3)}
        await self.raise_alarm(TAMPER, alarm, at)

    # Motion --------------------------------------------------------------------------------
    def _detect_motion(self, frame: Frame) -> MotionResult:
        return self._motion.detect(frame.gray, frame.wallclock, limited_range=frame.limited_range)

    async def _on_motion(self, frame: Frame, result: MotionResult) -> None:
        events = self._rules.update(frame.wallclock, result.motion, result.motion_area)

        async def peak_image(score: float) -> Frame:
            return frame  # converted to BGR only if it stays the snapshot

        await self._apply(MOTION, MOTION, events, peak_image)

    # Crowd ---------------------------------------------------------------------------------
    def _detection_due(self, ts: float) -> bool:
        crowd = self.config.crowd
        assert crowd is not None
        if ts - self._last_detect < 1.0 / crowd.fps:
            return False
        gathering = any(r.active for r in self._crowd_rules.values())
        recent_motion = ts - self._last_motion <= crowd.motion_hold_s
        return gathering or recent_motion or ts - self._last_detect >= crowd.idle_every_s

    async def _on_crowd(self, frame: Frame, result: CrowdResult) -> None:
        crowd = self.config.crowd
        assert crowd is not None
        for zone, persons in result.smoothed.items():
            rules = self._crowd_rules.get(zone)
            if rules is None:
                rules = self._crowd_rules[zone] = CrowdRules(
                    crowd.threshold, crowd.dwell_s, crowd.quiet_s
                )
            events = rules.update(result.ts, persons)

            async def peak_image(score: float) -> Image:
                label = f"{int(score)} persons"
                return await asyncio.to_thread(draw_boxes, frame.image, result.boxes, label)

            await self._apply(f"crowd:{zone}", "crowd", events, peak_image)

    # Alarms of the camera itself ---------------------------------------------------------------
    async def raise_alarm(self, type_: str, alarm: dict[str, Any], at: float) -> None:
        """An incident the camera reported (a GB/T 28181 device alarm): a moment, with the
        usual pre-roll and post-roll clip and the latest frame as its snapshot."""
        key = f"{type_}:{new_incident_id()}"
        await self._start(key, type_, at, alarm=alarm)
        if self._last_frame is not None:
            self._keep_peak(key, self._last_frame, 1.0)
        await self._end(key, at)

    # Incidents -----------------------------------------------------------------------------
    async def _apply(
        self,
        key: str,
        type_: str,
        events: list[IncidentEvent],
        peak_image: Callable[[float], Awaitable[Image | Frame]],
    ) -> None:
        """One loop for every kind of incident: the rules' Started / Peak / Ended events.

        ``key`` names the incident slot (one for motion, one per crowd zone);
        ``peak_image(score)`` gives the picture to keep when a frame is the best so far.
        """
        for event in events:
            if isinstance(event, Ended):
                await self._end(key, event.at, event.peak_score)
            elif isinstance(event, Started):
                await self._start(key, type_, event.started_at)
                incident = self._open[key]
                incident.peak_score = max(incident.peak_score, event.score)
            elif isinstance(event, Peak):
                self._keep_peak(key, await peak_image(event.score), event.score)

    def _keep_peak(self, key: str, image: Image | Frame, score: float) -> None:
        """Keep one frame per incident: the best so far (most motion, most persons).

        A gathering's peak may come during its dwell time, before the incident exists: it
        is held and handed to the incident when it starts.
        """
        incident = self._open.get(key)
        if incident is None:
            if key != MOTION:  # motion rules report peaks of the incident run only
                self._early_peak[key] = (image, score)
        elif score >= incident.peak_score:
            incident.peak_image, incident.peak_score = image, score

    async def _start(
        self, key: str, type_: str, started_wallclock: float, alarm: dict[str, Any] | None = None
    ) -> None:
        started_at = _utc(started_wallclock)
        incident_id = new_incident_id()
        try:
            job: ClipJob | None = self.recorder.start(
                started_wallclock,
                self.config.pre_s,
                name=f"{incident_id}.mp4",
                incident_id=incident_id,
            )
        except Exception:
            log.exception("camera %s: clip recording could not start", self.camera_id)
            job = None
        new = NewIncident(
            camera_id=self.camera_id,
            grid_code=self.config.grid_code,
            type=type_,
            started_at=started_at,
            incident_id=incident_id,
            spool_host=self.spool_host,
            alarm=alarm,
        )
        await asyncio.to_thread(self._db_create, new)
        incident = self._open[key] = _Open(incident_id, type_, started_at, job)
        if key in self._early_peak:
            incident.peak_image, incident.peak_score = self._early_peak.pop(key)
        log.info("camera %s: %s incident %s started", self.camera_id, type_, incident_id)

    def _db_create(self, new: NewIncident) -> None:
        with self.services.tx() as session:
            create_incident(session, new)

    async def _end(self, key: str, ended_wallclock: float, peak: float | None = None) -> None:
        incident = self._open.pop(key, None)
        if incident is None:
            return
        ended_at = _utc(ended_wallclock)
        await asyncio.to_thread(self._db_end, incident, ended_at, peak)
        if incident.job is not None:
            incident.job.finish(ended_wallclock, self.config.post_s)
        task = asyncio.create_task(self._archive(incident))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        log.info("camera %s: incident %s ended", self.camera_id, incident.incident_id)

    def _db_end(self, incident: _Open, ended_at: datetime, peak: float | None) -> None:
        """Record the end; ``peak`` is the rules' own (None when stopped early: the best
        frame seen so far). Motion's peak is its moving share; a crowd's, its persons."""
        if incident.type == MOTION:
            motion_peak, peak_persons = incident.peak_score, None
        else:
            motion_peak, peak_persons = None, int(incident.peak_score if peak is None else peak)
        with self.services.tx() as session:
            end_incident(session, incident.incident_id, ended_at, motion_peak, peak_persons)

    async def _archive(self, incident: _Open) -> None:
        """Wait for the clip to be written, then hand it and the snapshot to the spool."""
        if incident.job is None:
            await asyncio.to_thread(self._fail, incident, "clip recording could not start")
            return
        try:
            result = await incident.job
        except Exception as err:
            log.exception("camera %s: clip of %s failed", self.camera_id, incident.incident_id)
            await asyncio.to_thread(self._fail, incident, f"clip could not be written: {err}")
            return
        entry = await asyncio.to_thread(self._spool_entry, incident, result)
        await self.archiver.submit(entry)
        # In the spool's manifest now: the journal that would have rebuilt it can go.
        await asyncio.to_thread(result.drop_journal)

    def _spool_entry(self, incident: _Open, clip: ClipResult) -> SpoolEntry:
        snap_path = snap_key = snap_sha = None
        peak = incident.peak_image
        image = peak.image if isinstance(peak, Frame) else peak
        if image is None:  # the incident ended before a peak was seen: its first moment
            image = frame_at(clip.path, incident.started_at.timestamp() - clip.start_wallclock)
        if image is not None:
            snap = self.archiver.spool.file_path(f"{incident.incident_id}.jpg")
            snap_sha = write_jpeg(snap, image)
            snap_path = str(snap)
            snap_key = snapshot_key(self.camera_id, incident.started_at, incident.incident_id)
        return SpoolEntry(
            incident_id=incident.incident_id,
            camera_id=self.camera_id,
            clip_path=str(clip.path),
            clip_key=clip_key(self.camera_id, incident.started_at, incident.incident_id),
            clip_sha256=clip.sha256,
            clip_size=clip.size,
            duration_s=clip.duration_s,
            snapshot_path=snap_path,
            snapshot_key=snap_key,
            snapshot_sha256=snap_sha,
        )

    def _fail(self, incident: _Open, reason: str) -> None:
        with self.services.tx() as session:
            mark_clip_failed(session, incident.incident_id, reason)

    async def _stop(self) -> None:
        """End open incidents (camera removed or service stopping) and let clips finish."""
        now = time.time()
        for key in list(self._open):
            with contextlib.suppress(Exception):
                await self._end(key, now)
        if self._finishing:
            await asyncio.wait(self._finishing, timeout=30)


async def _finish_despite_cancel(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to its end even if this task is cancelled meanwhile, then re-raise
    the cancellation."""
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()


def _utc(wallclock: float) -> datetime:
    return datetime.fromtimestamp(wallclock, UTC)


def write_jpeg(path: Path, image: Image) -> str:
    """Write a JPEG durably (temp + fsync + rename); returns its SHA-256."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise ValueError("JPEG encoding failed")
    data = buf.tobytes()
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()
