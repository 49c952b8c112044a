"""Retention removes old clips, except those of incidents linked to an open case."""

from __future__ import annotations

from datetime import timedelta

from config.settings import CaseSettings
from runtime.retention import RetentionWorker
from storage.cases import NewCase, create_case, link, set_status
from storage.errors import ObjectNotFound
from storage.incidents import ArchivedClip, NewIncident, create_incident, mark_archived
from storage.models import Incident, utcnow
from tests.api.conftest import Api


def _archived_incident(api: Api, age_days: float) -> str:
    started = utcnow() - timedelta(days=age_days)
    with api.services.tx() as session:
        row = create_incident(session, NewIncident("cam_r", None, "motion", started))
        clip_key = f"clips/cam_r/x/{row.id}.mp4"
        snap_key = f"snapshots/cam_r/x/{row.id}.jpg"
        info = api.services.objects.put_bytes(clip_key, b"mp4 bytes " + row.id.encode())
        api.services.objects.put_bytes(snap_key, b"jpeg")
        clip = ArchivedClip(clip_key, info.sha256, info.size, 1.0, snap_key, None)
        mark_archived(session, row.id, clip)
        return row.id


def test_old_clips_expire_unless_held_by_an_open_case(api: Api) -> None:
    days = api.services.settings.recording.retention_days
    old = _archived_incident(api, days + 5)
    held = _archived_incident(api, days + 5)
    was_held = _archived_incident(api, days + 5)
    recent = _archived_incident(api, days - 1)
    with api.services.tx() as session:
        open_case = create_case(session, NewCase("P-1", "theft", "police"), "test", CaseSettings())
        closed_case = create_case(
            session, NewCase("D-2", "dispute", "dispute"), "test", CaseSettings()
        )
        link(session, open_case, session.get_one(Incident, held), "test")
        link(session, closed_case, session.get_one(Incident, was_held), "test")
        set_status(session, closed_case, "closed", "test", CaseSettings())

    assert RetentionWorker(api.services).sweep() == 2

    with api.services.db.session() as session:
        state = {i: session.get_one(Incident, i) for i in (old, held, was_held, recent)}
        for incident_id in (old, was_held):
            row = state[incident_id]
            assert row.clip_state == "expired"
            for key in (row.clip_key, row.snapshot_key):
                assert key is not None
                try:
                    api.services.objects.stat(key)
                    raise AssertionError(f"{key} should be gone")
                except ObjectNotFound:
                    pass
        for incident_id in (held, recent):
            row = state[incident_id]
            assert row.clip_state == "archived" and row.clip_key is not None
            assert api.services.objects.verify(row.clip_key, row.clip_sha256 or "")
    shown = api.client.get(f"/api/v1/incidents/{old}", headers=api.as_role("operator")).json()
    assert shown["clip"]["state"] == "expired" and shown["clip"]["url"] is None
    assert RetentionWorker(api.services).sweep() == 0  # idempotent
