"""A worker that restarts fails only the clips its own spool lost, not those another worker on
the same host is still finishing (the city soak found that: both workers ran on one host and
the restarted one marked the other's pending clip failed)."""

from __future__ import annotations

from pathlib import Path

from runtime.cameras import spool_identity
from storage.db import Database
from storage.incidents import NewIncident, create_incident, fail_lost_clips
from storage.models import Camera, Incident, utcnow


def test_a_restarted_worker_fails_only_its_own_lost_clips(db: Database, tmp_path: Path) -> None:
    mine = spool_identity("host-1", tmp_path / "worker-a" / "spool")
    theirs = spool_identity("host-1", tmp_path / "worker-b" / "spool")
    assert mine != theirs and mine.startswith("host-1:")
    with db.session() as session:
        session.add(Camera(id="cam_a", name="a"))
        session.flush()
        ids = {}
        for name, spool in (("lost", mine), ("kept", mine), ("other", theirs)):
            row = create_incident(
                session, NewIncident("cam_a", None, "motion", utcnow(), spool_host=spool)
            )
            row.ended_at = utcnow()
            ids[name] = row.id
    with db.session() as session:
        assert fail_lost_clips(session, mine, spooled={ids["kept"]}) == 1
    with db.session() as session:
        states = {name: session.get_one(Incident, i).clip_state for name, i in ids.items()}
    assert states == {"lost": "failed", "kept": "pending", "other": "pending"}


def test_a_long_spool_path_still_fits_the_column(tmp_path: Path) -> None:
    ident = spool_identity("h" * 60, tmp_path / ("d" * 250))
    assert len(ident) <= 200 and ident.startswith("h" * 60 + ":sha256:")
