"""Shared ingest types: the per-camera config, the analysed frame and the packet sink.

These are the seams other packages plug into. The recording side (pre-roll ring, clip
muxer) implements :class:`PacketSink`; the analyser consumes :class:`Frame` objects from a
:class:`~ingest.slot.FrameSlot`; the composition root builds :class:`CameraStreamConfig`
from the stored camera rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import av
    import av.video.stream

    from ingest.egress import EgressPolicy

__all__ = ["CameraStreamConfig", "Frame", "PacketSink"]


@runtime_checkable
class PacketSink(Protocol):
    """Receives the encoded video packets of a camera's main stream (recording never decodes).

    All three methods are called from the camera's reader thread, never from the event
    loop, and must return quickly (copy or reference the packet, never block on I/O).
    """

    def on_stream(self, stream: av.video.stream.VideoStream) -> None:
        """Called after each (re)connect, before the first packet of that connection.

        ``stream`` carries the codec parameters (extradata, time_base) a muxer needs to
        add an output stream with ``add_stream_from_template``. It stays valid until
        :meth:`on_disconnect`.
        """

    def on_packet(self, packet: av.Packet[av.video.stream.VideoStream], wallclock: float) -> None:
        """Called for every video packet of the main stream, in arrival order.

        ``wallclock`` is ``time.time()`` when the packet was read. Packets without a
        ``pts`` are still passed on (some cameras send them); ``packet.is_keyframe`` marks
        the points a clip may start from.
        """

    def on_disconnect(self) -> None:
        """Called once when a connection ends (error, stall or stop); packets stop."""


@dataclass(frozen=True, slots=True)
class CameraStreamConfig:
    """Everything the ingest engine needs to keep one camera connected.

    ``main_url`` is recorded (its packets go to the :class:`PacketSink`); ``sub_url``, when
    given, is decoded for analysis; without it the main stream is decoded and one
    connection serves both. URLs may carry credentials (``rtsp://user:pass@host/path``);
    they are never logged unredacted. ``file://`` URLs or plain paths play a video file in
    a loop at its own frame rate, as if live (when ``allow_file_sources``). Two configs
    that compare equal describe the same running camera, so :meth:`CameraManager.apply`
    restarts a camera only when its config changed.
    """

    camera_id: str
    main_url: str
    sub_url: str | None = None
    #: False: no connection; the status says ``disabled``.
    enabled: bool = True
    #: Frames per second converted to BGR and put into the slot (every frame is decoded).
    analysis_fps: float = 5.0
    #: Connecting (RTSP DESCRIBE/SETUP/PLAY and probing) may take this long.
    open_timeout_s: float = 5.0
    #: A read blocked this long ends the connection (PyAV's interrupt). Also bounds how
    #: long stopping a camera whose server froze takes: about twice this.
    read_timeout_s: float = 5.0
    #: No video packet for this long: reconnect (catches streams that send only audio or
    #: keep-alives; a silent socket is caught sooner by ``read_timeout_s``).
    stall_timeout_s: float = 20.0
    #: FFmpeg's probing window in microseconds; 0.5 s gives the first frame in ~0.8 s.
    analyzeduration_us: int = 500_000
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    #: A connection up this long is stable: the backoff starts again from the beginning.
    stable_after_s: float = 300.0
    #: Retry interval after a permanent error (wrong password, stream not found).
    permanent_retry_s: float = 300.0
    #: Decoder threads for the analysed stream; 1 keeps a thread per camera and the lowest
    #: CPU per frame; raise it only for large streams one core cannot decode in real time.
    decode_threads: int = 1
    #: Frames the analysis slot holds before it drops the oldest.
    slot_size: int = 2
    #: Whether ``file:`` URLs and plain paths may be played; when false such a camera
    #: stays offline saying so (``ingest.allow_file_sources``; a stored row or an ONVIF
    #: device's stream URI could still name a file). Other schemes than ``rtsp``/``rtsps``
    #: are always refused.
    allow_file_sources: bool = True
    #: Where this camera may connect, checked before every connection (``ingest/egress.py``);
    #: None: anywhere.
    egress: EgressPolicy | None = None

    def __post_init__(self) -> None:
        if not self.camera_id:
            raise ValueError("camera_id must not be empty")
        if self.slot_size < 1 or self.decode_threads < 0:
            raise ValueError("slot_size must be >= 1 and decode_threads >= 0")
        positive = (
            "analysis_fps",
            "open_timeout_s",
            "read_timeout_s",
            "stall_timeout_s",
            "backoff_initial_s",
            "stable_after_s",
            "permanent_retry_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")

    @property
    def analysis_url(self) -> str:
        """The URL decoded for analysis: the substream when there is one."""
        return self.sub_url or self.main_url


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One decoded frame handed to analysis.

    ``index`` counts frames decoded on this camera's analysis stream since the runner
    started (gaps show frames skipped to honour ``analysis_fps``); ``pts_s`` is the
    stream presentation time in seconds (``None`` when the camera sends none);
    ``wallclock`` is ``time.time()`` when the frame was decoded.

    ``gray`` is the luma (Y) plane, uint8, shape ``(height, width)``, read-only — usually
    a view of the decoder's buffer (rows may be padded), so no copy is made; motion reads
    only this. ``limited_range``: its levels span 16..235 (video range, most cameras), not
    0..255. ``image`` is BGR, uint8, shape ``(height, width, 3)``, read-only, converted by
    ``make_bgr`` on first use and kept: the person detector and snapshots need it, most
    analysed frames never do. Every reader of a frame shares both arrays: copy to draw.
    """

    camera_id: str
    index: int
    pts_s: float | None
    wallclock: float
    gray: npt.NDArray[np.uint8]
    make_bgr: Callable[[], npt.NDArray[np.uint8]] = field(repr=False)
    limited_range: bool = False
    _bgr: npt.NDArray[np.uint8] | None = field(default=None, init=False, repr=False)

    @property
    def image(self) -> npt.NDArray[np.uint8]:
        """The BGR picture (converted once; two threads asking at once may both convert)."""
        bgr = self._bgr
        if bgr is None:
            bgr = self.make_bgr()
            bgr.flags.writeable = False
            object.__setattr__(self, "_bgr", bgr)
        return bgr

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.gray.shape[1])

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.gray.shape[0])
