"""Retention of the control-plane tables (storage/retention.py), on SQLite and PostgreSQL:
no subscription loses an event, compacted transitions leave the availability report as it
was, the audit log keeps six months whatever the setting says."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError

from config.settings import RetentionSettings
from storage import availability, retention
from storage.audit import audit
from storage.db import Database
from storage.events import append_event, last_seq, list_events
from storage.grid_models import DeliveryCursor
from storage.models import AuditEntry, Camera, CameraStateChange, Event

NOW = datetime.combine(datetime.now(UTC).date(), time(9, 30), UTC)
SETTINGS = RetentionSettings(batch=100)


# --- events ---------------------------------------------------------------------------------


def _events(db: Database, ages_days: Sequence[float]) -> list[int]:
    with db.session() as session:
        head = last_seq(session)
        for i in range(len(ages_days)):
            append_event(session, "camera.online", {"i": i})
    with db.session() as session:  # a seq is final once committed (PostgreSQL: migration 0016)
        seqs = [e.seq for e in list_events(session, after=head, limit=len(ages_days))]
        for seq, age in zip(seqs, ages_days, strict=True):
            at = NOW - timedelta(days=age)
            session.execute(update(Event).where(Event.seq == seq).values(at=at))
    return seqs


def _cursor(db: Database, consumer: str, seq: int) -> None:
    with db.session() as session:
        session.add(DeliveryCursor(consumer=consumer, last_delivered_seq=seq, failures=0))


def test_old_events_stay_until_the_slowest_subscription_delivered_them(db: Database) -> None:
    seqs = _events(db, [300] * 250 + [40, 20, 1])  # 250 old ones: several batches
    _cursor(db, "sub_fast", seqs[-1])
    _cursor(db, "sub_slow", seqs[199])  # lagging: delivered 200 of the old ones
    removed = retention.sweep(db.session, SETTINGS, NOW)
    assert removed.events == 200
    with db.session() as session:
        left = [e.seq for e in list_events(session, after=0, limit=1000)]
        assert left == seqs[200:]  # the slow one's 50 old events wait for it
        # A reader polling from below the horizon gets what remains, in order.
        assert [e.seq for e in list_events(session, after=seqs[10], limit=1000)] == left
    with db.session() as session:
        session.execute(
            update(DeliveryCursor)
            .where(DeliveryCursor.consumer == "sub_slow")
            .values(last_delivered_seq=seqs[-1])
        )
    assert retention.sweep(db.session, SETTINGS, NOW).events == 51  # 50 + the 40-day one
    with db.session() as session:
        assert [e.seq for e in list_events(session, after=0)] == seqs[-2:]


def test_the_newest_event_stays_however_old(db: Database) -> None:
    seqs = _events(db, [100, 90])
    assert retention.sweep(db.session, SETTINGS, NOW).events == 1
    with db.session() as session:  # its seq is never handed out again (SQLite reuses a max)
        assert [e.seq for e in list_events(session)] == [seqs[-1]]
        append_event(session, "camera.online", {})
    with db.session() as session:
        assert last_seq(session) > seqs[-1]


# --- transitions ----------------------------------------------------------------------------


def _history(db: Database, rng: random.Random, days: int) -> None:
    start = NOW - timedelta(days=days)
    with db.session() as session:
        for i in range(6):
            camera_id = f"cam_{i}"
            session.add(Camera(id=camera_id, name=camera_id, created_at=start))
            if i == 5:  # a camera that said "online" once, long ago, and stayed so
                session.add(CameraStateChange(camera_id=camera_id, state="online", at=start))
                continue
            at = start + timedelta(hours=rng.uniform(0, 48))
            while at < NOW:
                state = rng.choice(("online", "online", "offline", "connecting"))
                session.add(CameraStateChange(camera_id=camera_id, state=state, at=at))
                at += timedelta(hours=rng.expovariate(1 / (3 + 20 * (i % 2))))
        session.add(CameraStateChange(camera_id="cam_gone", state="online", at=start))


def _reports(db: Database, periods: list[tuple[datetime, datetime]]) -> list[float]:
    """Each camera's seconds online in each period, one after the other."""
    with db.session() as session:
        return [c.online_s for a, b in periods for c in availability.report(session, a, b).cameras]


def _transitions(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(CameraStateChange)) or 0)


def test_compacted_transitions_leave_the_report_as_it_was(db: Database) -> None:
    rng = random.Random(7)
    _history(db, rng, days=60)
    midnight = NOW.replace(hour=0, minute=30, second=0) - timedelta(minutes=30)
    cut = midnight - timedelta(days=SETTINGS.transitions_days)
    periods = [
        (midnight - timedelta(days=55), midnight - timedelta(days=40)),  # before the cut: days
        (midnight - timedelta(days=50), midnight),
        (cut, NOW),
        (NOW - timedelta(days=30, hours=5), NOW - timedelta(hours=3)),
        (NOW - timedelta(hours=20), NOW),
    ]
    before, count = _reports(db, periods), _transitions(db)
    # The service has been sweeping every day: each finished day got rolled up in time.
    for age in range(60, 0, -1):
        retention.sweep(db.session, SETTINGS, NOW - timedelta(days=age))
    swept = retention.sweep(db.session, SETTINGS, NOW)
    assert _transitions(db) < count - 100
    assert _reports(db, periods) == pytest.approx(before, abs=0.01)
    with db.session() as session:
        old = select(CameraStateChange.camera_id).where(CameraStateChange.at < cut)
        kept = session.scalars(old).all()
    assert sorted(kept) == [f"cam_{i}" for i in range(6)]  # each one's state at the cut
    assert retention.sweep(db.session, SETTINGS, NOW) == retention.Swept()  # nothing left
    assert swept.days_rolled_up == 1


# --- audit ----------------------------------------------------------------------------------


def test_audit_rows_are_kept_six_months(db: Database) -> None:
    real_now = datetime.now(UTC)
    ages = {"a year": 365, "200 days": 200, "just over 180": 180.5, "179 days": 179, "new": 0}
    with db.session() as session:
        for actor, days in ages.items():
            at = real_now - timedelta(days=days)
            audit(session, actor, "read", "clip", "i", at=at)
    assert retention.sweep(db.session, SETTINGS, real_now).audit == 2
    with db.session() as session:
        left = session.scalars(select(AuditEntry.actor).order_by(AuditEntry.id)).all()
    assert left == ["just over 180", "179 days", "new"]  # a day of margin for the clocks
    # The database itself refuses younger rows, whoever asks.
    with pytest.raises(DBAPIError, match="append-only"), db.session() as session:
        session.execute(text("DELETE FROM audit_log WHERE actor = '179 days'"))


def test_the_audit_horizon_cannot_be_set_below_six_months() -> None:
    with pytest.raises(ValidationError, match="audit_days"):
        RetentionSettings(audit_days=179)
    assert RetentionSettings().audit_days == 180
