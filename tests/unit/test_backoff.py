"""Reconnect backoff: exponential, capped, jittered, reset after stable uptime."""

from __future__ import annotations

import random

import pytest

from ingest.backoff import Backoff, BackoffPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FixedRng(random.Random):
    """random() always returns ``value``: 0 = no jitter, ~1 = full jitter."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (7, 30.0), (500, 30.0)],
)
def test_base_delay_doubles_up_to_the_cap(failures: int, expected: float) -> None:
    policy = BackoffPolicy(initial_s=1.0, max_s=30.0)
    assert policy.base_delay(failures) == expected


def test_consecutive_failures_grow_without_jitter() -> None:
    backoff = Backoff(BackoffPolicy(initial_s=0.5, max_s=4.0), rng=FixedRng(0.0))
    assert [backoff.failed() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_shortens_by_at_most_the_jitter_fraction_and_never_exceeds_the_cap() -> None:
    policy = BackoffPolicy(initial_s=1.0, max_s=8.0, jitter=0.25)
    delays = []
    for seed in range(200):
        backoff = Backoff(policy, rng=random.Random(seed))
        delays.append([backoff.failed() for _ in range(6)][-1])  # at the cap
    assert all(6.0 <= d <= 8.0 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100  # cameras that failed together spread out


def test_full_jitter_value_gives_the_lower_bound() -> None:
    backoff = Backoff(BackoffPolicy(initial_s=2.0, max_s=2.0, jitter=0.5), rng=FixedRng(1.0))
    assert backoff.failed() == pytest.approx(1.0)


def test_stable_uptime_resets_the_backoff() -> None:
    clock = FakeClock()
    policy = BackoffPolicy(initial_s=1.0, max_s=60.0, reset_after_s=300.0)
    backoff = Backoff(policy, clock=clock, rng=FixedRng(0.0))
    for _ in range(4):
        backoff.failed()
    backoff.connected()
    clock.now += 300.0
    assert backoff.failed() == 1.0
    assert backoff.failures == 1


def test_short_uptime_keeps_growing() -> None:
    clock = FakeClock()
    backoff = Backoff(
        BackoffPolicy(initial_s=1.0, reset_after_s=300.0), clock=clock, rng=FixedRng(0)
    )
    backoff.failed()
    backoff.failed()
    backoff.connected()
    clock.now += 299.0
    assert backoff.failed() == 4.0


def test_permanent_errors_wait_the_long_interval() -> None:
    backoff = Backoff(
        BackoffPolicy(initial_s=0.1, permanent_s=120.0, jitter=0.1), rng=FixedRng(0.5)
    )
    assert backoff.failed(permanent=True) == pytest.approx(114.0)
    # At most a minute's worth of attempts: 60 s / 114 s < 1 retry per minute.


def test_reset_forgets_failures() -> None:
    backoff = Backoff(BackoffPolicy(initial_s=1.0), rng=FixedRng(0.0))
    backoff.failed()
    backoff.failed()
    backoff.reset()
    assert backoff.failed() == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": 0},
        {"initial_s": 5, "max_s": 1},
        {"multiplier": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"reset_after_s": 0},
        {"permanent_s": 0},
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)
