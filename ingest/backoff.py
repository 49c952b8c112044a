"""Reconnect delays: capped exponential backoff with jitter, reset after stable uptime.

Thousands of cameras behind one switch all drop at once when it reboots; jitter spreads
their reconnects so the cameras (and this process) are not hit in lockstep. Permanent
errors (wrong password, wrong path) wait ``permanent_s`` instead: a camera locks an account
after a few failed logins, so hammering it makes things worse.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "BackoffPolicy"]


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How long to wait before the next connection attempt.

    The n-th consecutive failure waits ``min(max_s, initial_s * multiplier**(n-1))``,
    shortened by a random fraction of up to ``jitter`` (so the cap is never exceeded and
    cameras that failed together retry apart). A connection that stayed up for
    ``reset_after_s`` counts as stable: the next failure starts again from ``initial_s``.
    """

    initial_s: float = 1.0
    max_s: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.25
    reset_after_s: float = 300.0
    permanent_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("backoff needs 0 < initial_s <= max_s")
        if self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("backoff needs multiplier >= 1 and 0 <= jitter < 1")
        if self.reset_after_s <= 0 or self.permanent_s <= 0:
            raise ValueError("backoff needs reset_after_s > 0 and permanent_s > 0")

    def base_delay(self, failures: int) -> float:
        """The delay before jitter after ``failures`` consecutive failures (>= 1)."""
        exponent = min(max(failures - 1, 0), 64)  # 2**64 * initial is past any cap
        return float(min(self.max_s, self.initial_s * self.multiplier**exponent))


class Backoff:
    """The retry state of one camera. Not thread-safe: used by its supervisor task only.

    ``clock`` (monotonic seconds) and ``rng`` are injectable so tests need no sleeping.
    """

    def __init__(
        self,
        policy: BackoffPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._rng = rng or random.Random()
        self._failures = 0
        self._up_since: float | None = None

    @property
    def failures(self) -> int:
        """Consecutive failures since the last reset."""
        return self._failures

    def connected(self) -> None:
        """Record that a connection is up (call when the stream starts delivering)."""
        self._up_since = self._clock()

    def failed(self, *, permanent: bool = False) -> float:
        """Record a failure and return how many seconds to wait before the next attempt."""
        if self._up_since is not None and (
            self._clock() - self._up_since >= self.policy.reset_after_s
        ):
            self._failures = 0
        self._up_since = None
        self._failures += 1
        base = self.policy.permanent_s if permanent else self.policy.base_delay(self._failures)
        return base * (1.0 - self.policy.jitter * self._rng.random())

    def reset(self) -> None:
        """Forget past failures (e.g. after the camera's config changed)."""
        self._failures = 0
        self._up_since = None
