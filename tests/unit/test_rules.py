"""Incident rules: hysteresis, quiet end, cap and continuation, peaks — as event tables."""

from __future__ import annotations

import pytest

from analytics.incidents import Ended, EndReason, IncidentEvent, Peak, Started
from analytics.rules import IncidentRules, PeakTracker, RuleConfig

Step = tuple[float, bool, float]


def _script(pattern: str, dt: float = 1.0, t0: float = 0.0) -> list[Step]:
    """One frame per character, ``dt`` apart: ``M`` motion, ``.`` none, score = index."""
    return [(t0 + i * dt, c == "M", float(i)) for i, c in enumerate(pattern)]


def _run(config: RuleConfig, steps: list[Step]) -> list[IncidentEvent]:
    rules = IncidentRules(config)
    events: list[IncidentEvent] = []
    for ts, motion, score in steps:
        events.extend(rules.update(ts, motion, score))
    return events


def _brief(events: list[IncidentEvent]) -> list[tuple[object, ...]]:
    """Starts and ends only, as compact tuples."""
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, Started):
            out.append(("start", e.seq, e.at, e.started_at, e.continued))
        elif isinstance(e, Ended):
            out.append(("end", e.seq, e.at, e.reason.value))
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_starts_on_the_nth_consecutive_motion_frame_not_before(n: int) -> None:
    rules = IncidentRules(RuleConfig(start_frames=n))
    for i in range(n - 1):
        assert not any(isinstance(e, Started) for e in rules.update(float(i), True, 0.1))
        assert not rules.active
    events = rules.update(float(n - 1), True, 0.1)
    starts = [e for e in events if isinstance(e, Started)]
    assert starts == [Started(at=float(n - 1), seq=1, started_at=0.0, continued=False)]
    assert rules.active


CFG = RuleConfig(start_frames=3, quiet_s=5.0, max_len_s=60.0)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param("MM.MM.MM", [], id="runs-broken-by-quiet-frames"),
        pytest.param("MMM", [("start", 1, 2.0, 0.0, False)], id="three-in-a-row"),
        pytest.param(
            "MMM...M...M...",
            [("start", 1, 2.0, 0.0, False)],
            id="gaps-shorter-than-quiet-keep-it-open",
        ),
        pytest.param(
            "MMM.....",
            [("start", 1, 2.0, 0.0, False), ("end", 1, 7.0, "quiet")],
            id="ends-exactly-at-last-motion-plus-quiet",
        ),
        pytest.param(
            "MMM...M.....",
            [("start", 1, 2.0, 0.0, False), ("end", 1, 11.0, "quiet")],
            id="late-motion-extends-it",
        ),
        pytest.param(
            "MMM.....MMM",
            [
                ("start", 1, 2.0, 0.0, False),
                ("end", 1, 7.0, "quiet"),
                ("start", 2, 10.0, 8.0, False),
            ],
            id="a-new-incident-needs-n-frames-again",
        ),
        pytest.param(
            "MMM....M",
            [("start", 1, 2.0, 0.0, False), ("end", 1, 7.0, "quiet")],
            id="motion-at-exactly-quiet-is-too-late",
        ),
    ],
)
def test_hysteresis_tables(pattern: str, expected: list[tuple[object, ...]]) -> None:
    assert _brief(_run(CFG, _script(pattern))) == expected


@pytest.mark.parametrize(
    ("check_ts", "ended_at"),
    [(6.999, None), (7.0, 7.0), (7.5, 7.0), (100.0, 7.0)],
)
def test_end_time_is_last_motion_plus_quiet_whenever_it_is_noticed(
    check_ts: float, ended_at: float | None
) -> None:
    rules = IncidentRules(CFG)
    for ts in (0.0, 1.0, 2.0):
        rules.update(ts, True, 0.5)
    ends = [e for e in rules.update(check_ts, False) if isinstance(e, Ended)]
    assert [e.at for e in ends] == ([] if ended_at is None else [ended_at])
    if ends:
        assert ends[0].last_active_at == 2.0
        assert ends[0].reason is EndReason.QUIET


def test_tick_ends_without_a_frame_and_does_not_break_a_run() -> None:
    rules = IncidentRules(CFG)
    rules.update(0.0, True)
    rules.update(1.0, True)
    assert rules.tick(1.5) == []
    assert any(isinstance(e, Started) for e in rules.update(2.0, True))
    ended = rules.tick(7.0)
    assert [(type(e), e.at) for e in ended] == [(Ended, 7.0)]


def test_a_time_gap_of_quiet_s_breaks_a_run() -> None:
    steps = [(0.0, True, 0.0), (1.0, True, 0.0), (6.0, True, 0.0), (7.0, True, 0.0)]
    assert _brief(_run(CFG, steps)) == []
    steps.append((8.0, True, 0.0))
    assert _brief(_run(CFG, steps)) == [("start", 1, 8.0, 6.0, False)]


CAP = RuleConfig(start_frames=2, quiet_s=5.0, max_len_s=10.0)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param(
            "M" * 25,
            [
                ("start", 1, 1.0, 0.0, False),
                ("end", 1, 10.0, "max_length"),
                ("start", 2, 10.0, 10.0, True),
                ("end", 2, 20.0, "max_length"),
                ("start", 3, 20.0, 20.0, True),
            ],
            id="continuous-motion-is-cut-back-to-back",
        ),
        pytest.param(
            "M" * 9 + "...M",
            [
                ("start", 1, 1.0, 0.0, False),
                ("end", 1, 10.0, "max_length"),
                ("start", 2, 12.0, 12.0, True),
            ],
            id="motion-before-the-quiet-end-continues-with-one-frame",
        ),
        pytest.param(
            "M" * 9 + ".....M",
            [("start", 1, 1.0, 0.0, False), ("end", 1, 10.0, "max_length")],
            id="motion-after-the-quiet-end-needs-n-frames",
        ),
        pytest.param(
            "M" * 9 + ".....MM",
            [
                ("start", 1, 1.0, 0.0, False),
                ("end", 1, 10.0, "max_length"),
                ("start", 2, 15.0, 14.0, False),
            ],
            id="then-a-fresh-incident",
        ),
        pytest.param(
            "MMM" + "." * 10,
            [("start", 1, 1.0, 0.0, False), ("end", 1, 7.0, "quiet")],
            id="quiet-before-cap-wins",
        ),
        pytest.param(
            "M" * 7 + "." * 5,
            [("start", 1, 1.0, 0.0, False), ("end", 1, 10.0, "max_length")],
            id="cap-before-quiet-wins",
        ),
    ],
)
def test_cap_tables(pattern: str, expected: list[tuple[object, ...]]) -> None:
    events = _run(CAP, _script(pattern))
    assert _brief(events) == expected
    for e in events:
        if isinstance(e, Ended):
            assert e.at - e.started_at <= CAP.max_len_s


def test_cap_after_a_long_gap_does_not_continue() -> None:
    rules = IncidentRules(CAP)
    for ts in range(9):
        rules.update(float(ts), True)
    events = rules.update(30.0, True)  # cap (10) and quiet end (13) both passed
    assert _brief(events) == [("end", 1, 10.0, "max_length")]
    assert not rules.active


@pytest.mark.parametrize("seed", range(5))
def test_sequences_are_deterministic(seed: int) -> None:
    import random

    rng = random.Random(seed)
    steps = [(i * 0.2, rng.random() < 0.6, rng.random()) for i in range(2000)]
    first = _run(CFG, steps)
    assert first == _run(CFG, steps)
    # Starts and ends alternate and seqs count up.
    kinds = [e for e in first if not isinstance(e, Peak)]
    for i, e in enumerate(kinds):
        assert isinstance(e, Started if i % 2 == 0 else Ended)
        assert e.seq == i // 2 + 1


def test_new_peak_names_the_frame_to_keep() -> None:
    rules = IncidentRules(RuleConfig(start_frames=2, quiet_s=2.0, max_len_s=60.0))
    scores = [0.1, 0.3, 0.2, 0.5, 0.5, 0.4]
    peaks: list[Peak] = []
    for i, s in enumerate(scores):
        peaks += [e for e in rules.update(float(i), True, s) if isinstance(e, Peak)]
    assert [(p.at, p.score) for p in peaks] == [(0.0, 0.1), (1.0, 0.3), (3.0, 0.5)]
    (ended,) = rules.update(10.0, False)
    assert isinstance(ended, Ended)
    assert (ended.peak_at, ended.peak_score) == (3.0, 0.5)


def test_events_of_one_update_end_before_start_before_peak() -> None:
    rules = IncidentRules(CAP)
    for ts in range(10):
        rules.update(float(ts), True, 0.1)
    events = rules.update(10.0, True, 0.05)
    assert [type(e) for e in events] == [Ended, Started, Peak]
    ended = events[0]
    assert isinstance(ended, Ended)
    assert ended.peak_at == 0.0  # the first frame of the run holds the (tied) best score


def test_a_broken_run_resets_the_peak() -> None:
    rules = IncidentRules(CFG)
    rules.update(0.0, True, 0.9)
    rules.update(1.0, False)
    events = rules.update(2.0, True, 0.1)
    assert events == [Peak(at=2.0, score=0.1)]


def test_stop_ends_an_active_incident_now() -> None:
    rules = IncidentRules(CFG)
    for ts in (0.0, 1.0, 2.0):
        rules.update(ts, True)
    assert _brief(rules.stop(3.0)) == [("end", 1, 3.0, "stopped")]
    assert rules.stop(4.0) == []
    assert not rules.active


def test_stop_after_the_quiet_end_reports_quiet() -> None:
    rules = IncidentRules(CFG)
    for ts in (0.0, 1.0, 2.0):
        rules.update(ts, True)
    assert _brief(rules.stop(30.0)) == [("end", 1, 7.0, "quiet")]


def test_time_must_not_go_backwards() -> None:
    rules = IncidentRules(CFG)
    rules.update(5.0, True)
    rules.update(5.0, True)  # equal is fine
    with pytest.raises(ValueError, match="must not decrease"):
        rules.update(4.0, True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_frames": 0},
        {"quiet_s": 0.0},
        {"quiet_s": float("inf")},
        {"quiet_s": 10.0, "max_len_s": 10.0},
        {"max_len_s": float("nan")},
    ],
)
def test_rule_config_rejects(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RuleConfig(**kwargs)  # type: ignore[arg-type]


def test_peak_tracker() -> None:
    tracker = PeakTracker()
    assert tracker.peak is None
    assert tracker.offer(1.0, 0.2)
    assert not tracker.offer(2.0, 0.2)
    assert tracker.offer(3.0, 0.3)
    assert tracker.peak == (3.0, 0.3)
    with pytest.raises(ValueError):
        tracker.offer(4.0, float("nan"))
    tracker.reset()
    assert tracker.peak is None
