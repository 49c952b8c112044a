"""A token scoped to grid A sees nothing of grid B: cameras, incidents, clips are 404."""

from __future__ import annotations

from typing import Any

from storage.incidents import ArchivedClip, NewIncident, create_incident, mark_archived
from storage.models import utcnow
from storage.tokens import create_token
from tests.api.conftest import Api


def test_a_token_scoped_to_grid_a_gets_404_for_grid_b(api: Api) -> None:
    admin = api.as_role("admin")
    for code, level, parent in (
        ("C", "city", None),
        ("A", "county", "C"),
        ("B", "county", "C"),
        ("A1", "town", "A"),
    ):
        body = {"name": code, "level": level, "parent_code": parent}
        r = api.client.put(f"/api/v1/grids/{code}", json=body, headers=admin)
        assert r.status_code in (200, 201), r.text
    cams = {}
    for grid in ("A1", "B"):
        r = api.client.post(
            "/api/v1/cameras",
            json={
                "name": f"cam {grid}",
                "rtsp_url": "rtsp://127.0.0.1:1/x",
                "grid_code": grid,
            },
            headers=admin,
        )
        assert r.status_code == 201, r.text
        cams[grid] = r.json()["id"]
    incidents = {}
    with api.services.tx() as session:
        for grid in ("A1", "B"):
            row = create_incident(session, NewIncident(cams[grid], grid, "motion", utcnow()))
            key = f"clips/{cams[grid]}/x/{row.id}.mp4"
            info = api.services.objects.put_bytes(key, b"clip " + grid.encode(), "video/mp4")
            mark_archived(session, row.id, ArchivedClip(key, info.sha256, info.size, 1, None, None))
            incidents[grid] = row.id
        token_a, _ = create_token(session, "operator", "district A", grid_scope="A")
    a = {"Authorization": f"Bearer {token_a}"}

    # Grid A's subtree (A1) is visible…
    assert api.client.get(f"/api/v1/cameras/{cams['A1']}", headers=a).status_code == 200
    assert api.client.get(f"/api/v1/incidents/{incidents['A1']}", headers=a).status_code == 200
    assert (
        api.client.get(f"/api/v1/incidents/{incidents['A1']}/clip", headers=a).content == b"clip A1"
    )
    # …grid B's things do not exist for this token.
    for path in (
        f"/api/v1/cameras/{cams['B']}",
        f"/api/v1/cameras/{cams['B']}/status",
        f"/api/v1/incidents/{incidents['B']}",
        f"/api/v1/incidents/{incidents['B']}/clip",
        f"/api/v1/incidents/{incidents['B']}/snapshot",
    ):
        r = api.client.get(path, headers=a)
        assert r.status_code == 404, (path, r.status_code)
    review = api.client.post(
        f"/api/v1/incidents/{incidents['B']}/review", json={"action": "acknowledge"}, headers=a
    )
    assert review.status_code == 404
    listed = api.client.get("/api/v1/incidents", headers=a).json()["items"]
    assert [i["id"] for i in listed] == [incidents["A1"]]
    cams_listed = api.client.get("/api/v1/cameras", headers=a).json()["items"]
    assert [c["id"] for c in cams_listed] == [cams["A1"]]
    # An unscoped reader filtering by grid A gets A's subtree only.
    by_grid = api.client.get(
        "/api/v1/incidents", params={"grid_code": "A"}, headers=api.as_role("operator")
    ).json()["items"]
    assert [i["id"] for i in by_grid] == [incidents["A1"]]


def test_camera_with_a_location_lands_in_the_smallest_grid(api: Api) -> None:
    admin = api.as_role("admin")

    def square(x0: float, y0: float, d: float) -> dict[str, Any]:
        return {
            "type": "Polygon",
            "coordinates": [[[x0, y0], [x0 + d, y0], [x0 + d, y0 + d], [x0, y0 + d], [x0, y0]]],
        }

    grids = (
        ("C", "city", None, square(116.0, 39.0, 1.0)),
        ("T", "town", "C", square(116.2, 39.2, 0.2)),
        ("G", "grid", "T", square(116.25, 39.25, 0.05)),
    )
    for code, level, parent, boundary in grids:
        body = {"name": code, "level": level, "parent_code": parent, "boundary": boundary}
        assert api.client.put(f"/api/v1/grids/{code}", json=body, headers=admin).status_code in (
            200,
            201,
        )
    r = api.client.post(
        "/api/v1/cameras",
        json={
            "name": "in G",
            "rtsp_url": "rtsp://127.0.0.1:1/x",
            "location": {"lat": 39.27, "lon": 116.27},
        },
        headers=admin,
    )
    assert r.json()["grid_code"] == "G"
    moved = api.client.patch(
        f"/api/v1/cameras/{r.json()['id']}",
        json={"location": {"lat": 39.9, "lon": 116.9}},
        headers=admin,
    )
    assert moved.json()["grid_code"] == "C"
