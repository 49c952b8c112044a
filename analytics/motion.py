"""Motion detection on downscaled grayscale frames.

One :class:`MotionDetector` per camera. Each analysed frame goes through:

1. **Downscale to gray** at a fixed working height (:attr:`MotionConfig.frame_height`,
   180 px by default): exact 2x box-filter halvings (OpenCV's fast ``INTER_AREA`` path)
   while the frame is at least twice the target, then one bilinear step. Downscaling
   averages away most sensor noise and makes the rest of the pipeline cost the same for
   every camera resolution.
2. **Blur** (5x5 Gaussian) against residual noise and compression blocking.
3. **Gain compensation**: the current frame is scaled by the median brightness ratio
   between the background and the frame (sampled on a sparse grid), so auto-exposure,
   clouds and dimmers — global, multiplicative changes — cancel out. The median ignores
   moving objects as long as they cover less than half of the frame.
4. **Difference** against a running-average background and **threshold** by
   :attr:`MotionConfig.threshold` (derived from ``sensitivity``).
5. **Global-change suppression**: when more than :attr:`MotionConfig.global_change` of the
   visible frame differs even after gain compensation (lights switched on, the camera's
   IR mode toggling), it is a lighting change, not motion: the background is re-seeded
   from the current frame and no motion is reported for that frame and the next
   :attr:`MotionConfig.settle_frames` frames (re-seeding on each, while the camera's
   exposure settles).
6. **Zones and blobs**: changed pixels outside the counted area (motion zones, or the
   whole frame without any, minus masks) are dropped; a dilated copy groups the rest into
   blobs (a person's head, torso and legs become one); a blob holding fewer changed pixels
   than :attr:`MotionConfig.min_area` is noise.
7. **Background update** with a time constant of :attr:`MotionConfig.background_s`
   seconds, so slow light drift is absorbed whatever the analysis frame rate.

Cost on one core: about 1 ms per 1080p Y plane, of which ~0.6 ms is reading the frame
down to 320x180; a BGR frame adds ~1 ms of colour conversion, so hand over the decoder's
Y plane where possible (``bench/bench_motion.py``). Everything is pure computation on the
arrays handed in (numpy/cv2 only, no I/O, no clock: time comes in as ``ts``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from analytics.zones import Mask, Zone, counted_mask, visible_mask

__all__ = [
    "DEFAULT_MIN_AREA",
    "DEFAULT_SENSITIVITY",
    "MIN_AREA_MAX",
    "MIN_AREA_MIN",
    "SENSITIVITY_MAX",
    "SENSITIVITY_MIN",
    "MotionConfig",
    "MotionDetector",
    "MotionResult",
    "NormBox",
]

SENSITIVITY_MIN = 1
SENSITIVITY_MAX = 100
DEFAULT_SENSITIVITY = 50
MIN_AREA_MIN = 0.0001
MIN_AREA_MAX = 1.0
DEFAULT_MIN_AREA = 0.001

NormBox = tuple[float, float, float, float]
"""A box ``(x1, y1, x2, y2)`` normalised to 0..1 of the frame's width and height."""

_THRESHOLD_AT_MAX = 10  # gray levels (of 255) at sensitivity 100
_THRESHOLD_AT_MIN = 50  # gray levels at sensitivity 1; 50 maps to 30, Frigate's default
_BLUR = (5, 5)
_DILATE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
_GAIN_STEP = 4  # sample every 4th pixel in each direction to estimate the gain
_GAIN_MIN_LEVEL = 16  # ignore near-black samples: their ratio is noise
_GAIN_RANGE = (0.5, 2.0)
_LIMITED_SPAN = 219 / 255  # levels of a limited-range (16..235) plane per full-range level

Gray = npt.NDArray[np.uint8]
Background = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class MotionConfig:
    """Per-camera motion settings (the ``analytics.motion`` contract, minus ``enabled``).

    ``sensitivity``: 1..100 (default 50). How small a brightness change counts as a
        changed pixel: the per-pixel threshold falls linearly from 50 gray levels at 1
        to 10 at 100 (30 at 50). Higher finds fainter objects (dark clothes on asphalt)
        at the cost of more false positives from noise and compression.
    ``min_area``: 0.0001..1 (default 0.001), as a fraction of the whole frame's area. The
        smallest blob of changed pixels that counts as motion: 0.001 is 58 px of the
        320x180 working frame (~45x45 px at 1080p), about a fifth of a pedestrian at
        campus-camera distance (vtest.avi: ~30x75 px at 768x576, 0.5 % of the frame) so
        distant or partly hidden people still count while leaves, insects and
        compression speckle do not. Nearby changed pixels (within ~2 working px) form
        one blob; masked pixels and pixels outside the motion zones are not counted.
    ``frame_height``: working height in pixels (default 180); frames are never upscaled.
    ``background_s``: time constant of the running-average background in seconds
        (default 5): slower changes are absorbed, an object standing still fades into
        the background after a few time constants.
    ``global_change``: fraction of the visible frame (0.2..1, default 0.5) that must
        change at once for the change to be treated as lighting, not motion.
    ``settle_frames``: frames after a global change that report no motion (default 3).
    """

    sensitivity: int = DEFAULT_SENSITIVITY
    min_area: float = DEFAULT_MIN_AREA
    frame_height: int = 180
    background_s: float = 5.0
    global_change: float = 0.5
    settle_frames: int = 3

    def __post_init__(self) -> None:
        if not SENSITIVITY_MIN <= self.sensitivity <= SENSITIVITY_MAX:
            raise ValueError(
                f"sensitivity must be in {SENSITIVITY_MIN}..{SENSITIVITY_MAX}, "
                f"got {self.sensitivity}"
            )
        if not MIN_AREA_MIN <= self.min_area <= MIN_AREA_MAX:
            raise ValueError(
                f"min_area must be in {MIN_AREA_MIN}..{MIN_AREA_MAX}, got {self.min_area}"
            )
        if not 32 <= self.frame_height <= 1080:
            raise ValueError(f"frame_height must be in 32..1080, got {self.frame_height}")
        if not (math.isfinite(self.background_s) and self.background_s > 0):
            raise ValueError(f"background_s must be finite and > 0, got {self.background_s}")
        if not 0.2 <= self.global_change <= 1.0:
            raise ValueError(f"global_change must be in 0.2..1, got {self.global_change}")
        if self.settle_frames < 0:
            raise ValueError(f"settle_frames must be >= 0, got {self.settle_frames}")

    @property
    def threshold(self) -> int:
        """Per-pixel difference threshold in gray levels, derived from ``sensitivity``."""
        span = _THRESHOLD_AT_MIN - _THRESHOLD_AT_MAX
        steps = SENSITIVITY_MAX - SENSITIVITY_MIN
        return _THRESHOLD_AT_MAX + round((SENSITIVITY_MAX - self.sensitivity) * span / steps)


@dataclass(frozen=True, slots=True)
class MotionResult:
    """What one analysed frame showed.

    ``motion``: at least one blob of at least ``min_area`` moved in the counted area.
    ``motion_area``: fraction (0..1) of the counted area covered by those blobs — a
        score for "how much motion", e.g. to pick the incident's best snapshot.
    ``boxes``: the blobs' bounding boxes, normalised to the frame, largest blob first.
    ``global_change``: the frame was treated as a lighting change (or is settling after
        one); ``motion`` is then always false.
    """

    motion: bool
    motion_area: float
    boxes: tuple[NormBox, ...]
    global_change: bool


_NO_MOTION = MotionResult(motion=False, motion_area=0.0, boxes=(), global_change=False)
_GLOBAL_CHANGE = MotionResult(motion=False, motion_area=0.0, boxes=(), global_change=True)


@dataclass(frozen=True, slots=True, eq=False)
class _Geometry:
    """Everything derived from (config, zones, input frame size), computed once."""

    input_shape: tuple[int, int]
    size: tuple[int, int]  # working (width, height)
    halvings: int
    counted: Mask | None
    visible: Mask | None
    counted_px: int
    visible_px: int
    min_px: int
    gain_samples: npt.NDArray[np.bool_]


class MotionDetector:
    """Frame-by-frame motion detector for one camera (stateful: keeps the background).

    ``zones`` are the camera's :class:`~analytics.zones.Zone` objects: motion zones
    restrict where motion counts (none: the whole frame), masks never count, crowd zones
    are ignored. Not thread-safe; use one instance per camera from one thread.
    """

    def __init__(self, config: MotionConfig | None = None, zones: Iterable[Zone] = ()) -> None:
        self._config = config or MotionConfig()
        self._zones = tuple(zones)
        self._geometry: _Geometry | None = None
        self._background: Background | None = None
        self._last_ts = 0.0
        self._settle = 0

    @property
    def config(self) -> MotionConfig:
        """The detector's settings."""
        return self._config

    @property
    def zones(self) -> tuple[Zone, ...]:
        """The camera's zones the detector was built with."""
        return self._zones

    def reset(self) -> None:
        """Forget the background; the next frame seeds it.

        Call it after a reconnect or any long gap: the scene may have changed meanwhile,
        and the first frame would otherwise be compared with a stale background.
        """
        self._background = None
        self._settle = 0

    def detect(
        self, frame: npt.NDArray[np.uint8], ts: float, *, limited_range: bool = False
    ) -> MotionResult:
        """Analyse one frame taken at ``ts`` (seconds, monotonic, e.g. the wallclock).

        ``frame`` is ``uint8``, either BGR ``(h, w, 3)`` or a single gray plane
        ``(h, w)`` — typically the decoder's Y (luma) plane, which skips the colour
        conversion (about 1 ms at 1080p); a row stride larger than the width (a plane
        with line padding) is fine. ``limited_range``: the plane's levels span 16..235
        (video range: the Y plane of most cameras' H.264), so the threshold shrinks by
        219/255 and a sensitivity means the same contrast as on the BGR picture. The first
        frame, and the first after a change of frame size or :meth:`reset`, only seeds the
        background and reports no motion.
        """
        gray = _as_gray(frame)
        geometry = self._geometry_for(gray.shape[:2])
        work = _u8(cv2.GaussianBlur(_downscale(gray, geometry), _BLUR, 0))
        background = self._background
        if background is None:
            self._seed(work, ts)
            return _NO_MOTION
        if self._settle > 0:
            self._settle -= 1
            self._seed(work, ts)
            return _GLOBAL_CHANGE
        threshold = self._config.threshold * (_LIMITED_SPAN if limited_range else 1.0)
        changed = self._changed(work, background, geometry, threshold)
        if _fraction(changed, geometry.visible, geometry.visible_px) > self._config.global_change:
            self._settle = self._config.settle_frames
            self._seed(work, ts)
            return _GLOBAL_CHANGE
        self._update_background(work, background, ts)
        return _measure(changed, geometry)

    def _geometry_for(self, shape: tuple[int, ...]) -> _Geometry:
        height, width = shape
        if self._geometry is None or self._geometry.input_shape != (height, width):
            self._geometry = _build_geometry(self._config, self._zones, (height, width))
            self._background = None
        return self._geometry

    def _seed(self, work: Gray, ts: float) -> None:
        self._background = work.astype(np.float32)
        self._last_ts = ts

    def _changed(
        self, work: Gray, background: Background, geometry: _Geometry, threshold: float
    ) -> Gray:
        """Pixels differing from the background by more than ``threshold`` (0/255).

        The gain is applied to the background (its inverse), which turns the float
        background into uint8 in the same pass; the rest is uint8 arithmetic.
        """
        gain = _gain(work, background, geometry.gain_samples)
        reference = cv2.convertScaleAbs(background, alpha=1.0 / gain)
        diff = cv2.absdiff(work, reference)
        _, changed = cv2.threshold(diff, threshold, 255, cv2.THRESH_BINARY)
        return _u8(changed)

    def _update_background(self, work: Gray, background: Background, ts: float) -> None:
        dt = max(ts - self._last_ts, 0.0)
        self._last_ts = ts
        alpha = 1.0 - math.exp(-dt / self._config.background_s)
        if alpha > 0.0:
            cv2.accumulateWeighted(work, background, alpha)


def _u8(image: object) -> Gray:
    """Type OpenCV's result as the uint8 image it is (its stubs return a generic array)."""
    return cast(Gray, image)


def _as_gray(frame: npt.NDArray[np.uint8]) -> Gray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ValueError("frame must be a uint8 numpy array")
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 3:
        return _u8(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    raise ValueError(f"frame must be (h, w) gray or (h, w, 3) BGR, got shape {frame.shape}")


def _build_geometry(
    config: MotionConfig, zones: tuple[Zone, ...], shape: tuple[int, int]
) -> _Geometry:
    height, width = shape
    if height < 2 or width < 2:
        raise ValueError(f"frame too small: {width}x{height}")
    halvings, h = 0, height
    while h >= 2 * config.frame_height:
        h //= 2
        halvings += 1
    work_h = min(config.frame_height, height)
    work_w = max(1, round(width * work_h / height))
    counted = counted_mask(zones, work_w, work_h)
    visible = visible_mask(zones, work_w, work_h)
    area = work_w * work_h
    vis = np.ones((work_h, work_w), dtype=bool) if visible is None else visible > 0
    return _Geometry(
        input_shape=shape,
        size=(work_w, work_h),
        halvings=halvings,
        counted=counted,
        visible=visible,
        counted_px=area if counted is None else cv2.countNonZero(counted),
        visible_px=area if visible is None else cv2.countNonZero(visible),
        min_px=max(1, math.ceil(config.min_area * area)),
        gain_samples=np.ascontiguousarray(vis[::_GAIN_STEP, ::_GAIN_STEP]),
    )


def _downscale(gray: Gray, geometry: _Geometry) -> Gray:
    """Gray plane to the working size: exact 2x box halvings, then one bilinear step."""
    image = gray
    for _ in range(geometry.halvings):
        h, w = image.shape
        # Cropping to even sizes keeps OpenCV on its fast integer-ratio INTER_AREA path.
        image = _u8(
            cv2.resize(
                image[: h - h % 2, : w - w % 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA
            )
        )
    if image.shape != (geometry.size[1], geometry.size[0]):
        image = _u8(cv2.resize(image, geometry.size, interpolation=cv2.INTER_LINEAR))
    return image


def _gain(work: Gray, background: Background, samples: npt.NDArray[np.bool_]) -> float:
    """Median background/current brightness ratio on a sparse grid of visible pixels."""
    cur = work[::_GAIN_STEP, ::_GAIN_STEP][samples].astype(np.float32)
    bg = background[::_GAIN_STEP, ::_GAIN_STEP][samples]
    usable = (cur >= _GAIN_MIN_LEVEL) & (bg >= _GAIN_MIN_LEVEL)
    if np.count_nonzero(usable) < 16:
        return 1.0
    ratio = float(np.median(bg[usable] / cur[usable]))
    return min(max(ratio, _GAIN_RANGE[0]), _GAIN_RANGE[1])


def _fraction(changed: Gray, within: Mask | None, total_px: int) -> float:
    if total_px == 0:
        return 0.0
    if within is not None:
        changed = _u8(cv2.bitwise_and(changed, within))
    return cv2.countNonZero(changed) / total_px


def _measure(changed: Gray, geometry: _Geometry) -> MotionResult:
    """Blobs of changed pixels in the counted area, and how much of it they cover.

    Dilation only groups nearby changed pixels into one blob (a person's head, torso and
    legs); a blob's area is the number of changed (undilated) pixels in its bounding box.
    """
    if geometry.counted_px == 0:
        return _NO_MOTION
    counted = geometry.counted
    if counted is not None:
        changed = _u8(cv2.bitwise_and(changed, counted))
    if cv2.countNonZero(changed) < geometry.min_px:
        return _NO_MOTION
    contours, _ = cv2.findContours(
        cv2.dilate(changed, _DILATE), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    blobs: list[tuple[int, tuple[int, int, int, int]]] = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if w * h < geometry.min_px:  # cannot hold enough pixels: skip the count
            continue
        area = cv2.countNonZero(changed[y : y + h, x : x + w])
        if area >= geometry.min_px:
            blobs.append((area, (x, y, w, h)))
    if not blobs:
        return _NO_MOTION
    blobs.sort(key=lambda blob: blob[0], reverse=True)
    width, height = geometry.size
    moved = sum(area for area, _ in blobs)
    return MotionResult(
        motion=True,
        motion_area=min(1.0, moved / geometry.counted_px),
        boxes=tuple(_normalise(rect, width, height) for _, rect in blobs),
        global_change=False,
    )


def _normalise(rect: tuple[int, int, int, int], width: int, height: int) -> NormBox:
    x, y, w, h = rect
    return (x / width, y / height, (x + w) / width, (y + h) / height)
