"""Crowd ("gathering", 人员聚集) analytics: persons per zone, smoothed, and incident rules.

* :func:`count_in_zones` counts detected persons per crowd zone: a person is in a zone
  when the bottom-centre of its box (where the feet are) is inside the polygon
  (:meth:`~analytics.zones.Zone.contains_box`). A camera without crowd zones has one
  implicit zone, :data:`WHOLE_FRAME`, covering the frame; masks always exclude.
* :class:`CountSmoother` keeps, per zone, the **maximum** count over the last
  ``window_s`` seconds: a detector misses a person in one frame far more often than it
  invents one, so a one-frame dip must not end a gathering. At 5 analysed frames per
  second a 1 s window spans 5 frames.
* :class:`PersonCounter` ties detector, tracker (:class:`analytics.tracking.PersonTracker`),
  zones and smoother together for one camera: ``count(frame, ts) -> CrowdResult``. By
  default it counts the tracker's live persons (a person the detector misses is held for
  1.5 s) and does not smooth further; without a tracker it counts one frame's detections.
* :class:`CrowdRules` is the per-zone incident state machine, in the style of
  :class:`analytics.rules.IncidentRules`: ``threshold`` or more persons for ``dwell_s``
  seconds start an incident (:class:`~analytics.incidents.Started`); it ends ``quiet_s``
  seconds after the last frame with ``threshold`` or more (:class:`~analytics.incidents.Ended`,
  whose ``peak_score`` is the peak count). :class:`~analytics.incidents.Peak` marks the
  frame to keep as the snapshot; ``score`` is always the number of persons.
* :func:`draw_boxes` draws person boxes onto a copy of a BGR frame for that snapshot.

Everything except :class:`PersonCounter` (which runs the detector) is pure: time only
comes in as ``ts`` (seconds, never decreasing).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from analytics.incidents import Ended, EndReason, IncidentEvent, Peak, Started
from analytics.persons import PersonBox, PersonDetector
from analytics.tracking import PersonTracker, TrackerConfig
from analytics.zones import Zone, ZoneKind, bottom_centre

__all__ = [
    "WHOLE_FRAME",
    "CountSmoother",
    "CrowdResult",
    "CrowdRules",
    "PersonCounter",
    "count_in_zones",
    "draw_boxes",
]

WHOLE_FRAME = "*"
"""Name of the implicit crowd zone of a camera that has no crowd zone: the whole frame."""

Image = npt.NDArray[np.uint8]

_DEFAULT_TRACKING = TrackerConfig()


def count_in_zones(
    boxes: Iterable[PersonBox], width: int, height: int, zones: Iterable[Zone] = ()
) -> dict[str, int]:
    """Persons per crowd zone (by name) of a ``width`` x ``height`` frame.

    A box counts in every crowd zone holding its bottom-centre, unless a mask holds it.
    Without crowd zones the result is ``{WHOLE_FRAME: n}``.
    """
    zones = tuple(zones)
    crowd = [z for z in zones if z.kind is ZoneKind.CROWD]
    masks = [z for z in zones if z.kind is ZoneKind.MASK]
    counts = {z.name: 0 for z in crowd} if crowd else {WHOLE_FRAME: 0}
    for box in boxes:
        feet = bottom_centre(box.normalised(width, height))
        if any(m.contains(feet) for m in masks):
            continue
        if not crowd:
            counts[WHOLE_FRAME] += 1
        for zone in crowd:
            if zone.contains(feet):
                counts[zone.name] += 1
    return counts


class CountSmoother:
    """Per-zone maximum of the counts seen in the last ``window_s`` seconds.

    ``window_s = 0`` turns smoothing off (the latest count is returned).
    """

    def __init__(self, window_s: float = 1.0) -> None:
        if not (math.isfinite(window_s) and window_s >= 0):
            raise ValueError(f"window_s must be finite and >= 0, got {window_s}")
        self._window_s = window_s
        self._history: deque[tuple[float, Mapping[str, int]]] = deque()

    @property
    def window_s(self) -> float:
        """The smoothing window in seconds."""
        return self._window_s

    def reset(self) -> None:
        """Forget the history (after a reconnect or a long gap)."""
        self._history.clear()

    def update(self, ts: float, counts: Mapping[str, int]) -> dict[str, int]:
        """Add one frame's counts taken at ``ts``; the smoothed counts per zone."""
        if self._history and ts < self._history[-1][0]:
            raise ValueError(f"ts must not decrease: {ts} after {self._history[-1][0]}")
        self._history.append((ts, dict(counts)))
        while self._history[0][0] < ts - self._window_s:
            self._history.popleft()
        return {name: max(past.get(name, 0) for _, past in self._history) for name in counts}


@dataclass(frozen=True, slots=True)
class CrowdResult:
    """One frame's crowd analysis.

    ``boxes``: every person counted (pixels of the frame): the live tracks, a held one at
    its predicted place, or one frame's detections without a tracker. ``counts``: persons
    per crowd zone in this frame. ``smoothed``: the counts after :class:`CountSmoother` —
    feed these to :class:`CrowdRules`. ``width`` / ``height``: the frame's size.
    ``detected``: what the detector found in this frame alone.
    """

    ts: float
    boxes: tuple[PersonBox, ...]
    counts: Mapping[str, int]
    smoothed: Mapping[str, int]
    width: int
    height: int
    detected: tuple[PersonBox, ...] = ()


class PersonCounter:
    """Detect, track, count per zone and smooth, for one camera (the detector may be shared).

    ``tracker``: how persons are followed between frames (the default
    :class:`~analytics.tracking.TrackerConfig`); ``None`` counts one frame's detections.
    ``window_s``: the :class:`CountSmoother` window over the counts (0: off, the default;
    the tracker already bridges missed detections).

    Not thread-safe itself (it keeps the tracks and the smoothing history): one per camera,
    called from that camera's analysis thread. The shared :class:`PersonDetector` is.
    """

    def __init__(
        self,
        detector: PersonDetector,
        zones: Iterable[Zone] = (),
        window_s: float = 0.0,
        tracker: TrackerConfig | None = _DEFAULT_TRACKING,
    ) -> None:
        self._detector = detector
        self._zones = tuple(zones)
        self._smoother = CountSmoother(window_s)
        self._tracker = PersonTracker(tracker) if tracker is not None else None

    @property
    def zones(self) -> tuple[Zone, ...]:
        """The camera's zones (crowd zones count, masks exclude, motion zones are ignored)."""
        return self._zones

    def reset(self) -> None:
        """Forget the tracks and the smoothing history (after a reconnect)."""
        self._smoother.reset()
        if self._tracker is not None:
            self._tracker.reset()

    def count(self, bgr: Image, ts: float) -> CrowdResult:
        """Detect persons in a BGR frame taken at ``ts`` and count them per zone."""
        found = self._detector.detect(bgr)
        persons = found.boxes
        if self._tracker is not None:
            persons = tuple(t.box for t in self._tracker.update(ts, found))
        counts = count_in_zones(persons, found.width, found.height, self._zones)
        return CrowdResult(
            ts=ts,
            boxes=persons,
            counts=counts,
            smoothed=self._smoother.update(ts, counts),
            width=found.width,
            height=found.height,
            detected=found.boxes,
        )


@dataclass(slots=True)
class _Gathering:
    """A run of crowded frames (before the start) or an active incident (after)."""

    started_at: float
    last_crowded_at: float
    peak_persons: int
    peak_at: float
    seq: int = 0  # 0 until the incident has started


class CrowdRules:
    """The crowd incident state machine for one zone of one camera.

    * A frame is **crowded** when its (smoothed) count is at least ``threshold``.
    * An incident **starts** on the first crowded frame at least ``dwell_s`` seconds after
      the first crowded frame of an unbroken run; a frame below the threshold breaks the
      run (smooth the counts first, see :class:`CountSmoother`). ``dwell_s = 0`` starts on
      the first crowded frame.
    * It **ends** ``quiet_s`` seconds after its last crowded frame, noticed on the first
      :meth:`update` or :meth:`tick` at or after that instant (``at`` is exact).
    * The **peak**: the first frame of a run and every frame with more persons than any
      before in that run or incident yield :class:`Peak`; :class:`Ended`
      carries the peak count as ``peak_score`` and its ``peak_at``.

    Events of one update come in the order ended, started, peak.
    """

    def __init__(self, threshold: int, dwell_s: float, quiet_s: float) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        if not (math.isfinite(dwell_s) and dwell_s >= 0):
            raise ValueError(f"dwell_s must be finite and >= 0, got {dwell_s}")
        if not (math.isfinite(quiet_s) and quiet_s > 0):
            raise ValueError(f"quiet_s must be finite and > 0, got {quiet_s}")
        self.threshold = threshold
        self.dwell_s = dwell_s
        self.quiet_s = quiet_s
        self._current: _Gathering | None = None
        self._seq = 0
        self._last_ts = -math.inf

    @property
    def active(self) -> bool:
        """Whether a crowd incident is in progress."""
        return self._current is not None and self._current.seq > 0

    def update(self, ts: float, persons: int) -> list[IncidentEvent]:
        """Feed one analysed frame's person count (taken at ``ts``); the events it caused."""
        if persons < 0:
            raise ValueError(f"persons must be >= 0, got {persons}")
        events = self._timeouts(ts)
        if persons >= self.threshold:
            self._on_crowded(ts, persons, events)
        elif self._current is not None and not self._current.seq:
            self._current = None  # the run broke before the dwell time was reached
        return events

    def tick(self, ts: float) -> list[IncidentEvent]:
        """Let time pass without a frame (a stalled camera): only ends incidents."""
        return self._timeouts(ts)

    def stop(self, ts: float) -> list[IncidentEvent]:
        """End any incident now (reason ``stopped``, unless it already ended by then)."""
        events = self._timeouts(ts)
        current = self._current
        if current is not None and current.seq:
            events.append(self._end(current, ts, EndReason.STOPPED))
        self._current = None
        return events

    def _timeouts(self, ts: float) -> list[IncidentEvent]:
        if math.isnan(ts) or ts < self._last_ts:
            raise ValueError(f"ts must not decrease: {ts} after {self._last_ts}")
        self._last_ts = ts
        current = self._current
        if current is None or not current.seq:
            return []
        end = current.last_crowded_at + self.quiet_s
        if ts < end:
            return []
        return [self._end(current, end, EndReason.QUIET)]

    def _on_crowded(self, ts: float, persons: int, events: list[IncidentEvent]) -> None:
        current = self._current
        if current is None:
            current = _Gathering(started_at=ts, last_crowded_at=ts, peak_persons=0, peak_at=ts)
            self._current = current
        current.last_crowded_at = ts
        if not current.seq and ts - current.started_at >= self.dwell_s:
            self._seq += 1
            current.seq = self._seq
            events.append(
                Started(at=ts, seq=current.seq, started_at=current.started_at, score=float(persons))
            )
        if persons > current.peak_persons:
            current.peak_persons, current.peak_at = persons, ts
            events.append(Peak(at=ts, score=float(persons)))

    def _end(self, current: _Gathering, at: float, reason: EndReason) -> Ended:
        self._current = None
        return Ended(
            at=at,
            seq=current.seq,
            reason=reason,
            started_at=current.started_at,
            last_active_at=current.last_crowded_at,
            peak_at=current.peak_at,
            peak_score=float(current.peak_persons),
        )


_BOX_COLOUR = (0, 200, 255)  # BGR amber: visible on grass, asphalt and concrete
_TEXT_COLOUR = (0, 0, 0)


def draw_boxes(bgr: Image, boxes: Iterable[PersonBox], label: str | None = None) -> Image:
    """A copy of ``bgr`` with each person's box and score drawn, and an optional label.

    ``label`` (e.g. ``"5 persons"``) is written in the top-left corner. The line width
    scales with the frame so boxes stay visible on 4K snapshots.
    """
    out = bgr.copy()
    thickness = max(1, round(max(out.shape[:2]) / 480))
    font_scale = 0.4 * thickness
    for box in boxes:
        p1 = (round(box.x1), round(box.y1))
        p2 = (round(box.x2), round(box.y2))
        cv2.rectangle(out, p1, p2, _BOX_COLOUR, thickness)
        _text(out, f"{box.score:.2f}", (p1[0], max(p1[1] - 2, 0)), font_scale, thickness)
    if label:
        _text(out, label, (4, 4), 2 * font_scale, thickness)
    return out


def _text(image: Image, text: str, origin: tuple[int, int], scale: float, thickness: int) -> None:
    """Text on a filled box in the box colour, its top-left corner at ``origin``."""
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = origin
    y = max(y - h - base, 0) if y > 0 else 0
    cv2.rectangle(image, (x, y), (x + w + 2, y + h + base + 2), _BOX_COLOUR, cv2.FILLED)
    cv2.putText(
        image,
        text,
        (x + 1, y + h + 1),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        _TEXT_COLOUR,
        thickness,
        cv2.LINE_AA,
    )
