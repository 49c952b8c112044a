"""The one vocabulary every incident rule speaks: :class:`Started`, :class:`Peak`, :class:`Ended`.

Motion (:class:`analytics.rules.IncidentRules`) and gatherings
(:class:`analytics.crowd.CrowdRules`) raise the same events, so the runtime drives every
kind of incident through one loop. ``score`` is what makes a frame the best of an incident:
the moving share of the picture for motion, the number of persons for a gathering.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["EndReason", "Ended", "IncidentEvent", "Peak", "Started"]


class EndReason(StrEnum):
    """Why an incident ended."""

    #: Nothing happened for the rule's quiet time.
    QUIET = "quiet"
    #: The incident reached its longest allowed length (a new one may continue it).
    MAX_LENGTH = "max_length"
    #: The rules were stopped (camera removed, process stopping).
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Started:
    """An incident started.

    ``at``: timestamp of the frame that confirmed it; ``seq``: its number (1, 2, … per
    rule instance); ``started_at``: its first active frame (the clip begins there, minus
    pre-roll); ``score``: the confirming frame's score; ``continued``: it continues an
    incident that was cut at its maximum length.
    """

    at: float
    seq: int
    started_at: float
    score: float = 0.0
    continued: bool = False


@dataclass(frozen=True, slots=True)
class Peak:
    """The frame at ``at`` is the best so far (``score``): keep it, drop the previous one."""

    at: float
    score: float


@dataclass(frozen=True, slots=True)
class Ended:
    """An incident ended.

    ``at``: when it ended; ``started_at``: its first active frame; ``last_active_at``: its
    last active frame (motion, or a crowded frame); ``peak_at`` / ``peak_score``: its best
    frame.
    """

    at: float
    seq: int
    reason: EndReason
    started_at: float
    last_active_at: float
    peak_at: float
    peak_score: float


IncidentEvent = Started | Peak | Ended
