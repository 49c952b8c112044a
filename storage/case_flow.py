"""The handling of a case, step by step, as the grid platform runs it.

GB/T 30428 / CJ/T 315 digital city management handles every event the same way: 上报
(reported) → 核实 (accepted, or 注销: rejected) → 立案 (filed) → 派遣 (dispatched, to a
department or a grid worker, with a deadline) → 处置 (handling) → 反馈 (handled) → 核查
(verified; a failed check sends it back: dispatched again, 返工) → 结案 (closed).
:func:`transition` moves a case one allowed step, records it in the case's timeline and
appends ``case.transitioned`` in the same transaction; :func:`raise_overdue` raises
``case.overdue`` once per state whose deadline passed (safe with several processes: the
conditional UPDATE decides who raises it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from config.errors import XueliangError
from config.settings import CaseSettings
from storage.events import append_event
from storage.grid_models import Case, CaseTransition
from storage.models import utcnow

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "Step",
    "TransitionRefused",
    "case_event",
    "force",
    "is_overdue",
    "raise_overdue",
    "record_start",
    "timeline",
    "transition",
]

#: From each state, where a case may go next.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "reported": ("accepted", "rejected"),
    "accepted": ("filed",),
    "rejected": (),
    "filed": ("dispatched",),
    "dispatched": ("handling",),
    "handling": ("handled",),
    "handled": ("verified", "dispatched"),  # the check failed: 返工
    "verified": ("closed",),
    "closed": (),
}
TERMINAL = ("rejected", "closed")


class TransitionRefused(XueliangError):
    """The step is not allowed from the case's state (``allowed`` says which are)."""

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


@dataclass(frozen=True)
class Step:
    """A requested transition."""

    to: str
    actor: str
    note: str | None = None
    assignee: str | None = None
    deadline_at: datetime | None = None


def transition(session: Session, case: Case, step: Step, cases: CaseSettings) -> CaseTransition:
    """Move ``case`` one step (``TransitionRefused`` when not allowed from its state)."""
    allowed = TRANSITIONS.get(case.state, ())
    if step.to not in allowed:
        raise TransitionRefused(
            f"case {case.id} is {case.state}: it can go to "
            + (", ".join(allowed) if allowed else "no other state"),
            allowed,
        )
    if step.to == "dispatched" and not step.assignee:
        raise TransitionRefused(
            "dispatching needs an assignee (the department or grid worker sent)", allowed
        )
    now = utcnow()
    return _enter(session, case, step, now, cases, from_state=case.state)


def force(session: Session, case: Case, step: Step, cases: CaseSettings) -> CaseTransition:
    """Move ``case`` to ``step.to`` whatever its state (an operator closing or reopening
    it directly); recorded like any step."""
    return _enter(session, case, step, utcnow(), cases, from_state=case.state)


def record_start(session: Session, case: Case, actor: str, cases: CaseSettings) -> None:
    """The first entry of a new case's timeline (its creation, in its first state)."""
    _enter(session, case, Step(case.state, actor), case.created_at, cases, from_state=None)


def _enter(
    session: Session,
    case: Case,
    step: Step,
    now: datetime,
    cases: CaseSettings,
    from_state: str | None,
) -> CaseTransition:
    deadline = step.deadline_at or _default_deadline(cases, case.class_code, step.to, now)
    case.state, case.state_since, case.updated_at = step.to, now, now
    case.assignee = step.assignee or case.assignee
    case.deadline_at, case.overdue_at = deadline, None
    case.status = "closed" if step.to in TERMINAL else "open"
    case.closed_at = now if step.to in TERMINAL else None
    row = CaseTransition(
        case_id=case.id,
        at=now,
        actor=step.actor,
        from_state=from_state,
        to_state=step.to,
        note=step.note,
        assignee=step.assignee,
        deadline_at=deadline,
    )
    session.add(row)
    session.flush()
    if from_state is not None:
        append_event(
            session,
            "case.transitioned",
            case_event(case) | {"from": from_state, "to": step.to, "actor": step.actor},
            case.grid_code,
        )
    return row


def _default_deadline(
    cases: CaseSettings, class_code: str | None, state: str, now: datetime
) -> datetime | None:
    event_class = cases.event_class(class_code)
    seconds = event_class.deadlines_s.get(state) if event_class else None  # type: ignore[call-overload]
    return now + timedelta(seconds=seconds) if seconds else None


def is_overdue(case: Case, now: datetime | None = None) -> bool:
    """Past the deadline of its current state (what ``raise_overdue`` and the
    ``overdue`` filter of the case list also decide)."""
    if case.deadline_at is None or case.state in TERMINAL:
        return False
    now = now or utcnow()
    deadline = case.deadline_at
    if deadline.tzinfo is None:  # SQLite gives naive UTC back
        now = now.replace(tzinfo=None)
    return deadline < now


def timeline(session: Session, case_id: str) -> list[CaseTransition]:
    query = select(CaseTransition).where(CaseTransition.case_id == case_id)
    return list(session.scalars(query.order_by(CaseTransition.id)))


def case_event(case: Case) -> dict[str, Any]:
    """What the ``case.*`` events say about a case."""
    return {
        "case_id": case.id,
        "external_ref": case.external_ref,
        "state": case.state,
        "class_code": case.class_code,
        "grid_code": case.grid_code,
        "assignee": case.assignee,
        "deadline_at": case.deadline_at.isoformat() if case.deadline_at else None,
    }


def raise_overdue(session: Session, now: datetime | None = None) -> int:
    """``case.overdue`` for each case whose deadline passed in its current state, once."""
    now = now or utcnow()
    due = session.scalars(
        select(Case.id).where(
            Case.deadline_at < now, Case.overdue_at.is_(None), Case.state.not_in(TERMINAL)
        )
    ).all()
    raised = 0
    for case_id in due:
        claimed = session.execute(
            update(Case)
            .where(Case.id == case_id, Case.overdue_at.is_(None), Case.deadline_at < now)
            .values(overdue_at=now)
        )
        if not claimed.rowcount:  # type: ignore[attr-defined]  # another process raised it
            continue
        case = session.get(Case, case_id)
        if case is None:
            continue
        session.refresh(case)
        append_event(session, "case.overdue", case_event(case), case.grid_code)
        raised += 1
    return raised


@dataclass(frozen=True)
class CaseCounts:
    """What the case metrics say: cases per (class, state), overdue ones among them, and
    transitions ever made per (class, state entered)."""

    cases: dict[tuple[str, str], int]
    overdue: dict[tuple[str, str], int]
    transitions: dict[tuple[str, str], int]


def case_counts(session: Session, now: datetime | None = None) -> CaseCounts:
    now = now or utcnow()
    cls = func.coalesce(Case.class_code, "")
    by_state = select(cls, Case.state, func.count()).group_by(cls, Case.state)
    late = by_state.where(Case.deadline_at < now, Case.state.not_in(TERMINAL))
    tcls = func.coalesce(Case.class_code, "")
    moves = (
        select(tcls, CaseTransition.to_state, func.count())
        .join(Case, Case.id == CaseTransition.case_id)
        .group_by(tcls, CaseTransition.to_state)
    )
    return CaseCounts(
        {(c, st): n for c, st, n in session.execute(by_state)},
        {(c, st): n for c, st, n in session.execute(late)},
        {(c, st): n for c, st, n in session.execute(moves)},
    )
