"""Cases: create, link incidents (many-to-many, with events), close/reopen, hold, scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from storage.cases import case_ids_for, held_incident_ids
from storage.events import list_events
from storage.incidents import NewIncident, create_incident
from storage.tokens import create_token
from tests.api.conftest import Api

C = "/api/v1/cases"
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def _grids(api: Api) -> None:
    """CITY → D1 (→ G1), D2."""
    h = api.as_role("integrator")
    for code, level, parent in [
        ("CITY", "city", None),
        ("D1", "county", "CITY"),
        ("G1", "grid", "D1"),
        ("D2", "county", "CITY"),
    ]:
        body = {"name": code, "level": level, "parent_code": parent}
        assert api.client.put(f"/api/v1/grids/{code}", json=body, headers=h).is_success


def _incident(api: Api, grid: str | None, minutes: int = 0) -> str:
    new = NewIncident("cam_1", grid, "motion", T0 + timedelta(minutes=minutes))
    with api.services.tx() as session:
        return create_incident(session, new).id


def _case(api: Api, role: str = "operator", **body: Any) -> dict[str, Any]:
    payload = {"external_ref": "DSP-1", "title": "Noise dispute", "kind": "dispute"} | body
    r = api.client.post(C, json=payload, headers=api.as_role(role))
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


def _linked_events(api: Api) -> list[dict[str, Any]]:
    with api.services.db.session() as session:
        events = list_events(session, limit=1000, types=["incident.linked"])
    return [e.data | {"grid_code": e.grid_code} for e in events]


def test_link_and_unlink_incidents_many_to_many_with_events(api: Api) -> None:
    _grids(api)
    inc1, inc2 = _incident(api, "G1"), _incident(api, "D2", 1)
    case_a = _case(api, grid_code="D1")
    case_b = _case(api, role="grid_platform", external_ref="POL-7", kind="police")
    assert case_a["status"] == "open" and case_a["incidents"] == []
    h = api.as_role("operator")

    r = api.client.post(f"{C}/{case_a['id']}/incidents", json={"incident_id": inc1}, headers=h)
    assert r.status_code == 201 and r.json()["incident_ids"] == [inc1]
    again = api.client.post(f"{C}/{case_a['id']}/incidents", json={"incident_id": inc1}, headers=h)
    assert again.status_code == 200 and again.json()["incident_ids"] == [inc1]
    for case, inc in [(case_a, inc2), (case_b, inc1)]:
        link = {"incident_id": inc}
        assert api.client.post(f"{C}/{case['id']}/incidents", json=link, headers=h).is_success

    detail = api.client.get(f"{C}/{case_a['id']}", headers=api.as_role("grid_platform")).json()
    assert [i["id"] for i in detail["incidents"]] == [inc1, inc2]
    assert detail["incidents"][0]["grid_code"] == "G1"
    with api.services.db.session() as session:
        links = case_ids_for(session, [inc1, inc2, "inc_none"])
    assert links == {inc1: [case_a["id"], case_b["id"]], inc2: [case_a["id"]], "inc_none": []}

    gone = api.client.delete(f"{C}/{case_a['id']}/incidents/{inc1}", headers=h)
    assert gone.status_code == 204
    assert api.client.delete(f"{C}/{case_a['id']}/incidents/{inc1}", headers=h).status_code == 404
    events = _linked_events(api)
    assert [(e["incident_id"], e["case_id"], e["linked"]) for e in events] == [
        (inc1, case_a["id"], True),
        (inc2, case_a["id"], True),
        (inc1, case_b["id"], True),
        (inc1, case_a["id"], False),
    ]
    assert events[0]["grid_code"] == "G1" and events[0]["external_ref"] == "DSP-1"

    unknown = api.client.post(
        f"{C}/{case_a['id']}/incidents", json={"incident_id": "inc_x"}, headers=h
    )
    assert unknown.status_code == 404 and "inc_x" in unknown.json()["detail"]
    assert api.client.get(f"{C}/case_nope", headers=h).status_code == 404
    audit = api.client.get(
        "/api/v1/audit", params={"resource_id": case_a["id"]}, headers=api.as_role("admin")
    ).json()
    assert [a["action"] for a in audit] == ["unlink", "link", "link", "create"]


def test_closing_a_case_releases_its_hold_and_freezes_its_links(api: Api) -> None:
    inc1, inc2, inc3 = _incident(api, None), _incident(api, None, 1), _incident(api, None, 2)
    case_a, case_b = _case(api), _case(api, external_ref="DSP-2")
    h = api.as_role("operator")
    for case, inc in [(case_a, inc1), (case_a, inc2), (case_b, inc2)]:
        link = {"incident_id": inc}
        assert api.client.post(f"{C}/{case['id']}/incidents", json=link, headers=h).is_success
    with api.services.db.session() as session:
        assert held_incident_ids(session, [inc1, inc2, inc3]) == {inc1, inc2}

    closed = api.client.patch(f"{C}/{case_a['id']}", json={"status": "closed"}, headers=h)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert closed.json()["closed_at"] is not None
    with api.services.db.session() as session:
        assert held_incident_ids(session, [inc1, inc2, inc3]) == {inc2}  # case_b still open
        assert held_incident_ids(session, []) == set()
    frozen = api.client.post(f"{C}/{case_a['id']}/incidents", json={"incident_id": inc3}, headers=h)
    assert frozen.status_code == 409 and "reopen" in frozen.json()["detail"]
    reopened = api.client.patch(f"{C}/{case_a['id']}", json={"status": "open"}, headers=h)
    assert reopened.json()["status"] == "open" and reopened.json()["closed_at"] is None
    with api.services.db.session() as session:
        assert held_incident_ids(session, [inc1]) == {inc1}
    bad = api.client.patch(f"{C}/{case_a['id']}", json={"status": "archived"}, headers=h)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "status"


def test_list_filters_by_status_kind_and_grid_subtree_and_pages(api: Api) -> None:
    _grids(api)
    ids = [
        _case(api, external_ref="A", grid_code="G1")["id"],
        _case(api, external_ref="B", grid_code="D2", kind="police")["id"],
        _case(api, external_ref="C", grid_code="D1")["id"],
        _case(api, external_ref="D")["id"],
    ]
    h = api.as_role("grid_platform")
    api.client.patch(f"{C}/{ids[2]}", json={"status": "closed"}, headers=api.as_role("operator"))

    def refs(**params: Any) -> list[str]:
        r = api.client.get(C, params=params, headers=h)
        assert r.status_code == 200, r.text
        return [c["external_ref"] for c in r.json()["items"]]

    assert refs() == ["D", "C", "B", "A"]
    assert refs(status="open") == ["D", "B", "A"]
    assert refs(kind="police") == ["B"]
    assert refs(grid_code="D1") == ["C", "A"]
    assert refs(external_ref="B") == ["B"]
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = api.client.get(C, params=params, headers=h).json()
        seen.append([c["external_ref"] for c in page["items"]])
        if not (cursor := page["next_cursor"]):
            break
    assert seen == [["D", "C", "B"], ["A"]]
    assert api.client.get(C, params={"cursor": "x"}, headers=h).status_code == 400
    unknown_grid = api.client.post(
        C,
        json={"external_ref": "E", "title": "t", "kind": "other", "grid_code": "NOPE"},
        headers=api.as_role("operator"),
    )
    assert unknown_grid.status_code == 422
    assert unknown_grid.json()["detail"][0]["loc"] == ["body", "grid_code"]


def test_a_scoped_token_sees_only_cases_and_incidents_of_its_subtree(api: Api) -> None:
    _grids(api)
    with api.services.db.session() as session:
        token, _ = create_token(session, "operator", "d1-operator", grid_scope="D1")
    scoped = {"Authorization": f"Bearer {token}"}
    mine = api.client.post(
        C, json={"external_ref": "M", "title": "t", "kind": "other"}, headers=scoped
    )
    assert mine.status_code == 201 and mine.json()["grid_code"] == "D1"  # its own grid
    theirs = _case(api, external_ref="T", grid_code="D2")
    no_grid = _case(api, external_ref="N")

    listed = api.client.get(C, headers=scoped).json()["items"]
    assert [c["external_ref"] for c in listed] == ["M"]
    for case in (theirs, no_grid):
        assert api.client.get(f"{C}/{case['id']}", headers=scoped).status_code == 404
        patch = api.client.patch(f"{C}/{case['id']}", json={"status": "closed"}, headers=scoped)
        assert patch.status_code == 404
    outside = api.client.post(
        C,
        json={"external_ref": "X", "title": "t", "kind": "other", "grid_code": "D2"},
        headers=scoped,
    )
    assert outside.status_code == 422

    inc_in, inc_out = _incident(api, "G1"), _incident(api, "D2")
    url = f"{C}/{mine.json()['id']}/incidents"
    assert api.client.post(url, json={"incident_id": inc_in}, headers=scoped).status_code == 201
    assert api.client.post(url, json={"incident_id": inc_out}, headers=scoped).status_code == 404
