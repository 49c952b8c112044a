"""Per-frame cost of the motion detector on 1080p frames, on one core.

Decodes a few seconds of ffmpeg's ``testsrc2`` at 1920x1080 (generated into a temporary
file with the ``ffmpeg`` CLI; synthetic noise frames when it is missing), then times
``MotionDetector.detect`` on the Y plane (the fast path: what the decoder hands over)
and on BGR, with and without zones, and the downscale alone. OpenCV is pinned to one
thread so the numbers are per core. Runs in well under a minute::

    .venv/bin/python bench/bench_motion.py [--frames 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.motion import MotionConfig, MotionDetector
from analytics.zones import Zone, ZoneKind

Image = npt.NDArray[np.uint8]
Case = tuple[str, list[Image], Callable[[Image, float], object]]
WIDTH, HEIGHT = 1920, 1080


def _u8(image: cv2.typing.MatLike) -> Image:
    """An 8-bit image from OpenCV, whose stubs type results loosely (no copy)."""
    return np.asarray(image, dtype=np.uint8)


def _encode_testsrc2(path: Path, count: int) -> bool:
    """Write ``count`` frames of ffmpeg's testsrc2 at 1080p as H.264; ``False`` without ffmpeg."""
    if shutil.which("ffmpeg") is None:
        return False
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate=25",
            "-frames:v", str(count), "-c:v", "libx264", "-preset", "veryfast",
            "-pix_fmt", "yuv420p", str(path),
        ],
        check=True,
    )  # fmt: skip
    return True


def _decode(path: Path) -> list[Image]:
    capture = cv2.VideoCapture(str(path))
    frames: list[Image] = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(_u8(frame))
    capture.release()
    return frames


def _ffmpeg_decode_s(path: Path, count: int, repeat: int) -> float:
    """Best-of-``repeat`` seconds per frame of ``ffmpeg -threads 1`` decoding ``path``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            ["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-f", "null", "-"],
            check=True,
        )
        best = min(best, (time.perf_counter() - start) / count)
    return best


def _noise_frames(count: int) -> list[Image]:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), (0, 0), 3)
    return [np.clip(base + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)] * count


def _time(frames: list[Image], detect: Callable[[Image, float], object]) -> float:
    """Mean seconds per frame over one pass."""
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        detect(frame, i * 0.2)
    return (time.perf_counter() - start) / len(frames)


def _zones() -> tuple[Zone, ...]:
    return (
        Zone("path", ZoneKind.MOTION, ((0.0, 0.3), (1.0, 0.3), (1.0, 1.0), (0.0, 1.0))),
        Zone("clock", ZoneKind.MASK, ((0.0, 0.0), (0.3, 0.0), (0.3, 0.06), (0.0, 0.06))),
        Zone("tree", ZoneKind.MASK, ((0.7, 0.3), (0.9, 0.3), (0.8, 0.6))),
    )


def _cases(gray: list[Image], bgr: list[Image]) -> list[Case]:
    config = MotionConfig()
    return [
        ("detect, Y plane", gray, MotionDetector(config).detect),
        ("detect, Y plane + zones", gray, MotionDetector(config, _zones()).detect),
        ("detect, BGR", bgr, MotionDetector(config).detect),
        ("downscale only (Y plane)", gray, _downscale_only),
    ]


def _downscale_only(frame: Image, _ts: float) -> Image:
    half = cv2.resize(frame, (WIDTH // 2, HEIGHT // 2), interpolation=cv2.INTER_AREA)
    quarter = cv2.resize(half, (WIDTH // 4, HEIGHT // 4), interpolation=cv2.INTER_AREA)
    return _u8(cv2.resize(quarter, (320, 180), interpolation=cv2.INTER_LINEAR))


def main() -> None:
    """Print ms/frame and frames/s per core for each input kind, and the decode ratio."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "testsrc2.mp4"
        if _encode_testsrc2(path, args.frames):
            bgr, source = _decode(path), "ffmpeg testsrc2, libx264"
            decode_s: float | None = _ffmpeg_decode_s(path, len(bgr), 3)
        else:
            bgr, source, decode_s = _noise_frames(args.frames), "synthetic (no ffmpeg)", None
    gray = [_u8(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)) for f in bgr]
    print(
        f"{len(bgr)} frames {WIDTH}x{HEIGHT} ({source}); OpenCV threads: 1; best of {args.repeat}"
    )

    cases = _cases(gray, bgr)
    best = [float("inf")] * len(cases)
    for _ in range(args.repeat):  # interleaved, so background load hits every case alike
        for i, (_, frames, detect) in enumerate(cases):
            best[i] = min(best[i], _time(frames, detect))
    for (name, _, _), seconds in zip(cases, best, strict=True):
        print(f"{name:26s} {seconds * 1e3:7.3f} ms/frame {1 / seconds:7.0f} frames/s per core")
    if decode_s is not None:
        motion_s = best[0]
        ratio = 25 * decode_s / (25 * decode_s + 5 * motion_s)
        print(f"ffmpeg -threads 1 decode    {decode_s * 1e3:7.3f} ms/frame")
        print(f"decode+motion (5 of 25, Y plane) vs decode alone: {ratio:.3f} (target >= 0.85)")


if __name__ == "__main__":
    main()
