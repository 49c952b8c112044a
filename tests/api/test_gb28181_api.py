"""The GB/T 28181 device API on SQLite and PostgreSQL: what an integrator sets and reads.

Devices registering for real (SIPp) are in tests/integration/test_gb28181.py.
"""

from __future__ import annotations

from datetime import timedelta

from storage import gb28181 as repo
from storage.models import utcnow
from tests.api.conftest import Api

DEVICE = "34020000001320000001"
CHANNEL = "34020000001310000001"


def test_a_device_is_created_changed_listed_and_deleted(api: Api) -> None:
    who = api.as_role("integrator")
    created = api.client.put(
        f"/api/v1/gb28181/devices/{DEVICE}",
        json={"password": "s3cret-pw", "name": "东门"},
        headers=who,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["has_password"] is True and body["online"] is False and body["name"] == "东门"
    assert "s3cret-pw" not in created.text
    changed = api.client.put(
        f"/api/v1/gb28181/devices/{DEVICE}", json={"enabled": False}, headers=who
    )
    assert changed.status_code == 200 and changed.json()["enabled"] is False
    listed = api.client.get("/api/v1/gb28181/devices", headers=who).json()["items"]
    assert [d["device_id"] for d in listed] == [DEVICE]
    assert "s3cret-pw" not in api.client.get("/api/v1/gb28181/devices", headers=who).text
    with api.services.db.session() as session:  # stored encrypted
        assert repo.device_password(session, DEVICE, api.services.secrets) == "s3cret-pw"
    assert api.client.delete(f"/api/v1/gb28181/devices/{DEVICE}", headers=who).status_code == 204
    assert api.client.get(f"/api/v1/gb28181/devices/{DEVICE}", headers=who).status_code == 404
    assert api.client.delete(f"/api/v1/gb28181/devices/{DEVICE}", headers=who).status_code == 404


def test_bad_ids_and_roles_are_refused(api: Api) -> None:
    who = api.as_role("integrator")
    bad = api.client.put("/api/v1/gb28181/devices/12345", json={}, headers=who)
    assert bad.status_code == 422 and "device_id" in bad.text
    extra = api.client.put(f"/api/v1/gb28181/devices/{DEVICE}", json={"x": 1}, headers=who)
    assert extra.status_code == 422 and "x" in extra.text
    for role in ("operator", "grid_platform"):
        got = api.client.get("/api/v1/gb28181/devices", headers=api.as_role(role))
        assert got.status_code == 403


def test_a_channel_camera_needs_a_known_device_and_channel(api: Api) -> None:
    who = api.as_role("integrator")
    body = {"name": "gate", "gb28181": {"device_id": DEVICE, "channel_id": CHANNEL}}
    unknown = api.client.post("/api/v1/cameras", json=body, headers=who)
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "gb28181", "device_id"]
    now = utcnow()
    with api.services.tx() as session:
        repo.register(
            session,
            DEVICE,
            transport="UDP",
            address="127.0.0.1:5062",
            contact=f"sip:{DEVICE}@127.0.0.1:5062",
            expires_at=now + timedelta(hours=1),
            now=now,
            accept_unknown=True,
        )
    no_channel = api.client.post("/api/v1/cameras", json=body, headers=who)
    assert no_channel.status_code == 422
    assert no_channel.json()["detail"][0]["loc"] == ["body", "gb28181", "channel_id"]
    with api.services.tx() as session:
        repo.replace_catalog(
            session,
            DEVICE,
            [repo.CatalogItem(CHANNEL, name="东门", longitude=116.4, latitude=39.9)],
            now,
        )
    made = api.client.post("/api/v1/cameras", json=body, headers=who)
    assert made.status_code == 201, made.text
    camera = made.json()
    assert camera["gb28181"] == body["gb28181"] and camera["rtsp_url"] is None
    assert camera["location"] == {"lat": 39.9, "lon": 116.4}
    device = api.client.get(f"/api/v1/gb28181/devices/{DEVICE}", headers=who).json()
    assert device["channels"][0]["camera_id"] == camera["id"]


def test_asking_for_a_catalog_needs_the_endpoint_in_this_process(api: Api) -> None:
    who = api.as_role("integrator")
    assert api.client.put(f"/api/v1/gb28181/devices/{DEVICE}", json={}, headers=who).is_success
    got = api.client.post(f"/api/v1/gb28181/devices/{DEVICE}/catalog", headers=who)
    assert got.status_code == 503 and "gb28181.enabled" in got.json()["detail"]
    missing = api.client.post("/api/v1/gb28181/devices/" + "4" * 20 + "/catalog", headers=who)
    assert missing.status_code == 404
