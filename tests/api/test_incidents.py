"""The incidents API: filters and cursor, review with history, audited evidence access."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import httpx

from storage.incidents import ArchivedClip, NewIncident, create_incident, mark_archived
from storage.models import utcnow
from storage.tokens import create_token
from tests.api.conftest import Api


def _make(api: Api, n: int, camera: str = "cam_a", type_: str = "motion") -> list[str]:
    ids = []
    base = utcnow() - timedelta(hours=1)
    with api.services.tx() as session:
        for i in range(n):
            started = base + timedelta(seconds=i)
            ids.append(create_incident(session, NewIncident(camera, "G1", type_, started)).id)
    return ids


def test_list_is_newest_first_with_filters_and_a_stable_cursor(api: Api) -> None:
    a = _make(api, 7, "cam_a")
    b = _make(api, 3, "cam_b", "crowd")
    h = api.as_role("operator")
    seen: list[str] = []
    cursor = None
    while True:
        page = api.client.get(
            "/api/v1/incidents",
            params={"camera_id": "cam_a", "limit": 3, "cursor": cursor},
            headers=h,
        ).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(a))
    crowd = api.client.get("/api/v1/incidents", params={"type": "crowd"}, headers=h).json()
    assert [i["id"] for i in crowd["items"]] == list(reversed(b))
    assert (
        api.client.get("/api/v1/incidents", params={"cursor": "garbage!"}, headers=h).status_code
        == 400
    )
    bad = api.client.get("/api/v1/incidents", params={"since": "yesterday"}, headers=h)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "since"]
    later = api.client.get(
        "/api/v1/incidents",
        params={"since": (utcnow() - timedelta(minutes=5)).isoformat()},
        headers=h,
    ).json()
    assert later["items"] == []


def _pages(api: Api, headers: dict[str, str], **params: object) -> list[str]:
    """Every incident id of a listing, following ``next_cursor`` two at a time."""
    seen: list[str] = []
    cursor = None
    while True:
        r = api.client.get(
            "/api/v1/incidents", params={**params, "limit": 2, "cursor": cursor}, headers=headers
        )
        assert r.status_code == 200, r.text
        seen += [i["id"] for i in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return seen


def test_subtree_pages_break_ties_by_id_and_intersect_the_token_scope(api: Api) -> None:
    """Incidents starting at the same instant are paged by id, none skipped or repeated,
    within a requested grid's subtree and within the token's scope at once."""
    admin = api.as_role("admin")
    for code, level, parent in (
        ("T", "county", None),
        ("T1", "town", "T"),
        ("T1a", "community", "T1"),
        ("T2", "town", "T"),
    ):
        body = {"name": code, "level": level, "parent_code": parent}
        r = api.client.put(f"/api/v1/grids/{code}", json=body, headers=admin)
        assert r.status_code in (200, 201), r.text
    at = utcnow() - timedelta(minutes=30)
    grids = {}
    with api.services.tx() as session:
        for n, grid in enumerate(("T1", "T1a", "T2", "T1a", "T1", "X", "T1a")):
            new = NewIncident("cam_t", grid, "motion", at, incident_id=f"inc_t{n}")
            grids[create_incident(session, new).id] = grid
        later = NewIncident("cam_t", "T1a", "motion", at + timedelta(seconds=1), "inc_tz")
        grids[create_incident(session, later).id] = "T1a"
        token, _ = create_token(session, "grid_platform", "town T1", grid_scope="T1")
    scoped = {"Authorization": f"Bearer {token}"}

    def newest_first(*within: str) -> list[str]:
        ids = [i for i, g in grids.items() if g in within]
        return sorted(ids, key=lambda i: (i == "inc_tz", i), reverse=True)

    operator = api.as_role("operator")
    assert _pages(api, operator, grid_code="T") == newest_first("T1", "T1a", "T2")
    assert _pages(api, operator, grid_code="T1a") == newest_first("T1a")
    assert _pages(api, scoped) == newest_first("T1", "T1a")
    assert _pages(api, scoped, grid_code="T") == newest_first("T1", "T1a")
    assert _pages(api, scoped, grid_code="T1a") == newest_first("T1a")
    assert _pages(api, scoped, grid_code="T2") == []
    assert _pages(api, operator, grid_code="nowhere") == []


def test_review_actions_keep_history_and_refuse_impossible_transitions(api: Api) -> None:
    (inc,) = _make(api, 1)
    h = api.as_role("operator")

    def review(action: str, note: str | None = None) -> int:
        r: httpx.Response = api.client.post(
            f"/api/v1/incidents/{inc}/review", json={"action": action, "note": note}, headers=h
        )
        return r.status_code

    assert review("acknowledge", "looking") == 200
    assert review("acknowledge") == 409
    assert review("resolve", "neighbours' dispute, handled by grid worker") == 200
    assert review("dismiss") == 409
    assert review("reopen", "came back") == 200
    got = api.client.get(f"/api/v1/incidents/{inc}", headers=h).json()
    assert got["status"] == "acknowledged"
    assert [(x["action"], x["note"]) for x in got["history"]] == [
        ("created", None),
        ("acknowledge", "looking"),
        ("resolve", "neighbours' dispute, handled by grid worker"),
        ("reopen", "came back"),
    ]
    assert all(x["actor"] == "test-operator" for x in got["history"][1:])
    gp = api.as_role("grid_platform")
    assert (
        api.client.post(
            f"/api/v1/incidents/{inc}/review", json={"action": "resolve"}, headers=gp
        ).status_code
        == 403
    )
    bad = api.client.post(f"/api/v1/incidents/{inc}/review", json={"action": "explode"}, headers=h)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "action"


def test_clip_download_streams_the_archived_bytes_and_is_audited(api: Api) -> None:
    (inc,) = _make(api, 1)
    h = api.as_role("operator")
    pending = api.client.get(f"/api/v1/incidents/{inc}/clip", headers=h)
    assert pending.status_code == 404 and "pending" in pending.json()["detail"]
    data = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
    key = f"clips/cam_a/x/{inc}.mp4"
    info = api.services.objects.put_bytes(key, data, "video/mp4")
    with api.services.tx() as session:
        mark_archived(session, inc, ArchivedClip(key, info.sha256, info.size, 2.0, None, None))
    got = api.client.get(f"/api/v1/incidents/{inc}/clip", headers=h)
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "video/mp4"
    assert hashlib.sha256(got.content).hexdigest() == info.sha256
    api.client.get(f"/api/v1/incidents/{inc}/clip", headers=api.as_role("grid_platform"))
    audit = api.client.get(
        "/api/v1/audit", params={"resource_id": inc}, headers=api.as_role("admin")
    ).json()
    downloads = [a for a in audit if a["action"] == "download"]
    assert [a["actor"] for a in downloads] == ["test-grid_platform", "test-operator"]
    shown = api.client.get(f"/api/v1/incidents/{inc}", headers=h).json()["clip"]
    assert shown["state"] == "archived" and shown["sha256"] == info.sha256
    assert shown["url"] == f"/api/v1/incidents/{inc}/clip"
    assert api.client.get("/api/v1/incidents/inc_nope", headers=h).status_code == 404
