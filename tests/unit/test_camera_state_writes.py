"""Camera state writes at a city's rate (storage/cameras.py, runtime/camera_state.py), on
SQLite and PostgreSQL: a batch of transitions gives the same rows as writing them one by
one, and unchanged measurements are not rewritten every flush."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from runtime.camera_state import measurement_changed
from storage.cameras import StatusUpdate, record_transitions, update_measurements
from storage.db import Database
from storage.models import CameraStateChange, CameraStatus, utcnow
from tests.unit.cameras_db import database_with_cameras


def _db(url: str, cameras: int) -> Database:
    return database_with_cameras(url, cameras)


def test_a_batch_of_transitions_logs_each_change_in_order(db_url: str) -> None:
    db = _db(db_url, 2)
    t0 = utcnow()
    at = [t0 + timedelta(seconds=s) for s in range(5)]
    with db.session() as session:
        record_transitions(
            session,
            [
                ("cam_00000", StatusUpdate(state="connecting", worker_id="w"), at[0]),
                ("cam_00001", StatusUpdate(state="connecting", worker_id="w"), at[0]),
                ("cam_00000", StatusUpdate(state="online", fps=25.0, worker_id="w"), at[1]),
                # The same state again is no transition: logged once, "since" kept.
                ("cam_00000", StatusUpdate(state="online", fps=24.0, worker_id="w"), at[2]),
                ("cam_00001", StatusUpdate(state="offline", last_error="refused"), at[3]),
            ],
        )
    with db.session() as session:
        record_transitions(session, [("cam_00001", StatusUpdate(state="online"), at[4])])
    with db.session() as session:
        log = session.execute(
            select(
                CameraStateChange.camera_id, CameraStateChange.state, CameraStateChange.at
            ).order_by(CameraStateChange.camera_id, CameraStateChange.at)
        ).all()
        rows = {r.camera_id: r for r in session.scalars(select(CameraStatus))}
    assert [(c, s, a) for c, s, a in log] == [
        ("cam_00000", "connecting", at[0]),
        ("cam_00000", "online", at[1]),
        ("cam_00001", "connecting", at[0]),
        ("cam_00001", "offline", at[3]),
        ("cam_00001", "online", at[4]),
    ]
    a, b = rows["cam_00000"], rows["cam_00001"]
    assert (a.state, a.since, a.fps, a.updated_at) == ("online", at[1], 24.0, at[2])
    assert (b.state, b.since, b.last_error) == ("online", at[4], None)
    db.dispose()


def test_measurements_skip_a_camera_whose_state_moved_on(db_url: str) -> None:
    db = _db(db_url, 2)
    t0 = utcnow()
    with db.session() as session:
        record_transitions(
            session,
            [
                ("cam_00000", StatusUpdate(state="online", fps=10.0), t0),
                ("cam_00001", StatusUpdate(state="offline"), t0),
            ],
        )
    later = t0 + timedelta(seconds=2)
    with db.session() as session:
        update_measurements(
            session,
            {
                "cam_00000": StatusUpdate(state="online", fps=25.0, frames_dropped=3),
                # Still thought online by a stale snapshot: the stored "offline" wins.
                "cam_00001": StatusUpdate(state="online", fps=25.0),
            },
            later,
        )
    with db.session() as session:
        rows = {r.camera_id: r for r in session.scalars(select(CameraStatus))}
        logged = len(session.scalars(select(CameraStateChange)).all())
    a, b = rows["cam_00000"], rows["cam_00001"]
    assert (a.fps, a.frames_dropped, a.updated_at) == (25.0, 3, later)
    assert (b.state, b.fps) == ("offline", None)
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
    assert measurement_changed(old, new) is written
