"""Video quality diagnostics (视频质量诊断): is a camera's picture usable?

One :class:`QualityMonitor` per camera, fed one frame about once a second
(:meth:`QualityMonitor.check`; the caller decides when). Each check scores eight diagnoses
(:class:`Kind`), every score "higher is worse", and a pure state machine with hysteresis
turns the scores into problems that are raised and cleared (:class:`QualityResult`).
Frames are a 2-D ``uint8`` gray/Y plane or 3-D BGR; on a gray plane the colour check is
unknown.

What a check looks at, all from one pass over the frame:

* the **work image**: the gray frame at 180 px high (2x box halvings, then one bilinear
  step), cut into a 16x9 grid of tiles, each with its mean and its *contrast* (standard
  deviation over mean + 8): structure that a global gain (dusk, dimmers, auto-exposure)
  leaves unchanged;
* the **fine level**: the gray frame halved until it is under 720 px high (540 for 1080p,
  576 for D1), where the mean absolute Laplacian of each tile over the tile's mean is its
  *sharpness*: defocus that vanishes once the picture is down at 180 px still shows there;
* a strided sample of full-resolution pixels (frozen), twelve 32x32 full-resolution crops
  (noise), and a strided BGR sample averaged per tile (colour).

The **reference view** (:class:`Reference`) is what the camera normally sees: the per-pixel
median of 7 frames spread over :attr:`QualityConfig.learn_s` (60) seconds of healthy,
steady picture, so passers-by and anyone standing for less than half a minute vanish;
the tiles' median sharpness; the tiles' median colour. It is taken automatically (or set
by the caller), kept per picture mode — colour by day, monochrome when the camera is in IR
night mode, whose picture differs from the day view (far field dark, foliage bright, often
softer focus) — and serialises to 35–40 KB (:func:`reference_to_bytes`). Until the current
mode has one, the state is ``unknown``.

The diagnoses, and why normal life does not trip them:

* ``black`` — no picture, lens cap: ``1 - max(mean / 40, std / 4)`` of the work image, so
  only a dark *and* flat picture scores. A dark scene that still shows something (a tenth
  of the light leaves a standard deviation of 5+) is ``brightness``, not ``black``.
* ``brightness`` — far too dark or too bright: the worst of how far the mean level is under
  50 (0.5 = mean 25), over 200 (0.5 = mean 220), and how much of the picture is blown out
  beyond 30 % (0.5 = half of it at 240+). Dusk down to a third of the daylight stays clear.
* ``frozen`` — the picture stopped changing. Each check compares its sample of
  full-resolution pixels with the previous check's: the share *identical* bit for bit, and
  the share *moved* by more than 3 levels. A decoder repeating a frame gives 100 %
  identical at once, but a camera whose picture freezes still *encodes* it, and what is
  decoded converges only as the encoder does. H.264 (x264, crf 23, GOP 2 s) of a picture
  frozen at 0 s, checked at 1..8 s: identical 18, 70, 43, 98.5, 50, 99.3, 55, 99.8 % —
  the P-frames refine the picture to bit-identity within ~4 s, and every keyframe
  re-quantises it, moving few pixels by more than 3 levels (0.4, 0.09, 0.03 % at 3, 5,
  7 s), fewer each time; only after ~8 s is it identical at every check (the reason
  "99 % identical for 6 s" took 15 s over RTSP). A live picture differs: footage with
  people walking moves 6–45 % of pixels from one check to the next; a still scene with
  sensor noise (σ 1–2 levels per channel) encoded the same ways stays under 98 %
  identical between keyframes and moves 0.8–5 % at every keyframe, forever; an encoder
  that skips such a scene between keyframes (crf 28) gives 100 % identical checks but
  moves 2.3 % and more at each keyframe. Hence: a check that moved more than 3 % shows
  motion and ends the *run* of re-encoded pictures; the score is the identical share of
  the better of the run's last two checks (one keyframe forgiven), raised at 98.5 % once
  6 s have passed since the run began — or since its latest check that moved more than
  0.75 %, more than the keyframe of a settled frozen picture does (so it has not settled,
  or it is live). A still live picture must beat both tests to pass for frozen: the
  closest measured (σ 1, crf 23, GOP 4 s) stays at 97.9 % identical and moves 0.93 % at
  its keyframes. The ~2 s an encoder needs to settle count towards the hold: ~8 s from
  the freeze to the raise (7–9 s with the check's phase in the GOP; 7 s for a decoder
  repeating a frame). Near-black and blown-out pixels do not count (they stay the same in
  a live picture too). Slower: a long GOP whose first keyframe after the freeze still
  moves much (crf 30, GOP 6 s: 12–14 s), and encoders that keep re-coding a static
  picture — x264 at 300 kbit/s for 768x576 (10–21 s), at 512 kbit/s with the medium
  preset (keyframes move 3–5 % for 20 s), capped by a VBV (veryfast: from 7 s to not
  within 30 s; ultrafast re-codes 10–25 % of the picture at every keyframe: never seen as
  frozen). And, as before, a live picture with no visible noise and nothing moving,
  skipped by its encoder between keyframes more than 6 s apart, looks frozen.
* ``noise`` — snow, interference: Immerkær's estimate (sigma of Gaussian noise, in gray
  levels) in twelve full-resolution crops, the third lowest, so textured crops do not count.
  Night sensor noise (sigma 3 per channel) scores about 2; the threshold is 6.
* ``color_cast`` — the median over tiles of how each tile's chromaticity (``log R/G``,
  ``log B/G`` of its mean colour) moved from the reference's: the size of a channel gain in
  log units (0.15 ≈ 16 %). Tile by tile, because a scene's colours are lumpy (grass and
  road); a median, because a red bus changes only some tiles; ratios, so a global
  brightness change leaves it alone. A monochrome picture (IR night mode: 90 % of tiles
  neutral) has no colour and is never a cast. Slow drift of the light's colour (dusk, lamps
  warming up) is followed with a time constant of :attr:`QualityConfig.color_adapt_s`
  while no cast is pending.
* ``occlusion`` — the share of the reference's textured tiles that became flat (contrast
  under 30 % of the reference's): a hand, a cloth, a bag or paint over part of the lens.
  Contrast ignores lighting; tiles blown out by headlights are glare, not cover.
* ``blur`` — defocus, fog, dirty lens: one minus the median, over the visible textured
  tiles, of their sharpness over the reference's. Relative per tile because scenes differ;
  a median because passers-by change only some tiles.
* ``displaced`` — camera turned, knocked or zoomed: the share of visible textured tiles
  (not next to a covered one) whose content no longer correlates with the reference's
  (normalised cross-correlation under 0.5 after a light blur: blind to gain and offset).
  A shift of up to :attr:`QualityConfig.shift_tolerance` (3 %) of the width — wind,
  vibration, a sagging mount — is found by an exhaustive search and forgiven; a larger one
  is confirmed by phase correlation. A crowd changes the tiles it covers, not most of them.
  A PTZ move ordered through the API suspends it and the reference is learnt anew
  (:meth:`QualityMonitor.suspend_displaced`).

A problem is **raised** once its score has stayed at or above :attr:`Threshold.raise_at`
for ``hold_s`` seconds (default 4: a bus or a crowd passing in front of the lens does not
last that long) and **cleared** once it has stayed below :attr:`Threshold.clear_at` for
:attr:`QualityConfig.clear_s` seconds. One cause explains several symptoms, so a kind is
not judged while a kind that explains it is raised or over its threshold: ``black``
explains everything; ``brightness`` blur, occlusion, displacement, noise, colour and
frozen (a tenth of the light leaves a passer-by moving few pixels by more than 3 levels);
``noise`` blur, occlusion, displacement and colour; ``displaced`` occlusion and colour (the
new view has other flat areas and colours); ``blur`` occlusion (fog flattens tiles too);
``occlusion`` colour. A kind not judged keeps a raised problem raised and cancels a pending
one. :attr:`Problem.tamper` marks the deliberate-looking problems for a ``tamper``
incident: ``occlusion``, ``displaced``, ``black`` once the camera had a healthy picture,
and ``blur`` that came within :attr:`QualityConfig.sudden_s` seconds (fog and dirt come
slowly).

Measured by ``bench/bench_quality.py`` on real footage: every kind raised within 4 s of the
hold (7 s for frozen) in all its degradation clips, no false alarm in 24 camera-hours of
normal life. Frozen pictures encoded by x264 at 10 fps and decoded again: raised 7–8 s
after the freeze at crf 23 (GOP 2 s), 7–12 s at 1 Mbit/s (3 clips in 4 within 10 s), 7 s
to 18 s with a VBV cap; 8.2–8.5 s over RTSP in ``tests/integration/test_quality_rtsp.py``
(14.8 s with "99 % identical for 6 s"); no false alarm in still, noisy clips through the
same encoders. Cost on one core: ~1.3–1.5 ms per check on a 1080p Y plane, ~2.0–2.2 ms on
1080p BGR (the gray conversion), i.e. 2.2 % / 3.3 % of decoding the same 1080p25 H.264
stream with one thread (one check a second against 25 decoded frames); the check that
learns a reference ~5 ms, once; a check that searches for a shift (a displaced or shaking
camera) about 2 ms more. A camera keeps 100–150 KB (a reference per picture mode, the
frozen sample), 0.5 MB more while it learns a reference. Pure
computation on the arrays handed in (numpy/cv2/stdlib, no I/O, no clock: time comes in as
``ts``).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "TAMPER_KINDS",
    "Kind",
    "Problem",
    "QualityConfig",
    "QualityMonitor",
    "QualityResult",
    "Reference",
    "State",
    "Threshold",
    "reference_from_bytes",
    "reference_to_bytes",
]

Gray = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]
State = Literal["ok", "degraded", "unknown"]


class Kind(StrEnum):
    """The diagnoses; the values are the names used in events and settings."""

    BLACK = "black"
    FROZEN = "frozen"
    BLUR = "blur"
    OCCLUSION = "occlusion"
    DISPLACED = "displaced"
    COLOR_CAST = "color_cast"
    NOISE = "noise"
    BRIGHTNESS = "brightness"


TAMPER_KINDS = frozenset({Kind.OCCLUSION, Kind.DISPLACED, Kind.BLACK, Kind.BLUR})
"""Kinds that can count as tampering (see :attr:`Problem.tamper` for when they do)."""

_ROWS, _COLS = 9, 16  # the tile grid
_WORK_H = 180
_FINE_MAX_H = 720  # the fine level is halved until it is under this height
_TEXTURED = 0.05  # tile contrast (std / mean) from which a tile has structure to compare
_COVERED = 0.3  # a covered tile keeps less than this share of its reference contrast
_GLARE = 235  # tiles this bright are glare (headlights), not cover
_MATCH = 0.5  # normalised cross-correlation from which a tile still shows the reference
_MIN_TILES = 8  # fewer textured tiles than this: the reference checks are unknown
_MIN_TEXTURED_SHARE = 0.2  # a reference needs this share of textured tiles
_NCC_SIGMA = 1.0
_LEVEL_OFFSET = 8.0  # added to means before dividing: dark tiles do not explode
_BLACK_LEVEL, _BLACK_STD = 40.0, 4.0
_DARK_LEVEL, _BRIGHT_LEVEL, _BRIGHT_SPAN = 50.0, 200.0, 40.0
_BLOWN_LEVEL, _BLOWN_FROM, _BLOWN_SPAN = 240.0, 0.3, 0.4  # blown-out share of the picture
_FROZEN_LEVELS = (16, 239)  # clipped levels stay identical in a live picture too
_FROZEN_ROWS = 135  # rows of the frozen sample
_RECODED_LEVELS = 3  # re-encoding the same picture moves a pixel by up to this many levels
_RECODED_SHARE = 0.03  # more pixels moved further than that: the picture changed
_KEYFRAME_SHARE = 0.0075  # a settled frozen picture's keyframe moves at most this share
_NOISE_CROP, _NOISE_CROPS = 32, (3, 4)
_NOISE_RANK = 2  # third lowest crop estimate
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_CHROMA_ROWS = 54  # rows of the colour sample (6 per tile row)
_CHROMA_LEVELS = (16, 250)  # brightest channel: enough light for a chroma, unclipped
_MONO = 0.03  # log-chroma within this of neutral in nearly every tile: a monochrome picture
_MIN_COLOR_TILES = 16
_LEARN_FRAMES = 6  # a candidate every sixth of learn_s: the reference is a median of 7
_MAX_GAP_S = 15.0  # checks further apart restart pending runs (a reconnect)
_SLACK_S = 1e-3  # timestamps are floats: 6 checks 1 s apart may sum to 5.9999999 s
_LIMITED = (255 / 219, -16 * 255 / 219)  # video-range (16..235) levels to full range
_MAGIC = b"XLQR1"

# kind -> kinds it explains while it is raised or over its threshold
_EXPLAINS: Mapping[Kind, frozenset[Kind]] = {
    Kind.BLACK: frozenset(Kind) - {Kind.BLACK},
    # A far too dark picture squeezes every change under the re-encoding tolerance: frozen too.
    Kind.BRIGHTNESS: frozenset(
        {Kind.BLUR, Kind.OCCLUSION, Kind.DISPLACED, Kind.NOISE, Kind.COLOR_CAST, Kind.FROZEN}
    ),
    Kind.NOISE: frozenset({Kind.BLUR, Kind.OCCLUSION, Kind.DISPLACED, Kind.COLOR_CAST}),
    Kind.BLUR: frozenset({Kind.OCCLUSION}),
    Kind.DISPLACED: frozenset({Kind.OCCLUSION, Kind.COLOR_CAST}),
    Kind.OCCLUSION: frozenset({Kind.COLOR_CAST}),
}
_HEALTH = (Kind.BLACK, Kind.BRIGHTNESS, Kind.NOISE, Kind.FROZEN)
_REFERENCE_KINDS = (Kind.OCCLUSION, Kind.BLUR, Kind.DISPLACED, Kind.COLOR_CAST)


def _seconds(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def _clip01(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _u8(image: object) -> Gray:
    """Type OpenCV's result as the uint8 image it is (its stubs return a generic array)."""
    return cast(Gray, image)


def _f32(image: object) -> F32:
    """Type OpenCV's result as the float32 image it is."""
    return cast(F32, image)


# Public types ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Threshold:
    """When one diagnosis is raised and cleared (scores: higher is worse).

    ``raise_at``: the score from which the picture has the problem.
    ``clear_at``: the score under which it no longer has it (<= ``raise_at``: hysteresis).
    ``hold_s``: seconds the score must stay at or above ``raise_at`` before the problem is
        raised; ``None`` takes :attr:`QualityConfig.hold_s`.
    """

    raise_at: float
    clear_at: float
    hold_s: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.raise_at) and math.isfinite(self.clear_at)):
            raise ValueError(f"thresholds must be finite, got {self.raise_at}, {self.clear_at}")
        if self.clear_at > self.raise_at:
            raise ValueError(f"clear_at ({self.clear_at}) must be <= raise_at ({self.raise_at})")
        if self.hold_s is not None and not _seconds(self.hold_s):
            raise ValueError(f"hold_s must be finite and >= 0, got {self.hold_s}")


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """Per-camera quality settings; each kind's :class:`Threshold` is in its score's unit.

    ``black``: 1 - max(mean/40, std/4) of the work image, 0..1 (default 0.3 / 0.1).
    ``frozen``: share of sampled pixels identical to the previous check, the better of the
        last two while the picture changes by re-encoding only (0.985 / 0.9, 6 s counted
        from the first such check; see the module docstring).
    ``blur``: 1 - median sharpness ratio to the reference, 0..1 (0.55 / 0.4).
    ``occlusion``: share of the reference's textured tiles now flat (0.3 / 0.2).
    ``displaced``: share of visible textured tiles no longer matching (0.5 / 0.35).
    ``color_cast``: median shift of the tiles' log-chromaticity from the reference's
        (0.15 / 0.1).
    ``noise``: estimated noise, gray levels at full resolution (6 / 4).
    ``brightness``: under- or overexposure, 0..1; 0.5 = mean 25 or 220, or half the
        picture blown out (0.5 / 0.3).
    ``hold_s``: seconds a score must stay over ``raise_at`` to raise (default 4).
    ``clear_s``: seconds a score must stay under ``clear_at`` to clear (default 4).
    ``learn_s``: seconds of healthy, steady picture before a reference is taken (default
        60: the median of 7 frames over a minute drops anyone who stood still for less than
        half of it).
    ``sudden_s``: blur that rose from clear to raised within this many seconds counts as
        tampering (default 10).
    ``shift_tolerance``: a view shifted by up to this fraction of its width is not
        ``displaced`` (default 0.03; 0 forgives nothing).
    ``color_adapt_s``: time constant with which the reference colour follows slow drift
        (default 900 s).
    """

    black: Threshold = Threshold(0.3, 0.1)
    frozen: Threshold = Threshold(0.985, 0.9, hold_s=6.0)
    blur: Threshold = Threshold(0.55, 0.4)
    occlusion: Threshold = Threshold(0.3, 0.2)
    displaced: Threshold = Threshold(0.5, 0.35)
    color_cast: Threshold = Threshold(0.15, 0.1)
    noise: Threshold = Threshold(6.0, 4.0)
    brightness: Threshold = Threshold(0.5, 0.3)
    hold_s: float = 4.0
    clear_s: float = 4.0
    learn_s: float = 60.0
    sudden_s: float = 10.0
    shift_tolerance: float = 0.03
    color_adapt_s: float = 900.0

    def __post_init__(self) -> None:
        for kind in Kind:
            if not isinstance(getattr(self, kind.value), Threshold):
                raise ValueError(f"{kind.value} must be a Threshold")
        for name in ("hold_s", "clear_s", "sudden_s"):
            if not _seconds(getattr(self, name)):
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        if not (_seconds(self.learn_s) and self.learn_s > 0):
            raise ValueError(f"learn_s must be finite and > 0, got {self.learn_s}")
        if not 0.0 <= self.shift_tolerance <= 0.2:
            raise ValueError(f"shift_tolerance must be in 0..0.2, got {self.shift_tolerance}")
        if not self.color_adapt_s > 0:
            raise ValueError(f"color_adapt_s must be > 0, got {self.color_adapt_s}")

    def threshold(self, kind: Kind) -> Threshold:
        """The threshold of ``kind``."""
        return cast(Threshold, getattr(self, kind.value))

    def hold(self, kind: Kind) -> float:
        """Seconds ``kind`` must hold before it is raised."""
        hold = self.threshold(kind).hold_s
        return self.hold_s if hold is None else hold


@dataclass(frozen=True, slots=True)
class Problem:
    """A raised diagnosis.

    ``since``: ``ts`` of the first check of the run that raised it.
    ``score``: its latest judged score.
    ``tamper``: it looks deliberate (occlusion, displacement, black after a healthy picture,
        sudden blur): the caller may open a ``tamper`` incident.
    """

    kind: Kind
    since: float
    score: float
    tamper: bool


@dataclass(frozen=True, slots=True, eq=False)
class QualityResult:
    """What one check found.

    ``state``: ``degraded`` with any problem raised, else ``unknown`` until a reference
        exists for the current picture mode (or while a PTZ move suspends it), else ``ok``.
    ``problems``: every raised problem, in :class:`Kind` order.
    ``raised`` / ``cleared``: kinds raised / cleared by this check (emit
        ``camera.degraded`` / ``camera.restored`` on them).
    ``scores``: the score of every kind judged on this frame; a kind that is unknown (no
        reference, gray input for colour, explained by another problem) is absent.
    """

    state: State
    problems: tuple[Problem, ...]
    raised: tuple[Kind, ...]
    cleared: tuple[Kind, ...]
    scores: Mapping[Kind, float]


@dataclass(frozen=True, slots=True, eq=False)
class Reference:
    """A camera's reference view in one picture mode (compact: store it with the camera).

    ``gray``: the work image (180 px high, ``uint8``); ``sharpness``: per-tile sharpness at
    the fine level (9x16); ``input_shape``: the ``(height, width)`` of the frames it was
    learnt on (a different resolution means learning again); ``chroma``: per tile
    ``(log R/G, log B/G)`` (9x16x2, NaN where too dark or clipped), ``None`` when learnt on
    gray planes or a monochrome picture;
    ``monochrome``: learnt on a monochrome (IR) picture; ``learnt_at``: the ``ts``.
    """

    gray: Gray
    sharpness: F32
    input_shape: tuple[int, int]
    chroma: F32 | None
    monochrome: bool
    learnt_at: float


def reference_to_bytes(reference: Reference) -> bytes:
    """Serialise ``reference``: a short JSON header and the zlib-compressed work image."""
    header = {
        "gray_shape": list(reference.gray.shape),
        "sharpness": [round(float(v), 6) for v in reference.sharpness.ravel()],
        "input_shape": list(reference.input_shape),
        "chroma": None if reference.chroma is None else _floats(reference.chroma),
        "monochrome": reference.monochrome,
        "learnt_at": reference.learnt_at,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    body = zlib.compress(np.ascontiguousarray(reference.gray).tobytes(), 6)
    return _MAGIC + struct.pack(">I", len(head)) + head + body


def reference_from_bytes(data: bytes) -> Reference:
    """The :class:`Reference` serialised by :func:`reference_to_bytes`; ``ValueError`` when
    ``data`` is not one."""
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
        raise ValueError("not a serialised quality reference")
    start = len(_MAGIC) + 4
    (size,) = struct.unpack(">I", data[len(_MAGIC) : start])
    try:
        header = json.loads(data[start : start + size])
        rows, cols = (int(v) for v in header["gray_shape"])
        gray = np.frombuffer(zlib.decompress(data[start + size :]), dtype=np.uint8)
        sharpness = np.asarray(header["sharpness"], dtype=np.float32).reshape(_ROWS, _COLS)
        height, width = (int(v) for v in header["input_shape"])
        chroma = header["chroma"]
        return Reference(
            gray=gray.reshape(rows, cols).copy(),
            sharpness=sharpness,
            input_shape=(height, width),
            chroma=None if chroma is None else _chroma_tiles(chroma),
            monochrome=bool(header["monochrome"]),
            learnt_at=float(header["learnt_at"]),
        )
    except (KeyError, TypeError, ValueError, zlib.error) as err:
        raise ValueError(f"malformed quality reference: {err}") from err


def _floats(values: F32) -> list[float | None]:
    return [None if math.isnan(v) else round(float(v), 6) for v in values.ravel()]


def _chroma_tiles(values: list[float | None]) -> F32:
    tiles = np.array([math.nan if v is None else v for v in values], dtype=np.float32)
    return tiles.reshape(_ROWS, _COLS, 2)


# What one frame shows ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class _Measure:
    input_shape: tuple[int, int]
    work: F32  # the work image, float
    tile_mean: F32
    contrast: F32
    sharpness: F32
    mean: float
    std: float
    blown: float  # share of the work image at or above _BLOWN_LEVEL
    noise: float
    sample: Gray  # strided full-resolution pixels, for frozen
    chroma: F32 | None  # per tile (log R/G, log B/G), NaN where unusable; None: gray input
    monochrome: bool


def _measure(frame: npt.NDArray[np.uint8], limited_range: bool) -> _Measure:
    gray, bgr = _planes(frame)
    fine = _fine(gray)
    work = _work(fine, limited_range).astype(np.float32)
    tile_mean, contrast, square = _tile_stats(work)
    mean = float(tile_mean.mean())
    chroma, monochrome = _chroma(bgr) if bgr is not None else (None, False)
    step = max(1, gray.shape[0] // _FROZEN_ROWS)
    return _Measure(
        input_shape=(gray.shape[0], gray.shape[1]),
        work=work,
        tile_mean=tile_mean,
        contrast=contrast,
        sharpness=_sharpness(fine) / (tile_mean + _LEVEL_OFFSET),
        mean=mean,
        std=math.sqrt(max(float(square.mean()) - mean * mean, 0.0)),
        blown=np.count_nonzero(work >= _BLOWN_LEVEL) / work.size,
        noise=_noise(gray),
        sample=gray[::step, ::step].copy(),
        chroma=chroma,
        monochrome=monochrome,
    )


def _planes(frame: npt.NDArray[np.uint8]) -> tuple[Gray, Gray | None]:
    """The gray plane and, for BGR input, the BGR frame."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ValueError("frame must be a uint8 numpy array")
    if frame.ndim == 3 and frame.shape[2] == 3:
        return _u8(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)), frame
    if frame.ndim != 2:
        raise ValueError(f"frame must be (h, w) gray or (h, w, 3) BGR, got shape {frame.shape}")
    return frame, None


def _fine(gray: Gray) -> Gray:
    """Exact 2x box halvings until under 720 px high, cropped to a multiple of the grid."""
    if gray.shape[0] < _ROWS * 4 or gray.shape[1] < _COLS * 4:
        raise ValueError(f"frame too small: {gray.shape[1]}x{gray.shape[0]}")
    image = gray
    while image.shape[0] >= _FINE_MAX_H:
        h, w = image.shape
        image = _u8(
            cv2.resize(
                image[: h - h % 2, : w - w % 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA
            )
        )
    h, w = image.shape
    return image[: h - h % _ROWS, : w - w % _COLS]


def _work(fine: Gray, limited_range: bool) -> Gray:
    """The work image: 2x box halvings of the fine level, then one bilinear step (OpenCV's
    area resampling is slow at ratios that are not whole numbers)."""
    image = fine
    while image.shape[0] >= 2 * _WORK_H:
        h, w = image.shape
        image = _u8(
            cv2.resize(
                image[: h - h % 2, : w - w % 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA
            )
        )
    h, w = image.shape
    width = max(_COLS, round(w * _WORK_H / h) // _COLS * _COLS)
    work = _u8(cv2.resize(image, (width, _WORK_H), interpolation=cv2.INTER_LINEAR))
    if limited_range:
        work = _u8(cv2.convertScaleAbs(work, alpha=_LIMITED[0], beta=_LIMITED[1]))
    return work


def _tile_stats(work: F32) -> tuple[F32, F32, F32]:
    """Per-tile mean, contrast (standard deviation over mean) and mean square."""
    mean = _tiles(work)
    square = _tiles(work * work)
    variance = np.maximum(square - mean * mean, 0.0)
    return mean, np.sqrt(variance) / (mean + _LEVEL_OFFSET), square


def _tiles(image: F32) -> F32:
    """Per-tile means (exact: the image is a multiple of the grid)."""
    return _f32(cv2.resize(image, (_COLS, _ROWS), interpolation=cv2.INTER_AREA))


def _sharpness(fine: Gray) -> F32:
    """Mean absolute Laplacian of each tile of the fine level (saturated at 255: a strong
    edge counts as one, so a few high-contrast edges cannot dominate a tile)."""
    magnitude = _u8(cv2.convertScaleAbs(cv2.Laplacian(fine, cv2.CV_16S)))
    h, w = magnitude.shape
    corners = cast(npt.NDArray[np.int32], cv2.integral(magnitude))
    grid = corners[np.ix_(np.arange(0, h + 1, h // _ROWS), np.arange(0, w + 1, w // _COLS))]
    sums = grid[1:, 1:] - grid[:-1, 1:] - grid[1:, :-1] + grid[:-1, :-1]
    return _f32((sums / ((h // _ROWS) * (w // _COLS))).astype(np.float32))


def _noise(gray: Gray) -> float:
    """Immerkær's estimate (Gaussian sigma) in a grid of crops; the third lowest."""
    rows, cols = _NOISE_CROPS
    h, w = gray.shape
    size = min(_NOISE_CROP, h // rows, w // cols)
    ys = [int((r + 0.5) * h / rows) - size // 2 for r in range(rows)]
    xs = [int((c + 0.5) * w / cols) - size // 2 for c in range(cols)]
    crops = np.concatenate([gray[y : y + size, x : x + size] for y in ys for x in xs])
    response = np.abs(_f32(cv2.filter2D(crops.astype(np.float32), -1, _IMMERKAER)))
    per_crop = response.reshape(rows * cols, size, size)[:, 1:-1, 1:-1].mean(axis=(1, 2))
    return float(np.sort(per_crop)[_NOISE_RANK]) * math.sqrt(math.pi / 2) / 6


def _chroma(bgr: Gray) -> tuple[F32, bool]:
    """Per-tile ``(log R/G, log B/G)`` of the tile's mean colour (from a strided sample; NaN
    where the tile is too dark or has clipped pixels), and whether the picture is
    monochrome."""
    step = max(1, bgr.shape[0] // _CHROMA_ROWS)
    sample = bgr[::step, ::step]
    rows, cols = sample.shape[0] // _ROWS * _ROWS, sample.shape[1] // _COLS * _COLS
    sample = np.ascontiguousarray(sample[:rows, :cols])
    top = sample.max(axis=2)
    means = _f32(
        cv2.resize(sample.astype(np.float32), (_COLS, _ROWS), interpolation=cv2.INTER_AREA)
    )
    clipped = _tiles((top > _CHROMA_LEVELS[1]).astype(np.float32)) > 0
    usable = (means.max(axis=2) >= _CHROMA_LEVELS[0]) & ~clipped
    logs = np.log(means + np.float32(1.0))
    chroma = np.stack((logs[..., 2] - logs[..., 1], logs[..., 0] - logs[..., 1]), axis=2)
    chroma[~usable] = np.nan
    return chroma, _is_monochrome(chroma)


def _is_monochrome(chroma: F32) -> bool:
    """No colour anywhere (an IR night picture): 90 % of the usable tiles are neutral.
    Tile means, not pixels: the chroma noise some cameras leave in night mode averages out."""
    usable = chroma[~np.isnan(chroma).any(axis=2)]
    if len(usable) < _MIN_COLOR_TILES:
        return False
    return float(np.percentile(np.abs(usable).max(axis=1), 90)) < _MONO


# The reference view and comparisons ----------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class _View:
    """A reference and the structure of its tiles (what a camera keeps: ~60 KB)."""

    reference: Reference
    contrast: F32
    textured: Mask


def _view(reference: Reference) -> _View:
    _, contrast, _ = _tile_stats(reference.gray.astype(np.float32))
    return _View(reference, contrast, contrast >= _TEXTURED)


@dataclass(frozen=True, slots=True, eq=False)
class _Blurred:
    """A work image lightly blurred, with its tiles' means and variances: what the
    normalised cross-correlation needs (derived per check; cheap, nothing to keep)."""

    image: F32
    mean: F32
    var: F32


def _blurred(work: F32) -> _Blurred:
    image = _f32(cv2.GaussianBlur(work, (0, 0), _NCC_SIGMA))
    return _Blurred(image, *_blurred_stats(image))


def _mismatch(ref: _Blurred, image: F32, tiles: Mask) -> float:
    """Share of ``tiles`` whose content no longer matches the reference: normalised
    cross-correlation under :data:`_MATCH` (blind to gain and offset)."""
    cur = _blurred_stats(image)
    ncc = (_tiles(ref.image * image) - ref.mean * cur[0]) / np.sqrt(ref.var * cur[1])
    return float(np.mean(ncc[tiles] < _MATCH))


def _blurred_stats(image: F32) -> tuple[F32, F32]:
    mean = _tiles(image)
    return mean, np.maximum(_tiles(image * image) - mean * mean, 1e-3)


def _compare(view: _View, m: _Measure, config: QualityConfig) -> dict[Kind, float | None]:
    """Occlusion, blur and displacement of ``m`` against the reference view."""
    textured = view.textured
    if np.count_nonzero(textured) < _MIN_TILES:
        return {Kind.OCCLUSION: None, Kind.BLUR: None, Kind.DISPLACED: None}
    covered = textured & (m.contrast < _COVERED * view.contrast) & (m.tile_mean < _GLARE)
    visible = textured & ~covered
    # Tiles next to a covered one may be partly covered: not evidence of a moved view.
    clear = textured & ~_grown(covered)
    ref = _blurred(view.reference.gray.astype(np.float32))
    image = _f32(cv2.GaussianBlur(m.work, (0, 0), _NCC_SIGMA))
    return {
        Kind.OCCLUSION: np.count_nonzero(covered) / np.count_nonzero(textured),
        Kind.BLUR: _blur(view, m, visible),
        Kind.DISPLACED: _displaced(ref, image, clear, config),
    }


def _grown(mask: Mask) -> Mask:
    """``mask`` and its 8 neighbours."""
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8))
    return cast(Mask, np.asarray(grown, dtype=bool))


def _blur(view: _View, m: _Measure, visible: Mask) -> float | None:
    """One minus the median sharpness ratio to the reference over the visible tiles."""
    if np.count_nonzero(visible) < _MIN_TILES:
        return None
    ratio = m.sharpness[visible] / np.maximum(view.reference.sharpness[visible], 1e-6)
    return _clip01(1.0 - float(np.median(ratio)))


def _displaced(ref: _Blurred, image: F32, visible: Mask, config: QualityConfig) -> float | None:
    """Share of visible textured tiles of ``image`` (blurred) no longer matching ``ref``.

    When it is high, the view may have shifted. The best shift within the tolerance
    (vibration, wind, a sagging mount) is searched exhaustively at quarter size and refined
    at half size; if the tiles match after it, the shift is forgiven. A score still between
    the thresholds gets a second look: phase correlation of the gradients, over the whole
    image and each quarter, proposes larger shifts, and one after which most tiles match is
    a camera turned — evidence where a pure pan leaves many tiles alike (a horizontal kerb
    under a horizontal pan).
    """
    if np.count_nonzero(visible) < _MIN_TILES:
        return None
    clear_at = config.displaced.clear_at
    score = _mismatch(ref, image, visible)
    if score < clear_at:
        return score  # the common case: nothing to explain
    tolerance = config.shift_tolerance * image.shape[1]
    small = _small_shift(ref.image, image, tolerance)
    if small is not None:
        score = min(score, _mismatch_after(ref, image, visible, small))
    if score < clear_at or score >= config.displaced.raise_at:
        return score  # forgiven, or displaced without further evidence
    moved = 0.0
    for shift in _candidate_shifts(ref.image, image):
        if math.hypot(*shift) > tolerance:
            moved = max(moved, 1.0 - _mismatch_after(ref, image, visible, shift))
    return max(score, moved)


def _mismatch_after(ref: _Blurred, image: F32, visible: Mask, shift: tuple[float, float]) -> float:
    """The mismatch once ``image`` is moved back by ``shift`` (1 when too little overlaps)."""
    dx, dy = shift
    back = np.array([[1.0, 0.0, -dx], [0.0, 1.0, -dy]], dtype=np.float32)
    h, w = image.shape
    aligned = _f32(cv2.warpAffine(image, back, (w, h), borderMode=cv2.BORDER_REPLICATE))
    tiles = visible & np.outer(_inside(h, _ROWS, dy), _inside(w, _COLS, dx))
    if np.count_nonzero(tiles) < _MIN_TILES:
        return 1.0
    return _mismatch(ref, aligned, tiles)


def _inside(size: int, count: int, shift: float) -> Mask:
    """Which of ``count`` tiles along an axis of ``size`` pixels still lie wholly inside the
    picture once it is moved back by ``shift`` (pixel ``x`` then shows ``x + shift``)."""
    step = size // count
    starts = np.arange(count) * step
    inside: Mask = (starts + shift >= 0) & (starts + step - 1 + shift <= size - 1)
    return inside


def _small_shift(ref: F32, image: F32, tolerance: float) -> tuple[float, float] | None:
    """The shift of ``image`` against ``ref`` within ``tolerance`` pixels that minimises a
    clipped absolute difference of the normalised pictures (passers-by cost a bounded
    amount wherever the alignment is), searched at quarter size, refined at half size."""
    radius = int(tolerance / 4)
    if radius < 1:
        return None
    refs, curs = _pyramid(ref), _pyramid(image)
    dx, dy = _search(refs[0], curs[0], (0, 0), radius)
    dx, dy = _search(refs[1], curs[1], (2 * dx, 2 * dy), 1)
    return None if (dx, dy) == (0, 0) else (2.0 * dx, 2.0 * dy)


def _pyramid(image: F32) -> tuple[F32, F32]:
    """Quarter- and half-size copies normalised to zero mean and unit deviation."""
    h, w = image.shape
    out = []
    for size in ((w // 4, h // 4), (w // 2, h // 2)):
        small = _f32(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        out.append(_f32((small - small.mean()) / max(float(small.std()), 1e-3)))
    return out[0], out[1]


def _search(ref: F32, cur: F32, center: tuple[int, int], radius: int) -> tuple[int, int]:
    """Integer shift ``d`` within ``radius`` of ``center`` that best gives
    ``cur(x) ~ ref(x - d)``."""
    h, w = cur.shape
    m = radius + max(abs(center[0]), abs(center[1]))
    inner = cur[m : h - m, m : w - m]
    best, found = math.inf, center
    for dy in range(center[1] - radius, center[1] + radius + 1):
        for dx in range(center[0] - radius, center[0] + radius + 1):
            moved = ref[m - dy : h - m - dy, m - dx : w - m - dx]
            cost = float(np.minimum(np.abs(inner - moved), 1.0).mean())
            if cost < best:
                best, found = cost, (dx, dy)
    return found


def _candidate_shifts(ref: F32, image: F32) -> list[tuple[float, float]]:
    """Phase-correlation shifts of ``image``'s gradients against ``ref``'s, over the whole
    image and each quarter (at least half a pixel)."""
    a, b = _gradient(ref), _gradient(image)
    h, w = a.shape
    parts = [(slice(0, h), slice(0, w))] + [
        (slice(y, y + h // 2), slice(x, x + w // 2)) for y in (0, h // 2) for x in (0, w // 2)
    ]
    shifts = []
    for rows, cols in parts:
        part_a, part_b = np.ascontiguousarray(a[rows, cols]), np.ascontiguousarray(b[rows, cols])
        window = cv2.createHanningWindow(part_a.shape[::-1], cv2.CV_32F)
        (dx, dy), _ = cv2.phaseCorrelate(part_a, part_b, window)
        if math.hypot(dx, dy) >= 0.5:
            shifts.append((float(dx), float(dy)))
    return shifts


def _gradient(image: F32) -> F32:
    dx = _f32(cv2.Sobel(image, cv2.CV_32F, 1, 0))
    dy = _f32(cv2.Sobel(image, cv2.CV_32F, 0, 1))
    return _f32(cv2.magnitude(dx, dy))


# Learning a reference -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class _Candidate:
    """A healthy frame kept while learning a reference (compact)."""

    ts: float
    gray: Gray
    sharpness: F32
    chroma: F32 | None
    monochrome: bool
    input_shape: tuple[int, int]


def _candidate(m: _Measure, ts: float) -> _Candidate:
    gray = m.work.astype(np.uint8)  # the work image holds whole levels
    return _Candidate(ts, gray, m.sharpness, m.chroma, m.monochrome, m.input_shape)


def _steady(previous: _Candidate, m: _Measure, config: QualityConfig) -> bool:
    """``m`` shows the view of the previous candidate (the camera is not moving), allowing
    for passers-by and for a shift within the tolerance."""
    if previous.input_shape != m.input_shape or previous.monochrome != m.monochrome:
        return False
    work = previous.gray.astype(np.float32)
    _, contrast, _ = _tile_stats(work)
    image = _f32(cv2.GaussianBlur(m.work, (0, 0), _NCC_SIGMA))
    score = _displaced(_blurred(work), image, contrast >= _TEXTURED, config)
    return score is not None and score < config.displaced.clear_at


def _learnt(candidates: list[_Candidate], ts: float) -> Reference:
    """The reference from healthy, steady frames: medians, so passers-by vanish."""
    gray = np.median(np.stack([c.gray for c in candidates]), axis=0)
    chromas = [c.chroma for c in candidates if c.chroma is not None]
    monochrome = candidates[0].monochrome
    chroma = None
    if chromas and not monochrome and len(chromas) * 2 > len(candidates):
        chroma = _f32(np.median(np.stack(chromas), axis=0))  # NaN where any was unusable
    return Reference(
        gray=np.rint(gray).astype(np.uint8),
        sharpness=_f32(np.median(np.stack([c.sharpness for c in candidates]), axis=0)),
        input_shape=candidates[0].input_shape,
        chroma=chroma,
        monochrome=monochrome,
        learnt_at=ts,
    )


# Scores -----------------------------------------------------------------------------------------


def _black(m: _Measure) -> float:
    return _clip01(1.0 - max(m.mean / _BLACK_LEVEL, m.std / _BLACK_STD))


def _brightness(m: _Measure) -> float:
    dark = (_DARK_LEVEL - m.mean) / _DARK_LEVEL
    bright = (m.mean - _BRIGHT_LEVEL) / _BRIGHT_SPAN
    blown = (m.blown - _BLOWN_FROM) / _BLOWN_SPAN
    return _clip01(max(dark, bright, blown))


@dataclass(frozen=True, slots=True)
class _Change:
    """How the frozen sample changed since the previous check: the share of its counted
    pixels that are bit-identical, and the share that moved by more than re-encoding the
    same picture would move them (:data:`_RECODED_LEVELS`)."""

    identical: float
    moved: float


def _change(previous: Gray | None, m: _Measure) -> _Change | None:
    if previous is None or previous.shape != m.sample.shape:
        return None
    low, high = _FROZEN_LEVELS
    counted = (m.sample >= low) & (m.sample <= high)
    count = np.count_nonzero(counted)
    if count < 0.05 * counted.size:
        return None  # almost all clipped: a live picture would not change either
    diff = _u8(cv2.absdiff(previous, m.sample))[counted]
    moved = np.count_nonzero(diff > _RECODED_LEVELS)
    return _Change(float(np.count_nonzero(diff == 0) / count), float(moved / count))


@dataclass(slots=True)
class _StillRun:
    """The checks in a row whose picture changed by re-encoding only, and the ``frozen``
    score they give (see the module docstring)."""

    start: float | None = None  # the run's first check
    restart: float | None = None  # its latest check that moved more than a settled keyframe
    previous: float | None = None  # identical share of the run's previous check

    def score(self, change: _Change | None, ts: float) -> float | None:
        """Feed one check's change; the frozen score (``None``: no comparison)."""
        if change is None or change.moved > _RECODED_SHARE:  # unknown, or the picture moved
            self.start, self.restart, self.previous = None, None, None
            return None if change is None else change.identical
        if self.start is None:
            self.start = ts
        if change.moved > _KEYFRAME_SHARE:
            self.restart = ts
        best = max(change.identical, self.previous or 0.0)  # forgive one keyframe
        self.previous = change.identical
        return best

    @property
    def hold_from(self) -> float | None:
        """The check the frozen hold counts from: the run's first, or its latest that moved
        more than the keyframe of a settled frozen picture does."""
        return self.start if self.restart is None else self.restart


def _color_cast(m: _Measure, chroma: F32 | None) -> float | None:
    """The median shift of the tiles' chromaticity from the reference's."""
    if m.chroma is None:
        return None
    if m.monochrome:
        return 0.0  # IR night mode: no colour at all is not a cast
    if chroma is None:
        return None
    shift = (m.chroma - chroma).reshape(-1, 2)
    shift = shift[~np.isnan(shift).any(axis=1)]
    if len(shift) < _MIN_COLOR_TILES:
        return None
    return math.hypot(float(np.median(shift[:, 0])), float(np.median(shift[:, 1])))


# The state machine ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Track:
    """One kind's hysteresis state."""

    since: float | None = None  # first check of the current run over raise_at
    clearing: float | None = None  # first check of the current run under clear_at (raised)
    raised: bool = False
    tamper: bool = False
    score: float = 0.0
    low_at: float = -math.inf  # last check under clear_at while not raised


def _advance(
    track: _Track,
    score: float | None,
    ts: float,
    threshold: Threshold,
    hold_s: float,
    clear_s: float,
    start: float | None = None,
) -> int:
    """Feed one check's score; +1 when the problem is raised, -1 when cleared, else 0.

    ``start``: the check the hold counts from when it is not the first one over
    ``raise_at`` (frozen: :attr:`_StillRun.hold_from`)."""
    if score is None:  # not judged: hold the raised state, forget a pending run
        track.clearing = None
        if not track.raised:
            track.since = None
        return 0
    track.score = score
    if track.raised:
        return _advance_raised(track, score, ts, threshold, clear_s)
    if score < threshold.clear_at:
        track.low_at = ts
    if score < threshold.raise_at:
        track.since = None
        return 0
    if track.since is None or start is not None:
        track.since = ts if start is None else start
    if ts - track.since >= hold_s - _SLACK_S:
        track.raised = True
        return 1
    return 0


def _advance_raised(
    track: _Track, score: float, ts: float, threshold: Threshold, clear_s: float
) -> int:
    if score >= threshold.clear_at:
        track.clearing = None
        return 0
    if track.clearing is None:
        track.clearing = ts
    if ts - track.clearing < clear_s - _SLACK_S:
        return 0
    track.raised, track.since, track.clearing, track.tamper = False, None, None, False
    track.low_at = ts
    return -1


# The monitor --------------------------------------------------------------------------------------


class QualityMonitor:
    """Quality diagnostics for one camera (stateful: references and hysteresis).

    Not thread-safe; use one instance per camera from one thread. ``ts`` must not decrease.
    """

    def __init__(self, config: QualityConfig | None = None) -> None:
        self._config = config or QualityConfig()
        self._views: dict[bool, _View] = {}  # keyed by monochrome
        self._chroma: F32 | None = None  # the colour view's, drifting
        self._tracks = {kind: _Track() for kind in Kind}
        self._previous: Gray | None = None  # the last frame's frozen sample
        self._still = _StillRun()
        self._candidates: list[_Candidate] = []
        self._suspended_until = -math.inf
        self._last_ts: float | None = None

    @property
    def config(self) -> QualityConfig:
        """The monitor's settings."""
        return self._config

    @property
    def references(self) -> tuple[Reference, ...]:
        """The current reference views (colour and/or monochrome), to store."""
        refs = [view.reference for _, view in sorted(self._views.items())]
        return tuple(
            replace(ref, chroma=self._chroma) if not ref.monochrome else ref for ref in refs
        )

    def check(
        self, frame: npt.NDArray[np.uint8], ts: float, *, limited_range: bool = False
    ) -> QualityResult:
        """Diagnose one frame taken at ``ts`` (seconds, never decreasing).

        ``frame``: ``uint8`` gray ``(h, w)`` (e.g. the decoder's Y plane) or BGR
        ``(h, w, 3)``, at least 64x36; ``limited_range``: its levels span 16..235 (video
        range). Checks more than 15 s apart (a reconnect) start pending runs again.
        """
        m = _measure(frame, limited_range)
        if self._last_ts is not None and ts - self._last_ts > _MAX_GAP_S:
            self._restart_runs()
        view = self._view_for(m)
        frozen = self._still.score(_change(self._previous, m), ts)
        raw = self._scores(m, view, frozen)
        self._learn(m, raw, ts)
        self._adapt_chroma(m, raw[Kind.COLOR_CAST], ts)
        judged = self._explained(raw)
        raised, cleared = self._advance_all(judged, ts, had_view=bool(self._views))
        self._previous, self._last_ts = m.sample, ts
        known = view is not None and ts >= self._suspended_until
        return self._result(judged, raised, cleared, known)

    def set_reference(
        self, frame: npt.NDArray[np.uint8], ts: float, *, limited_range: bool = False
    ) -> Reference:
        """Take ``frame`` as the reference view of its picture mode, now (e.g. after an
        installer checked the view), instead of learning one."""
        reference = _learnt([_candidate(_measure(frame, limited_range), ts)], ts)
        self.use_reference(reference)
        return reference

    def use_reference(self, reference: Reference) -> None:
        """Use a stored reference (e.g. from :func:`reference_from_bytes`)."""
        if reference.sharpness.shape != (_ROWS, _COLS) or reference.gray.shape[0] != _WORK_H:
            raise ValueError("reference made with another grid or work size")
        self._views[reference.monochrome] = _view(reference)
        if not reference.monochrome:
            self._chroma = reference.chroma
        self._candidates.clear()

    def suspend_displaced(self, until_ts: float) -> None:
        """A PTZ move ordered through the API: until ``until_ts`` the view is expected to
        change, so the reference-based checks (displaced, occlusion, blur, colour) pause;
        the reference is learnt anew from the picture after ``until_ts``."""
        self._suspended_until = max(self._suspended_until, until_ts)
        self._views.clear()
        self._chroma = None
        self._candidates.clear()

    def reset(self) -> None:
        """Forget pending and raised problems and the previous frame (keeps references)."""
        self._tracks = {kind: _Track() for kind in Kind}
        self._previous = None
        self._still = _StillRun()
        self._candidates.clear()

    def _restart_runs(self) -> None:
        """After a gap (a reconnect) a pending run or clearing starts again: the picture in
        between is unknown."""
        self._still = _StillRun()
        for track in self._tracks.values():
            track.clearing = None
            if not track.raised:
                track.since = None

    def _view_for(self, m: _Measure) -> _View | None:
        view = self._views.get(m.monochrome)
        if view is not None and view.reference.input_shape != m.input_shape:
            del self._views[m.monochrome]  # another resolution: learn again
            return None
        return view

    def _scores(
        self, m: _Measure, view: _View | None, frozen: float | None
    ) -> dict[Kind, float | None]:
        scores: dict[Kind, float | None] = {
            Kind.BLACK: _black(m),
            Kind.BRIGHTNESS: _brightness(m),
            Kind.NOISE: m.noise,
            Kind.FROZEN: frozen,
            Kind.COLOR_CAST: None,
            Kind.OCCLUSION: None,
            Kind.BLUR: None,
            Kind.DISPLACED: None,
        }
        if view is not None:
            scores[Kind.COLOR_CAST] = _color_cast(m, self._chroma)
            scores.update(_compare(view, m, self._config))
        return scores

    def _explained(self, raw: dict[Kind, float | None]) -> dict[Kind, float | None]:
        """Scores with the kinds explained by another problem set to ``None``."""
        judged = dict(raw)
        for cause, effects in _EXPLAINS.items():
            if self._active(cause, raw[cause]):
                for effect in effects:
                    judged[effect] = None
        return judged

    def _active(self, kind: Kind, score: float | None) -> bool:
        if self._tracks[kind].raised:
            return True
        return score is not None and score >= self._config.threshold(kind).raise_at

    def _advance_all(
        self, judged: dict[Kind, float | None], ts: float, had_view: bool
    ) -> tuple[tuple[Kind, ...], tuple[Kind, ...]]:
        raised: list[Kind] = []
        cleared: list[Kind] = []
        config = self._config
        for kind, track in self._tracks.items():
            start = self._still.hold_from if kind is Kind.FROZEN else None
            threshold, hold = config.threshold(kind), config.hold(kind)
            step = _advance(track, judged[kind], ts, threshold, hold, config.clear_s, start)
            if step > 0:
                track.tamper = self._is_tamper(kind, track, had_view)
                raised.append(kind)
            elif step < 0:
                cleared.append(kind)
        return tuple(raised), tuple(cleared)

    def _is_tamper(self, kind: Kind, track: _Track, had_view: bool) -> bool:
        if kind not in TAMPER_KINDS:
            return False
        if kind in (Kind.OCCLUSION, Kind.DISPLACED):
            return True
        if kind is Kind.BLACK:
            return had_view  # black after a healthy picture
        assert track.since is not None  # blur: sudden, or fog and dirt
        return track.since - track.low_at <= self._config.sudden_s

    def _result(
        self,
        judged: dict[Kind, float | None],
        raised: tuple[Kind, ...],
        cleared: tuple[Kind, ...],
        known: bool,
    ) -> QualityResult:
        problems = tuple(
            Problem(kind, track.since, track.score, track.tamper)
            for kind, track in self._tracks.items()
            if track.raised and track.since is not None
        )
        state: State = "degraded" if problems else ("ok" if known else "unknown")
        scores = {kind: score for kind, score in judged.items() if score is not None}
        return QualityResult(state, problems, raised, cleared, MappingProxyType(scores))

    def _learn(self, m: _Measure, raw: dict[Kind, float | None], ts: float) -> None:
        """Collect healthy, steady frames (one per sixth of ``learn_s``); after ``learn_s``
        of them take their median as the reference."""
        candidates = self._candidates
        if not self._may_learn(m, ts) or not self._healthy(m, raw):
            candidates.clear()
            return
        if candidates and not _steady(candidates[-1], m, self._config):
            candidates.clear()
        if not candidates or ts - candidates[-1].ts >= self._config.learn_s / _LEARN_FRAMES:
            candidates.append(_candidate(m, ts))
        if ts - candidates[0].ts >= self._config.learn_s and len(candidates) >= 3:
            self.use_reference(_learnt(candidates, ts))

    def _may_learn(self, m: _Measure, ts: float) -> bool:
        """No reference for this picture mode yet, no PTZ move, and — when learning a
        second mode — no raised problem the new reference would hide."""
        if m.monochrome in self._views or ts < self._suspended_until:
            return False
        return not (self._views and any(self._tracks[k].raised for k in _REFERENCE_KINDS))

    def _healthy(self, m: _Measure, raw: dict[Kind, float | None]) -> bool:
        for kind in _HEALTH:
            score = raw[kind]
            if score is not None and score >= self._config.threshold(kind).clear_at:
                return False
        return float(np.mean(m.contrast >= _TEXTURED)) >= _MIN_TEXTURED_SHARE

    def _adapt_chroma(self, m: _Measure, score: float | None, ts: float) -> None:
        """Follow slow drift of the light's colour while no cast is pending or raised."""
        chroma, last = self._chroma, self._last_ts
        if chroma is None or last is None or score is None or m.chroma is None or m.monochrome:
            return
        if self._tracks[Kind.COLOR_CAST].raised or score >= self._config.color_cast.clear_at:
            return
        alpha = 1.0 - math.exp(-max(ts - last, 0.0) / self._config.color_adapt_s)
        drifted = chroma + np.float32(alpha) * (m.chroma - chroma)
        self._chroma = _f32(np.where(np.isnan(drifted), chroma, drifted))
