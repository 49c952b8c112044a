"""Motion detector on synthetic frames (noise, lighting, zones, area, sensitivity) and vtest.avi."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from analytics.motion import (
    DEFAULT_SENSITIVITY,
    SENSITIVITY_MAX,
    SENSITIVITY_MIN,
    MotionConfig,
    MotionDetector,
    MotionResult,
)
from analytics.rules import IncidentRules, RuleConfig
from analytics.zones import Zone, ZoneKind

Image = npt.NDArray[np.uint8]
W, H = 640, 360
FPS = 5.0  # analysed frames per second: 5 of 25
PERSON = (20, 50)  # w, h in pixels at 640x360: ~0.43 % of the frame
VTEST = Path(__file__).resolve().parents[3] / "shared" / "data" / "vtest.avi"  # ../shared/data


def _f32(image: cv2.typing.MatLike) -> npt.NDArray[np.float32]:
    """A float32 image from OpenCV, whose stubs type results loosely (no copy)."""
    return np.asarray(image, dtype=np.float32)


def _u8(image: cv2.typing.MatLike) -> Image:
    """An 8-bit image from OpenCV, whose stubs type results loosely (no copy)."""
    return np.asarray(image, dtype=np.uint8)


def _texture(seed: int = 1) -> npt.NDArray[np.float32]:
    """A campus-like textured background: smooth shading, blotches and a few edges."""
    rng = np.random.default_rng(seed)
    blotches = _f32(cv2.GaussianBlur(rng.normal(0, 1, (H, W)).astype(np.float32), (0, 0), 6))
    blotches *= 30 / float(blotches.std())
    fine = _f32(cv2.GaussianBlur(rng.normal(0, 12, (H, W)).astype(np.float32), (0, 0), 1))
    ramp = np.linspace(70, 120, W, dtype=np.float32)[None, :]
    base: npt.NDArray[np.float32] = ramp + blotches + fine
    base[200:210, :] = 60  # a kerb
    base[:, 300:306] = 150  # a lamp post
    return np.clip(base, 20, 175).astype(np.float32)


BACKGROUND = _texture()


def _frame(
    rng: np.random.Generator,
    *,
    gain: float = 1.0,
    sigma: float = 4.0,
    boxes: tuple[tuple[int, int, int, int, int], ...] = (),
    scene: npt.NDArray[np.float32] = BACKGROUND,
) -> Image:
    """Background × gain + objects ``(x, y, w, h, value)`` + Gaussian sensor noise."""
    img: npt.NDArray[np.float32] = scene * gain
    for x, y, w, h, value in boxes:
        img[y : y + h, x : x + w] = value
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(img, 0, 255).astype(np.uint8)


def _bgr(gray: Image) -> Image:
    return _u8(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))


def _run(
    detector: MotionDetector, frames: Iterator[Image], as_bgr: bool = False
) -> list[MotionResult]:
    out = []
    for i, frame in enumerate(frames):
        out.append(detector.detect(_bgr(frame) if as_bgr else frame, i / FPS))
    return out


def _walker(
    y: int, value: int, x0: int = 0, step: int = 8, frames: int = 80
) -> Callable[[int], tuple[tuple[int, int, int, int, int], ...]]:
    """A person-sized rectangle walking right by ``step`` px per analysed frame."""

    def at(i: int) -> tuple[tuple[int, int, int, int, int], ...]:
        x = x0 + i * step
        return ((x, y, *PERSON, value),) if 0 <= x <= W - PERSON[0] and i < frames else ()

    return at


def _zone(name: str, kind: ZoneKind, x1: float, y1: float, x2: float, y2: float) -> Zone:
    return Zone(name, kind, ((x1, y1), (x2, y1), (x2, y2), (x1, y2)))


# --- noise and lighting --------------------------------------------------------------


@pytest.mark.parametrize("sigma", [3.0, 5.0])
@pytest.mark.parametrize("as_bgr", [False, True], ids=["gray", "bgr"])
def test_still_scene_with_sensor_noise_is_not_motion(sigma: float, as_bgr: bool) -> None:
    rng = np.random.default_rng(7)
    results = _run(MotionDetector(), (_frame(rng, sigma=sigma) for _ in range(200)), as_bgr)
    assert not any(r.motion or r.global_change for r in results)


@pytest.mark.parametrize("sensitivity", [SENSITIVITY_MIN, DEFAULT_SENSITIVITY, SENSITIVITY_MAX])
def test_noise_is_not_motion_even_at_max_sensitivity(sensitivity: int) -> None:
    rng = np.random.default_rng(8)
    detector = MotionDetector(MotionConfig(sensitivity=sensitivity))
    results = _run(detector, (_frame(rng, sigma=5.0) for _ in range(100)))
    assert not any(r.motion for r in results)


def _sudden(factor: float) -> Callable[[int], float]:
    return lambda i: 1.0 if i < 50 else factor


def _gradual(factor: float) -> Callable[[int], float]:
    ramp = int(20 * FPS)  # over 20 s
    return lambda i: 1.0 + (factor - 1.0) * min(max(i - 20, 0), ramp) / ramp


@pytest.mark.parametrize("factor", [1.4, 0.6], ids=["brighter", "darker"])
@pytest.mark.parametrize("profile", [_sudden, _gradual], ids=["sudden", "over-20s"])
def test_global_brightness_change_is_not_motion_nor_incident(
    factor: float, profile: Callable[[float], Callable[[int], float]]
) -> None:
    rng = np.random.default_rng(9)
    gain_at = profile(factor)
    frames = (_frame(rng, gain=gain_at(i)) for i in range(160))
    results = _run(MotionDetector(), frames)
    assert not any(r.motion for r in results)
    rules = IncidentRules(RuleConfig(start_frames=3, quiet_s=5.0))
    events = [e for i, r in enumerate(results) for e in rules.update(i / FPS, r.motion)]
    assert events == []


def test_lights_switched_on_is_a_global_change_then_detection_resumes() -> None:
    """An IR switch or lights on: the scene itself changes; suppress, re-seed, go on."""
    rng = np.random.default_rng(10)
    lit = 255 - BACKGROUND  # contrast inverted: no gain undoes that
    walker = _walker(y=250, value=240, x0=40)
    config = MotionConfig(settle_frames=3)
    detector = MotionDetector(config)
    results = [detector.detect(_frame(rng), i / FPS) for i in range(10)]
    for i in range(40):
        scene = _frame(rng, scene=lit, boxes=walker(i) if i >= 10 else ())
        results.append(detector.detect(scene, (10 + i) / FPS))
    flags = [r.global_change for r in results]
    assert flags[10:14] == [True] * 4  # the change itself, then settle_frames
    assert not any(flags[:10]) and not any(flags[14:])
    assert not any(r.motion for r in results[:20])
    assert all(r.motion for r in results[22:50])


# --- zones and masks -----------------------------------------------------------------


@pytest.mark.parametrize("value", [235, 10], ids=["bright", "dark"])
@pytest.mark.parametrize(
    ("zones", "expect_motion"),
    [
        pytest.param((), True, id="no-zone-whole-frame"),
        pytest.param(
            (_zone("path", ZoneKind.MOTION, 0.0, 0.55, 1.0, 0.95),), True, id="crossing-zone"
        ),
        pytest.param(
            (_zone("sky", ZoneKind.MOTION, 0.0, 0.0, 1.0, 0.4),), False, id="outside-zone"
        ),
        pytest.param(
            (_zone("road", ZoneKind.MASK, 0.0, 0.55, 1.0, 0.95),), False, id="crossing-mask"
        ),
        pytest.param(
            (
                _zone("path", ZoneKind.MOTION, 0.0, 0.5, 1.0, 1.0),
                _zone("road", ZoneKind.MASK, 0.0, 0.55, 1.0, 0.95),
            ),
            False,
            id="mask-inside-zone",
        ),
        pytest.param(
            (_zone("square", ZoneKind.CROWD, 0.0, 0.0, 1.0, 0.4),), True, id="crowd-is-ignored"
        ),
    ],
)
def test_person_crossing_zones_and_masks(
    value: int, zones: tuple[Zone, ...], expect_motion: bool
) -> None:
    rng = np.random.default_rng(11)
    walker = _walker(y=240, value=value)  # rows 240..290 = 0.67..0.81 of the height
    results = _run(MotionDetector(zones=zones), (_frame(rng, boxes=walker(i)) for i in range(80)))
    moving = results[1:78]
    if expect_motion:
        assert all(r.motion for r in moving)
    else:
        assert not any(r.motion for r in results)


def test_boxes_locate_the_walker() -> None:
    rng = np.random.default_rng(12)
    walker = _walker(y=240, value=235, x0=100, step=8)
    detector = MotionDetector()
    result = MotionResult(False, 0.0, (), False)
    for i in range(30):
        result = detector.detect(_frame(rng, boxes=walker(i)), i / FPS)
    assert result.motion and result.boxes
    x1, y1, x2, y2 = result.boxes[0]
    person_x = (100 + 29 * 8 + PERSON[0] / 2) / W
    assert x1 < person_x < x2
    assert y1 < (240 + PERSON[1] / 2) / H < y2
    assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0
    assert 0.0 < result.motion_area < 0.05


# --- area and sensitivity ------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "min_area", "expect_motion"),
    [
        ((20, 50), 0.001, True),  # 0.43 % of the frame
        ((20, 50), 0.02, False),
        ((8, 8), 0.001, False),  # a bird: 0.03 %
        ((8, 8), 0.0002, True),
        ((80, 120), 0.02, True),  # a close-up person: 4.2 %
        ((80, 120), 0.1, False),
    ],
)
def test_min_area_is_respected(size: tuple[int, int], min_area: float, expect_motion: bool) -> None:
    rng = np.random.default_rng(13)
    w, h = size
    step = max(10, w // 2)  # slower, large objects leave a trail in the running average
    count = (W - w - 20) // step
    detector = MotionDetector(MotionConfig(min_area=min_area))
    frames = (
        _frame(rng, boxes=((10 + step * i, 150, w, h, 235),) if i else ()) for i in range(count)
    )
    results = _run(detector, frames)
    if expect_motion:
        assert all(r.motion for r in results[1:])
    else:
        assert not any(r.motion for r in results)


def _low_contrast_area(sensitivity: int) -> float:
    rng = np.random.default_rng(14)
    detector = MotionDetector(MotionConfig(sensitivity=sensitivity))
    detector.detect(_frame(rng), 0.0)
    areas = []
    for i in range(1, 30):
        # 28 gray levels above the local background, a real-world "grey coat on asphalt".
        x = 60 + 10 * i
        scene = BACKGROUND.copy()
        scene[150:200, x : x + 20] += 28
        areas.append(detector.detect(_frame(rng, scene=scene), i / FPS).motion_area)
    return float(np.mean(areas))


def test_sensitivity_is_monotone() -> None:
    levels = [1, 20, 40, 50, 60, 80, 100]
    areas = [_low_contrast_area(s) for s in levels]
    assert areas == sorted(areas)
    assert areas[0] == 0.0
    assert areas[-1] > 0.0


def test_threshold_mapping() -> None:
    thresholds = [MotionConfig(sensitivity=s).threshold for s in range(1, 101)]
    assert thresholds == sorted(thresholds, reverse=True)
    assert (thresholds[0], thresholds[49], thresholds[-1]) == (50, 30, 10)


# --- background behaviour and inputs -------------------------------------------------


def test_an_object_that_stops_fades_into_the_background() -> None:
    rng = np.random.default_rng(15)
    config = MotionConfig(background_s=2.0)
    detector = MotionDetector(config)
    detector.detect(_frame(rng), 0.0)
    parked = ((200, 150, 40, 30, 230),)
    results = [detector.detect(_frame(rng, boxes=parked), i / FPS) for i in range(1, 100)]
    assert results[0].motion
    assert not any(r.motion for r in results[-20:])  # after ~20 s = 10 time constants


def test_first_frame_and_size_change_only_seed() -> None:
    rng = np.random.default_rng(16)
    detector = MotionDetector()
    assert detector.detect(_frame(rng, boxes=((0, 0, 200, 200, 250),)), 0.0) == MotionResult(
        False, 0.0, (), False
    )
    small = _u8(cv2.resize(_frame(rng), (320, 180)))
    assert not detector.detect(small, 0.2).motion  # new size: re-seeded, not a change


def test_gray_plane_with_row_padding_matches_contiguous() -> None:
    rng = np.random.default_rng(17)
    frames = [_frame(rng, boxes=_walker(y=240, value=235)(i)) for i in range(20)]
    padded = np.zeros((H, W + 64), dtype=np.uint8)
    a, b = MotionDetector(), MotionDetector()
    for i, frame in enumerate(frames):
        padded[:, :W] = frame
        assert a.detect(frame, i / FPS) == b.detect(padded[:, :W], i / FPS)


def _limited(gray: Image) -> Image:
    """A full-range gray frame as a camera's limited-range (16..235) Y plane."""
    return (16 + gray.astype(np.float32) * (219 / 255) + 0.5).astype(np.uint8)


@pytest.mark.parametrize(
    ("convert", "limited_range", "expect_found"),
    [(None, False, 29), (_limited, True, 29), (_limited, False, 0)],
    ids=["full-range", "limited-range Y, flagged", "limited-range Y, unflagged"],
)
def test_limited_range_luma_keeps_the_sensitivity(
    convert: Callable[[Image], Image] | None, limited_range: bool, expect_found: int
) -> None:
    # 28 levels of contrast (full range) against a threshold of 26 (sensitivity 60): found
    # on the full-range picture. On a limited-range Y plane the same object differs by 24
    # levels: only the flag, which scales the threshold, finds it there too.
    rng = np.random.default_rng(14)
    detector = MotionDetector(MotionConfig(sensitivity=60))
    assert detector.config.threshold == 26

    def shown(gray: Image) -> Image:
        return gray if convert is None else convert(gray)

    detector.detect(shown(_frame(rng)), 0.0, limited_range=limited_range)
    found = 0
    for i in range(1, 30):
        scene = BACKGROUND.copy()
        scene[150:200, 60 + 10 * i : 80 + 10 * i] += 28
        frame = shown(_frame(rng, scene=scene))
        found += detector.detect(frame, i / FPS, limited_range=limited_range).motion
    assert found == expect_found


def test_read_only_luma_view_is_accepted() -> None:
    # The pipeline hands over a read-only view of the decoder's buffer, rows padded.
    rng = np.random.default_rng(18)
    buffer = np.zeros((H, W + 32), dtype=np.uint8)
    view = buffer[:, :W]
    view.flags.writeable = False
    detector = MotionDetector()
    results = []
    for i in range(12):
        buffer[:, :W] = _frame(rng, boxes=_walker(y=240, value=235)(i))
        results.append(detector.detect(view, i / FPS, limited_range=True))
    assert all(r.motion for r in results[1:])


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((10, 10), dtype=np.float32),
        np.zeros((10, 10, 4), dtype=np.uint8),
        np.zeros((10,), dtype=np.uint8),
        np.zeros((1, 10), dtype=np.uint8),
    ],
)
def test_bad_frames_are_rejected(frame: npt.NDArray[np.generic]) -> None:
    with pytest.raises(ValueError):
        MotionDetector().detect(frame, 0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sensitivity": 0},
        {"sensitivity": 101},
        {"min_area": 0.0},
        {"min_area": 1.5},
        {"frame_height": 8},
        {"background_s": 0.0},
        {"global_change": 0.1},
        {"settle_frames": -1},
    ],
)
def test_motion_config_rejects(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MotionConfig(**kwargs)  # type: ignore[arg-type]


# --- real footage --------------------------------------------------------------------


@pytest.fixture(scope="module")
def vtest_frames() -> list[Image]:
    """Every 2nd frame of vtest.avi (10 fps → 5 analysed fps), BGR."""
    assert VTEST.exists(), f"{VTEST} not found: the tests need ../shared/data beside the repo"
    capture = cv2.VideoCapture(str(VTEST))
    frames: list[Image] = []
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % 2 == 0:
            frames.append(_u8(frame))
        index += 1
    capture.release()
    assert len(frames) > 300
    return frames


def test_vtest_pedestrians_are_motion(vtest_frames: list[Image]) -> None:
    # Pedestrians walk across the scene from the first frame to the last (checked by eye).
    detector = MotionDetector()
    results = [detector.detect(f, i / FPS) for i, f in enumerate(vtest_frames)]
    moving = sum(r.motion for r in results)
    assert moving >= 0.8 * len(results)
    assert not any(r.global_change for r in results)
    rules = IncidentRules(RuleConfig(start_frames=3, quiet_s=10.0, max_len_s=600.0))
    events = [e for i, r in enumerate(results) for e in rules.update(i / FPS, r.motion)]
    assert rules.active and events


def test_vtest_with_a_full_frame_mask_is_still(vtest_frames: list[Image]) -> None:
    mask = _zone("all", ZoneKind.MASK, 0.0, 0.0, 1.0, 1.0)
    detector = MotionDetector(zones=(mask,))
    assert not any(detector.detect(f, i / FPS).motion for i, f in enumerate(vtest_frames))


def test_empty_corridor_is_still_until_someone_walks_in() -> None:
    """one-by-one-person-detection.mp4: empty office for ~5.5 s, then a person enters."""
    path = VTEST.with_name("one-by-one-person-detection.mp4")
    assert path.exists(), f"{path} not found: the tests need ../shared/data beside the repo"
    capture = cv2.VideoCapture(str(path))
    detector = MotionDetector()
    results = []
    for index in range(200):  # 20 s at 10 fps, every 2nd frame analysed
        ok, frame = capture.read()
        assert ok
        if index % 2 == 0:
            results.append(detector.detect(_u8(frame), index / 10))
    capture.release()
    assert not any(r.motion or r.global_change for r in results[:25])  # 0..5 s: empty
    assert sum(r.motion for r in results[35:]) >= 0.8 * len(results[35:])
