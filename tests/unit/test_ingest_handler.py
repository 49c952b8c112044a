"""Frame-rate measurement, analysis decimation, the analysed frame (luma plane, lazy BGR)
and the per-packet path (no network)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import av.video.stream
import cv2
import numpy as np
import pytest

from ingest.handler import (
    CameraCounters,
    ConnectionHandler,
    Decimator,
    RateMeter,
    analysis_frame,
    luma,
    to_bgr,
)
from ingest.slot import FrameSlot
from ingest.types import Frame
from tests.unit.synthetic_h264 import encode_video, frame_image


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(meter: RateMeter, clock: FakeClock, fps: float, seconds: float) -> None:
    for _ in range(round(fps * seconds)):
        clock.now += 1 / fps
        meter.tick()


def test_rate_meter_ignores_the_connect_burst_and_measures_the_rate() -> None:
    clock = FakeClock()
    meter = RateMeter(window_s=1.0, clock=clock)
    meter.tick(30)  # buffered packets handed over at once after connecting
    assert meter.rate is None
    feed(meter, clock, 15, 6)
    assert meter.rate == pytest.approx(15, rel=0.02)


def test_rate_meter_reads_zero_when_packets_stop() -> None:
    clock = FakeClock()
    meter = RateMeter(window_s=1.0, clock=clock)
    feed(meter, clock, 10, 4)
    clock.now += 3
    assert meter.rate == 0.0


def test_rate_meter_follows_a_change() -> None:
    clock = FakeClock()
    meter = RateMeter(window_s=1.0, clock=clock)
    feed(meter, clock, 25, 4)
    feed(meter, clock, 10, 8)
    assert meter.rate == pytest.approx(10, rel=0.05)


@pytest.mark.parametrize(
    ("source_fps", "analysis_fps", "expected"),
    [(15, 5, 5), (25, 5, 5), (30, 2, 2), (10, 5, 5), (12, 5, 5), (4, 5, 4), (15, 15, 15)],
)
def test_decimator_rate(source_fps: float, analysis_fps: float, expected: float) -> None:
    clock = FakeClock()
    dec = Decimator(analysis_fps, clock=clock)
    passed = 0
    for i in range(int(source_fps * 20)):
        clock.now = i / source_fps
        passed += dec.due()
    assert passed / 20 == pytest.approx(expected, rel=0.06)


def test_decimator_does_not_burst_after_a_gap() -> None:
    clock = FakeClock()
    dec = Decimator(5, clock=clock)
    assert dec.due()
    clock.now = 10.0
    assert dec.due()
    clock.now = 10.05
    assert not dec.due()


def gradient_frame(fmt: str, width: int, height: int) -> av.VideoFrame:
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]  # red ramp
    rgb[..., 2] = 200
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)


@pytest.mark.parametrize(
    ("fmt", "width", "height"),
    [("yuv420p", 320, 240), ("yuvj420p", 64, 48), ("yuv420p", 321, 241), ("nv12", 64, 48)],
)
def test_to_bgr_matches_swscale(fmt: str, width: int, height: int) -> None:
    frame = gradient_frame(fmt, width, height)
    image = to_bgr(frame)
    reference = frame.to_ndarray(format="bgr24")
    assert image.shape == (height, width, 3)
    assert image.dtype == np.uint8
    # Both are BT.601 conversions; rounding and chroma siting differ by a few levels.
    diff = np.abs(image.astype(int) - reference.astype(int))
    assert np.percentile(diff, 99) <= 8
    assert image[..., 0].mean() > image[..., 1].mean()  # blue channel first: BGR, not RGB


def test_to_bgr_of_a_full_range_frame_tagged_on_yuv420p_uses_its_range() -> None:
    # FFmpeg may say "full range" with the colour_range tag instead of the yuvj formats.
    frame = gradient_frame("yuvj420p", 64, 48)
    tagged = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
    tagged.color_range = 2  # AVCOL_RANGE_JPEG
    reference = frame.to_ndarray(format="bgr24")
    diff = np.abs(to_bgr(tagged).astype(int) - reference.astype(int))
    assert np.percentile(diff, 99) <= 8


# The analysed frame: the decoder's luma plane without a copy, BGR on demand -----------------


@pytest.mark.parametrize(
    ("fmt", "limited"),
    [("yuv420p", True), ("yuvj420p", False), ("yuv422p", True), ("nv12", True), ("gray", False)],
)
def test_luma_is_a_read_only_view_of_the_y_plane(fmt: str, limited: bool) -> None:
    frame = gradient_frame(fmt, 322, 240)  # 322: FFmpeg pads the rows
    found = luma(frame)
    assert found is not None
    y, is_limited = found
    assert is_limited is limited
    plane = frame.planes[0]
    assert y.shape == (240, 322) and y.dtype == np.uint8
    assert y.strides == (plane.line_size, 1)
    assert not y.flags.writeable
    assert np.shares_memory(y, np.frombuffer(memoryview(plane), np.uint8))  # no copy
    expected = np.frombuffer(memoryview(plane), np.uint8).reshape(240, plane.line_size)[:, :322]
    assert np.array_equal(y, expected)


@pytest.mark.parametrize("fmt", ["rgb24", "yuv420p10le"])
def test_formats_without_an_8_bit_luma_plane_are_converted_at_once(fmt: str) -> None:
    frame = gradient_frame(fmt, 64, 48)
    assert luma(frame) is None
    out = analysis_frame("cam", 7, frame, 100.0)
    reference = cv2.cvtColor(frame.to_ndarray(format="bgr24"), cv2.COLOR_BGR2GRAY)
    assert out.gray.shape == (48, 64)
    assert np.abs(out.gray.astype(int) - reference.astype(int)).max() <= 8
    assert not out.limited_range
    assert out.image.shape == (48, 64, 3)


def test_analysis_frame_converts_to_bgr_once_and_only_when_asked() -> None:
    frame = gradient_frame("yuv420p", 320, 240)
    out = analysis_frame("cam", 3, frame, 123.5)
    assert (out.camera_id, out.index, out.wallclock) == ("cam", 3, 123.5)
    assert (out.width, out.height) == (320, 240) and out.limited_range
    calls = 0
    convert = out.make_bgr

    def counting() -> Any:
        nonlocal calls
        calls += 1
        return convert()

    lazy = Frame(out.camera_id, 3, None, 123.5, out.gray, counting, out.limited_range)
    assert calls == 0
    image = lazy.image
    assert lazy.image is image and calls == 1
    assert not image.flags.writeable  # shared by every reader: they must copy to draw
    assert np.array_equal(image, to_bgr(frame))


def test_luma_views_stay_valid_while_the_decoder_goes_on(tmp_path: Path) -> None:
    # The view shares the decoder's buffer: it must keep that picture, not see later ones.
    path = encode_video(tmp_path / "v.mkv", 60, gop=30)
    kept: list[tuple[Frame, Any]] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for i, frame in enumerate(container.decode(stream)):
            out = analysis_frame("cam", i, frame, float(i))
            kept.append((out, out.gray.copy()))
            del frame
    assert len(kept) == 60
    for out, copied in kept:
        assert np.array_equal(out.gray, copied)
    first = cv2.cvtColor(frame_image(0), cv2.COLOR_RGB2GRAY)
    assert np.abs(kept[0][0].image.astype(int)[..., 1] - first.astype(int)).mean() < 8


# The per-packet path --------------------------------------------------------------------------


class _Sink:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.packets: list[tuple[object, float]] = []
        self.events: list[str] = []

    def on_stream(self, stream: av.video.stream.VideoStream) -> None:
        self.events.append("stream")

    def on_packet(self, packet: Any, wallclock: float) -> None:
        if self.fail:
            raise RuntimeError("disk full")
        self.packets.append((packet, wallclock))

    def on_disconnect(self) -> None:
        self.events.append("disconnect")


# What the pipeline reads of PyAV's stream.
_STREAM: Any = SimpleNamespace(width=320, height=240, codec_context=SimpleNamespace(name="h264"))
_PACKET: Any = object()


def _pipeline(sink: _Sink, *, record: bool = True) -> tuple[ConnectionHandler, list[int]]:
    flowing: list[int] = []
    pipeline = ConnectionHandler(
        "cam",
        CameraCounters(),
        sink=sink,
        record=record,
        slot=None,
        decimator=None,
        on_flowing=lambda: flowing.append(1),
    )
    return pipeline, flowing


def test_packets_reach_the_sink_and_are_counted() -> None:
    sink = _Sink()
    pipeline, flowing = _pipeline(sink)
    pipeline.on_open(_STREAM)
    packets: list[Any] = [object() for _ in range(5)]
    for i, packet in enumerate(packets):
        pipeline.on_packet(packet, 10.0 + i)
    pipeline.on_close()
    assert [p for p, _ in sink.packets] == packets
    assert [w for _, w in sink.packets] == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert sink.events == ["stream", "disconnect"]
    assert pipeline.packets == 5 and flowing == [1]  # flowing: once, at the first packet


def test_a_stream_that_is_not_recorded_never_reaches_the_sink() -> None:
    sink = _Sink()
    pipeline, flowing = _pipeline(sink, record=False)
    pipeline.on_open(_STREAM)
    pipeline.on_packet(_PACKET, 1.0)
    pipeline.on_close()
    assert sink.packets == [] and sink.events == [] and flowing == [1]


def test_a_failing_sink_is_logged_once_and_packets_keep_flowing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = _Sink(fail=True)
    pipeline, _ = _pipeline(sink)
    pipeline.on_open(_STREAM)
    with caplog.at_level(logging.ERROR, logger="ingest.handler"):
        for i in range(10):
            pipeline.on_packet(_PACKET, float(i))
    assert pipeline.packets == 10
    assert [r.getMessage() for r in caplog.records] == ["camera cam: packet sink failed"]


def test_analysed_frames_reach_the_slot_at_the_analysis_rate() -> None:
    clock = FakeClock()
    slot: FrameSlot[Frame] = FrameSlot(100)
    counters = CameraCounters()
    pipeline = ConnectionHandler(
        "cam",
        counters,
        sink=None,
        record=False,
        slot=slot,
        decimator=Decimator(5, clock=clock),
        on_flowing=lambda: None,
    )
    frame = gradient_frame("yuv420p", 64, 48)
    for i in range(50):  # 2 s at 25 fps
        clock.now = i / 25
        pipeline.on_frame(frame, 1000.0 + i / 25)
    assert counters.frames_decoded == 50 and counters.frames_analysed == len(slot) == 10
    out = slot.get_nowait()
    assert out.index == 1 and out.gray.shape == (48, 64) and out.limited_range
    assert counters.latest is not None and counters.latest.index == 46
