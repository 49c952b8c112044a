"""Incident rules: a pure state machine with hysteresis over per-frame motion.

:class:`IncidentRules` is fed one :meth:`~IncidentRules.update` per analysed frame with the
frame's timestamp, whether it showed motion and a score (e.g.
:attr:`~analytics.motion.MotionResult.motion_area`), and answers with events:

* An incident **starts** on the ``start_frames``-th analysed frame in a row with motion
  (:class:`Started`). A frame without motion breaks the run, and so does a gap of
  ``quiet_s`` or more between two motion frames (e.g. a reconnect).
* It **ends** ``quiet_s`` seconds after its last motion frame (:class:`Ended`,
  reason ``quiet``, ``at = last_motion_at + quiet_s`` exactly — noticed on the first
  update or :meth:`~IncidentRules.tick` at or after that instant).
* It is **capped**: it ends ``max_len_s`` after its first motion frame (reason
  ``max_length``, ``at = started_at + max_len_s``), whichever comes first. If motion
  continues — a motion frame arrives before the capped incident would have ended by
  quiet (``last_motion_at + quiet_s``) — a new incident starts on that very frame without
  waiting for ``start_frames`` again, marked ``continued=True``; so a long activity is cut
  into back-to-back incidents of at most ``max_len_s`` each.
* The **best snapshot**: the first motion frame of every run, and then every frame whose
  score beats the best so far in that run or incident, yields :class:`Peak`. The
  caller keeps only the frame of the latest ``Peak`` (replacing the previous one) and
  stores it when the incident ends; :attr:`Ended.peak_at` names it.

Events of one update come in the order ``Ended``, ``Started``,
``Peak``, so the caller can store the ending incident's snapshot before replacing it.
No clock is read: time only comes in as ``ts`` (seconds, never decreasing), which makes
every sequence deterministic and testable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from analytics.incidents import Ended, EndReason, IncidentEvent, Peak, Started

__all__ = ["IncidentRules", "PeakTracker", "RuleConfig"]


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """Incident hysteresis settings.

    ``start_frames``: consecutive analysed frames with motion that start an incident
        (default 3; 1 starts on the first motion frame).
    ``quiet_s``: seconds without motion after which an incident ends (default 10).
    ``max_len_s``: longest incident, from its first motion frame to its end, in seconds
        (default 300); must exceed ``quiet_s``.
    """

    start_frames: int = 3
    quiet_s: float = 10.0
    max_len_s: float = 300.0

    def __post_init__(self) -> None:
        if self.start_frames < 1:
            raise ValueError(f"start_frames must be >= 1, got {self.start_frames}")
        if not (math.isfinite(self.quiet_s) and self.quiet_s > 0):
            raise ValueError(f"quiet_s must be a finite number > 0, got {self.quiet_s}")
        if not (math.isfinite(self.max_len_s) and self.max_len_s > self.quiet_s):
            raise ValueError(
                f"max_len_s must be finite and > quiet_s ({self.quiet_s}), got {self.max_len_s}"
            )


class PeakTracker:
    """Remembers the highest score offered since the last :meth:`reset` (first one wins ties)."""

    def __init__(self) -> None:
        self._at: float | None = None
        self._score = -math.inf

    @property
    def peak(self) -> tuple[float, float] | None:
        """``(ts, score)`` of the best frame, or ``None`` before the first offer."""
        return None if self._at is None else (self._at, self._score)

    def reset(self) -> None:
        """Forget the peak."""
        self._at = None
        self._score = -math.inf

    def offer(self, ts: float, score: float) -> bool:
        """Offer a frame's score; ``True`` when it is the new peak (keep this frame)."""
        if not math.isfinite(score):
            raise ValueError(f"score must be finite, got {score}")
        if self._at is not None and score <= self._score:
            return False
        self._at, self._score = ts, score
        return True


@dataclass(slots=True)
class _Active:
    seq: int
    started_at: float
    last_motion_at: float


@dataclass(slots=True)
class _Run:
    """Consecutive motion frames while no incident is active."""

    length: int = 0
    started_at: float = 0.0
    last_motion_at: float = 0.0


class IncidentRules:
    """The incident state machine for one camera; see the module doc for the rules."""

    def __init__(self, config: RuleConfig | None = None) -> None:
        self._config = config or RuleConfig()
        self._active: _Active | None = None
        self._run = _Run()
        self._carry_until: float | None = None  # a capped incident may continue until then
        self._peak = PeakTracker()
        self._seq = 0
        self._last_ts = -math.inf

    @property
    def config(self) -> RuleConfig:
        """The rules' settings."""
        return self._config

    @property
    def active(self) -> bool:
        """Whether an incident is in progress."""
        return self._active is not None

    @property
    def peak(self) -> tuple[float, float] | None:
        """``(ts, score)`` of the current run's or incident's best frame."""
        return self._peak.peak

    def update(self, ts: float, motion: bool, score: float = 0.0) -> list[IncidentEvent]:
        """Feed one analysed frame; returns the events it caused (often none).

        ``ts``: the frame's time in seconds, never less than the previous one.
        ``motion``: whether the frame showed motion. ``score``: how much (any finite
        number, higher is better; only motion frames' scores count for the peak).
        """
        events = self._timeouts(ts)
        if motion:
            self._on_motion(ts, score, events)
        elif self._active is None:
            self._run = _Run()
        return events

    def tick(self, ts: float) -> list[IncidentEvent]:
        """Let time pass without a frame (e.g. the camera stalled): only ends incidents."""
        return self._timeouts(ts)

    def stop(self, ts: float) -> list[IncidentEvent]:
        """End any incident now (reason ``stopped``, unless it already ended by then)."""
        events = self._timeouts(ts)
        if self._active is not None:
            events.append(self._end(self._active, ts, EndReason.STOPPED))
        self._run = _Run()
        self._carry_until = None
        return events

    def _timeouts(self, ts: float) -> list[IncidentEvent]:
        if math.isnan(ts) or ts < self._last_ts:
            raise ValueError(f"ts must not decrease: {ts} after {self._last_ts}")
        self._last_ts = ts
        active = self._active
        if self._carry_until is not None and ts >= self._carry_until:
            self._carry_until = None
        if active is None:
            return []
        quiet_end = active.last_motion_at + self._config.quiet_s
        cap_end = active.started_at + self._config.max_len_s
        if ts < min(quiet_end, cap_end):
            return []
        if quiet_end <= cap_end:
            return [self._end(active, quiet_end, EndReason.QUIET)]
        self._carry_until = quiet_end if ts < quiet_end else None
        return [self._end(active, cap_end, EndReason.MAX_LENGTH)]

    def _on_motion(self, ts: float, score: float, events: list[IncidentEvent]) -> None:
        active = self._active
        if active is None and self._carry_until is not None:
            self._carry_until = None
            self._peak.reset()
            active = self._start(ts, ts, continued=True, events=events)
        if active is None:
            active = self._count(ts, events)
        else:
            active.last_motion_at = ts
        if self._peak.offer(ts, score):
            events.append(Peak(at=ts, score=score))

    def _count(self, ts: float, events: list[IncidentEvent]) -> _Active | None:
        """Count a motion frame towards a start; the new incident when it starts."""
        run = self._run
        if run.length and ts - run.last_motion_at >= self._config.quiet_s:
            run = _Run()
        if not run.length:
            run.started_at = ts
            self._peak.reset()
        run.length += 1
        run.last_motion_at = ts
        self._run = run
        if run.length < self._config.start_frames:
            return None
        return self._start(ts, run.started_at, continued=False, events=events)

    def _start(
        self, ts: float, started_at: float, *, continued: bool, events: list[IncidentEvent]
    ) -> _Active:
        self._seq += 1
        self._run = _Run()
        self._active = _Active(seq=self._seq, started_at=started_at, last_motion_at=ts)
        events.append(Started(at=ts, seq=self._seq, started_at=started_at, continued=continued))
        return self._active

    def _end(self, active: _Active, at: float, reason: EndReason) -> Ended:
        self._active = None
        self._run = _Run()
        peak = self._peak.peak
        peak_at, peak_score = peak if peak is not None else (active.last_motion_at, 0.0)
        self._peak.reset()
        return Ended(
            at=at,
            seq=active.seq,
            reason=reason,
            started_at=active.started_at,
            last_active_at=active.last_motion_at,
            peak_at=peak_at,
            peak_score=peak_score,
        )
