"""Subscriptions API: create without echoing the secret, list, scope, delete, delivery log."""

from __future__ import annotations

from typing import get_args

from sqlalchemy import text

from storage import delivery as repo
from storage.events import EVENT_TYPES, EventType, append_event
from storage.tokens import create_token
from tests.api.conftest import Api

S = "/api/v1/subscriptions"
SECRET = "a-webhook-secret-0123456789"


def test_the_schema_knows_every_event_type() -> None:
    assert set(get_args(EventType)) == set(EVENT_TYPES)


def test_create_list_get_delete_and_the_secret_never_comes_back(api: Api) -> None:
    h = api.as_role("grid_platform")
    with api.services.tx() as session:
        append_event(session, "camera.online", {"camera_id": "c0"})
    body = {"url": "http://127.0.0.1:9/hook", "secret": SECRET, "types": ["incident.created"]}
    r = api.client.post(S, json=body, headers=h)
    assert r.status_code == 201, r.text
    sub = r.json()
    assert SECRET not in r.text and "secret" not in sub
    assert sub["types"] == ["incident.created"] and sub["grid_codes"] is None
    assert sub["last_delivered_seq"] == 1  # from now on: the earlier event is not replayed
    listed = api.client.get(S, headers=h)
    assert [s["id"] for s in listed.json()["items"]] == [sub["id"]] and SECRET not in listed.text
    got = api.client.get(f"{S}/{sub['id']}", headers=h)
    assert got.json()["url"] == body["url"] and SECRET not in got.text
    with api.services.db.session() as session:
        stored = session.execute(text("SELECT secret_enc FROM subscriptions")).scalar_one()
    assert SECRET not in stored and api.services.secrets.decrypt(stored) == SECRET

    log = api.client.get(f"{S}/{sub['id']}/deliveries", headers=h)
    assert log.status_code == 200 and log.json() == {"items": [], "next_before": None}
    assert api.client.delete(f"{S}/{sub['id']}", headers=h).status_code == 204
    assert api.client.get(f"{S}/{sub['id']}", headers=h).status_code == 404
    assert api.client.delete(f"{S}/{sub['id']}", headers=h).status_code == 404
    with api.services.db.session() as session:
        assert repo.get_cursor(session, sub["id"]) is None
    audit = api.client.get(
        "/api/v1/audit", params={"resource": "subscription"}, headers=api.as_role("admin")
    ).json()
    assert [a["action"] for a in audit] == ["delete", "create"]
    assert all(SECRET not in str(a) for a in audit)


def test_bad_subscriptions_are_refused_naming_the_field(api: Api) -> None:
    h = api.as_role("grid_platform")
    cases = [
        ({"url": "ftp://example.org/x", "secret": SECRET}, "url"),
        ({"url": "http://user:pw@example.org/x", "secret": SECRET}, "url"),
        ({"url": "http://example.org/x", "secret": "short"}, "secret"),
        ({"url": "http://example.org/x", "secret": SECRET, "types": ["incident.eaten"]}, 0),
        ({"url": "http://example.org/x", "secret": SECRET, "grid_codes": ["bad code"]}, 0),
        ({"url": "http://example.org/x", "secret": SECRET, "types": []}, "types"),
    ]
    for body, field in cases:
        r = api.client.post(S, json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"][0]["loc"][-1] == field, r.json()
        assert SECRET not in r.text


def test_a_scoped_token_subscribes_within_its_subtree_and_sees_only_its_own(api: Api) -> None:
    h = api.as_role("integrator")
    for code, level, parent in [
        ("CITY", "city", None),
        ("D1", "county", "CITY"),
        ("G1", "grid", "D1"),
    ]:
        body = {"name": code, "level": level, "parent_code": parent}
        assert api.client.put(f"/api/v1/grids/{code}", json=body, headers=h).is_success
    with api.services.db.session() as session:
        token, _ = create_token(session, "grid_platform", "d1", grid_scope="D1")
    scoped = {"Authorization": f"Bearer {token}"}
    unscoped = api.as_role("grid_platform")
    other = api.client.post(
        S, json={"url": "http://127.0.0.1:9/a", "secret": SECRET}, headers=unscoped
    )
    assert other.status_code == 201 and other.json()["grid_codes"] is None

    mine = api.client.post(
        S, json={"url": "http://127.0.0.1:9/b", "secret": SECRET}, headers=scoped
    )
    assert mine.status_code == 201 and mine.json()["grid_codes"] == ["D1"]
    narrow = {"url": "http://127.0.0.1:9/c", "secret": SECRET, "grid_codes": ["G1"]}
    assert api.client.post(S, json=narrow, headers=scoped).json()["grid_codes"] == ["G1"]
    wide = {"url": "http://127.0.0.1:9/d", "secret": SECRET, "grid_codes": ["CITY"]}
    refused = api.client.post(S, json=wide, headers=scoped)
    assert refused.status_code == 422 and "CITY" in refused.json()["detail"][0]["msg"]

    assert len(api.client.get(S, headers=scoped).json()["items"]) == 2
    assert len(api.client.get(S, headers=unscoped).json()["items"]) == 3
    other_id = other.json()["id"]
    assert api.client.get(f"{S}/{other_id}", headers=scoped).status_code == 404
    assert api.client.delete(f"{S}/{other_id}", headers=scoped).status_code == 404
    assert api.client.get(f"{S}/{other_id}/deliveries", headers=scoped).status_code == 404


def test_batch_is_opt_in_bounded_and_shown(api: Api) -> None:
    h = api.as_role("grid_platform")
    plain = api.client.post(S, json={"url": "http://127.0.0.1:9/a", "secret": SECRET}, headers=h)
    assert plain.status_code == 201 and plain.json()["batch"] == 1  # today's contract
    body = {"url": "http://127.0.0.1:9/b", "secret": SECRET, "batch": 50}
    batched = api.client.post(S, json=body, headers=h)
    assert batched.status_code == 201 and batched.json()["batch"] == 50
    listed = {s["id"]: s["batch"] for s in api.client.get(S, headers=h).json()["items"]}
    assert listed == {plain.json()["id"]: 1, batched.json()["id"]: 50}
    for bad in (0, 1001, "many"):
        r = api.client.post(S, json={**body, "batch": bad}, headers=h)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "batch", r.text
