"""The availability report in SQL gives the numbers of the reference definition
(``storage.cameras.online_seconds``), on SQLite and PostgreSQL, whatever days are rolled up;
and 完好 time, online while the picture was not degraded, that of :func:`good_seconds`.

Random histories: cameras with many transitions, none, a few added during the period, ties
of ``at``, transitions exactly at midnight, picture states changing independently of the
online state; random periods, aligned to days or not.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from storage import availability
from storage.cameras import online_seconds
from storage.db import Database
from storage.models import (
    AvailabilityRollup,
    Base,
    Camera,
    CameraAvailabilityDay,
    CameraQualityChange,
    CameraStateChange,
)

BASE = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 6
ONE_DAY = timedelta(days=1)
STATES = ("online", "offline", "connecting")
PICTURES = ("ok", "degraded", "unknown")
Changes = list[tuple[str, datetime]]


def _random_time(rng: random.Random) -> datetime:
    if rng.random() < 0.1:  # exactly at a midnight
        return BASE + timedelta(days=rng.randrange(DAYS + 1))
    return BASE + timedelta(seconds=rng.uniform(-86400, (DAYS + 1) * 86400))


def fill(db: Database, rng: random.Random, cameras: int = 8) -> list[str]:
    ids = [f"cam_{i:02d}" for i in range(cameras)]
    with db.session() as session:
        for i, camera_id in enumerate(ids):
            created = BASE - timedelta(days=30) + timedelta(seconds=i)
            session.add(Camera(id=camera_id, name=f"camera {i}", grid_code=f"g{i % 3}"))
            session.flush()
            session.get_one(Camera, camera_id).created_at = created
            if i == 0:
                continue  # never reported a state
            times = sorted(_random_time(rng) for _ in range(rng.randrange(1, 30)))
            if i == 1:
                times = [times[0]] * 3 + times  # ties of at: id decides
            for at in times:
                session.add(CameraStateChange(camera_id=camera_id, state=rng.choice(STATES), at=at))
            if i % 4 == 3:
                continue  # a camera whose picture was never checked
            pictures = sorted(_random_time(rng) for _ in range(rng.randrange(1, 12)))
            if i % 4 == 2:
                pictures.append(rng.choice(times))  # at the same time as an online change
            for at in sorted(pictures):
                state = rng.choice(PICTURES)
                session.add(CameraQualityChange(camera_id=camera_id, state=state, at=at))
    return ids


def good_seconds(changes: Changes, pictures: Changes, since: datetime, until: datetime) -> float:
    """完好 seconds within [since, until): online, and the picture not degraded."""
    degraded = _stretches(pictures, "degraded", since, until)
    total = 0.0
    for lo, hi in _stretches(changes, "online", since, until):
        total += (hi - lo).total_seconds()
        for d_lo, d_hi in degraded:
            overlap = (min(hi, d_hi) - max(lo, d_lo)).total_seconds()
            total -= max(overlap, 0.0)
    return total


def _stretches(
    changes: Changes, state: str, since: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    found = []
    for i, (s, at) in enumerate(changes):
        end = changes[i + 1][1] if i + 1 < len(changes) else until
        lo, hi = max(at, since), min(end, until)
        if s == state and hi > lo:
            found.append((lo, hi))
    return found


def _log(
    db: Database, log: type[CameraStateChange | CameraQualityChange], until: datetime
) -> dict[str, Changes]:
    with db.session() as session:
        ids = list(session.scalars(select(Camera.id).order_by(Camera.created_at, Camera.id)))
        rows = session.execute(
            select(log.camera_id, log.state, log.at)
            .where(log.at < until)
            .order_by(log.camera_id, log.at, log.id)
        ).all()
    changes: dict[str, Changes] = {i: [] for i in ids}
    for camera_id, state, at in rows:
        changes[camera_id].append((state, at))
    return changes


def reference(db: Database, since: datetime, until: datetime) -> dict[str, tuple[float, float]]:
    """Per camera, (online seconds, 完好 seconds) by the reference definitions."""
    changes = _log(db, CameraStateChange, until)
    pictures = _log(db, CameraQualityChange, until)
    return {
        i: (online_seconds(c, since, until), good_seconds(c, pictures[i], since, until))
        for i, c in changes.items()
    }


def random_period(rng: random.Random) -> tuple[datetime, datetime]:
    a, b = sorted(_random_time(rng) for _ in range(2))
    if rng.random() < 0.3:
        a = a.replace(hour=0, minute=0, second=0, microsecond=0)
    if b <= a:
        b = a + timedelta(seconds=rng.uniform(1, 3 * 86400))
    return a, b


def check(db: Database, since: datetime, until: datetime) -> dict[str, tuple[float, float]]:
    expected = reference(db, since, until)
    with db.session() as session:
        got = availability.report(session, since, until)
        totals = availability.report(session, since, until, per_camera=False)
    assert [r.camera_id for r in got.cameras] == list(expected)
    for row in got.cameras:
        online, good = expected[row.camera_id]
        assert row.online_s == pytest.approx(online, abs=0.01), row.camera_id
        assert row.good_s == pytest.approx(good, abs=0.01), row.camera_id
        assert row.period_s == (until - since).total_seconds()
    assert totals.camera_count == got.camera_count == len(expected)
    assert totals.online_s == pytest.approx(sum(o for o, _ in expected.values()), abs=0.1)
    assert totals.good_s == pytest.approx(sum(g for _, g in expected.values()), abs=0.1)
    assert totals.at_or_above_98 == got.at_or_above_98
    assert totals.good_at_or_above_98 == got.good_at_or_above_98
    return expected


@pytest.mark.parametrize("seed", range(4))
def test_the_sql_report_matches_the_reference(db: Database, seed: int) -> None:
    rng = random.Random(seed)
    fill(db, rng)
    periods = [random_period(rng) for _ in range(6)]
    periods.append((BASE, BASE + timedelta(days=DAYS)))  # whole days only
    for since, until in periods:  # nothing rolled up: all from the log
        check(db, since, until)
    whole = check(db, BASE, BASE + timedelta(days=DAYS))
    assert sum(1 for online, good in whole.values() if online - good > 60) >= 2  # not vacuous
    days = [BASE.date() + timedelta(days=i) for i in range(-1, DAYS + 1)]
    with db.session() as session:
        for day in rng.sample(days, len(days) // 2):
            availability.rollup(session, day)
    for since, until in periods:  # some days from their rows, the rest from the log
        check(db, since, until)
    with db.session() as session:
        for day in days:
            availability.rollup(session, day)
    with db.session() as session:  # idempotent: a day rolled up again stays the same
        availability.rollup(session, days[2])
        assert session.scalar(
            select(AvailabilityRollup.cameras).where(AvailabilityRollup.day == days[2])
        ) == len(
            session.scalars(
                select(CameraAvailabilityDay).where(CameraAvailabilityDay.day == days[2])
            ).all()
        )
    for since, until in periods:
        check(db, since, until)


def test_a_day_row_says_what_the_day_was(db: Database) -> None:
    day = date(2026, 3, 2)
    at = datetime(2026, 3, 2, 6, tzinfo=UTC)
    with db.session() as session:
        session.add(Camera(id="cam_a", name="a"))
        session.add(CameraStateChange(camera_id="cam_a", state="online", at=at - timedelta(days=1)))
        session.add(CameraStateChange(camera_id="cam_a", state="offline", at=at))
        session.add(
            CameraStateChange(camera_id="cam_a", state="online", at=at + timedelta(hours=1))
        )
        # Degraded 10:00-11:30 and from 23:00 on, online all that time.
        for hour, state in ((10, "degraded"), (11.5, "ok"), (23, "degraded")):
            t = datetime(2026, 3, 2, tzinfo=UTC) + timedelta(hours=hour)
            session.add(CameraQualityChange(camera_id="cam_a", state=state, at=t))
        # Degraded while offline (06:30-06:45) costs no 完好 time beyond the offline time.
        session.add(
            CameraQualityChange(camera_id="cam_a", state="degraded", at=at + timedelta(minutes=30))
        )
        session.add(
            CameraQualityChange(camera_id="cam_a", state="ok", at=at + timedelta(minutes=45))
        )
    with db.session() as session:
        assert availability.rollup(session, day) == 1
        row = session.get_one(CameraAvailabilityDay, ("cam_a", day))
        assert (row.online_s, row.known_s, row.changes, row.end_state) == pytest.approx(
            (23 * 3600, 86400, 2, "online")
        )
        assert row.good_s == pytest.approx(23 * 3600 - 1.5 * 3600 - 3600)
        assert row.quality_end_state == "degraded"


def test_pending_days_are_the_finished_ones_not_rolled_up(db: Database) -> None:
    with db.session() as session:
        session.add(Camera(id="cam_a", name="a"))
        session.add(CameraStateChange(camera_id="cam_a", state="online", at=BASE))
    now = BASE + timedelta(days=3, minutes=5)  # day 3 ended, but less than GRACE ago
    first = BASE.date()
    with db.session() as session:
        assert availability.pending_days(session, now, first) == [first, first + ONE_DAY]
        availability.rollup(session, first + ONE_DAY)
        later = now + timedelta(hours=1)
        assert availability.pending_days(session, later, first) == [first, first + 2 * ONE_DAY]
        assert availability.pending_days(session, later, first + ONE_DAY) == [first + 2 * ONE_DAY]


def test_the_migration_creates_what_the_models_describe(db: Database) -> None:
    import storage.grid_models  # noqa: F401  (every table in the metadata, as migrations see it)

    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    mine = ("camera_availability_daily", "availability_rollups", "ix_camera_state_log_at")
    assert [d for d in diffs if any(name in repr(d) for name in mine)] == []
