"""Retention of the control-plane tables: old rows leave in short batches.

Each table has its horizon (``config.settings.RetentionSettings``; docs/deployment.md,
"Retention", says why each), and each batch is one short transaction deleting at most
``batch`` rows chosen by an index, so a large backlog never holds a long lock on a table
the service writes all the time.

* ``camera_state_log``: every finished day is rolled up first (storage/availability.py);
  then transitions before the horizon (a UTC midnight) go, except each camera's last one
  before it — its state then, which the report needs for what follows. Transitions of
  cameras that no longer exist go entirely.
* ``events``: old events go, but never one a subscription (or MQTT) has not delivered yet,
  and never the newest (SQLite would hand its ``seq`` out again).
* ``audit_log``: rows older than ``audit_days`` (at least 180; the database itself refuses
  to delete younger ones, migration 0013), from the start of the hash chain only.
* ``camera_availability_daily`` / ``availability_rollups``: days older than
  ``availability_days``.

The delivery log is pruned by the delivery worker (``delivery.log_retention_days``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import Delete

from config.settings import RetentionSettings
from storage import audit_chain, availability
from storage.grid_models import DeliveryCursor
from storage.models import (
    AvailabilityRollup,
    Camera,
    CameraAvailabilityDay,
    CameraQualityChange,
    CameraStateChange,
    Event,
)

log = logging.getLogger(__name__)

Sessions = Callable[[], AbstractContextManager[Session]]
#: The database's audit floor runs on its own clock: a day more keeps a clock that is a
#: little ahead from asking it to delete a row it must refuse (and failing the batch).
AUDIT_MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class Swept:
    """What one sweep did."""

    days_rolled_up: int = 0
    transitions: int = 0
    quality_transitions: int = 0
    events: int = 0
    audit: int = 0
    availability_days: int = 0

    def __bool__(self) -> bool:
        return any(
            (
                self.days_rolled_up,
                self.transitions,
                self.quality_transitions,
                self.events,
                self.audit,
                self.availability_days,
            )
        )


def sweep(sessions: Sessions, settings: RetentionSettings, now: datetime) -> Swept:
    """Roll finished days up, then delete what is past each table's horizon."""
    cut = _midnight(now) - timedelta(days=settings.transitions_days)
    return Swept(
        days_rolled_up=roll_up(sessions, now, oldest=cut.date()),
        transitions=compact_transitions(sessions, cut, settings.batch),
        quality_transitions=compact_transitions(sessions, cut, settings.batch, CameraQualityChange),
        events=delete_events(sessions, now - timedelta(days=settings.events_days), settings.batch),
        audit=delete_audit(
            sessions, now - timedelta(days=settings.audit_days) - AUDIT_MARGIN, settings.batch
        ),
        availability_days=delete_availability(
            sessions, (_midnight(now) - timedelta(days=settings.availability_days)).date()
        ),
    )


def roll_up(sessions: Sessions, now: datetime, oldest: date) -> int:
    """Roll up every finished day from ``oldest`` on not rolled up yet, one transaction each;
    returns how many days. Cheap when there is nothing to do (two indexed lookups)."""
    with sessions() as session:
        days = availability.pending_days(session, now, oldest)
    for day in days:
        with sessions() as session:
            cameras = availability.rollup(session, day)
        log.info("availability of %s rolled up: %d camera(s)", day, cameras)
    if days:
        with sessions() as session:
            availability.analyze_daily(session)
    return len(days)


def compact_transitions(
    sessions: Sessions,
    cut: datetime,
    batch: int,
    table: type[CameraStateChange | CameraQualityChange] = CameraStateChange,
) -> int:
    """Delete transitions before ``cut`` but each existing camera's last one before it
    (``table``: the online/offline transitions, or the picture-quality ones)."""
    row, later = table, aliased(table)
    superseded = exists().where(
        later.camera_id == row.camera_id,
        later.at < cut,
        or_(later.at > row.at, and_(later.at == row.at, later.id > row.id)),
    )
    gone = ~exists().where(Camera.id == row.camera_id)
    # correlate(None): the subqueries read the table the DELETE deletes from, as their own.
    victims = select(row.id).where(row.at < cut, or_(superseded, gone)).limit(batch).correlate(None)
    return _in_batches(sessions, lambda: delete(row).where(row.id.in_(victims)), batch)


def delete_events(sessions: Sessions, before: datetime, batch: int) -> int:
    """Delete events older than ``before`` that every consumer has delivered."""
    with sessions() as session:
        head = int(session.scalar(select(func.max(Event.seq))) or 0)
        slowest = session.scalar(select(func.min(DeliveryCursor.last_delivered_seq)))
    upto = min(head - 1, head if slowest is None else int(slowest))
    oldest = (
        select(Event.seq).where(Event.seq <= upto).order_by(Event.seq).limit(batch).correlate(None)
    )
    removed = _in_batches(
        sessions, lambda: delete(Event).where(Event.seq.in_(oldest), Event.at < before), batch
    )
    _say_who_holds_events(sessions, before)
    return removed


def _say_who_holds_events(sessions: Sessions, before: datetime) -> None:
    with sessions() as session:
        first = session.execute(select(Event.seq, Event.at).order_by(Event.seq).limit(1)).first()
        if first is None or first.at >= before:
            return
        cursor = session.execute(
            select(DeliveryCursor.consumer, DeliveryCursor.last_delivered_seq)
            .order_by(DeliveryCursor.last_delivered_seq)
            .limit(1)
        ).first()
    if cursor is not None and cursor.last_delivered_seq < first.seq + 1:
        log.warning(
            "events from seq %d (%s) are past their retention but kept: %s has delivered "
            "only up to seq %d",
            first.seq,
            first.at.isoformat(),
            cursor.consumer,
            cursor.last_delivered_seq,
        )


def delete_audit(sessions: Sessions, before: datetime, batch: int) -> int:
    """Delete audit rows older than ``before``, from the start of the hash chain, moving
    its base along (storage/audit_chain.py). A database role without DELETE on the audit
    log (docs/security.md's recipe) keeps them: said once per sweep, not an error."""
    removed = 0
    while True:
        try:
            with sessions() as session:
                count = audit_chain.prune(session, before, batch)
        except DBAPIError as err:
            log.warning(
                "audit rows older than %s kept: the database refused (%s)", before, err.orig
            )
            return removed
        removed += count
        if count < batch:
            return removed


def delete_availability(sessions: Sessions, before: date) -> int:
    """Delete the daily availability rows of days before ``before``, a day per transaction;
    returns how many days."""
    removed = 0
    while True:
        with sessions() as session:
            day = session.scalar(
                select(func.min(CameraAvailabilityDay.day)).where(
                    CameraAvailabilityDay.day < before
                )
            )
            if day is None:
                session.execute(delete(AvailabilityRollup).where(AvailabilityRollup.day < before))
                return removed
            session.execute(delete(CameraAvailabilityDay).where(CameraAvailabilityDay.day == day))
            session.execute(delete(AvailabilityRollup).where(AvailabilityRollup.day == day))
        removed += 1


def _in_batches(sessions: Sessions, statement: Callable[[], Delete], batch: int) -> int:
    """Run a DELETE of at most ``batch`` rows, one transaction each, until one deletes fewer."""
    removed = 0
    while True:
        with sessions() as session:
            count = int(session.execute(statement()).rowcount)  # type: ignore[attr-defined]
        removed += count
        if count < batch:
            return removed


def _midnight(t: datetime) -> datetime:
    return datetime.combine(t.astimezone(UTC).date(), time(), UTC)
