"""The supervisor of one camera: keeps it connected and says truthfully what state it is in.

:meth:`CameraRunner.run` is one asyncio task per camera. Each *attempt* starts a reader
thread per connection (the main stream, plus the substream when there is one) running a
source's blocking ``run_once``; the task watches them. An attempt ends when a reader
fails or the stall watchdog fires (no video packet for ``stall_timeout_s``); the task then
stops the other reader, waits for both threads, and retries after the backoff delay
(capped exponential plus jitter, reset after stable uptime; permanent errors such as a wrong
password wait ``permanent_retry_s``). Cancelling the task stops the camera: it returns once
its threads have ended (bounded by about twice ``read_timeout_s`` for a frozen server).

States: ``connecting`` until the first attempt succeeds or fails; ``online`` while every
connection of the attempt delivers (packets, and decoded pictures on the analysed stream: a
stream that sends only undecodable packets never counts as online); ``offline`` (with
``last_error``) after a failure and through the retries until the camera is back;
``disabled`` when the config says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

import cv2

from ingest.backoff import Backoff, BackoffPolicy
from ingest.errors import IngestError, StreamEndedError, StreamStalledError
from ingest.handler import CameraCounters, ConnectionHandler, Decimator
from ingest.redact import configure_av_logging
from ingest.slot import FrameSlot
from ingest.sources import Source, SourceOptions, open_source
from ingest.types import CameraStreamConfig, Frame, PacketSink

__all__ = [
    "CameraListener",
    "CameraRunner",
    "CameraState",
    "CameraStatus",
    "SourceFactory",
    "backoff_for",
    "notify",
]

log = logging.getLogger(__name__)

SourceFactory = Callable[[str, SourceOptions], Source]


class CameraState(StrEnum):
    """What a camera is doing, as shown to integrators."""

    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """A snapshot of one camera's state and measurements."""

    camera_id: str
    state: CameraState
    #: When the camera entered ``state``.
    since: datetime
    #: Measured frames per second of the main stream (smoothed); None until measured.
    fps: float | None
    #: When the analysed stream last delivered a decoded frame.
    last_frame_at: datetime | None
    #: Times the camera came back online after losing its connection.
    reconnects: int
    #: Connection attempts since the camera started (the first one included).
    attempts: int
    #: Analysis frames discarded because the analyser did not keep up.
    frames_dropped: int
    #: Frames converted for analysis.
    frames_analysed: int
    #: Packets that failed to decode (packet loss); the picture repairs at the next keyframe.
    decode_errors: int
    #: Why the camera is offline, in words that say what to check; None when fine.
    last_error: str | None
    #: When the next connection attempt is due (offline cameras only).
    next_attempt_at: datetime | None
    width: int | None
    height: int | None
    codec: str | None


class CameraListener(Protocol):
    """Told about state changes, on the event loop (so it may touch loop-bound objects).

    Called on every change of state, and when an offline camera's error changes. Must not
    block: schedule slow work (database writes) as tasks.
    """

    def on_state(
        self,
        camera_id: str,
        old_state: CameraState,
        new_state: CameraState,
        error: str | None,
        at: datetime,
    ) -> None:
        """``camera_id`` went from ``old_state`` to ``new_state`` at ``at`` (UTC)."""


def notify(
    listener: CameraListener | None,
    camera_id: str,
    old: CameraState,
    new: CameraState,
    error: str | None,
    at: datetime,
) -> None:
    """Call ``listener.on_state``; a failing listener is logged, never fatal to the camera."""
    if listener is None:
        return
    try:
        listener.on_state(camera_id, old, new, error, at)
    except Exception:
        log.exception("camera %s: state listener failed", camera_id)


def backoff_for(config: CameraStreamConfig) -> Backoff:
    """The default backoff of a camera, from its config."""
    return Backoff(
        BackoffPolicy(
            initial_s=config.backoff_initial_s,
            max_s=config.backoff_max_s,
            reset_after_s=config.stable_after_s,
            permanent_s=config.permanent_retry_s,
        )
    )


@dataclass(frozen=True, slots=True)
class _Failure:
    """Why an attempt ended. Kept instead of the exception, whose traceback would pin the
    reader's frames (container, packets) in memory until the next failure."""

    message: str
    permanent: bool
    ffmpeg_log: tuple[str, ...] = ()


class _Reader:
    """One connection's thread: runs ``source.run_once`` and reports back to the loop."""

    def __init__(
        self, name: str, source: Source, handler: ConnectionHandler, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.source = source
        self.handler = handler
        self.stop = threading.Event()
        self.done: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def idle_s(self) -> float:
        """Seconds since the last packet (or the open); 0 while still connecting."""
        last = self.handler.last_activity
        return 0.0 if last is None else time.monotonic() - last

    def join(self) -> None:
        self._thread.join()

    def _main(self) -> None:
        error: BaseException | None = None
        try:
            self.source.run_once(self.stop, self.handler)
        except BaseException as err:  # reported to the task, which decides
            error = err
        # A closed loop raises RuntimeError: then nobody waits for this thread any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_settle, self.done, error)
        del error  # no traceback cycle through this frame


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class CameraRunner:
    """Keeps one camera connected; see the module docstring for the states.

    ``slot`` receives the analysis frames (a new one when omitted); ``sink`` the main
    stream's packets. ``backoff`` and ``source_factory`` are injectable for tests.
    """

    def __init__(
        self,
        config: CameraStreamConfig,
        *,
        slot: FrameSlot[Frame] | None = None,
        sink: PacketSink | None = None,
        listener: CameraListener | None = None,
        backoff: Backoff | None = None,
        source_factory: SourceFactory = open_source,
    ) -> None:
        configure_av_logging()
        self._config = config
        self._slot: FrameSlot[Frame] = slot if slot is not None else FrameSlot(config.slot_size)
        self._sink = sink
        self._listener = listener
        self._backoff = backoff or backoff_for(config)
        self._source_factory = source_factory
        self._counters = CameraCounters()
        self._dropped_before = self._slot.dropped  # the slot may outlive earlier runners
        self._state = CameraState.CONNECTING if config.enabled else CameraState.DISABLED
        self._since = datetime.now(UTC)
        self._error: str | None = None
        self._attempts = 0
        self._reconnects = 0
        self._was_online = False
        self._next_attempt: float | None = None
        self._current: list[_Reader] | None = None
        self._last_logged: str | None = None

    @property
    def config(self) -> CameraStreamConfig:
        """The config this runner was started with (immutable)."""
        return self._config

    @property
    def slot(self) -> FrameSlot[Frame]:
        """Where analysis frames arrive."""
        return self._slot

    @property
    def state(self) -> CameraState:
        """The current state."""
        return self._state

    async def run(self) -> None:
        """Keep the camera connected until the task is cancelled (returns at once if disabled)."""
        if not self._config.enabled:
            return
        while True:
            failure = await self._attempt()
            delay = self._backoff.failed(permanent=failure.permanent)
            self._next_attempt = time.time() + delay
            self._log_failure(failure, delay)
            try:
                await asyncio.sleep(delay)
            finally:
                self._next_attempt = None

    def status(self) -> CameraStatus:
        """The camera's state and measurements now."""
        c = self._counters
        online = self._state is CameraState.ONLINE
        return CameraStatus(
            camera_id=self._config.camera_id,
            state=self._state,
            since=self._since,
            fps=_round(c.fps.rate) if online else 0.0,
            last_frame_at=_utc(c.last_frame_at),
            reconnects=self._reconnects,
            attempts=self._attempts,
            frames_dropped=self._slot.dropped - self._dropped_before,
            frames_analysed=c.frames_analysed,
            decode_errors=c.decode_errors,
            last_error=self._error,
            next_attempt_at=_utc(self._next_attempt),
            width=c.width,
            height=c.height,
            codec=c.codec,
        )

    def latest_frame(self) -> Frame | None:
        """The last frame converted for analysis, if any."""
        return self._counters.latest

    def snapshot_jpeg(self, quality: int = 85) -> bytes | None:
        """The latest analysis frame as JPEG, or None before the first frame.

        While the camera is offline this is its last picture; ``status().last_frame_at``
        says how old. Blocking (a few ms of cv2 encoding): call it from a thread or a ``def`` route.
        """
        frame = self._counters.latest
        if frame is None:
            return None
        ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return bytes(buf) if ok else None

    # -- one attempt --------------------------------------------------------------------

    async def _attempt(self) -> _Failure:
        self._attempts += 1
        try:
            readers = self._readers(asyncio.get_running_loop())
        except Exception as err:  # a source factory that raises must not end the camera
            failure = self._failure_of(_as_ingest_error(self._config.camera_id, err))
            self._set_state(CameraState.OFFLINE, failure.message)
            return failure
        self._current = readers
        for reader in readers:
            reader.start()
        try:
            failure = await self._watch(readers)
            self._set_state(CameraState.OFFLINE, failure.message)
        finally:
            self._current = None
            await _stop_readers(readers)
        return failure

    def _readers(self, loop: asyncio.AbstractEventLoop) -> list[_Reader]:
        cfg = self._config
        options = SourceOptions(
            open_timeout_s=cfg.open_timeout_s,
            read_timeout_s=cfg.read_timeout_s,
            analyzeduration_us=cfg.analyzeduration_us,
            decode_threads=cfg.decode_threads,
            allow_files=cfg.allow_file_sources,
            no_picture_s=cfg.stall_timeout_s,
            egress=cfg.egress,
        )
        split = cfg.sub_url is not None
        roles = [("main", cfg.main_url, True, not split)]
        if cfg.sub_url is not None:
            roles.append(("sub", cfg.sub_url, False, True))
        readers: list[_Reader] = []

        def flowing() -> None:  # on a reader thread: hop to the loop
            loop.call_soon_threadsafe(self._flowing, readers)

        for role, url, record, analyse in roles:
            handler = ConnectionHandler(
                cfg.camera_id,
                self._counters,
                sink=self._sink,
                record=record,
                slot=self._slot if analyse else None,
                decimator=Decimator(cfg.analysis_fps) if analyse else None,
                on_flowing=flowing,
            )
            source = self._source_factory(url, options)
            name = f"ingest-{cfg.camera_id}-{role}"
            readers.append(_Reader(name, source, handler, loop))
        return readers

    async def _watch(self, readers: list[_Reader]) -> _Failure:
        stall = self._config.stall_timeout_s
        interval = min(1.0, stall / 4)
        pending = {reader.done for reader in readers}
        while True:
            done, _ = await asyncio.wait(
                pending, timeout=interval, return_when=asyncio.FIRST_COMPLETED
            )
            if done:
                return self._failure(done.pop())
            if max(reader.idle_s() for reader in readers) > stall:
                return self._failure_of(StreamStalledError(f"no data for {stall:g} s (stalled)"))

    def _failure(self, done: asyncio.Future[None]) -> _Failure:
        error = done.exception()
        if error is None:  # run_once returns only when stopped, which we did not ask for
            error = StreamEndedError("the camera closed the connection")
        return self._failure_of(_as_ingest_error(self._config.camera_id, error))

    @staticmethod
    def _failure_of(error: IngestError) -> _Failure:
        return _Failure(str(error), error.permanent, error.ffmpeg_log)

    def _flowing(self, readers: list[_Reader]) -> None:
        """A reader got its first packet or picture; online once every connection of the
        attempt delivers (see :attr:`ConnectionHandler.delivering`)."""
        if readers is not self._current or self._state is CameraState.ONLINE:
            return  # a late call from an attempt that already ended
        if not all(reader.handler.delivering for reader in readers):
            return
        if self._was_online:
            self._reconnects += 1
        self._was_online = True
        self._backoff.connected()
        c = self._counters
        log.info(
            "camera %s: online (%s %sx%s, %s)",
            self._config.camera_id,
            c.codec,
            c.width,
            c.height,
            ", ".join(reader.source.display_url for reader in readers),
        )
        self._last_logged = None
        self._set_state(CameraState.ONLINE, None)

    # -- state and logs -----------------------------------------------------------------

    def _set_state(self, new: CameraState, error: str | None) -> None:
        old, old_error = self._state, self._error
        self._error = error if new is CameraState.OFFLINE else None
        if new is old and self._error == old_error:
            return
        at = datetime.now(UTC)
        if new is not old:
            self._state, self._since = new, at
        notify(self._listener, self._config.camera_id, old, new, self._error, at)

    def _log_failure(self, failure: _Failure, delay: float) -> None:
        # A camera that stays down fails the same way on every retry: one warning when the
        # reason changes, the repeats at debug level.
        level = logging.DEBUG if failure.message == self._last_logged else logging.WARNING
        self._last_logged = failure.message
        tail = f"; FFmpeg: {' | '.join(failure.ffmpeg_log[-3:])}" if failure.ffmpeg_log else ""
        log.log(
            level,
            "camera %s: offline: %s; attempt %d, next in %.1f s%s",
            self._config.camera_id,
            failure.message,
            self._attempts,
            delay,
            tail,
        )


def _as_ingest_error(camera_id: str, error: BaseException) -> IngestError:
    """``error`` itself when it is an :class:`IngestError`; else logged with its traceback
    (a bug, not a camera problem) and replaced by one that points to the log."""
    if isinstance(error, IngestError):
        return error
    log.error(
        "camera %s: reader failed unexpectedly",
        camera_id,
        exc_info=(type(error), error, error.__traceback__),
    )
    return IngestError(f"internal error ({type(error).__name__}); see the service log")


async def _stop_readers(readers: list[_Reader]) -> None:
    """Ask every reader to stop and wait until their threads ended, even if cancelled."""
    for reader in readers:
        reader.stop.set()
    waiting = asyncio.gather(*(reader.done for reader in readers), return_exceptions=True)
    cancelled = False
    while not waiting.done():
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            cancelled = True  # finish the cleanup first; the threads end within read timeout
    for reader in readers:
        reader.join()
    if cancelled:
        raise asyncio.CancelledError


def _utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
