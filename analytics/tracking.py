"""Person tracking across analysed frames: count people, not one frame's detections.

A detector misses a given person in some frames (far away, half hidden, in a tight pair)
far more often than it invents one, so one frame's detections undercount
(``bench/README.md``: −0.66 persons per frame on ``vtest.avi``). :class:`PersonTracker`
follows each person from frame to frame, in the manner of SORT and Frigate's object
tracker, without a Kalman filter (a constant-velocity guess is enough at 1–10 analysed
frames per second):

* **Matching.** A detection continues the track whose predicted box it overlaps most
  (IoU at least ``match_iou``); what is left is matched by distance: a detection whose
  centre is within ``0.25 + max_speed x dt`` box heights of where a track was expected
  ``dt`` seconds after its last detection, and of a similar size. At 1 analysed frame per
  second a walker moves a body width between frames, so overlap alone would lose them.
* **Holding.** A confirmed track the detector misses is held for up to ``max_gap_s``
  seconds at its predicted place, so a missed detection no longer drops the count. A
  track last seen touching the frame's edge is not held: that person most likely left.
* **Confirming.** A new track counts once detected ``min_hits`` times, or at once when
  its detection scores at least ``confirm_score``: one weak false positive counts
  nowhere. Detections scoring below ``new_score`` only continue tracks and never start
  one (ByteTrack's use of low-scored boxes). On the first frame after a start, a
  :meth:`~PersonTracker.reset` or a gap longer than ``max_gap_s`` nothing is known, and
  every detection counts at once, as it would without a tracker.

The count of a frame is the number of **live confirmed tracks**: detected now or held.
The defaults were chosen on ``vtest.avi`` against hand counts (``bench/bench_persons.py``).
Everything is pure: time only comes in as ``ts`` (seconds, never decreasing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from analytics.persons import Detections, PersonBox

__all__ = ["PersonTracker", "Track", "TrackerConfig", "iou"]

Corners = tuple[float, float, float, float]

_BASE_GATE = 0.25  # box heights a detection may be off its prediction at dt = 0
_VELOCITY_ALPHA = 0.5  # weight of the newest displacement in the velocity estimate
_SIZE_RATIO = 0.6  # a distance match needs box heights within this ratio of each other
_EDGE = 0.01  # a box within this fraction of the frame's size from an edge touches it


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """How the tracker matches, holds and confirms tracks (see the module doc).

    ``max_gap_s``: seconds a confirmed track is held without a detection.
    ``min_hits``: detections that confirm a new track (1: every detection counts at once).
    ``confirm_score``: a detection scoring at least this confirms its new track at once.
    ``new_score``: least score of a detection that may start a track.
    ``match_iou``: least overlap of a detection with a track's predicted box to match it.
    ``max_speed``: body heights per second a person may be off the predicted place and
        still be matched by distance (walking is about 0.8).
    """

    max_gap_s: float = 1.5
    min_hits: int = 2
    confirm_score: float = 0.7
    new_score: float = 0.3
    match_iou: float = 0.3
    max_speed: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_gap_s) and self.max_gap_s >= 0):
            raise ValueError(f"max_gap_s must be finite and >= 0, got {self.max_gap_s}")
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if not 0.0 < self.confirm_score <= 1.0:
            raise ValueError(f"confirm_score must be in (0, 1], got {self.confirm_score}")
        if not 0.0 <= self.new_score < 1.0:
            raise ValueError(f"new_score must be in [0, 1), got {self.new_score}")
        if not 0.0 < self.match_iou <= 1.0:
            raise ValueError(f"match_iou must be in (0, 1], got {self.match_iou}")
        if not (math.isfinite(self.max_speed) and self.max_speed >= 0):
            raise ValueError(f"max_speed must be finite and >= 0, got {self.max_speed}")


@dataclass(frozen=True, slots=True)
class Track:
    """One followed person as of the last update.

    ``box``: this frame's detection, or, when ``held_s > 0``, the last detection moved to
    where the person is expected now (clipped to the frame; the score is the last one).
    ``hits``: detections so far; ``held_s``: seconds since the last detection.
    """

    id: int
    box: PersonBox
    hits: int
    held_s: float

    @property
    def held(self) -> bool:
        """Whether the detector missed this person in the last frame."""
        return self.held_s > 0


@dataclass(slots=True)
class _State:
    """A track's mutable state: its last detection and the velocity of its centre."""

    id: int
    box: Corners
    score: float
    seen_at: float
    confirmed: bool
    hits: int = 1
    velocity: tuple[float, float] = (0.0, 0.0)  # pixels per second

    def predicted(self, ts: float) -> Corners:
        dt = ts - self.seen_at
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        x1, y1, x2, y2 = self.box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)


class PersonTracker:
    """Follows the persons of one camera (or one file) across its analysed frames.

    Not thread-safe: one per camera, fed in time order from that camera's analysis thread.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self._config = config or TrackerConfig()
        self._tracks: list[_State] = []
        self._next_id = 1
        self._last_ts = -math.inf

    def reset(self) -> None:
        """Forget every track (after a reconnect): the next frame counts as a first frame."""
        self._tracks.clear()
        self._last_ts = -math.inf

    def update(self, ts: float, detections: Detections) -> tuple[Track, ...]:
        """Feed one frame's detections, taken at ``ts``; the live confirmed tracks.

        Tracks come oldest first. Raises :class:`ValueError` when ``ts`` goes back.
        """
        if math.isnan(ts) or ts < self._last_ts:
            raise ValueError(f"ts must not decrease: {ts} after {self._last_ts}")
        fresh = ts - self._last_ts > self._config.max_gap_s
        self._last_ts = ts
        if fresh:
            self._tracks.clear()
        boxes = detections.boxes
        matches = self._match(ts, boxes)
        for track_index, box_index in matches.items():
            self._continue(self._tracks[track_index], boxes[box_index], ts)
        size = (detections.width, detections.height)
        self._tracks = [t for t in self._tracks if self._alive(t, ts, size)]
        taken = set(matches.values())
        for index, box in enumerate(boxes):
            if index not in taken and box.score >= self._config.new_score:
                self._start(box, ts, fresh)
        return tuple(_snapshot(t, ts, size) for t in self._tracks if t.confirmed)

    def _match(self, ts: float, boxes: Sequence[PersonBox]) -> dict[int, int]:
        """Track index -> detection index: by overlap first, then by distance."""
        predicted = [t.predicted(ts) for t in self._tracks]
        corners = [_corners(b) for b in boxes]
        pairs = [
            (-overlap, t, d)
            for t, pred in enumerate(predicted)
            for d, box in enumerate(corners)
            if (overlap := iou(pred, box)) >= self._config.match_iou
        ]
        matches = _greedy(pairs, {})
        pairs = []
        for t, pred in enumerate(predicted):
            if t in matches:
                continue
            gate = _BASE_GATE + self._config.max_speed * (ts - self._tracks[t].seen_at)
            for d, box in enumerate(corners):
                distance = _distance(pred, box)
                if distance is not None and distance <= gate:
                    pairs.append((distance, t, d))
        return _greedy(pairs, matches)

    def _continue(self, track: _State, box: PersonBox, ts: float) -> None:
        new = _corners(box)
        dt = ts - track.seen_at
        if dt > 0:
            (old_x, old_y), (new_x, new_y) = _centre(track.box), _centre(new)
            alpha = _VELOCITY_ALPHA if track.hits > 1 else 1.0
            vx = alpha * (new_x - old_x) / dt + (1 - alpha) * track.velocity[0]
            vy = alpha * (new_y - old_y) / dt + (1 - alpha) * track.velocity[1]
            track.velocity = _capped((vx, vy), 2 * self._config.max_speed * _height(new))
        track.box, track.score, track.seen_at = new, box.score, ts
        track.hits += 1
        track.confirmed = track.confirmed or track.hits >= self._config.min_hits

    def _start(self, box: PersonBox, ts: float, fresh: bool) -> None:
        config = self._config
        confirmed = fresh or config.min_hits <= 1 or box.score >= config.confirm_score
        self._tracks.append(_State(self._next_id, _corners(box), box.score, ts, confirmed))
        self._next_id += 1

    def _alive(self, track: _State, ts: float, size: tuple[int, int]) -> bool:
        held_s = ts - track.seen_at
        if held_s == 0:
            return True
        if held_s > self._config.max_gap_s:
            return False
        if not track.confirmed:
            return True  # a new track waits that long for its confirming detection
        if _at_edge(track.box, size):
            return False  # last seen on the frame's edge: most likely out of view now
        x1, _, x2, y2 = track.predicted(ts)
        width, height = size
        return 0 <= (x1 + x2) / 2 <= width and y2 <= height * (1 + _EDGE)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (0 when both are empty)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _greedy(pairs: list[tuple[float, int, int]], matches: dict[int, int]) -> dict[int, int]:
    """``matches`` plus the best-first ``(cost, track, detection)`` pairs with both ends free."""
    matches = dict(matches)
    taken = set(matches.values())
    for _, t, d in sorted(pairs):
        if t not in matches and d not in taken:
            matches[t] = d
            taken.add(d)
    return matches


def _distance(predicted: Corners, box: Corners) -> float | None:
    """Centre distance in box heights; ``None`` when the sizes are too different."""
    h_pred, h_box = _height(predicted), _height(box)
    if min(h_pred, h_box) <= 0 or min(h_pred, h_box) < _SIZE_RATIO * max(h_pred, h_box):
        return None
    (px, py), (bx, by) = _centre(predicted), _centre(box)
    return math.hypot(px - bx, py - by) / max(h_pred, h_box)


def _snapshot(track: _State, ts: float, size: tuple[int, int]) -> Track:
    width, height = size
    x1, y1, x2, y2 = track.predicted(ts)
    box = PersonBox(
        x1=min(max(x1, 0.0), width),
        y1=min(max(y1, 0.0), height),
        x2=min(max(x2, 0.0), width),
        y2=min(max(y2, 0.0), height),
        score=track.score,
    )
    return Track(id=track.id, box=box, hits=track.hits, held_s=ts - track.seen_at)


def _at_edge(box: Corners, size: tuple[int, int]) -> bool:
    """Whether ``box`` touches the left, right or bottom edge (people leave that way)."""
    width, height = size
    x1, _, x2, y2 = box
    return x1 <= _EDGE * width or x2 >= (1 - _EDGE) * width or y2 >= (1 - _EDGE) * height


def _corners(box: PersonBox) -> Corners:
    return (box.x1, box.y1, box.x2, box.y2)


def _centre(box: Corners) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _height(box: Corners) -> float:
    return box[3] - box[1]


def _capped(velocity: tuple[float, float], limit: float) -> tuple[float, float]:
    speed = math.hypot(*velocity)
    if speed <= limit:
        return velocity
    return (velocity[0] * limit / speed, velocity[1] * limit / speed)
