"""Frame-rate measurement, analysis decimation and colour conversion (no network)."""

from __future__ import annotations

import av
import numpy as np
import pytest

from ingest.pipeline import Decimator, RateMeter, to_bgr


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
