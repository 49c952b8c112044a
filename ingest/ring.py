"""The per-camera pre-roll ring: the last seconds of encoded packets, from a keyframe.

:class:`PacketRing` is the :class:`~ingest.types.PacketSink` of a camera's main stream.
The reader thread pushes every packet; clip jobs (see :mod:`ingest.recorder`) take a
snapshot reaching back from a keyframe and then follow the live packets through a
:class:`PacketTap`. Nothing here decodes or blocks: a push is a lock, an append, and a
trim of whole GOPs from the front.

Segments: every ``on_stream`` (a (re)connect) starts a new segment. When its codec
parameters equal the previous segment's (the usual reconnect of the same camera), the
ring keeps its packets and marks the first new packet as a timestamp ``discontinuity``, so
a clip spans the outage with a gap. When they differ (resolution or codec changed), the
old packets are discarded and the taps are told the stream is not spliceable, so running
clips end at the disconnect, flagged truncated.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol

from storage.clips import CodecParams, EncodedPacket, UnsupportedStreamError

if TYPE_CHECKING:
    import av
    import av.video.stream

__all__ = ["PacketRing", "PacketTap", "RingSnapshot", "RingStats"]

log = logging.getLogger(__name__)

# Byte-cap drops are summarised at most this often (wall-clock seconds), never per packet.
_DROP_LOG_INTERVAL_S = 10.0


class PacketTap(Protocol):
    """A live follower of the ring (a clip job). Called from the reader thread: be quick."""

    def offer(self, packet: EncodedPacket) -> None:
        """A packet the ring accepted (the ring's copy is shared: only read it)."""

    def on_stream_change(self, params: CodecParams | None, spliceable: bool) -> None:
        """A new segment started; ``spliceable`` says whether packets continue the old one."""

    def on_disconnect(self) -> None:
        """The connection ended; packets stop until the next ``on_stream_change``."""


@dataclass(frozen=True, slots=True)
class RingSnapshot:
    """Packets of the ring from a keyframe to the newest packet, at one instant.

    ``reaches_back`` is False when the ring did not go back as far as requested (the
    packets then start at its oldest keyframe, or there are none).
    """

    params: CodecParams | None
    packets: tuple[EncodedPacket, ...]
    reaches_back: bool
    segment: int


@dataclass(frozen=True, slots=True)
class RingStats:
    """Counters of a ring (for metrics and the camera's status)."""

    packets: int
    bytes: int
    span_s: float
    segments: int
    connected: bool
    dropped_packets: int
    dropped_bytes: int
    skipped_packets: int


class PacketRing:
    """Keeps the last ``capacity_s`` seconds (by wall clock) of encoded packets.

    The ring always starts at a keyframe and keeps the last keyframe at or before
    ``newest - capacity_s``, so a clip can start at a keyframe at or before any instant
    the ring covers. Memory is also capped at ``max_bytes``: beyond it whole GOPs are
    dropped from the front (counted in :class:`RingStats`), so a camera whose clock jumps
    or whose bitrate spikes cannot exhaust memory.

    Thread-safe: the reader thread calls the :class:`~ingest.types.PacketSink` methods,
    any other thread may take snapshots and attach/detach taps.
    """

    def __init__(
        self, capacity_s: float = 30.0, max_bytes: int = 64 << 20, *, camera_id: str = "-"
    ) -> None:
        if capacity_s <= 0:
            raise ValueError("capacity_s must be > 0")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.capacity_s = capacity_s
        self.max_bytes = max_bytes
        self.camera_id = camera_id
        self._lock = threading.Lock()
        self._packets: deque[EncodedPacket] = deque()
        self._key_times: deque[float] = deque()  # wallclock of each keyframe in _packets
        self._bytes = 0
        self._params: CodecParams | None = None
        self._segment = 0
        self._connected = False
        self._awaiting_keyframe = True
        self._discontinuity = False
        self._taps: tuple[PacketTap, ...] = ()
        self._dropped_packets = 0
        self._dropped_bytes = 0
        self._skipped_packets = 0
        self._drops_unlogged = 0
        self._drop_logged_at = float("-inf")

    # -- PacketSink -------------------------------------------------------------------

    def on_stream(self, stream: av.video.stream.VideoStream) -> None:
        """Start a new segment with ``stream``'s codec parameters (copied, see above)."""
        try:
            params: CodecParams | None = CodecParams.from_stream(stream)
        except UnsupportedStreamError as err:
            log.error("camera %s: main stream cannot be recorded: %s", self.camera_id, err)
            params = None
        with self._lock:
            spliceable = params is not None and params == self._params
            if not spliceable:
                self._clear()
            self._params = params
            self._segment += 1
            self._connected = True
            self._awaiting_keyframe = True
            self._discontinuity = spliceable
            segment, taps = self._segment, self._taps
        log.info(
            "camera %s: recording segment %d: %s %dx%d%s",
            self.camera_id,
            segment,
            params.codec_name if params else "not recordable",
            params.width if params else 0,
            params.height if params else 0,
            " (continues the previous one)" if spliceable else "",
        )
        for tap in taps:
            self._call_tap(tap, tap.on_stream_change, params, spliceable)

    def on_packet(self, packet: av.Packet[av.video.stream.VideoStream], wallclock: float) -> None:
        """Store ``packet`` (by reference) and hand it to the taps."""
        size = packet.size
        if size == 0:  # a demuxer flush packet carries nothing to record
            return
        with self._lock:
            record = self._accept(packet, size, wallclock)
            if record is None:
                return
            self._packets.append(record)
            self._bytes += size
            if record.is_keyframe:
                self._key_times.append(wallclock)
            self._trim(wallclock)
            taps = self._taps
        for tap in taps:
            self._call_tap(tap, tap.offer, record)

    def on_disconnect(self) -> None:
        """Mark the segment ended; its packets stay until the next segment decides."""
        with self._lock:
            self._connected = False
            taps = self._taps
        for tap in taps:
            self._call_tap(tap, tap.on_disconnect)

    # -- readers ----------------------------------------------------------------------

    def snapshot(self, since: float) -> RingSnapshot:
        """Packets from the last keyframe at or before wall-clock ``since`` to the newest."""
        with self._lock:
            return self._snapshot(since)

    def attach(self, tap: PacketTap, since: float) -> RingSnapshot:
        """Take a :meth:`snapshot` and register ``tap`` for every later packet, atomically.

        No packet is missed or delivered twice between the snapshot and the tap.
        """
        with self._lock:
            self._taps = (*self._taps, tap)
            return self._snapshot(since)

    def detach(self, tap: PacketTap) -> None:
        """Stop feeding ``tap`` (no-op when it is not attached)."""
        with self._lock:
            self._taps = tuple(t for t in self._taps if t is not tap)

    @property
    def params(self) -> CodecParams | None:
        """Codec parameters of the current segment (``None`` before the first stream)."""
        with self._lock:
            return self._params

    def stats(self) -> RingStats:
        """Current counters."""
        with self._lock:
            span = self._packets[-1].wallclock - self._packets[0].wallclock if self._packets else 0
            return RingStats(
                packets=len(self._packets),
                bytes=self._bytes,
                span_s=span,
                segments=self._segment,
                connected=self._connected,
                dropped_packets=self._dropped_packets,
                dropped_bytes=self._dropped_bytes,
                skipped_packets=self._skipped_packets,
            )

    def _call_tap(self, tap: PacketTap, method: Callable[..., None], *args: Any) -> None:
        """Call a tap without the lock held; a failing tap is detached, never the reader's
        problem (and logged once, not once per packet)."""
        try:
            method(*args)
        except Exception:
            log.exception("camera %s: packet tap %r failed, detaching it", self.camera_id, tap)
            self.detach(tap)

    # -- internals (called with the lock held) ----------------------------------------

    def _accept(self, packet: av.Packet[Any], size: int, wallclock: float) -> EncodedPacket | None:
        """The record to store, or None when the packet cannot start or join a segment."""
        if self._params is None:
            return None
        keyframe = packet.is_keyframe
        if self._awaiting_keyframe:
            if not keyframe:
                # Frames before the segment's first keyframe reference frames we never got.
                self._skipped_packets += 1
                return None
            self._awaiting_keyframe = False
        pts, dts, duration = packet.pts, packet.dts, packet.duration
        packet_tb = packet.time_base
        if packet_tb and packet_tb != self._params.time_base:
            pts, dts, duration = (
                _rescale(v, packet_tb, self._params.time_base) for v in (pts, dts, duration)
            )
        record = EncodedPacket(
            payload=packet,
            pts=pts,
            dts=dts,
            duration=duration,
            is_keyframe=keyframe,
            wallclock=wallclock,
            size=size,
            discontinuity=self._discontinuity,
        )
        self._discontinuity = False
        return record

    def _trim(self, newest: float) -> None:
        # By the newest packet's wall clock: a clock stepped back (NTP) only delays the
        # trim, and the byte cap still bounds memory meanwhile.
        horizon = newest - self.capacity_s
        # Drop a GOP only when the next keyframe still starts at or before the horizon.
        while len(self._key_times) >= 2 and self._key_times[1] <= horizon:
            self._drop_gop(counted=False)
        over_cap = self._bytes > self.max_bytes
        while self._bytes > self.max_bytes and self._packets:
            self._drop_gop(counted=True)
        if over_cap:
            self._log_drops(newest)

    def _drop_gop(self, *, counted: bool) -> None:
        """Remove the front keyframe and the packets that depend on it."""
        first = self._packets.popleft()
        self._key_times.popleft()
        dropped, dropped_bytes = 1, first.size
        while self._packets and not self._packets[0].is_keyframe:
            dropped_bytes += self._packets.popleft().size
            dropped += 1
        self._bytes -= dropped_bytes
        if counted:
            self._dropped_packets += dropped
            self._dropped_bytes += dropped_bytes
            self._drops_unlogged += dropped
        if not self._packets:
            # The GOP being received was dropped: what follows cannot be decoded until the
            # next keyframe.
            self._awaiting_keyframe = True

    def _log_drops(self, now: float) -> None:
        if now - self._drop_logged_at < _DROP_LOG_INTERVAL_S:
            return
        log.warning(
            "camera %s: pre-roll ring over %d bytes, dropped %d packets (%d in total)",
            self.camera_id,
            self.max_bytes,
            self._drops_unlogged,
            self._dropped_packets,
        )
        self._drops_unlogged = 0
        self._drop_logged_at = now

    def _clear(self) -> None:
        self._packets.clear()
        self._key_times.clear()
        self._bytes = 0

    def _snapshot(self, since: float) -> RingSnapshot:
        packets = list(self._packets)
        start = _last_keyframe_at_or_before(packets, since)
        reaches_back = start is not None
        if start is None:
            start = 0  # the ring always starts at a keyframe: its oldest one
        return RingSnapshot(
            params=self._params,
            packets=tuple(packets[start:]),
            reaches_back=reaches_back,
            segment=self._segment,
        )


def _last_keyframe_at_or_before(packets: list[EncodedPacket], since: float) -> int | None:
    for i in range(len(packets) - 1, -1, -1):
        packet = packets[i]
        if packet.is_keyframe and packet.wallclock <= since:
            return i
    return None


def _rescale(value: int | None, src: Fraction, dst: Fraction) -> int | None:
    return None if value is None else round(value * src / dst)
