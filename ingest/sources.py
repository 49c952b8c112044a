"""Stream sources: one blocking connection attempt that returns on stop or raises.

A source opens a stream with PyAV, hands every video packet to a :class:`StreamHandler`
and, when the handler asks for it, decodes. ``run_once`` runs on a dedicated reader thread
(PyAV releases the GIL while it waits on the network); the camera supervisor restarts it.
This module is the adapter edge: every PyAV/FFmpeg error leaves it as an
:class:`~ingest.errors.IngestError` whose message says what to fix.

Stopping: FFmpeg offers no safe way to abort a read from another thread (closing the
container under a blocked read crashes), so ``run_once`` checks its stop event between
packets. A live camera delivers a packet every frame interval; a silent one is cut off by
PyAV's read timeout (observed: about twice ``read_timeout_s``), which bounds the worst-case
stop latency. Opening is bounded by ``open_timeout_s``.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import av
import av.error
import av.logging
from av.container import InputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from ingest.errors import (
    CameraAuthError,
    CameraUnreachableError,
    IngestError,
    StreamEndedError,
    StreamNotFoundError,
    StreamStalledError,
    UnsupportedStreamError,
)
from ingest.redact import redact, url_secrets

__all__ = [
    "FileSource",
    "PyAVSource",
    "Source",
    "SourceOptions",
    "StreamHandler",
    "open_source",
    "translate_error",
]

_LOG_TAIL = 8  # FFmpeg lines kept per connection to explain a failure


class StreamHandler(Protocol):
    """Receives what a source reads. Every method is called on the reader thread."""

    @property
    def decode(self) -> bool:
        """Whether the source should decode packets and call :meth:`on_frame`."""
        ...

    def on_open(self, stream: VideoStream) -> None:
        """The connection is up; ``stream`` is the video stream packets will come from."""

    def on_packet(self, packet: Packet[VideoStream], wallclock: float) -> None:
        """One video packet, in arrival order (``wallclock``: ``time.time()`` at arrival)."""

    def on_frame(self, frame: VideoFrame, wallclock: float) -> None:
        """One decoded frame (only when :attr:`decode` is true)."""

    def on_decode_error(self) -> None:
        """A packet could not be decoded; the connection goes on."""

    def on_close(self) -> None:
        """The connection ended; called once, only after :meth:`on_open`."""


class Source(Protocol):
    """A stream that can be read once per call."""

    @property
    def display_url(self) -> str:
        """The URL with credentials masked, for logs and status."""
        ...

    def run_once(self, stop: threading.Event, handler: StreamHandler) -> None:
        """Connect and read until ``stop`` is set (then return) or the stream fails (raise
        :class:`~ingest.errors.IngestError`)."""


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """Connection knobs (see :class:`~ingest.types.CameraStreamConfig`)."""

    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    analyzeduration_us: int = 500_000
    decode_threads: int = 1


def open_source(url: str, options: SourceOptions) -> Source:
    """The source for ``url``: ``file:`` URLs play a looped file, anything else is read
    live by FFmpeg (``rtsp://``, ``rtsps://``, ``http://``…)."""
    if url.startswith("file:"):
        return FileSource(_file_path(url), options)
    return PyAVSource(url, options)


def _file_path(url: str) -> Path:
    if url.startswith("file://"):
        return Path(unquote(urlsplit(url).path))
    return Path(unquote(url.removeprefix("file:")))


class PyAVSource:
    """A live stream read with PyAV over TCP (interleaved RTSP: no UDP loss or NAT issues)."""

    def __init__(self, url: str, options: SourceOptions) -> None:
        self._url = url
        self._options = options
        self._secrets = url_secrets(url)

    @property
    def display_url(self) -> str:
        """The URL with credentials masked."""
        return redact(self._url, self._secrets)

    def run_once(self, stop: threading.Event, handler: StreamHandler) -> None:
        """Open, then deliver packets until ``stop`` or failure."""
        # Capture this thread's FFmpeg lines: they explain failures PyAV only numbers.
        with av.logging.Capture(local=True) as ffmpeg_log:
            opened = False
            try:
                container = self._open()
                opened = True
                with container:
                    self._read(container, stop, handler, ffmpeg_log)
            except av.FFmpegError as err:
                raise translate_error(
                    err, opened=opened, options=self._options, log=self._tail(ffmpeg_log)
                ) from err

    def _open(self) -> InputContainer:
        opts = self._options
        return av.open(
            self._url,
            options={
                "rtsp_transport": "tcp",
                "allowed_media_types": "video",  # no audio SETUP: less bandwidth and CPU
                "analyzeduration": str(opts.analyzeduration_us),
                "timeout": str(int(opts.read_timeout_s * 1_000_000)),
            },
            timeout=(opts.open_timeout_s, opts.read_timeout_s),
        )

    def _packets(
        self, container: InputContainer, stream: VideoStream, stop: threading.Event
    ) -> Iterator[Packet[VideoStream]]:
        for packet in container.demux(stream):
            if stop.is_set():
                return
            if packet.size:  # demux ends with an empty flush packet
                yield packet
        if not stop.is_set():
            raise StreamEndedError("the camera closed the connection")

    def _read(
        self,
        container: InputContainer,
        stop: threading.Event,
        handler: StreamHandler,
        ffmpeg_log: list[tuple[int, str, str]],
    ) -> None:
        stream = _video_stream(container)
        if handler.decode:
            _configure_decoder(stream, self._options.decode_threads)
        handler.on_open(stream)
        try:
            for packet in self._packets(container, stream, stop):
                now = time.time()
                handler.on_packet(packet, now)
                if handler.decode:
                    _decode(packet, handler, now)
                if len(ffmpeg_log) > 4 * _LOG_TAIL:
                    del ffmpeg_log[:-_LOG_TAIL]  # bounded: the capture list is ours to trim
        finally:
            handler.on_close()

    def _tail(self, ffmpeg_log: list[tuple[int, str, str]]) -> tuple[str, ...]:
        lines = ffmpeg_log[-_LOG_TAIL:]
        return tuple(redact(f"[{name}] {msg.strip()}", self._secrets) for _lvl, name, msg in lines)


class FileSource:
    """A video file played in a loop at its own frame rate, as if it were a live camera.

    Timestamps keep increasing across loops (each pass is shifted by the file's length),
    so a recorder downstream sees one continuous stream.
    """

    def __init__(self, path: Path, options: SourceOptions) -> None:
        self._path = path
        self._options = options

    @property
    def display_url(self) -> str:
        """``file:`` and the path (files carry no credentials)."""
        return f"file:{self._path}"

    def run_once(self, stop: threading.Event, handler: StreamHandler) -> None:
        """Play the file until ``stop``; raises if it is missing or unreadable."""
        try:
            container = av.open(str(self._path))
        except av.error.FileNotFoundError as err:
            raise StreamNotFoundError(f"file not found: {self._path}") from err
        except av.FFmpegError as err:
            raise UnsupportedStreamError(f"cannot read {self._path} as video: {err}") from err
        with container:
            try:
                self._play(container, stop, handler)
            except av.FFmpegError as err:
                raise UnsupportedStreamError(f"error reading {self._path}: {err}") from err

    def _play(self, container: InputContainer, stop: threading.Event, h: StreamHandler) -> None:
        stream = _video_stream(container)
        if h.decode:
            _configure_decoder(stream, self._options.decode_threads)
        h.on_open(stream)
        try:
            clock = _LoopClock(stream)
            while not stop.is_set():
                if not self._one_pass(container, stream, clock, stop, h):
                    raise UnsupportedStreamError(f"{self._path} holds no video frames")
                container.seek(0)
                clock.next_loop()
        finally:
            h.on_close()

    def _one_pass(
        self,
        container: InputContainer,
        stream: VideoStream,
        clock: _LoopClock,
        stop: threading.Event,
        handler: StreamHandler,
    ) -> bool:
        seen = False
        for packet in container.demux(stream):
            if not packet.size:
                continue
            seen = True
            if stop.wait(clock.wait_s(packet)):
                return True
            now = time.time()
            handler.on_packet(packet, now)
            if handler.decode:
                _decode(packet, handler, now)
        return seen


class _LoopClock:
    """Paces a file in real time and shifts timestamps so they grow across loops."""

    def __init__(self, stream: VideoStream) -> None:
        rate = stream.average_rate or stream.guessed_rate or Fraction(10)
        self._tb = stream.time_base or Fraction(1, 90_000)
        self._frame = max(1, round(1 / (Fraction(rate) * self._tb)))  # in time_base units
        self._offset = 0  # added to every timestamp of this pass
        self._first: int | None = None  # first timestamp of the file, unshifted
        self._last = 0  # last shifted timestamp seen
        self._count = 0  # packets without timestamps are paced by count
        self._start = time.monotonic()

    def wait_s(self, packet: Packet[Any]) -> float:
        """Shift ``packet``'s timestamps; return how long to wait before delivering it."""
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is None:
            ts = self._count * self._frame
        if self._first is None:
            self._first = ts
        if packet.pts is not None:
            packet.pts += self._offset
        if packet.dts is not None:
            packet.dts += self._offset
        self._count += 1
        self._last = max(self._last, ts + self._offset)
        due = self._start + float((self._last - self._first) * self._tb)
        return max(0.0, due - time.monotonic())

    def next_loop(self) -> None:
        """The file restarts: the next pass continues one frame after the last."""
        if self._first is not None:
            self._offset = self._last + self._frame - self._first


def _video_stream(container: InputContainer) -> VideoStream:
    if not container.streams.video:
        raise UnsupportedStreamError("the stream has no video track")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UnsupportedStreamError("the camera's video codec is not supported")
    return stream


def _configure_decoder(stream: VideoStream, threads: int) -> None:
    # One thread per camera by default: with thousands of cameras, decoder thread pools
    # multiply (FFmpeg starts cores+1 threads per decoder) for little gain on small frames,
    # and a single-threaded decoder logs on the reader thread, where its lines are captured.
    ctx = stream.codec_context
    ctx.thread_count = threads
    if threads != 1:
        ctx.thread_type = "AUTO"


def _decode(packet: Packet[VideoStream], handler: StreamHandler, wallclock: float) -> None:
    try:
        frames = packet.decode()
    except av.error.InvalidDataError:
        # Packet loss or a corrupt slice; the next keyframe repairs the picture.
        handler.on_decode_error()
        return
    for frame in frames:
        handler.on_frame(frame, wallclock)


def translate_error(
    err: av.FFmpegError, *, opened: bool, options: SourceOptions, log: tuple[str, ...] = ()
) -> IngestError:
    """The :class:`IngestError` an integrator should see for a PyAV error.

    ``opened`` tells a failure to connect from one after the stream was playing.
    """
    found = _translate_known(err, opened, options)
    if found is None:
        detail = " ".join(log[-1:]) or (err.strerror or type(err).__name__)
        if any("resolve" in line for line in log):
            found = CameraUnreachableError("host not found: check the camera's address")
        else:
            found = IngestError(f"stream error: {redact(detail)}")
    found.ffmpeg_log = log
    return found


def _translate_known(
    err: av.FFmpegError, opened: bool, options: SourceOptions
) -> IngestError | None:
    e = av.error
    if isinstance(err, e.HTTPUnauthorizedError):
        return CameraAuthError("authentication failed: check the camera's username and password")
    if isinstance(err, e.HTTPForbiddenError):
        return CameraAuthError("access denied (RTSP 403): check the user's rights on the camera")
    if isinstance(err, e.HTTPNotFoundError):
        return StreamNotFoundError("stream not found (RTSP 404): check the path")
    if isinstance(err, e.ConnectionRefusedError):
        return CameraUnreachableError("connection refused: check the camera's address and port")
    if isinstance(err, e.ExitError | e.TimeoutError):
        if opened:
            return StreamStalledError(f"no data for {options.read_timeout_s:g} s (stalled)")
        return CameraUnreachableError(
            f"no answer within {options.open_timeout_s:g} s: check the camera's address"
        )
    if isinstance(err, e.EOFError | e.ConnectionResetError | e.ConnectionAbortedError):
        return StreamEndedError("the camera closed the connection")
    if err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return CameraUnreachableError("no route to the camera: check its address and network")
    if isinstance(err, e.HTTPServerError):
        return IngestError("the camera answered with a server error (RTSP 5xx)")
    if isinstance(err, e.InvalidDataError) and not opened:
        return UnsupportedStreamError("the camera sent data that is not a readable stream")
    return None
