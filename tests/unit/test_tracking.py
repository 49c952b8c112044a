"""The person tracker on synthetic detections: gaps, confirmation, crossings, expiry."""

from __future__ import annotations

import pytest

from analytics.persons import Detections, PersonBox
from analytics.tracking import PersonTracker, TrackerConfig, iou

W, H = 640, 480
FPS = 5.0  # the analysed rate of the service and of `xueliang analyze`


def person(x: float, feet: float = 400.0, score: float = 0.9, height: float = 100.0) -> PersonBox:
    """A person ``height`` px tall, ``0.4 * height`` wide, centred on ``x``, feet at ``feet``."""
    half = 0.2 * height
    return PersonBox(x - half, feet - height, x + half, feet, score)


def frame(*boxes: PersonBox) -> Detections:
    return Detections(boxes=tuple(boxes), width=W, height=H)


def counts(tracker: PersonTracker, frames: list[Detections], fps: float = FPS) -> list[int]:
    return [len(tracker.update(i / fps, f)) for i, f in enumerate(frames)]


def test_a_missed_detection_is_bridged_up_to_the_gap_and_no_longer() -> None:
    tracker = PersonTracker(TrackerConfig(max_gap_s=1.5))
    seen = counts(tracker, [frame(person(300))] * 3 + [frame()] * 10)
    # Held for 1.5 s (7 frames at 5/s) after the last detection at 0.4 s, gone at 2.0 s.
    assert seen == [1, 1, 1] + [1] * 7 + [0] * 3
    held = tracker.update(3.0, frame())
    assert held == ()


def test_held_track_moves_on_at_its_speed_and_is_matched_again() -> None:
    tracker = PersonTracker()
    walk = [frame(person(100 + 20 * i)) for i in range(5)]  # 100 px/s to the right
    gap = [frame()] * 3  # missed for 0.6 s
    back = [frame(person(100 + 20 * i)) for i in range(8, 12)]
    ids: set[int] = set()
    for i, f in enumerate(walk + gap + back):
        tracks = tracker.update(i / FPS, f)
        assert len(tracks) == 1, f"frame {i}: {tracks}"
        ids.add(tracks[0].id)
        if 5 <= i < 8:
            assert tracks[0].held
            assert tracks[0].box.x1 + 20 == pytest.approx(100 + 20 * i, abs=3)
    assert len(ids) == 1, "the person kept one track through the gap"


def test_a_new_track_needs_two_hits_unless_its_score_is_high() -> None:
    tracker = PersonTracker(TrackerConfig(min_hits=2, confirm_score=0.7))
    tracker.update(0.0, frame(person(100)))  # the first frame: counts at once
    weak = person(400, score=0.5)
    assert [t.box.x1 for t in tracker.update(0.2, frame(person(100), weak))] == [80]
    assert len(tracker.update(0.4, frame(person(100), weak))) == 2  # second hit confirms
    strong = person(550, score=0.8)
    assert len(tracker.update(0.6, frame(person(100), weak, strong))) == 3


def test_one_false_positive_counts_nowhere() -> None:
    tracker = PersonTracker()
    frames = [frame(person(100))] * 5
    frames[2] = frame(person(100), person(500, score=0.6))  # a one-frame false positive
    assert counts(tracker, frames) == [1] * 5


def test_low_scores_continue_tracks_but_never_start_one() -> None:
    tracker = PersonTracker(TrackerConfig(new_score=0.3))
    tracker.update(0.0, frame(person(100)))
    faint = [frame(person(100, score=0.2), person(400, score=0.2))] * 12  # 2.4 s
    assert counts(tracker, faint)[1:] == [1] * 11  # kept alive, no new person


def test_two_people_crossing_are_never_counted_three_times() -> None:
    """A walks right, B walks left; while they overlap the detector sees one of them."""
    tracker = PersonTracker()
    seen = []
    for i in range(20):
        a, b = 150 + 20 * i, 490 - 20 * i  # they meet at x = 320 around frame 8
        boxes = [person(a), person(b, feet=405)]
        if abs(a - b) < 60:
            boxes = [person(a)]  # B is hidden behind A
        seen.append(len(tracker.update(i / FPS, frame(*boxes))))
    assert max(seen) == 2
    assert seen == [2] * 20  # B is held while hidden: the count does not dip either


def test_two_people_side_by_side_keep_two_tracks() -> None:
    tracker = PersonTracker()
    pair = frame(person(300), person(345))
    assert counts(tracker, [pair] * 10) == [2] * 10
    ids = {t.id for t in tracker.update(2.0, pair)}
    assert len(ids) == 2


def test_a_walker_at_one_frame_per_second_keeps_their_track() -> None:
    tracker = PersonTracker()
    ids = set()
    for i in range(6):  # 80 px (0.8 body heights) between analysed frames, 1 frame/s
        tracks = tracker.update(float(i), frame(person(100 + 80 * i)))
        assert len(tracks) == 1
        ids.add(tracks[0].id)
    assert len(ids) == 1


def test_a_track_last_seen_on_the_edge_is_not_held() -> None:
    tracker = PersonTracker()
    leaving = [frame(person(560 + 20 * i)) for i in range(4)]  # reaches the right edge
    assert counts(tracker, [*leaving, frame(), frame()]) == [1, 1, 1, 1, 0, 0]


def test_a_gap_longer_than_max_gap_starts_afresh() -> None:
    tracker = PersonTracker(TrackerConfig(max_gap_s=1.5))
    tracker.update(0.0, frame(person(100)))
    # 5 s later (a camera's idle detection): nothing is known, every detection counts.
    assert len(tracker.update(5.0, frame(person(300, score=0.5), person(500, score=0.5)))) == 2
    tracker.reset()
    assert len(tracker.update(5.2, frame(person(300, score=0.5)))) == 1


def test_time_must_not_go_back() -> None:
    tracker = PersonTracker()
    tracker.update(1.0, frame())
    with pytest.raises(ValueError, match="must not decrease"):
        tracker.update(0.5, frame())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_gap_s": -1.0}, "max_gap_s"),
        ({"min_hits": 0}, "min_hits"),
        ({"confirm_score": 0.0}, "confirm_score"),
        ({"new_score": 1.0}, "new_score"),
        ({"match_iou": 0.0}, "match_iou"),
        ({"max_speed": float("nan")}, "max_speed"),
    ],
)
def test_config_is_validated(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrackerConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3),
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),
    ],
)
def test_iou(a: tuple[float, ...], b: tuple[float, ...], expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)
