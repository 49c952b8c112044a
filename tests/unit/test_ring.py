"""The pre-roll ring and clip jobs: trimming, taps, segments, job endings, concurrency."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TypeAlias, cast

import av
import av.video.stream
import pytest

from ingest.recorder import ClipJob, ClipRecorder, ClipResult, EndReason, RecorderConfig
from ingest.ring import PacketRing
from ingest.types import PacketSink
from storage.clips import ClipError, CodecParams, EncodedPacket
from tests.unit.synthetic_h264 import (
    FPS,
    decode_errors,
    decoded_indices,
    encode_video,
    feed,
    ffprobe,
)

T0 = 1_700_000_000.0
GOP = 25
TB = Fraction(1, 90000)
STEP = 3600


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Encoded once per module: 8 s at 320x240, and 4 s at 160x120 (other parameters)."""
    d = tmp_path_factory.mktemp("videos")
    return {
        "main": encode_video(d / "main.ts", 8 * FPS, gop=GOP, fmt="mpegts"),
        "small": encode_video(d / "small.ts", 4 * FPS, gop=GOP, fmt="mpegts", width=160,
                              height=120, first_index=1000),
    }  # fmt: skip


@pytest.fixture
def stream(videos: dict[str, Path]) -> Iterator[av.video.stream.VideoStream]:
    """A real H.264 stream (time base 1/90000) to announce with on_stream."""
    with av.open(str(videos["main"])) as container:
        yield container.streams.video[0]


VideoPacket: TypeAlias = "av.Packet[av.video.stream.VideoStream]"


def video_packet(data: bytes) -> VideoPacket:
    """A packet as a reader hands it over (PyAV types new packets as of any stream)."""
    return cast(VideoPacket, av.Packet(data))


def packet(i: int, *, key: bool, size: int = 1000) -> VideoPacket:
    """Synthetic packet number ``i`` (pts in 1/90000, one frame at 25 fps per number)."""
    p = video_packet(bytes(size))
    p.pts = p.dts = i * STEP
    p.time_base = TB
    p.is_keyframe = key
    return p


def push(ring: PacketSink, frames: range, *, gop: int = GOP, size: int = 1000) -> None:
    """Frames ``frames`` arriving at T0 + i / 25, a keyframe every ``gop``."""
    for i in frames:
        ring.on_packet(packet(i, key=i % gop == 0, size=size), T0 + i / FPS)


def numbers(packets: tuple[EncodedPacket, ...] | list[EncodedPacket]) -> list[int]:
    return [round((p.wallclock - T0) * FPS) for p in packets]


# -- ring ---------------------------------------------------------------------------------


def test_the_ring_is_a_packet_sink() -> None:
    assert isinstance(PacketRing(), PacketSink)


def test_ring_keeps_capacity_s_back_to_a_keyframe(stream: av.video.stream.VideoStream) -> None:
    ring = PacketRing(capacity_s=3.0)
    ring.on_stream(stream)
    push(ring, range(250))  # 10 s; newest frame 249 at 9.96 s, horizon 6.96 s

    snap = ring.snapshot(T0)
    assert numbers(snap.packets) == list(range(150, 250))  # from the keyframe at 6.0 s
    assert not snap.reaches_back
    stats = ring.stats()
    assert (stats.packets, stats.bytes, stats.dropped_packets) == (100, 100_000, 0)
    assert stats.span_s == pytest.approx(99 / FPS)


@pytest.mark.parametrize(
    ("since_s", "first", "reaches_back"),
    [
        (8.0, 200, True),  # exactly a keyframe's time
        (8.5, 200, True),  # between keyframes: the one before
        (9.99, 225, True),  # after the newest packet: the last keyframe
        (6.5, 150, True),  # the oldest keyframe still covers it
        (5.9, 150, False),  # before the ring: its oldest keyframe, flagged
    ],
)
def test_snapshot_starts_at_the_last_keyframe_at_or_before_since(
    stream: av.video.stream.VideoStream, since_s: float, first: int, reaches_back: bool
) -> None:
    ring = PacketRing(capacity_s=3.0)
    ring.on_stream(stream)
    push(ring, range(250))

    snap = ring.snapshot(T0 + since_s)

    assert numbers(snap.packets)[0] == first
    assert numbers(snap.packets)[-1] == 249
    assert snap.reaches_back is reaches_back


def test_byte_cap_drops_whole_gops_and_counts_them(stream: av.video.stream.VideoStream) -> None:
    ring = PacketRing(capacity_s=60.0, max_bytes=30_000)
    ring.on_stream(stream)
    push(ring, range(100), gop=10)

    stats = ring.stats()
    assert stats.bytes <= 30_000
    assert stats.dropped_packets == 70 and stats.dropped_bytes == 70_000
    assert numbers(ring.snapshot(T0).packets) == list(range(70, 100))


def test_a_gop_larger_than_the_cap_waits_for_the_next_keyframe(
    stream: av.video.stream.VideoStream,
) -> None:
    ring = PacketRing(capacity_s=60.0, max_bytes=5_000)
    ring.on_stream(stream)
    push(ring, range(23), gop=10)  # GOPs of 10 000 bytes never fit

    snap = ring.snapshot(T0 + 10)
    assert snap.packets == () or snap.packets[0].is_keyframe
    assert ring.stats().dropped_packets > 0


def test_packets_before_the_first_keyframe_and_flush_packets_are_not_kept(
    stream: av.video.stream.VideoStream,
) -> None:
    ring = PacketRing()
    push(ring, range(5))  # before on_stream: no codec parameters, nothing to record
    ring.on_stream(stream)
    push(ring, range(5, 30))  # 5..24 are not decodable without the keyframe at 0
    ring.on_packet(video_packet(b""), T0 + 2)

    assert numbers(ring.snapshot(T0).packets) == list(range(25, 30))
    assert ring.stats().skipped_packets == 20


def test_packets_in_another_time_base_are_rescaled(stream: av.video.stream.VideoStream) -> None:
    ring = PacketRing()
    ring.on_stream(stream)
    p = video_packet(b"x")
    p.pts, p.dts, p.time_base, p.is_keyframe = 40, 40, Fraction(1, 1000), True
    ring.on_packet(p, T0)

    (record,) = ring.snapshot(T0).packets
    assert (record.pts, record.dts) == (3600, 3600)


class Recorder:
    """A tap that records what it is given."""

    def __init__(self) -> None:
        self.packets: list[EncodedPacket] = []
        self.changes: list[tuple[CodecParams | None, bool]] = []
        self.disconnects = 0

    def offer(self, packet: EncodedPacket) -> None:
        self.packets.append(packet)

    def on_stream_change(self, params: CodecParams | None, spliceable: bool) -> None:
        self.changes.append((params, spliceable))

    def on_disconnect(self) -> None:
        self.disconnects += 1


class Broken(Recorder):
    def offer(self, packet: EncodedPacket) -> None:
        raise RuntimeError("tap bug")


def test_taps_get_every_later_packet_once_and_a_broken_tap_harms_no_one(
    stream: av.video.stream.VideoStream,
) -> None:
    ring = PacketRing()
    ring.on_stream(stream)
    push(ring, range(30))
    broken, tap = Broken(), Recorder()
    ring.attach(broken, T0)
    snap = ring.attach(tap, T0 + 1.5)
    push(ring, range(30, 40))
    ring.detach(tap)
    push(ring, range(40, 45))

    assert numbers(snap.packets + tuple(tap.packets)) == list(range(25, 40))
    assert numbers(ring.snapshot(T0).packets) == list(range(45))
    push(ring, range(45, 50))
    assert broken.packets == []  # detached after its first failure (logged once)
    assert ring.stats().packets == 50


def test_attach_while_the_reader_pushes_misses_and_repeats_nothing(
    stream: av.video.stream.VideoStream,
) -> None:
    ring = PacketRing(capacity_s=1000.0)
    ring.on_stream(stream)
    push(ring, range(25))
    reader = threading.Thread(target=push, args=(ring, range(25, 5000)))
    taps: list[tuple[tuple[EncodedPacket, ...], Recorder]] = []
    reader.start()
    while reader.is_alive() and len(taps) < 200:
        tap = Recorder()
        taps.append((ring.attach(tap, T0 + 1e9).packets, tap))
    reader.join()

    for snapshot, tap in taps:
        got = numbers(snapshot + tuple(tap.packets))
        assert got == list(range(got[0], 5000))


def test_reconnect_with_the_same_parameters_keeps_the_ring(
    stream: av.video.stream.VideoStream, videos: dict[str, Path]
) -> None:
    ring = PacketRing()
    tap = Recorder()
    ring.on_stream(stream)
    ring.attach(tap, T0)
    push(ring, range(30))
    ring.on_disconnect()
    with av.open(str(videos["main"])) as again:
        ring.on_stream(again.streams.video[0])
    push(ring, range(50, 80))  # non-keys until 50 is skipped? 50 % 25 == 0: a keyframe

    records = ring.snapshot(T0).packets
    assert numbers(records) == [*range(30), *range(50, 80)]
    assert [p.discontinuity for p in records].index(True) == 30
    assert sum(p.discontinuity for p in records) == 1
    assert tap.disconnects == 1 and tap.changes[-1][1] is True
    assert ring.stats().segments == 2


def test_reconnect_with_other_parameters_clears_the_ring(
    stream: av.video.stream.VideoStream, videos: dict[str, Path]
) -> None:
    ring = PacketRing()
    tap = Recorder()
    ring.on_stream(stream)
    ring.attach(tap, T0)
    push(ring, range(30))
    ring.on_disconnect()
    with av.open(str(videos["small"])) as other:
        ring.on_stream(other.streams.video[0])

    assert ring.snapshot(T0).packets == ()
    params = ring.params
    assert params is not None and (params.width, params.height) == (160, 120)
    assert tap.changes[-1] == (params, False)


def test_a_stream_mp4_cannot_hold_is_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "raw.avi"
    with av.open(str(path), mode="w") as out:
        raw = out.add_stream("huffyuv", rate=FPS)
        raw.width, raw.height, raw.pix_fmt = 64, 48, "yuv422p"
        out.mux(raw.encode(av.VideoFrame(64, 48, "yuv422p")))
        out.mux(raw.encode(None))
    ring = PacketRing()

    feed(path, ring, T0)

    assert ring.params is None and ring.snapshot(T0).packets == ()


# -- clip jobs ----------------------------------------------------------------------------


def recorder_for(
    ring: PacketRing, spool: Path, config: RecorderConfig | None = None
) -> ClipRecorder:
    return ClipRecorder(ring, spool, camera_id="cam/1", config=config, clock=lambda: T0)


def clip_frames(result: ClipResult) -> list[int]:
    """Decoded frame indices, after checking the clip decodes cleanly."""
    assert decode_errors(result.path) == ""
    return decoded_indices(result.path)


def test_overlapping_jobs_on_one_camera(tmp_path: Path, videos: dict[str, Path]) -> None:
    ring = PacketRing(capacity_s=10.0)
    recorder = recorder_for(ring, tmp_path)
    jobs: dict[str, ClipJob] = {}
    plan: dict[float, Callable[[], object]] = {  # at wallclock offset: action
        1.5: lambda: jobs.update(a=recorder.start(T0 + 1.2, 1.0)),
        2.5: lambda: jobs.update(b=recorder.start(T0 + 2.4, 0.5)),
        3.0: lambda: jobs["a"].finish(T0 + 2.9, 1.0),
        4.0: lambda: jobs.update(c=recorder.start(T0 + 3.9, 3.5)),
        5.0: lambda: jobs["b"].finish(T0 + 5.0, 0.0),
        5.01: lambda: jobs["c"].finish(T0 + 5.0, 0.5),
    }

    def act(wallclock: float) -> None:
        for at in [at for at in plan if wallclock >= T0 + at]:
            plan.pop(at)()

    feed(videos["main"], ring, T0, each=act)
    a, b, c = (jobs[k].wait(timeout=60) for k in "abc")
    recorder.close()

    assert clip_frames(a) == list(range(0, 98 + 1))  # keyframe 0 .. first at >= 3.9 s
    assert clip_frames(b) == list(range(25, 125 + 1))
    assert clip_frames(c) == list(range(0, 138 + 1))
    assert not any(r.truncated or r.preroll_short for r in (a, b, c))
    assert len({a.path, b.path, c.path}) == 3
    assert all(r.path.name.startswith("cam_1-2023") for r in (a, b, c))


def test_a_job_spans_a_reconnect_with_the_same_parameters(
    tmp_path: Path, videos: dict[str, Path]
) -> None:
    ring = PacketRing()
    recorder = recorder_for(ring, tmp_path)
    feed(videos["main"], ring, T0, until=lambda t: t >= T0 + 3.0)  # frames 0..74
    job = recorder.start(T0 + 2.5, 1.0)
    # 2 s outage; the camera's clock restarts from 0 on the new connection.
    feed(videos["main"], ring, T0 + 5.0, first_index=125, each=lambda t: (
        job.finish(T0 + 6.0, 0.5) if t >= T0 + 6.5 else None))  # fmt: skip
    result = job.wait(timeout=60)
    recorder.close()

    assert not result.truncated and result.end_reason is EndReason.COMPLETE
    # The second connection replays the file: its pictures count from 0 again.
    assert clip_frames(result) == [*range(25, 75), *range(0, 39)]
    packets = ffprobe(result.path, "-show_packets")["packets"]
    dts = [float(p["dts_time"]) for p in packets]
    assert all(a < b for a, b in itertools.pairwise(dts))
    gap = dts[50] - dts[49]
    assert gap == pytest.approx(2.04, abs=0.01)  # the outage shows as a 2 s frozen frame


def test_a_job_ends_at_a_reconnect_with_other_parameters(
    tmp_path: Path, videos: dict[str, Path]
) -> None:
    ring = PacketRing()
    recorder = recorder_for(ring, tmp_path)
    feed(videos["main"], ring, T0, until=lambda t: t >= T0 + 3.0)
    job = recorder.start(T0 + 2.5, 1.0)
    feed(videos["small"], ring, T0 + 5.0, first_index=1000)
    result = job.wait(timeout=60)
    later = recorder.start(T0 + 6.5, 0.5)
    later.finish(T0 + 7.0, 0.5)
    second = later.wait(timeout=60)
    recorder.close()

    assert result.truncated and result.end_reason is EndReason.STREAM_CHANGED
    assert clip_frames(result) == list(range(25, 75))
    assert clip_frames(second) == list(range(1025, 1064))
    assert ffprobe(second.path, "-show_streams")["streams"][0]["width"] == 160


def test_a_stalled_job_is_written_with_what_it_has(tmp_path: Path, videos: dict[str, Path]) -> None:
    ring = PacketRing()
    recorder = recorder_for(ring, tmp_path, RecorderConfig(stall_timeout_s=10.0))
    feed(videos["main"], ring, T0, until=lambda t: t >= T0 + 3.0)
    job = recorder.start(T0 + 2.0, 0.0)

    assert recorder.expire_stalled(now=T0 + 12.0) == 0  # last packet at 2.96 s
    assert recorder.expire_stalled(now=T0 + 13.0) == 1
    result = job.wait(timeout=60)
    recorder.close()

    assert result.truncated and result.end_reason is EndReason.STALLED
    assert clip_frames(result) == list(range(50, 75))
    assert recorder.jobs == ()


def test_a_job_stops_at_the_length_cap(tmp_path: Path, videos: dict[str, Path]) -> None:
    ring = PacketRing()
    recorder = recorder_for(ring, tmp_path, RecorderConfig(max_clip_s=2.0))
    job = recorder.start(T0, 0.0)
    feed(videos["main"], ring, T0)
    result = job.wait(timeout=60)
    recorder.close()

    assert result.end_reason is EndReason.MAX_LENGTH and result.truncated
    assert result.preroll_short  # the ring was empty when the job started
    assert clip_frames(result) == list(range(0, 51))


def test_close_writes_the_running_jobs(tmp_path: Path, videos: dict[str, Path]) -> None:
    ring = PacketRing()
    recorder = recorder_for(ring, tmp_path)
    feed(videos["main"], ring, T0, until=lambda t: t >= T0 + 2.0)
    running = recorder.start(T0 + 1.0, 0.0)

    recorder.close()

    assert running.done()
    result = running.wait(timeout=0)
    assert result.end_reason is EndReason.CANCELLED and result.path.exists()
    with pytest.raises(RuntimeError):
        recorder.start(T0, 0.0)


async def test_awaiting_a_job_with_a_reader_thread(tmp_path: Path, videos: dict[str, Path]) -> None:
    ring = PacketRing()
    recorder = recorder_for(ring, tmp_path)
    halfway, go_on = threading.Event(), threading.Event()

    def reader() -> None:
        def pause(wallclock: float) -> None:
            if wallclock >= T0 + 4.0 and not halfway.is_set():
                halfway.set()
                go_on.wait(timeout=60)

        feed(videos["main"], ring, T0, each=pause)

    thread = threading.Thread(target=reader)
    thread.start()
    await asyncio.to_thread(halfway.wait, 60)
    job = recorder.start(T0 + 3.0, 1.0)
    job.finish(T0 + 4.5, 1.0)
    go_on.set()
    result = await job
    await asyncio.to_thread(thread.join)
    await recorder.aclose()

    assert clip_frames(result) == list(range(50, 138 + 1))
    assert not result.truncated


async def test_awaiting_notices_a_stall(tmp_path: Path, videos: dict[str, Path]) -> None:
    ring = PacketRing()
    now = [T0]
    recorder = ClipRecorder(
        ring, tmp_path, config=RecorderConfig(stall_timeout_s=5, poll_interval_s=0.01),
        clock=lambda: now[0],
    )  # fmt: skip
    feed(videos["main"], ring, T0, until=lambda t: t >= T0 + 2.0)
    job = recorder.start(T0 + 1.0, 0.0)
    now[0] = T0 + 60  # the camera went silent a minute ago

    result = await job.result()
    recorder.close()

    assert result.end_reason is EndReason.STALLED


async def test_a_job_without_packets_fails_with_a_clip_error(tmp_path: Path) -> None:
    recorder = recorder_for(PacketRing(), tmp_path)
    job = recorder.start(T0, 5.0)
    job.abort()

    with pytest.raises(ClipError, match="no video packets"):
        await job
    recorder.close()
    assert list(tmp_path.iterdir()) == []
