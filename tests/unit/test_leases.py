"""Camera leases (storage/leases.py) on SQLite and PostgreSQL: fair shares, take-over of a
dead worker's cameras, surplus when a worker joins, and no camera on two workers when many
balance at once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest

from storage.db import Database
from storage.leases import Renewed, heartbeat, holder, release, renew, take
from storage.models import Camera, CameraLease, Worker, utcnow
from tests.unit.cameras_db import database_with_cameras

LEASE_S = 15.0


def _db(url: str, cameras: int) -> Database:
    return database_with_cameras(url, cameras, pool_size=20)


def _beat(db: Database, worker_id: str, now: datetime) -> None:
    row = Worker(id=worker_id, host="h", pid=1, role="worker", started_at=now, last_seen=now)
    with db.session() as session:
        heartbeat(session, row, now)


def _renew_and_take(db: Database, worker_id: str, now: datetime) -> Renewed:
    """What runtime.leasing.LeaseKeeper does: renew, then take what is missing of the share
    (two transactions)."""
    with db.session() as session:
        held = renew(session, worker_id, now, LEASE_S)
    if len(held.cameras) < held.share:
        with db.session() as session:
            wanted = held.share - len(held.cameras)
            taken = take(session, worker_id, now, LEASE_S, wanted)
        held = Renewed(sorted(held.cameras + (taken or [])), held.share)
    return held


def _balance(db: Database, worker_id: str, now: datetime) -> list[str]:
    return _renew_and_take(db, worker_id, now).cameras


def test_workers_take_fair_shares_and_a_dead_ones_cameras(db_url: str) -> None:
    db = _db(db_url, 10)
    now = utcnow()
    for w in ("a", "b", "c"):
        _beat(db, w, now)
    held = {w: _balance(db, w, now) for w in ("a", "b", "c")}
    assert sorted(len(v) for v in held.values()) == [2, 4, 4]  # ceil(10 / 3) = 4
    assert sorted(c for v in held.values() for c in v) == [f"cam_{i:05d}" for i in range(10)]
    # "a" dies: after the lease time its cameras go to the two others, each to one.
    later = now + timedelta(seconds=LEASE_S + 1)
    for w in ("b", "c"):
        _beat(db, w, later)
    after = {w: _balance(db, w, later) for w in ("b", "c")}
    assert Counter(c for v in after.values() for c in v) == Counter(
        f"cam_{i:05d}" for i in range(10)
    )
    assert sorted(len(v) for v in after.values()) == [5, 5]
    with db.session() as session:
        lost = held["a"][0]
        found = holder(session, lost, later)
        assert found is not None and found.worker_id in ("b", "c")
    db.dispose()


def test_a_joining_worker_gets_the_surplus_once_it_is_released(db_url: str) -> None:
    db = _db(db_url, 6)
    now = utcnow()
    _beat(db, "a", now)
    assert len(_balance(db, "a", now)) == 6
    _beat(db, "b", now)
    holding = _renew_and_take(db, "a", now)
    assert len(holding.surplus) == 3 and len(holding.cameras) == 6
    assert _balance(db, "b", now) == []  # nothing free until "a" stops and releases
    with db.session() as session:
        release(session, "a", holding.surplus)
    assert sorted(_balance(db, "b", now)) == sorted(holding.surplus)


def test_a_disabled_cameras_lease_goes(db_url: str) -> None:
    db = _db(db_url, 3)
    now = utcnow()
    _beat(db, "a", now)
    assert len(_balance(db, "a", now)) == 3
    with db.session() as session:
        cam = session.get(Camera, "cam_00001")
        assert cam is not None
        cam.enabled = False
    assert _balance(db, "a", now) == ["cam_00000", "cam_00002"]
    with db.session() as session:
        assert session.get(CameraLease, "cam_00001") is None


@pytest.mark.postgres
def test_many_workers_balancing_at_once_never_share_a_camera(shared_db: str) -> None:
    """16 workers on threads, each balancing repeatedly on its own connection (PostgreSQL
    row locks, SKIP LOCKED and ON CONFLICT at work): every camera ends on exactly one
    worker, and the spread is fair."""
    db = _db(shared_db, 400)
    now = utcnow()
    workers = [f"w{i:02d}" for i in range(16)]
    for w in workers:
        _beat(db, w, now)
    errors: list[BaseException] = []
    start = threading.Barrier(len(workers))

    def run(worker_id: str) -> None:
        try:
            start.wait()
            for _ in range(40):  # a worker that finds another one taking retries later
                if len(_balance(db, worker_id, now)) >= 25:
                    break
                time.sleep(0.01)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with db.session() as session:
        rows = session.query(CameraLease.camera_id, CameraLease.worker_id).all()
    assert len(rows) == 400 and len({c for c, _ in rows}) == 400
    per_worker = Counter(w for _, w in rows)
    assert max(per_worker.values()) <= 25  # ceil(400 / 16)
    db.dispose()
