"""The clip muxer and end-to-end clips: ring + recorder + MP4, checked with ffprobe."""

from __future__ import annotations

import gc
import itertools
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import pytest

from ingest.recorder import ClipJob, ClipRecorder, ClipResult, EndReason
from ingest.ring import PacketRing
from storage.clips import (
    ClipError,
    CodecParams,
    EncodedPacket,
    UnsupportedStreamError,
    frame_at,
    plan_timestamps,
    write_mp4,
)
from tests.unit.synthetic_h264 import (
    FPS,
    Fed,
    decode_errors,
    decoded_indices,
    encode_video,
    feed,
    ffprobe,
    sha256_of,
    top_level_boxes,
)

T0 = 1_700_000_000.0
GOP = 25


def record_incident(
    spool: Path,
    source: Path,
    *,
    start: float,
    pre: float,
    end: float,
    post: float,
    capacity: float = 30.0,
) -> tuple[ClipResult, Fed]:
    """Play ``source`` into a ring; the incident is seen (and ends) a little late."""
    ring = PacketRing(capacity_s=capacity, camera_id="cam-1")
    clock = [T0]
    recorder = ClipRecorder(ring, spool, camera_id="cam-1", clock=lambda: clock[0])
    jobs: list[ClipJob] = []
    finished: list[bool] = []

    def on_packet(wallclock: float) -> None:
        clock[0] = wallclock
        if not jobs and wallclock >= T0 + start + 0.5:
            jobs.append(recorder.start(T0 + start, pre))
        if jobs and not finished and wallclock >= T0 + end + 0.3:
            jobs[0].finish(T0 + end, post)
            finished.append(True)

    fed = feed(source, ring, T0, each=on_packet)
    result = jobs[0].wait(timeout=60)
    recorder.close()
    return result, fed


def first_arriving_at_or_after(fed: Fed, wallclock: float) -> int:
    return next(i for i, t in zip(fed.indices, fed.wallclocks, strict=True) if t >= wallclock)


def assert_valid_mp4(result: ClipResult) -> list[int]:
    """Checks every clip must pass; returns the decoded frame indices."""
    path = result.path
    info = ffprobe(path, "-show_streams", "-show_format")
    assert info["format"]["format_name"].startswith("mov,mp4")
    (stream,) = info["streams"]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 240)
    packets = ffprobe(path, "-show_packets", "-select_streams", "v")["packets"]
    assert packets[0]["flags"].startswith("K"), "the clip must start with a keyframe"
    dts = [int(p["dts"]) for p in packets]
    assert all(a < b for a, b in itertools.pairwise(dts)), "dts must increase"
    assert decode_errors(path) == ""
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), f"not faststart: {boxes}"
    assert result.sha256 == sha256_of(path)
    assert result.size == path.stat().st_size
    assert list(path.parent.iterdir()) == [path], "temp files left in the spool"
    indices = decoded_indices(path)
    assert result.frames == len(indices) == len(packets)
    assert indices == list(range(indices[0], indices[-1] + 1)), "frames missing in between"
    assert result.duration_s == pytest.approx(len(indices) / FPS, abs=0.5 / FPS)
    return indices


# The end (end + post_s) lands on each position of a B-frame group: decode order there is
# P215 B213 B214, so the clip must go on past P215 for B213 and B214.
@pytest.mark.parametrize("post", [1.42, 1.46, 1.5])
@pytest.mark.parametrize(
    ("fmt", "bframes"),
    [
        ("matroska", 0),  # avcC extradata, like most files
        ("mpegts", 0),  # Annex B with in-band SPS/PPS, like RTSP
        ("mpegts", 2),  # B-frames: decode order differs from display order
    ],
)
def test_clip_holds_the_frames_from_pre_s_before_to_post_s_after(
    tmp_path: Path, fmt: str, bframes: int, post: float
) -> None:
    source = encode_video(tmp_path / "src", 12 * FPS, gop=GOP, bframes=bframes, fmt=fmt)
    result, fed = record_incident(
        tmp_path / "spool", source, start=5.3, pre=2.2, end=7.1, post=post
    )

    indices = assert_valid_mp4(result)
    start_index = fed.index_at(T0 + 5.3 - 2.2)
    assert indices[0] == start_index - start_index % GOP, "not the last keyframe before start"
    assert first_arriving_at_or_after(fed, T0 + 7.1 + post) in indices
    assert indices[-1] < fed.index_at(T0 + 7.1 + post) + GOP, "far more than post_s recorded"
    assert (result.truncated, result.end_reason, result.preroll_short) == (
        False,
        EndReason.COMPLETE,
        False,
    )
    assert result.start_wallclock <= T0 + 5.3 - 2.2
    assert result.end_wallclock >= T0 + 7.1 + post
    assert result.requested_start == pytest.approx(T0 + 3.1)
    assert result.requested_end == pytest.approx(T0 + 7.1 + post)


def test_short_ring_starts_at_its_oldest_keyframe_and_says_so(tmp_path: Path) -> None:
    source = encode_video(tmp_path / "src.mkv", 12 * FPS, gop=GOP)
    result, fed = record_incident(
        tmp_path / "spool", source, start=8.0, pre=6.0, end=9.0, post=1.0, capacity=2.0
    )

    indices = assert_valid_mp4(result)
    assert result.preroll_short
    assert not result.truncated
    assert indices[0] % GOP == 0
    assert indices[0] > fed.index_at(T0 + 8.0 - 6.0)


def test_clip_is_muxed_after_the_source_container_is_closed(tmp_path: Path) -> None:
    source = encode_video(tmp_path / "src.ts", 6 * FPS, gop=GOP, fmt="mpegts")
    ring = PacketRing(capacity_s=30.0)
    feed(source, ring, T0)  # closes the container (and disconnects) before returning
    gc.collect()
    recorder = ClipRecorder(ring, tmp_path / "spool", clock=lambda: T0 + 6)

    job = recorder.start(T0 + 2.0, 1.0)
    job.finish(T0 + 3.0, 1.0)  # already covered by the ring: completes at once
    result = job.wait(timeout=60)
    recorder.close()

    indices = assert_valid_mp4(result)
    assert indices[0] == FPS  # keyframe at 1.0 s
    assert indices[-1] == 4 * FPS  # the packet arriving at exactly end + post_s


def test_codec_params_compare_by_what_a_file_header_needs(tmp_path: Path) -> None:
    a = encode_video(tmp_path / "a.mkv", 5)
    b = encode_video(tmp_path / "b.mkv", 5, first_index=100)
    c = encode_video(tmp_path / "c.mkv", 5, width=160, height=120)
    params = []
    for path in (a, b, c):
        with av.open(str(path)) as container:
            params.append(CodecParams.from_stream(container.streams.video[0]))

    assert params[0] == params[1]
    assert params[0] != params[2]
    assert (params[2].width, params[2].height, params[2].codec_name) == (160, 120, "h264")
    assert params[0].extradata  # SPS/PPS survive the container


def test_a_codec_mp4_cannot_carry_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "huffyuv.avi"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("huffyuv", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv422p"
        out.mux(stream.encode(av.VideoFrame(64, 48, "yuv422p")))
        out.mux(stream.encode(None))

    with av.open(str(path)) as container, pytest.raises(UnsupportedStreamError):
        CodecParams.from_stream(container.streams.video[0])


# -- timestamp repair ---------------------------------------------------------------------

TB = Fraction(1, 90000)
STEP = 3600  # one frame at 25 fps in 1/90000


def pkt(
    pts: int | None,
    dts: int | None,
    i: int,
    *,
    key: bool = False,
    size: int = 100,
    disc: bool = False,
) -> EncodedPacket:
    """Packet number ``i`` (arrives at T0 + i / 25)."""
    return EncodedPacket(b"x" * size, pts, dts, None, key, T0 + i / FPS, size, disc)


def plan(*packets: EncodedPacket) -> tuple[list[tuple[int, int]], int, int]:
    result = plan_timestamps(packets, TB)
    return [(p.dts, p.pts) for p in result.packets], result.fixed, result.dropped


@pytest.mark.parametrize(
    ("packets", "expected_dts_pts", "fixed", "dropped"),
    [
        pytest.param(
            [pkt(9000, 9000, 0, key=True), pkt(12600, 12600, 1), pkt(16200, 16200, 2)],
            [(0, 0), (STEP, STEP), (2 * STEP, 2 * STEP)],
            0,
            0,
            id="clean: rebased to 0",
        ),
        pytest.param(
            [pkt(0, 0, 0, key=True), pkt(STEP, None, 1), pkt(None, None, 2)],
            [(0, 0), (STEP, STEP), (2 * STEP, 2 * STEP)],
            1,
            0,
            id="missing dts: pts, else one frame on",
        ),
        pytest.param(
            [pkt(0, 0, 0, key=True), pkt(STEP, STEP, 1), pkt(STEP, STEP, 2)],
            [(0, 0), (STEP, STEP), (STEP + 1, STEP + 1)],
            2,
            0,
            id="duplicate dts: one tick on, pts raised",
        ),
        pytest.param(
            [pkt(0, 0, 0, key=True), pkt(STEP, STEP, 1), pkt(90, 90, 2)],
            [(0, 0), (STEP, STEP), (STEP + 1, STEP + 1)],
            2,
            0,
            id="small step back: one tick on",
        ),
        pytest.param(
            [pkt(0, 0, 0, key=True), pkt(STEP, STEP, 1), pkt(5, 5, 2, disc=True)],
            [(0, 0), (STEP, STEP), (2 * STEP, 2 * STEP)],
            1,
            0,
            id="reconnect: re-anchored on the wall clock",
        ),
        pytest.param(
            [pkt(0, 0, 0, key=True), pkt(STEP, STEP, 1), pkt(None, None, 30, disc=True)],
            [(0, 0), (STEP, STEP), (30 * STEP, 30 * STEP)],
            1,
            0,
            id="reconnect without timestamps: placed by the wall clock",
        ),
        pytest.param(
            [
                pkt(0, 0, 0, key=True),
                pkt(STEP, STEP, 1),
                pkt(10**9, 10**9, 2),
                pkt(10**9 + STEP, 10**9 + STEP, 3),
            ],
            [(0, 0), (STEP, STEP), (2 * STEP, 2 * STEP), (3 * STEP, 3 * STEP)],
            1,
            0,
            id="clock jump: re-anchored, then follows the new clock",
        ),
        pytest.param(
            [pkt(0, 0, 0), pkt(STEP, STEP, 1, key=True), pkt(2 * STEP, 2 * STEP, 2, size=0)],
            [(0, 0)],
            0,
            2,
            id="leading non-keyframe and empty packet dropped",
        ),
        pytest.param(
            [pkt(2 * STEP, 0, 0, key=True), pkt(4 * STEP, STEP, 1), pkt(3 * STEP, 2 * STEP, 2)],
            [(0, 2 * STEP), (STEP, 4 * STEP), (2 * STEP, 3 * STEP)],
            0,
            0,
            id="B-frames: pts order kept",
        ),
    ],
)
def test_plan_timestamps(
    packets: list[EncodedPacket],
    expected_dts_pts: list[tuple[int, int]],
    fixed: int,
    dropped: int,
) -> None:
    assert plan(*packets) == (expected_dts_pts, fixed, dropped)


def test_plan_gives_each_packet_the_gap_to_the_next_as_duration() -> None:
    result = plan_timestamps([pkt(0, 0, 0, key=True), pkt(STEP, STEP, 1), pkt(None, None, 2)], TB)
    assert [p.duration for p in result.packets] == [STEP, STEP, STEP]
    assert result.duration_ticks == 3 * STEP


# -- write_mp4 ----------------------------------------------------------------------------


def demuxed(path: Path) -> tuple[CodecParams, list[EncodedPacket]]:
    """Codec parameters and packets of ``path`` (container closed afterwards)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        params = CodecParams.from_stream(stream)
        packets = [
            EncodedPacket(p, p.pts, p.dts, p.duration, p.is_keyframe, T0 + i / FPS, p.size)
            for i, p in enumerate(p for p in container.demux(stream) if p.size)
        ]
    return params, packets


def test_write_mp4_repairs_what_rtsp_cameras_send(tmp_path: Path) -> None:
    params, packets = demuxed(encode_video(tmp_path / "src.ts", 3 * FPS, fmt="mpegts"))
    messy = list(packets)
    messy[3] = replace(messy[3], pts=None, dts=None)  # no timestamps at all
    messy[4] = replace(messy[4], dts=None)  # pts only
    messy[6] = replace(messy[6], pts=messy[5].pts, dts=messy[5].dts)  # duplicate
    messy[40] = replace(messy[40], discontinuity=True)  # a reconnect
    spool = tmp_path / "spool"
    spool.mkdir()

    info = write_mp4(spool / "clip.mp4", params, messy)

    assert info.fixed_timestamps >= 4
    assert info.frames == len(packets)
    result = ClipResult(
        "cam", info.path, info.sha256, info.size, info.duration_s, info.first_wallclock,
        info.last_wallclock, info.first_pts, info.frames, False, EndReason.COMPLETE, False,
        T0, None,
    )  # fmt: skip
    assert assert_valid_mp4(result) == list(range(3 * FPS))


def test_write_mp4_needs_a_keyframe_and_leaves_nothing_behind(tmp_path: Path) -> None:
    params, packets = demuxed(encode_video(tmp_path / "src.mkv", 30, gop=GOP))
    spool = tmp_path / "spool"
    spool.mkdir()

    with pytest.raises(ClipError, match="keyframe"):
        write_mp4(spool / "clip.mp4", params, packets[1:GOP])

    assert list(spool.iterdir()) == []


def test_write_mp4_failure_is_a_clip_error_and_an_os_error(tmp_path: Path) -> None:
    params, packets = demuxed(encode_video(tmp_path / "src.mkv", 10))

    with pytest.raises(ClipError) as caught:
        write_mp4(tmp_path / "missing-dir" / "clip.mp4", params, packets)

    assert isinstance(caught.value, OSError)
    assert not (tmp_path / "missing-dir").exists()


def test_frame_at_gives_the_picture_at_a_time_for_a_snapshot(tmp_path: Path) -> None:
    """An incident whose rules saw no peak gets its snapshot from its clip (frame_at)."""
    source = encode_video(tmp_path / "src.mp4", 50, fmt="mp4")
    image = frame_at(source, 1.0)
    assert image is not None and image.shape == (240, 320, 3)
    last = frame_at(source, 60.0)  # past the end: the last picture
    assert last is not None and not (last == image).all()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    assert frame_at(broken, 0.0) is None
