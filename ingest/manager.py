"""All cameras of this process: reconcile them with the registry, expose status and frames.

The composition root builds one :class:`CameraManager`, calls :meth:`CameraManager.apply`
with the full set of configured cameras whenever the registry changes (and at start), and
:meth:`CameraManager.aclose` at shutdown. ``apply`` starts new cameras, restarts changed
ones and stops removed ones, so edits take effect without a restart of the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ingest.backoff import Backoff
from ingest.camera import (
    CameraListener,
    CameraRunner,
    CameraStatus,
    SourceFactory,
    backoff_for,
    notify,
)
from ingest.slot import FrameSlot
from ingest.sources import open_source
from ingest.types import CameraStreamConfig, Frame, PacketSink

__all__ = ["CameraManager", "UnknownCameraError"]

log = logging.getLogger(__name__)


class UnknownCameraError(KeyError):
    """No camera with this id runs in this process."""


@dataclass
class _Camera:
    runner: CameraRunner
    task: asyncio.Task[None]
    slot: FrameSlot[Frame]
    sink: PacketSink | None


class CameraManager:
    """Runs one :class:`~ingest.camera.CameraRunner` task per configured camera.

    ``sink_factory(camera_id)`` is called once when a camera is first added (not on
    restarts after a config change, so a pre-roll ring survives edits); its sink is dropped
    when the camera is removed. The analysis slot of a camera likewise lives from its
    addition to its removal (:meth:`frames`), and is closed on removal. ``listener`` hears
    every state change on the event loop. All methods must be called on the event loop.
    """

    def __init__(
        self,
        *,
        listener: CameraListener | None = None,
        sink_factory: Callable[[str], PacketSink | None] | None = None,
        backoff_factory: Callable[[CameraStreamConfig], Backoff] = backoff_for,
        source_factory: SourceFactory = open_source,
    ) -> None:
        self._listener = listener
        self._sink_factory = sink_factory
        self._backoff_factory = backoff_factory
        self._source_factory = source_factory
        self._cameras: dict[str, _Camera] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    async def apply(self, configs: Mapping[str, CameraStreamConfig]) -> None:
        """Make the running cameras match ``configs`` (camera id → config).

        Unchanged cameras keep running untouched; changed ones restart with the new config
        (keeping their slot and sink); removed ones stop and release their threads.
        """
        for camera_id, config in configs.items():
            if camera_id != config.camera_id:
                raise ValueError(f"key {camera_id!r} differs from camera_id {config.camera_id!r}")
        async with self._lock:
            if self._closed:
                raise RuntimeError("the camera manager is closed")
            removed = [cid for cid in self._cameras if cid not in configs]
            changed = [
                cid
                for cid, cfg in configs.items()
                if cid in self._cameras and self._cameras[cid].runner.config != cfg
            ]
            await asyncio.gather(*(self._remove(cid) for cid in removed))
            await asyncio.gather(*(self._restart(cid, configs[cid]) for cid in changed))
            for cid, cfg in configs.items():
                if cid not in self._cameras:
                    self._add(cfg)
        if removed or changed:
            log.info(
                "cameras: %d running, %d removed, %d restarted",
                len(self._cameras),
                len(removed),
                len(changed),
            )

    def camera_ids(self) -> list[str]:
        """Ids of the cameras this manager runs (enabled or not)."""
        return list(self._cameras)

    def status(self, camera_id: str) -> CameraStatus:
        """The camera's current status; :class:`UnknownCameraError` if not managed here."""
        return self._get(camera_id).runner.status()

    def statuses(self) -> dict[str, CameraStatus]:
        """Every camera's status."""
        return {cid: cam.runner.status() for cid, cam in self._cameras.items()}

    def frames(self, camera_id: str) -> FrameSlot[Frame]:
        """The slot the analyser awaits for this camera (stable across config changes)."""
        return self._get(camera_id).slot

    def snapshot_jpeg(self, camera_id: str) -> bytes | None:
        """The camera's latest frame as JPEG; None before any frame or if not run here.

        Blocking (a few ms of encoding): call it from a thread or a ``def`` route.
        """
        camera = self._cameras.get(camera_id)
        return None if camera is None else camera.runner.snapshot_jpeg()

    async def aclose(self) -> None:
        """Stop every camera and wait for their threads."""
        async with self._lock:
            self._closed = True
            await asyncio.gather(*(self._remove(cid) for cid in list(self._cameras)))

    def _get(self, camera_id: str) -> _Camera:
        try:
            return self._cameras[camera_id]
        except KeyError:
            raise UnknownCameraError(camera_id) from None

    def _add(self, config: CameraStreamConfig) -> None:
        sink = self._sink_factory(config.camera_id) if self._sink_factory else None
        slot: FrameSlot[Frame] = FrameSlot(config.slot_size)
        self._cameras[config.camera_id] = self._start(config, slot, sink)

    def _start(
        self, config: CameraStreamConfig, slot: FrameSlot[Frame], sink: PacketSink | None
    ) -> _Camera:
        runner = CameraRunner(
            config,
            slot=slot,
            sink=sink,
            listener=self._listener,
            backoff=self._backoff_factory(config),
            source_factory=self._source_factory,
        )
        task = asyncio.create_task(runner.run(), name=f"camera-{config.camera_id}")
        task.add_done_callback(lambda t: _report_crash(config.camera_id, t))
        return _Camera(runner, task, slot, sink)

    async def _restart(self, camera_id: str, config: CameraStreamConfig) -> None:
        old = self._cameras[camera_id]
        await _stop(old)
        old.slot.resize(config.slot_size)
        new = self._start(config, old.slot, old.sink)
        self._cameras[camera_id] = new
        before, after = old.runner.state, new.runner.state
        if before is not after:
            # The new runner starts afresh; tell the listener so the stored status follows.
            notify(self._listener, camera_id, before, after, None, datetime.now(UTC))

    async def _remove(self, camera_id: str) -> None:
        camera = self._cameras[camera_id]
        await _stop(camera)
        camera.slot.close()
        del self._cameras[camera_id]


async def _stop(camera: _Camera) -> None:
    camera.task.cancel()
    try:
        await camera.task
    except asyncio.CancelledError:
        if (task := asyncio.current_task()) is not None and task.cancelling():
            raise  # we are being cancelled ourselves, not just the camera task


def _report_crash(camera_id: str, task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("camera %s: supervisor crashed", camera_id, exc_info=task.exception())
