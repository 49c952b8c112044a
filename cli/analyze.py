"""``xueliang analyze FILE``: the analytics run offline on a video or image file.

The file is decoded with PyAV (a single image with ``cv2.imread``); frames are analysed
at ``fps`` per second of the file's timeline (5 by default; every frame of a file with
that rate or less): motion with the default :class:`~analytics.motion.MotionDetector`
and persons with the default :class:`~analytics.persons.PersonDetector`, followed from
frame to frame by a :class:`~analytics.tracking.PersonTracker`: a frame's ``persons`` and
``boxes`` are the live tracked persons, so a person the detector misses for a moment is
still counted (at the box where they are expected).

With ``--json`` one JSON object per analysed frame goes to stdout, as the contract says,
``{"frame", "pts", "motion", "motion_area", "persons", "boxes"}``, then
``{"summary": {...}}``; without it a short summary for a person. Progress goes to stderr:
a ``\\r``-updated line on a terminal, a line every 10 % otherwise.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, cast

import av
import cv2
import numpy as np
import numpy.typing as npt

from analytics.motion import MotionDetector
from analytics.persons import PersonDetector
from analytics.tracking import PersonTracker, TrackerConfig
from config.errors import XueliangError

__all__ = ["DEFAULT_FPS", "AnalyzeError", "analyze_file", "run_analyze"]

DEFAULT_FPS = 5.0
"""Analysed frames per second of the file's timeline."""

_LONG_FILE_FRAMES = 300  # files shorter than this (30 s at 10 fps) need no progress report

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

Image = npt.NDArray[np.uint8]

_DEFAULT_TRACKING = TrackerConfig()


class AnalyzeError(XueliangError, ValueError):
    """The file cannot be analysed (missing, unreadable, not a video or image)."""


@dataclass(frozen=True, slots=True)
class _Frame:
    index: int
    pts: float
    bgr: Image


@dataclass(slots=True)
class _Summary:
    """Running totals for the final summary object."""

    frames: int = 0
    analysed: int = 0
    motion_frames: int = 0
    persons: list[int] = field(default_factory=list)
    first_pts: float | None = None
    last_pts: float = 0.0
    frame_interval: float = 0.0

    def add(self, persons: int, motion: bool) -> None:
        self.analysed += 1
        self.motion_frames += int(motion)
        self.persons.append(persons)

    def as_dict(self, model: str, elapsed: float) -> dict[str, object]:
        duration = 0.0 if self.first_pts is None else self.last_pts - self.first_pts
        return {
            "frames": self.frames,
            "analysed": self.analysed,
            "motion_frames": self.motion_frames,
            "max_persons": max(self.persons, default=0),
            "mean_persons": round(float(np.mean(self.persons)), 3) if self.persons else 0.0,
            "duration_s": round(duration + self.frame_interval, 3),
            "model": model,
            "elapsed_s": round(elapsed, 3),
        }


def run_analyze(
    path: Path,
    as_json: bool = False,
    fps: float = DEFAULT_FPS,
    *,
    detector: PersonDetector | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Analyse ``path`` and print the results (see the module doc); returns the exit code.

    Raises :class:`AnalyzeError` for a missing or undecodable file and
    :class:`~analytics.persons.ModelError` when the person model cannot be loaded.
    """
    out = out or sys.stdout
    summary = analyze_file(path, fps, detector=detector, out=out if as_json else None, err=err)
    if as_json:
        print(json.dumps({"summary": summary}), file=out, flush=True)
    else:
        _print_human(path, summary, out)
    return 0


def analyze_file(
    path: Path,
    fps: float = DEFAULT_FPS,
    *,
    detector: PersonDetector | None = None,
    tracking: TrackerConfig | None = _DEFAULT_TRACKING,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> dict[str, object]:
    """Analyse ``path``; write one JSON line per analysed frame to ``out`` when given.

    ``tracking=None`` reports each frame's detections instead of the tracked persons.
    Returns the summary (``frames``, ``analysed``, ``motion_frames``, ``max_persons``,
    ``mean_persons``, ``duration_s``, ``model``, ``elapsed_s``).
    """
    if not (math.isfinite(fps) and fps > 0):
        raise AnalyzeError(f"fps must be a positive number, got {fps}")
    _check_file(path)
    # One OpenCV thread: its pool saves little on one frame at a time and spins between
    # calls; the decoder already uses the cores (thread_type AUTO).
    cv2.setNumThreads(1)
    started = time.monotonic()
    detector = detector or PersonDetector.load()
    motion = MotionDetector()
    tracker = PersonTracker(tracking) if tracking is not None else None
    progress = _Progress(err or sys.stderr, _frame_estimate(path))
    summary = _Summary()
    last_pts = -math.inf
    for frame in _sampled(_frames(path, summary), fps):
        if tracker is not None and frame.pts < last_pts:
            tracker.reset()  # the timeline jumped back (a concatenated or broken file)
        last_pts = frame.pts
        record = _analyse(frame, motion, detector, tracker)
        summary.add(int(str(record["persons"])), bool(record["motion"]))
        if out is not None:
            print(json.dumps(record), file=out, flush=True)
        progress.update(summary.frames)
    progress.done(summary.frames)
    return summary.as_dict(detector.name, time.monotonic() - started)


def _analyse(
    frame: _Frame, motion: MotionDetector, detector: PersonDetector, tracker: PersonTracker | None
) -> dict[str, object]:
    moved = motion.detect(frame.bgr, frame.pts)
    found = detector.detect(frame.bgr)
    persons = found.boxes
    if tracker is not None:
        tracks = tracker.update(frame.pts, found)
        persons = tuple(sorted((t.box for t in tracks), key=lambda b: -b.score))
    return {
        "frame": frame.index,
        "pts": round(frame.pts, 6),
        "motion": moved.motion,
        "motion_area": round(moved.motion_area, 6),
        "persons": len(persons),
        "boxes": [box.as_list() for box in persons],
    }


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AnalyzeError(f"no such file: {path}")
    if not path.is_file():
        raise AnalyzeError(f"not a file: {path}")


def _frames(path: Path, summary: _Summary) -> Iterator[_Frame]:
    """Every decoded frame, in order, with its index and pts in seconds."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        yield from _image(path, summary)
        return
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise AnalyzeError(f"not a video or image file: {path} ({err})") from err
    with container:
        if not container.streams.video:
            raise AnalyzeError(f"no video stream in {path}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        summary.frame_interval = 1.0 / rate if rate else 0.0
        try:
            for frame in container.decode(stream):
                index = summary.frames
                pts = frame.time if frame.time is not None else index * summary.frame_interval
                summary.frames += 1
                summary.first_pts = pts if summary.first_pts is None else summary.first_pts
                summary.last_pts = pts
                yield _Frame(
                    index=index, pts=float(pts), bgr=cast(Image, frame.to_ndarray(format="bgr24"))
                )
        except av.FFmpegError as err:
            raise AnalyzeError(f"cannot decode {path}: {err}") from err
    if summary.frames == 0:
        raise AnalyzeError(f"no decodable video frame in {path}")


def _image(path: Path, summary: _Summary) -> Iterator[_Frame]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise AnalyzeError(f"not a readable image: {path}")
    summary.frames, summary.first_pts, summary.last_pts = 1, 0.0, 0.0
    yield _Frame(index=0, pts=0.0, bgr=cast(Image, np.ascontiguousarray(bgr)))


def _sampled(frames: Iterator[_Frame], fps: float) -> Iterator[_Frame]:
    """Frames at most ``fps`` per second of pts: each at least ``1/fps`` after the last kept.

    A small tolerance keeps every frame of a file at exactly ``fps`` (timestamps are
    rounded to the stream's time base).
    """
    step = 1.0 / fps
    next_due = -math.inf
    for frame in frames:
        if frame.pts >= next_due or frame.pts < next_due - 2 * step:  # pts jumped back
            next_due = frame.pts + step - 1e-3 * step
            yield frame


def _frame_estimate(path: Path) -> int | None:
    """The number of frames the container announces (``None`` when unknown)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return 1
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            if stream.duration and stream.time_base and stream.average_rate:
                return int(stream.duration * stream.time_base * stream.average_rate)
    except av.FFmpegError:
        return None  # _frames reports the error with the file's name
    return None


class _Progress:
    """Progress on stderr for long files: ``\\r`` updates on a terminal, else a line per 10 %."""

    def __init__(self, stream: TextIO, total: int | None) -> None:
        self._stream = stream
        self._total = total if total and total >= _LONG_FILE_FRAMES else None
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._next_report = 0.1
        self._last_draw = 0.0

    def update(self, done: int) -> None:
        if self._total is None:
            return
        share = min(done / self._total, 1.0)
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw >= 0.2:
                self._last_draw = now
                self._write(f"\ranalysing: {share:6.1%} ({done}/{self._total} frames)")
        elif share >= self._next_report:
            self._next_report = math.floor(share * 10 + 1) / 10
            self._write(f"analysing: {share:.0%} ({done}/{self._total} frames)\n")

    def done(self, frames: int) -> None:
        if self._total is not None and self._tty:
            self._write(f"\ranalysing: 100.0% ({frames}/{frames} frames)\n")

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()


def _print_human(path: Path, summary: dict[str, object], out: TextIO) -> None:
    lines = [
        f"{path}: {summary['frames']} frames, {summary['duration_s']} s",
        f"  analysed {summary['analysed']} frames in {summary['elapsed_s']} s "
        f"with {summary['model']}",
        f"  motion in {summary['motion_frames']} analysed frames",
        f"  persons: max {summary['max_persons']}, mean {summary['mean_persons']}",
    ]
    print("\n".join(lines), file=out, flush=True)
