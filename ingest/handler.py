"""What a camera does with what its reader threads read.

:class:`ConnectionHandler` is the :class:`~ingest.sources.StreamHandler` of one connection: it
forwards the main stream's packets to the :class:`~ingest.types.PacketSink`, measures the
frame rate, and turns decoded frames of the analysed stream into :class:`~ingest.types.Frame`
objects at ``analysis_fps`` for the :class:`~ingest.slot.FrameSlot`. The counters it keeps
live in :class:`CameraCounters`, which outlives connections.

A :class:`~ingest.types.Frame` carries the decoder's luma plane without a copy (motion
needs nothing else) and converts to BGR only when asked (snapshots, the person detector):
most analysed frames are never converted.

Everything here runs on a reader thread except the getters, which the event loop reads.
Each camera connection has one reader thread, the only writer of its counters: plain
attribute reads and writes are atomic under the GIL, so the per-packet path takes no lock.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from ingest.slot import FrameSlot
from ingest.types import Frame, PacketSink

__all__ = [
    "CameraCounters",
    "ConnectionHandler",
    "Decimator",
    "RateMeter",
    "analysis_frame",
    "luma",
    "to_bgr",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# The limited-range planar 4:2:0 layout cv2 converts directly (2-8x faster than swscale's
# bgr24 here). Full-range yuvj420p (many IP cameras) goes through swscale: cv2 would assume
# limited range and change the contrast by up to ~17 levels.
_I420 = frozenset({"yuv420p"})
# Pixel formats whose first plane is the full-size 8-bit luma plane (what decoders of
# camera codecs output), and those of them that are full range ("JPEG" range).
_LUMA_FIRST = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"}
)
_FULL_RANGE = frozenset({"yuvj420p", "yuvj422p", "yuvj444p"})
_RANGE_FULL = 2  # AVCOL_RANGE_JPEG: a yuv420p frame may say so instead of being yuvj420p

Gray = npt.NDArray[np.uint8]


class RateMeter:
    """Events per second, measured over ``window_s`` windows and smoothed (EMA).

    The first window after :meth:`reset` is ignored: after connecting, FFmpeg hands over the
    packets it buffered while probing in one burst, which would overstate the rate.

    One writer thread (:meth:`tick`, :meth:`reset`), any number of readers (:attr:`rate`):
    ``tick`` runs for every packet, so it takes no lock; a reader sees each attribute
    either before or after a window closes, and either way a rate that was measured.
    """

    def __init__(self, window_s: float = 1.0, alpha: float = 0.4, clock: Clock = time.monotonic):
        self._window_s, self._alpha, self._clock = window_s, alpha, clock
        self._rate: float | None = None
        self.reset()

    def reset(self) -> None:
        """Start over (a new connection); the last rate is kept until a new one is measured."""
        self._start = self._clock()
        self._window_end = self._start + self._window_s
        self._count = 0
        self._warm = False

    def tick(self, n: int = 1) -> None:
        """Count ``n`` events now."""
        self._count += n
        now = self._clock()
        if now >= self._window_end:
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        rate = self._count / (now - self._start)
        if self._warm:
            old = self._rate
            self._rate = rate if old is None else old + self._alpha * (rate - old)
        self._warm = True
        self._count = 0
        self._window_end = now + self._window_s
        self._start = now

    @property
    def rate(self) -> float | None:
        """The smoothed rate; 0 when nothing came for two windows; None before any measure."""
        rate = self._rate
        if rate is not None and self._clock() - self._start > 2 * self._window_s:
            return 0.0
        return rate


class Decimator:
    """Lets through at most ``fps`` events per second, evenly spaced on average."""

    def __init__(self, fps: float, clock: Clock = time.monotonic) -> None:
        self._interval = 1.0 / fps
        self._clock = clock
        self._due: float | None = None

    def due(self) -> bool:
        """Whether the event happening now should be let through."""
        now = self._clock()
        if self._due is None:
            self._due = now + self._interval
            return True
        if now < self._due:
            return False
        # Advance from the due time (not from now) so arrival jitter of up to half an
        # interval does not lower the rate, but never let a backlog build up after a gap.
        self._due = max(self._due + self._interval, now + self._interval / 2)
        return True


def to_bgr(frame: VideoFrame) -> npt.NDArray[np.uint8]:
    """A decoded frame as a BGR ``uint8`` array of shape ``(height, width, 3)``.

    Measured on this project's 2-core box: cv2's I420 conversion takes 0.45 ms for 768x432
    where ``to_ndarray(format="bgr24")`` takes 3.4 ms (swscale, BT.601-tagged) — and on
    BT.709-tagged frames swscale is slower still unless told the colourspace. cv2 uses the
    BT.601 matrix regardless; the small tint on BT.709 sources is harmless for analysis.
    """
    if (
        frame.format.name in _I420
        and frame.color_range != _RANGE_FULL
        and frame.width % 2 == 0
        and frame.height % 2 == 0
    ):
        planar = frame.to_ndarray()  # (height * 3 / 2, width), planes contiguous
        return np.asarray(cv2.cvtColor(planar, cv2.COLOR_YUV2BGR_I420), dtype=np.uint8)
    return np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)


def luma(frame: VideoFrame) -> tuple[Gray, bool] | None:
    """The frame's Y plane as a read-only view of the decoder's buffer, and whether its
    levels are limited (16..235); None when the format has no 8-bit luma plane to share.

    No copy: the view keeps the decoded picture alive (FFmpeg's buffers are reference
    counted; the decoder never writes into a picture it has handed out). Rows keep their
    padding (stride ``line_size``), which OpenCV reads as is.
    """
    name = frame.format.name
    if name not in _LUMA_FIRST:
        return None
    plane = frame.planes[0]
    stride = plane.line_size
    if stride < plane.width:  # a bottom-up (negative) stride: let the slow path copy it
        return None
    buffer = memoryview(plane)
    y: Gray = np.ndarray((plane.height, plane.width), np.uint8, buffer=buffer, strides=(stride, 1))
    y.flags.writeable = False
    limited = name not in _FULL_RANGE and frame.color_range != _RANGE_FULL and name != "gray"
    return y, limited


def analysis_frame(camera_id: str, index: int, frame: VideoFrame, wallclock: float) -> Frame:
    """The :class:`~ingest.types.Frame` for a decoded frame: its luma plane now (no copy),
    BGR when someone asks for it."""
    found = luma(frame)
    if found is None:  # rare formats (10-bit, RGB): convert now, gray from the BGR
        bgr = to_bgr(frame)
        gray: Gray = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
        return Frame(camera_id, index, frame.time, wallclock, gray, lambda: bgr)
    gray, limited = found
    return Frame(
        camera_id, index, frame.time, wallclock, gray, functools.partial(to_bgr, frame), limited
    )


@dataclass
class CameraCounters:
    """A camera's measurements, kept across connections (written by reader threads)."""

    fps: RateMeter = field(default_factory=RateMeter)
    frames_decoded: int = 0
    frames_analysed: int = 0
    decode_errors: int = 0
    last_frame_at: float | None = None  # time.time() of the last decoded frame
    latest: Frame | None = None  # the last frame handed to analysis (snapshots)
    width: int | None = None
    height: int | None = None
    codec: str | None = None


class ConnectionHandler:
    """The handler of one connection: main-stream packets, analysed-stream frames, or both.

    ``on_flowing`` is called (on the reader thread) when the first packet arrives and, on a
    decoding connection, again at the first decoded picture (see :attr:`delivering`);
    ``last_activity`` (monotonic) feeds the stall watchdog.
    """

    def __init__(
        self,
        camera_id: str,
        counters: CameraCounters,
        *,
        sink: PacketSink | None,
        record: bool,
        slot: FrameSlot[Frame] | None,
        decimator: Decimator | None,
        on_flowing: Callable[[], None],
    ) -> None:
        self._camera_id = camera_id
        self._counters = counters
        self._sink = sink if record else None
        # Bound once: the main stream calls these for every packet.
        self._sink_packet = self._sink.on_packet if self._sink is not None else None
        self._fps = counters.fps
        self._record = record
        self._slot = slot
        self._decimator = decimator
        self._on_flowing = on_flowing
        self._opened = False
        self._sink_failures = 0
        self.packets = 0
        self.pictured = False
        self.last_activity: float | None = None  # None until the stream opened

    @property
    def decode(self) -> bool:
        """Decode only the analysed stream."""
        return self._slot is not None

    @property
    def delivering(self) -> bool:
        """Packets arrived, and pictures too if this connection decodes: a decoding
        connection is online only once it shows a picture (garbage must not look alive)."""
        return self.packets > 0 and (self.pictured or not self.decode)

    def on_open(self, stream: VideoStream) -> None:
        """Record the stream's shape, tell the sink, start the watchdog clock."""
        self.last_activity = time.monotonic()
        if self._record:
            c = self._counters
            c.width, c.height, c.codec = stream.width, stream.height, stream.codec_context.name
            c.fps.reset()
            if self._sink is not None:
                self._guard(self._sink.on_stream, stream)
        self._opened = True

    def on_packet(self, packet: Packet[VideoStream], wallclock: float) -> None:
        """Forward to the sink (main stream) and count."""
        self.last_activity = time.monotonic()
        self.packets += 1
        if self.packets == 1:
            self._on_flowing()
        if self._record:
            self._fps.tick()
            if self._sink_packet is not None:
                try:
                    self._sink_packet(packet, wallclock)
                except Exception:
                    self._sink_failed()

    def on_frame(self, frame: VideoFrame, wallclock: float) -> None:
        """Hand every n-th frame (at ``analysis_fps``) to the slot, as luma + lazy BGR."""
        c = self._counters
        c.frames_decoded += 1
        c.last_frame_at = wallclock
        if not self.pictured:
            self.pictured = True
            self._on_flowing()
        if self._slot is None or self._decimator is None or not self._decimator.due():
            return
        out = analysis_frame(self._camera_id, c.frames_decoded, frame, wallclock)
        c.frames_analysed += 1
        c.latest = out
        self._slot.put(out)

    def on_decode_error(self) -> None:
        """Count; the camera's status shows the total."""
        self._counters.decode_errors += 1

    def on_close(self) -> None:
        """Tell the sink the stream is gone."""
        if self._opened and self._sink is not None:
            self._guard(self._sink.on_disconnect)
        self._opened = False

    def _guard(self, method: Callable[..., None], *args: object) -> None:
        # A broken sink must not take the camera down: analysis goes on without recording.
        # Logged once per connection, not once per packet.
        try:
            method(*args)
        except Exception:
            self._sink_failed()

    def _sink_failed(self) -> None:
        self._sink_failures += 1
        if self._sink_failures == 1:
            log.exception("camera %s: packet sink failed", self._camera_id)
