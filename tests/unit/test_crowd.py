"""Crowd analytics on synthetic detections: zone counting, smoothing, incident rules."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.crowd import (
    WHOLE_FRAME,
    CountSmoother,
    CrowdRules,
    PersonCounter,
    count_in_zones,
    draw_boxes,
)
from analytics.incidents import Ended, EndReason, IncidentEvent, Peak, Started
from analytics.persons import DetectorConfig, PersonBox, PersonDetector
from analytics.tracking import TrackerConfig
from analytics.zones import Zone, ZoneKind

W, H = 400, 200
LEFT = Zone("left", ZoneKind.CROWD, ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)))
RIGHT = Zone("right", ZoneKind.CROWD, ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)))
TOP_MASK = Zone("sky", ZoneKind.MASK, ((0.0, 0.0), (1.0, 0.0), (1.0, 0.3), (0.0, 0.3)))
MOTION = Zone("door", ZoneKind.MOTION, ((0.0, 0.0), (0.2, 0.0), (0.2, 0.2), (0.0, 0.2)))


def person(cx: float, feet_y: float, score: float = 0.9) -> PersonBox:
    """A 20x50 px person whose feet (bottom-centre) are at pixel (cx, feet_y)."""
    return PersonBox(cx - 10, feet_y - 50, cx + 10, feet_y, score)


@pytest.mark.parametrize(
    ("boxes", "zones", "expected"),
    [
        ([], (), {WHOLE_FRAME: 0}),
        ([person(50, 100), person(300, 150)], (), {WHOLE_FRAME: 2}),
        ([person(50, 100), person(300, 150)], (MOTION,), {WHOLE_FRAME: 2}),
        (
            [person(50, 100), person(150, 190), person(300, 150)],
            (LEFT, RIGHT),
            {"left": 2, "right": 1},
        ),
        # The feet decide: this box's body is in the left half, its bottom-centre in the right.
        ([PersonBox(150, 20, 260, 120, 0.9)], (LEFT, RIGHT), {"left": 0, "right": 1}),
        # Feet under the mask (y < 0.3 * H = 60) never count, with or without crowd zones.
        ([person(50, 40), person(50, 150)], (TOP_MASK,), {WHOLE_FRAME: 1}),
        ([person(50, 40), person(50, 150)], (LEFT, TOP_MASK), {"left": 1}),
    ],
)
def test_count_in_zones_uses_bottom_centre(
    boxes: list[PersonBox], zones: tuple[Zone, ...], expected: dict[str, int]
) -> None:
    assert count_in_zones(boxes, W, H, zones) == expected


def test_smoother_bridges_a_missed_frame_and_forgets_after_the_window() -> None:
    smoother = CountSmoother(window_s=1.0)
    seen = [smoother.update(t / 5, {"a": n})["a"] for t, n in enumerate([5, 5, 2, 5, 5])]
    assert seen == [5, 5, 5, 5, 5]  # the dip to 2 at 0.4 s is bridged
    # Counts older than the window drop out: 1.2 s after the last 5, the count is 1.
    assert smoother.update(1.4, {"a": 1}) == {"a": 5}
    assert smoother.update(2.0, {"a": 1}) == {"a": 1}


def test_smoother_off_and_per_zone() -> None:
    off = CountSmoother(window_s=0.0)
    assert off.update(0.0, {"a": 4}) == {"a": 4}
    assert off.update(0.2, {"a": 1}) == {"a": 1}
    zones = CountSmoother(window_s=1.0)
    zones.update(0.0, {"a": 3, "b": 0})
    assert zones.update(0.2, {"a": 0, "b": 2}) == {"a": 3, "b": 2}
    with pytest.raises(ValueError, match="must not decrease"):
        zones.update(0.1, {"a": 0})
    with pytest.raises(ValueError):
        CountSmoother(window_s=-1)


def feed(rules: CrowdRules, counts: list[int], fps: float = 5.0) -> list[IncidentEvent]:
    events: list[IncidentEvent] = []
    for i, n in enumerate(counts):
        events += rules.update(i / fps, n)
    return events


def test_a_gathering_raises_exactly_one_incident_with_its_peak() -> None:
    # People arrive (2, 3, 4), stay 5-7 for 12 s with one detector miss (smoothed away),
    # then leave; threshold 5 for 10 s, ended after 5 s below.
    raw = [2] * 5 + [3] * 5 + [4] * 5 + [5] * 20 + [6] * 15 + [7] * 10 + [6] * 15 + [2] * 40
    raw[40] = 1  # one frame where the detector missed most people
    smoother = CountSmoother(window_s=1.0)
    smoothed = [smoother.update(i / 5, {"z": n})["z"] for i, n in enumerate(raw)]
    rules = CrowdRules(threshold=5, dwell_s=10.0, quiet_s=5.0)
    events = feed(rules, smoothed)

    started = [e for e in events if isinstance(e, Started)]
    ended = [e for e in events if isinstance(e, Ended)]
    assert len(started) == 1 and len(ended) == 1
    first_crowded = 15 / 5  # index 15 is the first count of 5
    assert started[0].started_at == pytest.approx(first_crowded)
    assert started[0].at == pytest.approx(first_crowded + 10.0)
    end = ended[0]
    assert end.seq == started[0].seq == 1
    assert end.reason is EndReason.QUIET
    assert end.peak_score == 7
    assert end.peak_at == pytest.approx(50 / 5)  # index 50: the first frame with 7
    # The last raw 6 is index 74; the 1 s maximum keeps the count at 6 for 5 more frames.
    last_crowded = (74 + 5) / 5
    assert end.last_active_at == pytest.approx(last_crowded)
    assert end.at == pytest.approx(last_crowded + 5.0)
    assert not rules.active
    peaks = [e.score for e in events if isinstance(e, Peak)]
    assert peaks == [5, 6, 7]


@pytest.mark.parametrize(
    "counts",
    [
        [4] * 200,  # one short of the threshold, for 40 s
        [5] * 49 + [4] + [5] * 49,  # crowded 9.8 s, a break, 9.8 s: never 10 s unbroken
        [0] * 100,
    ],
)
def test_no_incident_below_threshold_or_dwell(counts: list[int]) -> None:
    rules = CrowdRules(threshold=5, dwell_s=10.0, quiet_s=5.0)
    events = feed(rules, counts)
    assert not [e for e in events if isinstance(e, Started | Ended)]
    assert not rules.active


def test_quiet_period_is_measured_from_the_last_crowded_frame() -> None:
    rules = CrowdRules(threshold=3, dwell_s=0.0, quiet_s=5.0)
    assert isinstance(rules.update(0.0, 3)[0], Started)
    assert rules.update(4.9, 0) == []
    assert rules.update(4.95, 3) == []  # back before the quiet time ran out: same incident
    assert rules.tick(9.9) == []
    (ended,) = rules.tick(9.95)
    assert isinstance(ended, Ended)
    assert ended.at == pytest.approx(9.95)
    assert ended.seq == 1


def test_end_comes_before_the_next_start_and_stop_ends_now() -> None:
    rules = CrowdRules(threshold=2, dwell_s=0.0, quiet_s=1.0)
    rules.update(0.0, 2)
    events = rules.update(5.0, 4)  # the first ended at 1.0; a new one starts at 5.0
    assert [type(e) for e in events] == [Ended, Started, Peak]
    assert events[0].at == pytest.approx(1.0)
    (stopped,) = rules.stop(5.5)
    assert isinstance(stopped, Ended)
    assert (stopped.reason, stopped.seq, stopped.peak_score) == (EndReason.STOPPED, 2, 4)
    assert rules.stop(6.0) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 0, "dwell_s": 1, "quiet_s": 1}, "threshold"),
        ({"threshold": 2, "dwell_s": -1, "quiet_s": 1}, "dwell_s"),
        ({"threshold": 2, "dwell_s": 1, "quiet_s": 0}, "quiet_s"),
    ],
)
def test_rules_validate_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CrowdRules(**kwargs)  # type: ignore[arg-type]


def test_rules_reject_time_going_backwards() -> None:
    rules = CrowdRules(threshold=2, dwell_s=1, quiet_s=1)
    rules.update(1.0, 0)
    with pytest.raises(ValueError, match="must not decrease"):
        rules.update(0.5, 0)


def test_draw_boxes_draws_on_a_copy() -> None:
    frame = np.zeros((H, W, 3), dtype=np.uint8)
    out = draw_boxes(frame, [PersonBox(100, 60, 140, 160, 0.87)], label="1 person")
    assert not frame.any()  # the input is untouched
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert out[110, 100].any() and out[110, 140].any()  # left and right edges
    assert not out[110, 120].any()  # the inside stays as it was
    assert out[5:20, 5:40].any()  # the label


class _FakeBackend:
    """Stands in for a model: the boxes of each frame in turn (the last ones repeat)."""

    name = "fake"
    size = (W, H)

    def __init__(self, frames: list[list[PersonBox]]) -> None:
        self._frames = [
            (
                np.array([[b.x1, b.y1, b.x2, b.y2] for b in bs], dtype=np.float32).reshape(-1, 4),
                np.array([b.score for b in bs], dtype=np.float32),
            )
            for bs in frames
        ]
        self._calls = 0

    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = self._frames[min(self._calls, len(self._frames) - 1)]
        self._calls += 1
        return boxes, scores


def test_person_counter_counts_per_zone_and_smooths() -> None:
    boxes = [person(50, 100), person(150, 190, 0.5), person(300, 150), person(320, 150, 0.1)]
    detector = PersonDetector(DetectorConfig(), _FakeBackend([boxes]))
    counter = PersonCounter(detector, zones=(LEFT, RIGHT), window_s=1.0)
    result = counter.count(np.zeros((H, W, 3), dtype=np.uint8), ts=0.0)
    # The 0.1 box is below the detector's threshold; the other three count.
    assert result.counts == {"left": 2, "right": 1}
    assert result.smoothed == {"left": 2, "right": 1}
    assert len(result.boxes) == 3 and (result.width, result.height) == (W, H)
    assert len(result.detected) == 3


def test_person_counter_keeps_counting_a_person_the_detector_misses() -> None:
    crowd = [person(50, 100), person(150, 190), person(300, 150)]
    missed = [crowd[0], crowd[2]]  # the detector loses the middle person for two frames
    frames = [crowd, crowd, missed, missed, crowd]
    image = np.zeros((H, W, 3), dtype=np.uint8)
    tracked = PersonCounter(PersonDetector(DetectorConfig(), _FakeBackend(frames)), (LEFT, RIGHT))
    raw = PersonCounter(
        PersonDetector(DetectorConfig(), _FakeBackend(frames)), (LEFT, RIGHT), tracker=None
    )
    results = [tracked.count(image, ts=i / 5) for i in range(5)]
    assert [r.smoothed["left"] for r in results] == [2, 2, 2, 2, 2]
    assert [len(r.detected) for r in results] == [3, 3, 2, 2, 3]
    held = results[2].boxes[1]  # the held person is drawn where they were last seen
    assert (held.x1, held.y2) == pytest.approx((140, 190))
    assert [raw.count(image, ts=i / 5).smoothed["left"] for i in range(5)] == [2, 2, 1, 1, 2]


def test_a_flickering_gathering_raises_one_incident_with_its_peak() -> None:
    """Six people for 14 s, the detector missing two of them every third frame."""
    people = [person(40 + 50 * k, 150) for k in range(6)]
    passer_by = person(370, 150, score=0.5)  # a weak detection needs a second hit
    frames = [people[:2]] * 10  # two people for 2 s
    for i in range(70):
        frames.append(people[:4] if i % 3 == 2 else people)
    frames[30] = [*people, passer_by]  # one frame only: never counted
    frames[41] = frames[42] = frames[43] = [*people, passer_by]  # stays: counted from 42
    frames += [people[:1]] * 60  # they leave

    def incidents(tracker: TrackerConfig | None) -> list[IncidentEvent]:
        detector = PersonDetector(DetectorConfig(), _FakeBackend(frames))
        counter = PersonCounter(detector, tracker=tracker)
        rules = CrowdRules(threshold=5, dwell_s=10.0, quiet_s=5.0)
        image = np.zeros((H, W, 3), dtype=np.uint8)
        events: list[IncidentEvent] = []
        for i in range(len(frames)):
            result = counter.count(image, ts=i / 5)
            events += rules.update(result.ts, result.smoothed[WHOLE_FRAME])
        return [e for e in events if isinstance(e, Started | Ended)]

    started, ended = incidents(TrackerConfig())
    assert isinstance(started, Started) and isinstance(ended, Ended)
    assert started.started_at == pytest.approx(10 / 5)
    assert ended.peak_score == 7
    assert ended.peak_at == pytest.approx(42 / 5)
    # One frame's detections dip below the threshold every 0.6 s: no 10 s run, no incident.
    assert incidents(None) == []
