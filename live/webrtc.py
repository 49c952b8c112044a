"""Live view over WebRTC: a camera's encoded H.264 fanned out to browsers without re-encoding.

The camera's existing ingest connection is the only upstream: a :class:`PassthroughFeed`
is a :class:`~ingest.ring.PacketTap` on the camera's :class:`~ingest.ring.PacketRing`,
attached while at least one viewer watches (aiortc's ``MediaRelay`` idea, one level
lower: packets, not frames). Each viewer is a :class:`LiveTrack` whose ``recv()`` returns
``av.Packet`` objects; aiortc's ``RTCRtpSender`` then only packetizes them
(``H264Encoder.pack``, the path ``MediaPlayer(decode=False)`` uses), so a viewer costs
RTP packetization and SRTP, not an encoder.

WebRTC is not a blind pipe (aiortc issue #449), so the feed:

- converts every packet to Annex-B (MP4-style sources carry AVCC length prefixes, RTSP
  carries Annex-B) and puts SPS/PPS in front of keyframes that lack them (cameras that
  send them only in the SDP); browsers drop an IDR without parameter sets;
- keeps the current GOP, so a new viewer starts at once with a keyframe: the GOP so far
  is sent as a burst with timestamps 1 ms apart (decoded, only the newest shown), then
  the live packets follow with the camera's own frame spacing (:class:`_Timeline`);
- answers a browser's keyframe request (PLI/FIR) by replaying the cached GOP the same
  way, since a camera cannot be asked for an IDR;
- checks the stream: browsers decode 8-bit 4:2:0 H.264 (Constrained Baseline, Baseline,
  Main, High) whatever profile the SDP names, so the answer picks one of the browser's
  offered H.264 payload types for it (:mod:`live.negotiation`); High 4:2:2 shows nothing
  in Chrome (aiortc PR #705). Anything else gets a :class:`TranscodeFeed`: one decoder +
  one baseline encoder per camera (not per viewer), downscaled, fed from the same
  passthrough feed.

Everything except the transcoder's worker thread runs on the event loop; the ring calls
the tap from the reader thread and the tap hands over with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, Protocol

import av
import av.error
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ingest.ring import PacketRing
from live import negotiation
from live.errors import BadOfferError, LiveError, LiveUnavailableError, NoCommonCodecError
from live.h264 import Framing, ParameterSets, annexb
from live.negotiation import OfferedH264
from storage.clips import CodecParams, EncodedPacket

__all__ = [
    "BadOfferError",
    "LiveError",
    "LiveService",
    "LiveSession",
    "LiveTrack",
    "LiveUnavailableError",
    "LiveUnit",
    "NoCommonCodecError",
    "PassthroughFeed",
    "StreamCheck",
    "TranscodeFeed",
    "check_stream",
]

log = logging.getLogger(__name__)

CLOCK_RATE = 90_000  # RTP video clock
TIME_BASE = Fraction(1, CLOCK_RATE)
BURST_STEP = 90  # 1 ms between replayed GOP frames: decoded at once, the newest shown
MAX_STEP = 5 * CLOCK_RATE  # a larger pts jump is a reset (camera reboot), not time
MAX_GOP_UNITS = 600  # 20 s at 30 fps: longer GOPs are not cached (viewers wait for an IDR)
TRACK_QUEUE = MAX_GOP_UNITS + 120  # a GOP replay plus 4 s of live packets at 30 fps
RESYNC_MIN_S = 1.0  # browsers repeat PLIs until an IDR arrives: replay at most this often
CONNECT_TIMEOUT_S = 20.0  # a session whose browser never completes ICE/DTLS is dropped
SUPERVISE_S = 2.0  # how soon viewers of a removed camera are cut off
TRANSCODE_MAX = (1280, 720)
TRANSCODE_QUEUE = 60
TRANSCODE_GOP_S = 2


# -- What a browser can play --------------------------------------------------------------

_BROWSER_PIX_FMTS = ("yuv420p", "yuvj420p")
TRANSCODED_PROFILE = "Constrained Baseline"  # the transcoder's output: every decoder plays it


@dataclass(frozen=True, slots=True)
class StreamCheck:
    """Whether a camera stream can be passed through to browsers, and its H.264 profile."""

    passthrough: bool
    profile: str | None  # FFmpeg's name, when passed through
    reason: str


def check_stream(params: CodecParams | None) -> StreamCheck:
    """Classify a camera's main stream for browsers (codec, profile, chroma, bit depth)."""
    if params is None:
        return StreamCheck(False, None, "no recordable stream")
    ctx = params.template.codec_context if params.template is not None else None
    profile = str(getattr(ctx, "profile", None) or "")
    pix_fmt = str(getattr(ctx, "pix_fmt", None) or "")
    if params.codec_name != "h264":
        return StreamCheck(False, None, f"codec {params.codec_name} is not H.264")
    if pix_fmt not in _BROWSER_PIX_FMTS:
        return StreamCheck(False, None, f"pixel format {pix_fmt or '?'} is not 8-bit 4:2:0")
    if profile not in negotiation.STREAM_PROFILES:
        return StreamCheck(False, None, f"H.264 profile {profile or '?'} is not browser-safe")
    return StreamCheck(True, profile, f"H.264 {profile} {pix_fmt}")


# -- Units, feeds and tracks ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveUnit:
    """One access unit ready for RTP: Annex-B bytes and its timing.

    ``ts`` is the source's presentation time in 90 kHz ticks (``None`` when the camera
    sent none); ``wallclock`` is when it arrived, used where ``ts`` cannot be trusted.
    """

    data: bytes
    keyframe: bool
    ts: int | None
    wallclock: float
    discontinuity: bool = False


class _Timeline:
    """Maps units to a viewer's 90 kHz timestamps: monotonic, starting at 0, paced by the
    camera's pts, re-anchored on the wall clock when pts are missing or jump."""

    def __init__(self) -> None:
        self._out = 0
        self._src: int | None = None
        self._wall: float | None = None

    def next(self, unit: LiveUnit, burst: bool) -> int:
        if self._wall is None:
            out = 0
        elif burst:
            out = self._out + BURST_STEP
        else:
            out = self._out + self._step(unit)
        self._out, self._src, self._wall = out, unit.ts, unit.wallclock
        return out

    def _step(self, unit: LiveUnit) -> int:
        if unit.ts is not None and self._src is not None and not unit.discontinuity:
            delta = unit.ts - self._src
            if 0 < delta <= MAX_STEP:
                return delta
        assert self._wall is not None
        return max(1, round((unit.wallclock - self._wall) * CLOCK_RATE))


class _Subscriber(Protocol):
    def push(self, unit: LiveUnit, burst: bool) -> None: ...

    def end(self) -> None: ...


class _Feed:
    """Fans units out to subscribers and keeps the current GOP for newcomers (loop only)."""

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self._subscribers: list[_Subscriber] = []
        self._gop: list[LiveUnit] = []
        self._gop_valid = False  # False until a keyframe, or when the GOP outgrew the cache

    @property
    def subscribers(self) -> int:
        """How many viewers (or a transcoder) this feed serves."""
        return len(self._subscribers)

    def gop(self) -> list[LiveUnit]:
        """The units from the last keyframe to the newest (empty when not cached)."""
        return list(self._gop) if self._gop_valid else []

    def subscribe(self, sub: _Subscriber) -> None:
        """Add ``sub``; it gets the current GOP as a burst, or waits for the next keyframe."""
        self._subscribers.append(sub)
        for unit in self.gop():
            sub.push(unit, True)

    def unsubscribe(self, sub: _Subscriber) -> None:
        """Remove ``sub`` (no-op when absent); the last one leaving stops the feed."""
        if sub in self._subscribers:
            self._subscribers.remove(sub)
            if not self._subscribers:
                self.stop()

    def stop(self) -> None:
        """Release the source; overridden by feeds that hold one."""

    def end_all(self) -> None:
        """End every subscriber (the stream changed in a way they cannot follow)."""
        for sub in list(self._subscribers):
            sub.end()

    def _dispatch(self, unit: LiveUnit) -> None:
        if unit.keyframe:
            self._gop, self._gop_valid = [], True
        if self._gop_valid:
            self._gop.append(unit)
            if len(self._gop) > MAX_GOP_UNITS:
                self._gop, self._gop_valid = [], False
        for sub in list(self._subscribers):
            sub.push(unit, False)


class PassthroughFeed(_Feed):
    """The camera's packets as Annex-B units: a :class:`~ingest.ring.PacketTap` on its ring.

    Attached to the ring while it has subscribers; the ring's snapshot at attach time
    (from the last keyframe) primes the GOP cache, so the first viewer starts at once.
    """

    def __init__(
        self,
        ring: PacketRing,
        loop: asyncio.AbstractEventLoop,
        camera_id: str,
        on_stop: Callable[[PassthroughFeed], None] = lambda _feed: None,
    ) -> None:
        super().__init__(camera_id)
        self._ring = ring
        self._loop = loop
        self._on_stop = on_stop
        self._attached = False
        self._params: CodecParams | None = None
        self._framing = Framing(None, ())
        self._parameter_sets = ParameterSets()
        self._check = check_stream(None)

    @property
    def ring(self) -> PacketRing:
        """The ring this feed taps."""
        return self._ring

    @property
    def check(self) -> StreamCheck:
        """The current stream's :class:`StreamCheck`."""
        return self._check

    @property
    def params(self) -> CodecParams | None:
        """The current stream's codec parameters (``None`` before the first stream)."""
        return self._params

    def start(self) -> None:
        """Attach to the ring (idempotent) and prime the GOP cache from its snapshot."""
        if self._attached:
            return
        snapshot = self._ring.attach(self, since=time.time())
        self._attached = True
        self._set_params(snapshot.params)
        for packet in snapshot.packets:
            self._on_packet(packet)

    def stop(self) -> None:
        """Detach from the ring: no camera packet is touched for this camera any more."""
        if self._attached:
            self._ring.detach(self)
            self._attached = False
            self._gop, self._gop_valid = [], False
            log.info("camera %s: live view ended (no viewers)", self.camera_id)
            self._on_stop(self)

    # PacketTap: called on the camera's reader thread --------------------------------------
    def offer(self, packet: EncodedPacket) -> None:
        """Hand the packet to the event loop (conversion happens there, in order)."""
        self._call(self._on_packet, packet)

    def on_stream_change(self, params: CodecParams | None, spliceable: bool) -> None:
        """A reconnect: new parameter sets apply; viewers stay unless the profile changed."""
        self._call(self._on_stream_change, params, spliceable)

    def on_disconnect(self) -> None:
        """Nothing to do: viewers see the last picture; timing re-anchors on resume."""

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody watches
            self._loop.call_soon_threadsafe(fn, *args)

    # On the loop -----------------------------------------------------------------------------
    def _set_params(self, params: CodecParams | None) -> None:
        self._params = params
        self._check = check_stream(params)
        extradata = params.extradata if params is not None else b""
        self._framing = Framing.of(extradata)
        self._parameter_sets = ParameterSets(self._framing.parameter_sets)

    def _on_stream_change(self, params: CodecParams | None, spliceable: bool) -> None:
        old = self._check
        self._set_params(params)
        if not spliceable:
            self._gop, self._gop_valid = [], False
        if (old.passthrough, old.profile) != (self._check.passthrough, self._check.profile):
            log.warning(
                "camera %s: stream changed to %s; live viewers reconnect",
                self.camera_id,
                self._check.reason,
            )
            self.end_all()

    def _on_packet(self, packet: EncodedPacket) -> None:
        if not self._attached or self._params is None:
            return
        payload = bytes(packet.payload)
        if self._params.codec_name == "h264":
            units = self._framing.units(payload)
            payload = annexb(self._parameter_sets.complete(units, packet.is_keyframe))
        ts = None
        if packet.pts is not None:
            ts = round(packet.pts * self._params.time_base * CLOCK_RATE)
        unit = LiveUnit(payload, packet.is_keyframe, ts, packet.wallclock, packet.discontinuity)
        self._dispatch(unit)


class TranscodeFeed(_Feed):
    """Decode + downscale + Constrained Baseline encode, once per camera, for browsers that
    cannot take the camera's stream as is. Subscribes to the passthrough feed; its worker
    thread does the CPU work and hands units back to the loop."""

    def __init__(
        self,
        source: PassthroughFeed,
        loop: asyncio.AbstractEventLoop,
        on_stop: Callable[[TranscodeFeed], None] = lambda _feed: None,
    ) -> None:
        super().__init__(source.camera_id)
        self._source = source
        self._loop = loop
        self._on_stop = on_stop
        self._inbox: queue.Queue[LiveUnit | None] = queue.Queue(TRANSCODE_QUEUE)
        self._thread: threading.Thread | None = None
        self._skip_to_key = False
        self.dropped = 0

    def start(self) -> None:
        """Start the worker and subscribe to the camera's packets (idempotent)."""
        if self._thread is not None:
            return
        params = self._source.params
        if params is None:
            raise LiveUnavailableError(f"camera {self.camera_id} has sent no video yet")
        self._thread = threading.Thread(
            target=self._work,
            args=(params,),
            name=f"live-transcode-{self.camera_id}",
            daemon=True,
        )
        self._thread.start()
        self._source.subscribe(self)
        log.info(
            "camera %s: live transcoding started (%s)", self.camera_id, self._source.check.reason
        )

    def stop(self) -> None:
        """Stop the worker (it exits after the unit it is on) and leave the source."""
        if self._thread is None:
            return
        self._thread = None
        self._source.unsubscribe(self)
        with contextlib.suppress(queue.Full):
            self._inbox.put_nowait(None)
        self._on_stop(self)

    # _Subscriber of the passthrough feed (loop) ----------------------------------------------
    def push(self, unit: LiveUnit, burst: bool) -> None:
        """Queue a unit for the worker; when it lags, skip to the next keyframe."""
        if self._skip_to_key and not unit.keyframe:
            self.dropped += 1
            return
        try:
            self._inbox.put_nowait(unit)
            self._skip_to_key = False
        except queue.Full:
            self.dropped += 1
            self._skip_to_key = True

    def end(self) -> None:
        """The source's stream changed: end the viewers, they reconnect and renegotiate."""
        self.end_all()

    # Worker thread -----------------------------------------------------------------------------
    def _work(self, params: CodecParams) -> None:
        decoder = av.CodecContext.create(params.codec_name, "r")
        assert isinstance(decoder, av.VideoCodecContext)
        if params.codec_name != "h264":  # H.264 units carry their SPS/PPS in band
            decoder.extradata = params.extradata or None
        encoder: av.VideoCodecContext | None = None
        while (unit := self._inbox.get()) is not None:
            try:
                frames = decoder.decode(av.Packet(unit.data))
            except av.error.FFmpegError:
                continue  # a corrupt unit: the next keyframe repairs the picture
            for frame in frames:
                encoder = encoder or _baseline_encoder(frame.width, frame.height, params)
                for out in _encode(encoder, frame, unit):
                    with contextlib.suppress(RuntimeError):
                        self._loop.call_soon_threadsafe(self._dispatch, out)


def _fit(width: int, height: int) -> tuple[int, int]:
    """Downscaled into :data:`TRANSCODE_MAX`, even dimensions (4:2:0)."""
    scale = min(1.0, TRANSCODE_MAX[0] / width, TRANSCODE_MAX[1] / height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _baseline_encoder(width: int, height: int, params: CodecParams) -> av.VideoCodecContext:
    """libx264, Constrained Baseline, no lookahead (one frame in, one packet out)."""
    rate = params.average_rate or Fraction(25)
    enc = av.CodecContext.create("libx264", "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height = _fit(width, height)
    enc.pix_fmt = "yuv420p"
    enc.time_base = TIME_BASE
    enc.framerate = rate
    enc.bit_rate = 1_500_000
    enc.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",
        "g": str(max(1, round(rate * TRANSCODE_GOP_S))),
    }
    return enc


def _encode(enc: av.VideoCodecContext, frame: av.VideoFrame, unit: LiveUnit) -> list[LiveUnit]:
    scaled = frame.reformat(width=enc.width, height=enc.height, format="yuv420p")
    scaled.pts = unit.ts if unit.ts is not None else round(unit.wallclock * CLOCK_RATE)
    scaled.time_base = TIME_BASE
    return [
        LiveUnit(bytes(p), p.is_keyframe, p.pts, unit.wallclock, unit.discontinuity)
        for p in enc.encode(scaled)
    ]


class LiveTrack(MediaStreamTrack):
    """One viewer's video track: units from a feed as ``av.Packet`` for aiortc to packetize.

    The queue is bounded: a viewer that falls behind skips to the next keyframe instead of
    growing memory (aiortc's ``MediaPlayer`` queue is unbounded on a live source).
    """

    kind = "video"

    def __init__(self, feed: _Feed) -> None:
        super().__init__()
        self._feed = feed
        self._queue: deque[tuple[LiveUnit, bool]] = deque()
        self._ready = asyncio.Event()
        self._timeline = _Timeline()
        self._need_key = True
        self._resynced_at = float("-inf")
        self.sent = 0
        self.dropped = 0
        self.resyncs = 0

    @property
    def feed(self) -> _Feed:
        """The feed this track is subscribed to."""
        return self._feed

    def push(self, unit: LiveUnit, burst: bool) -> None:
        """Queue a unit (event loop); starts and restarts only at a keyframe."""
        if self._need_key and not unit.keyframe:
            self.dropped += 1
            return
        self._need_key = False
        if len(self._queue) >= TRACK_QUEUE:
            self.dropped += len(self._queue)
            self._queue.clear()
            if not unit.keyframe:
                self._need_key = True
                self.dropped += 1
                return
        self._queue.append((unit, burst))
        self._ready.set()

    def end(self) -> None:
        """End the track: aiortc's sender stops, the peer connection goes on without video."""
        self.stop()

    def request_keyframe(self) -> None:
        """A browser's PLI/FIR: replay the cached GOP, a camera cannot be asked for an IDR."""
        now = time.monotonic()
        if now - self._resynced_at < RESYNC_MIN_S:
            return
        if self._queue and self._queue[0][0].keyframe:
            return  # one is on its way
        self._resynced_at = now
        gop = self._feed.gop()
        self._queue.clear()
        self.resyncs += 1
        if not gop:
            self._need_key = True
            return
        self._queue.extend((u, True) for u in gop)
        self._ready.set()

    async def recv(self) -> av.Packet[Any]:
        """The next unit as a packet with a 90 kHz pts (waits for one)."""
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        unit, burst = self._queue.popleft()
        packet = av.Packet(unit.data)
        packet.pts = packet.dts = self._timeline.next(unit, burst)
        packet.time_base = TIME_BASE
        self.sent += 1
        return packet

    def stop(self) -> None:
        """Stop and leave the feed (the last viewer leaving detaches it from the ring)."""
        if self.readyState == "live":
            super().stop()
            self._ready.set()
            self._feed.unsubscribe(self)


# -- Sessions ---------------------------------------------------------------------------------


@dataclass
class LiveSession:
    """One viewer: a peer connection sending one :class:`LiveTrack`."""

    id: str
    camera_id: str
    viewer: str
    pc: RTCPeerConnection
    track: LiveTrack
    mode: Literal["passthrough", "transcode"]
    codec: OfferedH264  # the browser's payload type it is sent as
    created: float = field(default_factory=time.monotonic)
    connected_after_s: float | None = None


@dataclass
class _Camera:
    passthrough: PassthroughFeed
    transcode: TranscodeFeed | None = None


class LiveService:
    """WHEP-style live sessions of this process's cameras.

    ``ring_for(camera_id)`` gives the camera's packet ring, or ``None`` when this process
    does not run the camera. ``ice_servers`` defaults to none: viewers reach the service
    directly on its LAN addresses (aiortc would otherwise ask a public STUN server).

    A session ends when the viewer DELETEs it, when its connection fails or closes, when
    it never connects, when its track ends (the stream changed beyond what it negotiated)
    and when its camera stops being run here (deleted, disabled, moved to another worker).
    """

    def __init__(
        self,
        ring_for: Callable[[str], PacketRing | None],
        *,
        ice_servers: Iterable[RTCIceServer] = (),
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        supervise_s: float = SUPERVISE_S,
    ) -> None:
        self._ring_for = ring_for
        self._ice_servers = list(ice_servers)
        self._connect_timeout_s = connect_timeout_s
        self._supervise_s = supervise_s
        self._cameras: dict[str, _Camera] = {}
        self._sessions: dict[str, LiveSession] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._supervisor: asyncio.Task[None] | None = None

    # Introspection (status, tests) ------------------------------------------------------------
    def sessions(self, camera_id: str | None = None) -> list[LiveSession]:
        """Open sessions, of one camera or all."""
        return [s for s in self._sessions.values() if camera_id in (None, s.camera_id)]

    def feed(self, camera_id: str) -> PassthroughFeed | None:
        """The camera's passthrough feed while anyone watches it."""
        cam = self._cameras.get(camera_id)
        return cam.passthrough if cam is not None else None

    def transcoder(self, camera_id: str) -> TranscodeFeed | None:
        """The camera's transcoder while anyone watches it transcoded."""
        cam = self._cameras.get(camera_id)
        return cam.transcode if cam is not None else None

    # WHEP -----------------------------------------------------------------------------------------
    async def open(self, camera_id: str, offer: str, viewer: str) -> tuple[LiveSession, str]:
        """Answer ``offer`` with a session sending the camera's video; returns the answer SDP."""
        offered = negotiation.offered_h264(offer)
        if not offered:
            raise NoCommonCodecError(
                "the browser offers no H.264 (packetization-mode=1); live view needs it"
            )
        cam = self._camera(camera_id)
        try:
            track, mode, codec = self._track_for(cam, offered)
        finally:
            if not cam.passthrough.subscribers:  # nobody could be served: release the tap
                cam.passthrough.stop()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        session = LiveSession(uuid.uuid4().hex, camera_id, viewer, pc, track, mode, codec)
        self._sessions[session.id] = session
        try:
            answer = await self._negotiate(session, offer)
        except Exception:
            await self.close(session.id)
            raise
        self._watch(session)
        log.info(
            "camera %s: live session %s for %s (%s as H.264 %s, payload type %d; %d viewer(s))",
            camera_id,
            session.id[:8],
            viewer,
            mode,
            codec.parameters.get("profile-level-id", "42e01f"),
            codec.payload_type,
            len(self.sessions(camera_id)),
        )
        return session, answer

    async def close(self, session_id: str, camera_id: str | None = None) -> bool:
        """End a session (idempotent); False when there is no such session."""
        session = self._sessions.get(session_id)
        if session is None or camera_id not in (None, session.camera_id):
            return False
        del self._sessions[session_id]
        session.track.stop()
        await session.pc.close()
        log.info("camera %s: live session %s closed", session.camera_id, session_id[:8])
        return True

    async def aclose(self) -> None:
        """Close every session (shutdown)."""
        for session_id in list(self._sessions):
            await self.close(session_id)
        for task in [*self._tasks, self._supervisor]:
            if task is not None:
                task.cancel()

    # Internals ----------------------------------------------------------------------------------
    def _camera(self, camera_id: str) -> _Camera:
        cam = self._cameras.get(camera_id)
        if cam is None:
            ring = self._ring_for(camera_id)
            if ring is None:
                raise LiveUnavailableError(f"camera {camera_id} is not run by this process")
            feed = PassthroughFeed(
                ring, asyncio.get_running_loop(), camera_id, on_stop=self._feed_stopped
            )
            cam = self._cameras[camera_id] = _Camera(feed)
        cam.passthrough.start()
        if cam.passthrough.params is None:
            if not cam.passthrough.subscribers:
                cam.passthrough.stop()
            raise LiveUnavailableError(f"camera {camera_id} has sent no video yet")
        return cam

    def _feed_stopped(self, feed: PassthroughFeed) -> None:
        cam = self._cameras.get(feed.camera_id)
        if cam is not None and cam.passthrough is feed:
            del self._cameras[feed.camera_id]

    def _track_for(
        self, cam: _Camera, offered: list[OfferedH264]
    ) -> tuple[LiveTrack, Literal["passthrough", "transcode"], OfferedH264]:
        """A viewer's track on the camera's stream as is when browsers decode it, else on
        the camera's transcoder; and the offered payload type it is sent as."""
        check = cam.passthrough.check
        profile = check.profile if check.passthrough else None
        codec = negotiation.choose(offered, profile or TRANSCODED_PROFILE)
        if codec is None:
            raise NoCommonCodecError(
                "the browser offers H.264 only in profiles its decoder would not use here"
            )
        feed: _Feed = cam.passthrough if profile else self._transcoder(cam)
        track = LiveTrack(feed)
        feed.subscribe(track)
        return track, "passthrough" if profile else "transcode", codec

    def _transcoder(self, cam: _Camera) -> TranscodeFeed:
        """The camera's transcoder, started (one per camera, however many viewers)."""
        if cam.transcode is None:
            cam.transcode = TranscodeFeed(
                cam.passthrough,
                asyncio.get_running_loop(),
                on_stop=lambda feed: setattr(cam, "transcode", None),
            )
        cam.transcode.start()
        return cam.transcode

    async def _negotiate(self, session: LiveSession, offer: str) -> str:
        """Apply the offer and answer it with exactly the session's chosen payload type."""
        pc = session.pc
        transceiver = pc.addTransceiver(session.track, direction="sendonly")
        # aiortc offers no hook for PLI/FIR on a pre-encoded track: route the sender's
        # keyframe request to the track, which replays its GOP (see module docstring).
        sender = transceiver.sender
        sender._send_keyframe = session.track.request_keyframe  # type: ignore[method-assign]
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except Exception as err:  # aiortc: ValueError / OperationError on bad SDP
            raise BadOfferError(f"cannot use this SDP offer: {err}") from err
        negotiation.pin_answer(transceiver, session.codec)
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as err:
            # aiortc accepts some offers it cannot answer (fuzzing found a video section
            # whose direction attribute is missing: ValueError in createAnswer).
            log.debug("cannot answer an SDP offer", exc_info=True)
            raise BadOfferError(f"cannot answer this SDP offer: {err}") from err
        return str(pc.localDescription.sdp)

    def _watch(self, session: LiveSession) -> None:
        """Close the session when its connection fails or closes, its track ends, or it
        never connects; keep an eye on the camera being run here at all."""

        @session.pc.on("connectionstatechange")
        async def on_state() -> None:
            state = session.pc.connectionState
            if state == "connected" and session.connected_after_s is None:
                session.connected_after_s = time.monotonic() - session.created
            elif state in ("failed", "closed"):
                await self.close(session.id)

        session.track.on("ended", lambda: self._spawn(self.close(session.id)))
        self._spawn(self._connect_deadline(session))
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.create_task(self._supervise(), name="live-supervisor")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_deadline(self, session: LiveSession) -> None:
        await asyncio.sleep(self._connect_timeout_s)
        if session.id in self._sessions and session.pc.connectionState != "connected":
            log.warning(
                "camera %s: live session %s never connected; closing it",
                session.camera_id,
                session.id[:8],
            )
            await self.close(session.id)

    async def _supervise(self) -> None:
        """End the viewers of cameras this process no longer runs (their ring changed or
        went away): a deleted or disabled camera must not stay watchable."""
        while self._sessions:
            await asyncio.sleep(self._supervise_s)
            for camera_id, cam in list(self._cameras.items()):
                if self._ring_for(camera_id) is not cam.passthrough.ring:
                    log.info("camera %s: no longer run here; ending its live view", camera_id)
                    cam.passthrough.end_all()
