"""Camera state writes at a city's rate (storage/cameras.py, runtime/camera_state.py), on
SQLite and PostgreSQL: a batch of transitions gives the same rows as writing them one by
one, and unchanged measurements are not rewritten every flush."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from storage.cameras import StatusUpdate, record_transitions, update_measurements
from storage.db import Database
from storage.models import Camera, CameraStateChange, CameraStatus, utcnow


def _db(url: str, cameras: int) -> Database:
    db = Database(url)
    db.migrate()
    now = utcnow()
    with db.session() as session:
        session.add_all(
            Camera(
                id=f"cam_{i}",
                name=f"c{i}",
                zones=[],
                analytics={},
                recording={},
                enabled=True,
                created_at=now,
                updated_at=now,
            )
            for i in range(cameras)
        )
    return db


def test_a_batch_of_transitions_logs_each_change_in_order(db_url: str) -> None:
    db = _db(db_url, 2)
    t0 = utcnow()
    at = [t0 + timedelta(seconds=s) for s in range(5)]
    with db.session() as session:
        record_transitions(
            session,
            [
                ("cam_0", StatusUpdate(state="connecting", worker_id="w"), at[0]),
                ("cam_1", StatusUpdate(state="connecting", worker_id="w"), at[0]),
                ("cam_0", StatusUpdate(state="online", fps=25.0, worker_id="w"), at[1]),
                # The same state again is no transition: logged once, "since" kept.
                ("cam_0", StatusUpdate(state="online", fps=24.0, worker_id="w"), at[2]),
                ("cam_1", StatusUpdate(state="offline", last_error="refused"), at[3]),
            ],
        )
    with db.session() as session:
        record_transitions(session, [("cam_1", StatusUpdate(state="online"), at[4])])
    with db.session() as session:
        log = session.execute(
            select(
                CameraStateChange.camera_id, CameraStateChange.state, CameraStateChange.at
            ).order_by(CameraStateChange.camera_id, CameraStateChange.at)
        ).all()
        rows = {r.camera_id: r for r in session.scalars(select(CameraStatus))}
    assert [(c, s, a) for c, s, a in log] == [
        ("cam_0", "connecting", at[0]),
        ("cam_0", "online", at[1]),
        ("cam_1", "connecting", at[0]),
        ("cam_1", "offline", at[3]),
        ("cam_1", "online", at[4]),
    ]
    assert (rows["cam_0"].state, rows["cam_0"].since, rows["cam_0"].fps) == ("online", at[1], 24.0)
    assert rows["cam_0"].updated_at == at[2]
    assert (rows["cam_1"].state, rows["cam_1"].since, rows["cam_1"].last_error) == (
        "online",
        at[4],
        None,
    )
    db.dispose()


def test_measurements_skip_a_camera_whose_state_moved_on(db_url: str) -> None:
    db = _db(db_url, 2)
    t0 = utcnow()
    with db.session() as session:
        record_transitions(
            session,
            [
                ("cam_0", StatusUpdate(state="online", fps=10.0), t0),
                ("cam_1", StatusUpdate(state="offline"), t0),
            ],
        )
    later = t0 + timedelta(seconds=2)
    with db.session() as session:
        update_measurements(
            session,
            {
                "cam_0": StatusUpdate(state="online", fps=25.0, frames_dropped=3),
                # Still thought online by a stale snapshot: the stored "offline" wins.
                "cam_1": StatusUpdate(state="online", fps=25.0),
            },
            later,
        )
    with db.session() as session:
        rows = {r.camera_id: r for r in session.scalars(select(CameraStatus))}
        logged = len(session.scalars(select(CameraStateChange)).all())
    assert (rows["cam_0"].fps, rows["cam_0"].frames_dropped, rows["cam_0"].updated_at) == (
        25.0,
        3,
        later,
    )
    assert (rows["cam_1"].state, rows["cam_1"].fps) == ("offline", None)
    assert logged == 2  # measurements are no transitions
    db.dispose()


@pytest.mark.parametrize(
    ("old", "new", "written"),
    [
        (StatusUpdate(state="online", fps=25.0), StatusUpdate(state="online", fps=24.5), False),
        (StatusUpdate(state="online", fps=25.0), StatusUpdate(state="online", fps=20.0), True),
        (StatusUpdate(state="online", fps=None), StatusUpdate(state="online", fps=5.0), True),
        (
            StatusUpdate(state="online", reconnects=1),
            StatusUpdate(state="online", reconnects=2),
            True,
        ),
        (StatusUpdate(state="online"), StatusUpdate(state="online", frames_dropped=1), True),
        (StatusUpdate(state="online"), StatusUpdate(state="online", last_error="x"), True),
    ],
)
def test_a_measurement_is_written_early_only_when_it_moved(
    old: StatusUpdate, new: StatusUpdate, written: bool
) -> None:
    from runtime.camera_state import measurement_changed

    assert measurement_changed(old, new) is written
