"""The clip muxer: encoded video packets to a faststart MP4, without re-encoding.

Pure muxing, no threads and no camera state: :func:`write_mp4` takes the codec parameters
of a stream (:class:`CodecParams`, detached from the container they came from) and a run of
:class:`EncodedPacket` records starting at a keyframe, and writes them atomically (temp
name, fsync, rename) to an MP4 whose ``moov`` box precedes ``mdat`` so a browser plays it
while downloading. Timestamps are rebased to start at 0 and repaired where RTSP cameras
send missing or non-monotonic ones (see :func:`plan_timestamps`).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import os
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container
import av.video.stream
import numpy as np
import numpy.typing as npt

from storage.durable import replace_durably
from storage.errors import StorageError

__all__ = [
    "ClipError",
    "ClipFileInfo",
    "CodecParams",
    "EncodedPacket",
    "PlannedPacket",
    "TimestampPlan",
    "UnsupportedStreamError",
    "frame_at",
    "plan_timestamps",
    "write_mp4",
]

log = logging.getLogger(__name__)

# A jump of the stream's timestamps that disagrees with the packets' arrival times by more
# than this is a timestamp reset (camera reboot, RTP clock change after a reconnect), not
# elapsed time: the muxer re-anchors on the wall clock instead of writing a huge gap.
MAX_TIMESTAMP_DRIFT_S = 5.0
# Frame duration assumed when a stream gives no usable timestamps and no frame rate.
FALLBACK_FRAME_S = Fraction(1, 25)
_MP4_OPTIONS = {"movflags": "+faststart"}


class ClipError(StorageError):
    """A clip could not be written (nothing to write, muxer error, file system error)."""


class UnsupportedStreamError(ClipError, ValueError):
    """The stream's codec cannot be stored in MP4 without re-encoding."""


@dataclass(frozen=True, slots=True)
class CodecParams:
    """The codec parameters of a video stream, detached from its (input) container.

    PyAV's ``add_stream_from_template`` needs a :class:`~av.stream.Stream`, but a stream
    of an input container points into memory freed when that container is closed (after
    every RTSP disconnect). So :meth:`from_stream` copies the full ``AVCodecParameters``
    (extradata/SPS+PPS, size, profile, colour info) into a stream of a private, never
    written output container that lives as long as this object.

    Two parameter sets compare equal when packets of one can continue a file started with
    the other (same codec, size, extradata and time base): the ring splices reconnects
    only then.
    """

    codec_name: str
    width: int
    height: int
    time_base: Fraction
    extradata: bytes
    average_rate: Fraction | None = field(default=None, compare=False)
    template: av.video.stream.VideoStream | None = field(default=None, compare=False, repr=False)
    _holder: av.container.OutputContainer | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_stream(cls, stream: av.video.stream.VideoStream) -> CodecParams:
        """Copy ``stream``'s parameters; safe to use after its container is closed.

        Raises :class:`UnsupportedStreamError` when MP4 cannot carry the codec.
        """
        if stream.time_base is None:
            raise UnsupportedStreamError(f"stream {stream.index} has no time base")
        holder = av.open(io.BytesIO(), mode="w", format="mp4")
        try:
            template = holder.add_stream_from_template(stream)
        except ValueError as err:  # PyAV: "'mp4' format does not support 'x' codec"
            holder.close()
            raise UnsupportedStreamError(str(err)) from err
        ctx = stream.codec_context
        return cls(
            codec_name=ctx.name,
            width=ctx.width,
            height=ctx.height,
            time_base=stream.time_base,
            extradata=bytes(ctx.extradata or b""),
            average_rate=stream.average_rate,
            template=template,
            _holder=holder,
        )

    def frame_duration(self) -> Fraction:
        """The nominal duration of one frame in seconds (from the stream's frame rate)."""
        if self.average_rate and self.average_rate > 0:
            return 1 / self.average_rate
        return FALLBACK_FRAME_S


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded video packet and what is known about it when it arrived.

    ``payload`` is the packet (or its bytes); it is only read, never modified, because the
    same packet is shared by the ring and every clip being recorded. ``pts``, ``dts`` and
    ``duration`` are in the stream's time base (``None`` when the camera sent none);
    ``wallclock`` is ``time.time()`` when it was read. ``discontinuity`` marks the first
    packet after a reconnect whose timestamps do not continue the previous packet's.
    """

    payload: av.Packet[Any] | bytes
    pts: int | None
    dts: int | None
    duration: int | None
    is_keyframe: bool
    wallclock: float
    size: int
    discontinuity: bool = False


@dataclass(frozen=True, slots=True)
class PlannedPacket:
    """A packet with the timestamps it gets in the file (time base of the stream)."""

    packet: EncodedPacket
    pts: int
    dts: int
    duration: int


@dataclass(frozen=True, slots=True)
class TimestampPlan:
    """The packets to write with repaired, rebased timestamps and what was changed."""

    packets: tuple[PlannedPacket, ...]
    fixed: int
    dropped: int

    @property
    def duration_ticks(self) -> int:
        """From the earliest presentation time to the end of the last-shown frame."""
        if not self.packets:
            return 0
        start = min(p.pts for p in self.packets)
        end = max(p.pts + p.duration for p in self.packets)
        return end - start


@dataclass(frozen=True, slots=True)
class ClipFileInfo:
    """What :func:`write_mp4` wrote: the final file and its facts."""

    path: Path
    sha256: str
    size: int
    duration_s: float
    frames: int
    first_pts: int | None
    first_wallclock: float
    last_wallclock: float
    fixed_timestamps: int
    dropped_packets: int


def write_mp4(path: Path, params: CodecParams, packets: Sequence[EncodedPacket]) -> ClipFileInfo:
    """Remux ``packets`` into a faststart MP4 at ``path``, atomically; return its facts.

    Leading packets before the first keyframe are dropped (they cannot be decoded), so the
    file always decodes from its first frame. The file appears at ``path`` only when it is
    complete and fsynced. Raises :class:`ClipError` when there is nothing decodable to
    write or the muxer / file system fails (no partial file is left behind).
    """
    plan = plan_timestamps(packets, params.time_base, params.frame_duration())
    if not plan.packets:
        raise ClipError(f"no decodable video packets for {path.name} (need a keyframe)")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        _mux(tmp, params, plan.packets)
        sha256, size = _hash_and_sync(tmp)
        replace_durably(tmp, path)
    except av.FFmpegError as err:
        raise ClipError(f"muxing {path.name} failed: {err}") from err
    except OSError as err:
        if isinstance(err, ClipError):
            raise
        raise ClipError(f"writing {path} failed: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    first = plan.packets[0].packet
    if plan.fixed or plan.dropped:
        log.info(
            "clip %s: repaired %d timestamps, dropped %d packets",
            path.name,
            plan.fixed,
            plan.dropped,
        )
    return ClipFileInfo(
        path=path,
        sha256=sha256,
        size=size,
        duration_s=float(plan.duration_ticks * params.time_base),
        frames=len(plan.packets),
        first_pts=first.pts,
        first_wallclock=first.wallclock,
        last_wallclock=plan.packets[-1].packet.wallclock,
        fixed_timestamps=plan.fixed,
        dropped_packets=plan.dropped,
    )


def plan_timestamps(
    packets: Sequence[EncodedPacket],
    time_base: Fraction,
    frame_s: Fraction = FALLBACK_FRAME_S,
) -> TimestampPlan:
    """Rebase timestamps to start at 0 and make ``dts`` strictly increasing.

    The MP4 muxer rejects a packet whose dts is missing, not greater than the previous
    one, or greater than its pts. RTSP delivers all three: cameras send frames without
    timestamps before the first RTCP sender report, duplicate timestamps, and restart
    their clock on reconnect. Each is repaired instead of dropped, because dropping a
    reference frame would corrupt every frame up to the next keyframe:

    - missing dts: the pts, else the previous dts plus one frame duration;
    - dts not after the previous one: previous dts + 1 tick (pts raised to match);
    - a jump that disagrees with the arrival times by more than
      :data:`MAX_TIMESTAMP_DRIFT_S`, or a packet flagged ``discontinuity``: re-anchored
      at the previous dts plus the wall-clock gap.

    Dropped (and counted): empty packets (demuxer flush) and packets before the first
    keyframe. The last packet's duration falls back to one frame when unknown.
    """
    frame_ticks = _frame_ticks(packets, time_base, frame_s)
    state = _Rebaser(time_base, frame_ticks)
    kept: list[tuple[EncodedPacket, int, int]] = []
    dropped = 0
    for packet in packets:
        if packet.size == 0 or (not kept and not packet.is_keyframe):
            dropped += 1
            continue
        dts, pts = state.next(packet)
        kept.append((packet, dts, pts))
    planned = _with_durations(kept, frame_ticks)
    return TimestampPlan(packets=tuple(planned), fixed=state.fixed, dropped=dropped)


class _Rebaser:
    """The running state of :func:`plan_timestamps` (offset, previous dts and wallclock)."""

    def __init__(self, time_base: Fraction, frame_ticks: int) -> None:
        self.time_base = time_base
        self.frame_ticks = frame_ticks
        self.max_drift = int(MAX_TIMESTAMP_DRIFT_S / time_base)
        self.offset: int | None = None
        self.prev_dts = 0
        self.prev_wallclock = 0.0
        self.fixed = 0

    def next(self, packet: EncodedPacket) -> tuple[int, int]:
        """The (dts, pts) of ``packet`` in the file."""
        raw_dts = packet.dts if packet.dts is not None else packet.pts
        if self.offset is None:  # first packet: anchor the file's time 0 here
            self.offset = raw_dts if raw_dts is not None else 0
            dts = 0
        elif raw_dts is None:
            # After a reconnect the first frame often has no timestamp yet (no RTCP sender
            # report): place it by the wall clock so the outage stays visible.
            step = self._wall_ticks(packet) if packet.discontinuity else 0
            dts = self.prev_dts + max(step, self.frame_ticks)
            self.fixed += 1
        else:
            dts = self._continue(packet, raw_dts)
        raw_pts = packet.pts if packet.pts is not None else raw_dts
        pts = dts if raw_pts is None else max(raw_pts - self.offset, dts)
        if raw_pts is not None and raw_pts - self.offset < dts:
            self.fixed += 1
        self.prev_dts, self.prev_wallclock = dts, packet.wallclock
        return dts, pts

    def _continue(self, packet: EncodedPacket, raw_dts: int) -> int:
        assert self.offset is not None
        dts = raw_dts - self.offset
        wall_ticks = self._wall_ticks(packet)
        if packet.discontinuity or abs((dts - self.prev_dts) - wall_ticks) > self.max_drift:
            # New time origin: continue after the previous packet by the wall-clock gap.
            target = self.prev_dts + max(wall_ticks, self.frame_ticks)
            self.offset = raw_dts - target
            self.fixed += 1
            return target
        if dts <= self.prev_dts:
            self.fixed += 1
            return self.prev_dts + 1
        return dts

    def _wall_ticks(self, packet: EncodedPacket) -> int:
        """Time since the previous packet arrived, in ticks."""
        return int((packet.wallclock - self.prev_wallclock) / self.time_base)


def _frame_ticks(packets: Sequence[EncodedPacket], time_base: Fraction, frame_s: Fraction) -> int:
    """One frame's duration in ticks: the median dts step of the first packets."""
    stamps = [p.dts for p in packets[:64] if p.dts is not None]
    steps = [b - a for a, b in itertools.pairwise(stamps) if b > a]
    if steps:
        return max(1, int(statistics.median(steps)))
    return max(1, round(frame_s / time_base))


def _with_durations(
    kept: Sequence[tuple[EncodedPacket, int, int]], frame_ticks: int
) -> list[PlannedPacket]:
    """Give each packet the gap to the next dts as its duration (the last: its own)."""
    planned: list[PlannedPacket] = []
    for i, (packet, dts, pts) in enumerate(kept):
        if i + 1 < len(kept):
            duration = kept[i + 1][1] - dts
        else:
            duration = packet.duration if packet.duration else frame_ticks
        planned.append(PlannedPacket(packet=packet, pts=pts, dts=dts, duration=duration))
    return planned


def _mux(tmp: Path, params: CodecParams, packets: Sequence[PlannedPacket]) -> None:
    """Write ``packets`` to ``tmp`` as MP4 with the moov box first (faststart)."""
    if params.template is None:
        raise ClipError(f"codec parameters of {params.codec_name!r} carry no stream template")
    # By path, not a Python file object: faststart makes FFmpeg reopen the file by name to
    # move the moov box in front of mdat after the last packet.
    with av.open(str(tmp), mode="w", format="mp4", options=_MP4_OPTIONS) as out:
        stream = out.add_stream_from_template(params.template)
        if params.codec_name == "hevc" and params.extradata:
            # Safari (AVFoundation) plays H.265 in MP4 only as 'hvc1' (the parameter sets in
            # the hvcC box), not FFmpeg's default 'hev1' (in-band only): same bytes, another
            # sample entry. Without extradata the hvcC would be empty: 'hev1' then.
            stream.codec_context.codec_tag = "hvc1"
        for planned in packets:
            out.mux_one(_output_packet(planned, stream, params.time_base))


def _output_packet(
    planned: PlannedPacket, stream: av.video.stream.VideoStream, time_base: Fraction
) -> av.Packet[Any]:
    # A fresh packet over a copy of the data: the source packet is shared with the ring and
    # other clips (possibly muxed concurrently), and the muxer owns what it is given.
    packet: av.Packet[Any] = av.Packet(bytes(planned.packet.payload))
    packet.stream = stream
    packet.time_base = time_base
    packet.pts = planned.pts
    packet.dts = planned.dts
    packet.duration = planned.duration
    packet.is_keyframe = planned.packet.is_keyframe
    return packet


def _hash_and_sync(path: Path) -> tuple[str, int]:
    """SHA-256 and size of ``path``, after flushing it to disk.

    One read pass, right after writing (so from the page cache): hashing while muxing is
    impossible with faststart, which rewrites the whole file to move ``moov`` to the front.
    """
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        os.fsync(f.fileno())
        return digest, os.fstat(f.fileno()).st_size


def frame_at(path: Path, at_s: float) -> npt.NDArray[np.uint8] | None:
    """The clip's picture ``at_s`` seconds in (the last one when it is shorter), as BGR;
    ``None`` when nothing decodes. For an incident's snapshot when no frame was kept."""
    image = None
    try:
        with av.open(str(path), mode="r") as container:
            for frame in container.decode(video=0):
                image = np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
                if frame.time is not None and frame.time >= at_s:
                    break
    except av.FFmpegError as err:
        log.warning("clip %s: no picture at %.1f s: %s", path.name, at_s, err)
    return image
