"""One camera's analysis: frames → motion → incident rules → clip jobs → the spool.

Pure analytics (motion, rules) decide; this module only moves their results to the
database, the recorder and the archive. Blocking work (cv2, SQL) runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import cv2
import numpy as np
import numpy.typing as npt

from analytics.motion import MotionConfig, MotionDetector, MotionResult
from analytics.rules import (
    IncidentEnded,
    IncidentEvent,
    IncidentRules,
    IncidentStarted,
    NewPeak,
    RuleConfig,
)
from analytics.zones import Zone
from api.archiver import Archiver
from api.services import Services
from ingest.recorder import ClipJob, ClipRecorder, ClipResult
from ingest.slot import FrameSlot
from ingest.types import Frame
from storage.incidents import (
    NewIncident,
    clip_key,
    create_incident,
    end_incident,
    mark_clip_failed,
    new_incident_id,
    snapshot_key,
)
from storage.spool import SpoolEntry

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class PipelineConfig:
    """What one camera's analysis needs, built from its registry row and the settings."""

    camera_id: str
    grid_code: str | None
    motion_enabled: bool
    motion: MotionConfig
    zones: tuple[Zone, ...]
    rules: RuleConfig
    pre_s: float
    post_s: float


@dataclass
class _Open:
    """An incident in progress on this camera."""

    incident_id: str
    started_at: datetime
    job: ClipJob | None
    peak_image: Image | None = None
    peak_score: float = 0.0


@dataclass
class CameraPipeline:
    """Consumes a camera's analysis frames until cancelled."""

    config: PipelineConfig
    services: Services
    frames: FrameSlot[Frame]
    recorder: ClipRecorder
    archiver: Archiver
    spool_host: str
    _rules: IncidentRules = field(init=False)
    _detector: MotionDetector = field(init=False)
    _open: _Open | None = field(default=None, init=False)
    _finishing: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._rules = IncidentRules(self.config.rules)
        self._detector = MotionDetector(self.config.motion, self.config.zones)

    @property
    def camera_id(self) -> str:
        return self.config.camera_id

    async def run(self) -> None:
        try:
            while True:
                frame = await self.frames.get()
                if not self.config.motion_enabled:
                    continue
                result = await asyncio.to_thread(
                    self._detector.detect, frame.image, frame.wallclock
                )
                await self._apply(frame, result)
        finally:
            await self._stop()

    async def _apply(self, frame: Frame, result: MotionResult) -> None:
        events = self._rules.update(frame.wallclock, result.motion, result.motion_area)
        for event in events:
            await self._on_event(event, frame)

    async def _on_event(self, event: IncidentEvent, frame: Frame) -> None:
        if isinstance(event, IncidentEnded):
            await self._end(event.at)
        elif isinstance(event, IncidentStarted):
            await self._start(event.started_at)
        elif isinstance(event, NewPeak) and self._open is not None:
            # Keep one frame per incident: the one with the most motion so far.
            self._open.peak_image = frame.image
            self._open.peak_score = event.score

    async def _start(self, started_wallclock: float) -> None:
        started_at = _utc(started_wallclock)
        incident_id = new_incident_id()
        try:
            job: ClipJob | None = self.recorder.start(
                started_wallclock, self.config.pre_s, name=f"{incident_id}.mp4"
            )
        except Exception:
            log.exception("camera %s: clip recording could not start", self.camera_id)
            job = None
        new = NewIncident(
            camera_id=self.camera_id,
            grid_code=self.config.grid_code,
            type="motion",
            started_at=started_at,
            incident_id=incident_id,
            spool_host=self.spool_host,
        )
        await asyncio.to_thread(self._db_create, new)
        self._open = _Open(incident_id, started_at, job)
        log.info("camera %s: incident %s started", self.camera_id, incident_id)

    def _db_create(self, new: NewIncident) -> None:
        with self.services.tx() as session:
            create_incident(session, new)

    async def _end(self, ended_wallclock: float) -> None:
        incident, self._open = self._open, None
        if incident is None:
            return
        ended_at = _utc(ended_wallclock)
        await asyncio.to_thread(self._db_end, incident, ended_at)
        if incident.job is not None:
            incident.job.finish(ended_wallclock, self.config.post_s)
        task = asyncio.create_task(self._archive(incident))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        log.info("camera %s: incident %s ended", self.camera_id, incident.incident_id)

    def _db_end(self, incident: _Open, ended_at: datetime) -> None:
        with self.services.tx() as session:
            end_incident(session, incident.incident_id, ended_at, peak_motion=incident.peak_score)

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
        self.archiver.submit(entry)

    def _spool_entry(self, incident: _Open, clip: ClipResult) -> SpoolEntry:
        snap_path = snap_key = snap_sha = None
        if incident.peak_image is not None:
            snap = self.archiver.spool.file_path(f"{incident.incident_id}.jpg")
            snap_sha = _write_jpeg(snap, incident.peak_image)
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
        """End an open incident (camera removed or service stopping) and let clips finish."""
        if self._open is not None:
            with contextlib.suppress(Exception):
                await self._end(time.time())
        if self._finishing:
            await asyncio.wait(self._finishing, timeout=30)


def _utc(wallclock: float) -> datetime:
    return datetime.fromtimestamp(wallclock, UTC)


def _write_jpeg(path: object, image: Image) -> str:
    import hashlib
    import os

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise ValueError("JPEG encoding failed")
    data = buf.tobytes()
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, str(path))
    return hashlib.sha256(data).hexdigest()
