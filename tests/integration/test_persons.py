"""The real person model on real footage: counts against a hand count, shared by threads.

Measured on this 2-core machine (``bench/bench_persons.py``, 29 hand-counted frames of
vtest.avi) with the default model (SSDLite pedestrian, 400x300): per-frame MAE 1.03
(people missed, bias -0.97), MAE 0.48 for the 1 s maximum the crowd pipeline uses.
The bounds below leave a margin for OpenCV builds that round differently.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from analytics.crowd import CountSmoother
from analytics.persons import (
    DetectorConfig,
    ModelError,
    PersonDetector,
    decode_yolo,
    letterbox,
    nms,
    ssd_anchors,
    tile_origins,
)
from tests.conftest import REPO, SHARED_DATA

VTEST = SHARED_DATA / "vtest.avi"
COUNTS = REPO / "bench" / "data" / "vtest_counts.json"
STEP = 2  # 10 fps file analysed at 5 fps
HISTORY = 4  # analysed frames before an annotated one inside the 1 s smoothing window

Image = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def detector() -> PersonDetector:
    return PersonDetector.load()


@pytest.fixture(scope="module")
def truth() -> dict[int, int]:
    data = json.loads(COUNTS.read_text())
    return {int(k): int(v) for k, v in data["counts"].items()}


@pytest.fixture(scope="module")
def frames(truth: dict[int, int]) -> dict[int, Image]:
    wanted = {i - STEP * k for i in truth for k in range(HISTORY + 1)}
    out: dict[int, Image] = {}
    with av.open(str(VTEST)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                out[index] = frame.to_ndarray(format="bgr24")
    return out


@pytest.fixture(scope="module")
def counts(detector: PersonDetector, frames: dict[int, Image]) -> dict[int, int]:
    return {i: detector.detect(f).count for i, f in frames.items()}


def test_counts_are_close_to_the_hand_count(counts: dict[int, int], truth: dict[int, int]) -> None:
    errors = np.array([counts[i] - n for i, n in truth.items()])
    mae = float(np.abs(errors).mean())
    assert mae <= 1.3, f"per-frame MAE {mae:.2f} (measured 1.03)"
    assert all(counts[i] >= 1 for i in truth), "every annotated frame has people"


def test_smoothed_counts_meet_the_target(counts: dict[int, int], truth: dict[int, int]) -> None:
    errors = []
    for index, expected in truth.items():
        smoother = CountSmoother(window_s=1.0)
        for k in range(HISTORY, -1, -1):
            value = smoother.update((index - STEP * k) / 10, {"*": counts[index - STEP * k]})
        errors.append(value["*"] - expected)
    mae = float(np.abs(np.array(errors)).mean())
    assert mae <= 0.6, f"1 s-max MAE {mae:.2f} (measured 0.48)"


def test_boxes_are_people_sized_and_inside_the_frame(
    detector: PersonDetector, frames: dict[int, Image]
) -> None:
    found = detector.detect(frames[121])
    assert (found.width, found.height) == (768, 576)
    for box in found.boxes:
        assert 0 <= box.x1 < box.x2 <= 768 and 0 <= box.y1 < box.y2 <= 576
        assert 1.2 < (box.y2 - box.y1) / (box.x2 - box.x1) < 6  # standing people are tall
        assert detector.config.score_threshold <= box.score <= 1
    assert [b.score for b in found.boxes] == sorted((b.score for b in found.boxes), reverse=True)


def test_one_detector_shared_by_two_camera_threads_gives_the_serial_results(
    detector: PersonDetector, frames: dict[int, Image], truth: dict[int, int]
) -> None:
    cameras = [sorted(truth)[:6], sorted(truth)[6:12]]
    serial = [[detector.detect(frames[i]) for i in cam] for cam in cameras]
    parallel: list[list[object]] = [[], []]
    barrier = threading.Barrier(2)

    def camera(n: int) -> None:
        barrier.wait()
        for _ in range(2):  # twice over, so the two threads really interleave
            parallel[n] = [detector.detect(frames[i]) for i in cameras[n]]

    threads = [threading.Thread(target=camera, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert parallel == serial


def test_a_missing_or_broken_model_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "none.pb"
    with pytest.raises(ModelError, match="not found"):
        PersonDetector.load(DetectorConfig(model_path=missing))
    broken = tmp_path / "broken.pb"
    broken.write_bytes(b"not a graph")
    with pytest.raises(ModelError, match=r"broken\.pb"):
        PersonDetector.load(DetectorConfig(model_path=broken))
    with pytest.raises(ModelError, match=r"broken\.onnx"):
        onnx = tmp_path / "broken.onnx"
        onnx.write_bytes(b"not a model")
        PersonDetector.load(DetectorConfig.yolo(onnx))


def test_tiling_runs_every_tile_and_maps_boxes_back(frames: dict[int, Image]) -> None:
    tiled = PersonDetector.load(DetectorConfig(tiles=(2, 2)))
    found = tiled.detect(frames[121])
    assert tiled.name.endswith("-tiles2x2")
    assert found.count >= 4
    assert all(0 <= b.x1 < b.x2 <= 768 and 0 <= b.y1 < b.y2 <= 576 for b in found.boxes)


# Pure helpers of the detector, checked with synthetic numbers.


@pytest.mark.parametrize(("tiles", "overlap"), [((1, 1), 0.2), ((2, 2), 0.2), ((3, 2), 0.25)])
def test_tiles_cover_the_frame_and_overlap(tiles: tuple[int, int], overlap: float) -> None:
    rects = tile_origins((768, 576), tiles, overlap)
    assert len(rects) == tiles[0] * tiles[1]
    covered = np.zeros((576, 768), dtype=bool)
    for x0, y0, x1, y1 in rects:
        assert 0 <= x0 < x1 <= 768 and 0 <= y0 < y1 <= 576
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    if tiles[0] > 1:
        assert rects[0][2] - rects[1][0] >= overlap * (rects[0][2] - rects[0][0]) - 1


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array(
        [[0, 0, 10, 20], [1, 1, 11, 21], [50, 0, 60, 20], [0, 0, 10, 20]], dtype=np.float32
    )
    scores = np.array([0.6, 0.9, 0.5, 0.1], dtype=np.float32)
    assert nms(boxes, scores, threshold=0.2, iou=0.45) == [1, 2]
    assert nms(boxes, scores, threshold=0.95, iou=0.45) == []


def test_ssd_anchors_match_the_tf_graph_layout() -> None:
    grids = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    anchors = ssd_anchors(grids)
    assert anchors.shape == (19 * 19 * 3 + (100 + 25 + 9 + 4 + 1) * 6, 4)  # 1917 at 300x300
    assert anchors[0].tolist() == pytest.approx([0.5 / 19, 0.5 / 19, 0.1, 0.1])
    last = anchors[-1]  # 1x1 grid, interpolated scale sqrt(0.95 * 1.0), aspect 1
    assert last.tolist() == pytest.approx([0.5, 0.5, 0.95**0.5, 0.95**0.5])


def test_yolo_decoding_maps_letterboxed_boxes_back_to_the_frame() -> None:
    frame = np.zeros((576, 768, 3), dtype=np.uint8)
    blob, scale, pad = letterbox(frame, (320, 320))
    assert blob.shape == (1, 3, 320, 320) and scale == pytest.approx(320 / 768)
    assert pad == (0, 40)
    # One candidate: a person box of 100x200 frame pixels centred at (400, 300).
    cx, cy = 400 * scale + pad[0], 300 * scale + pad[1]
    output = np.zeros((1, 4 + 2, 10), dtype=np.float32)  # 2 classes, 10 candidates
    output[0, :4, 0] = [cx, cy, 100 * scale, 200 * scale]
    output[0, 4:, 0] = [0.8, 0.1]  # class 0 (person) 0.8
    output[0, 4:, 1] = [0.05, 0.9]  # another class only
    boxes, scores = decode_yolo(output, [0], scale, pad)
    assert boxes[0].tolist() == pytest.approx([350, 200, 450, 400], abs=1e-3)
    assert scores.tolist() == pytest.approx([0.8, 0.05] + [0.0] * 8)
    transposed, _ = decode_yolo(output.transpose(0, 2, 1).copy(), [0], scale, pad)
    np.testing.assert_allclose(transposed, boxes)
    with pytest.raises(ModelError, match="classes"):
        decode_yolo(output, [5], scale, pad)
