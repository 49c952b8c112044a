"""Grids: hierarchy, boundary validation, import, smallest-grid placement, grid scope."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from sqlalchemy import select

from storage.grid_models import Grid
from storage.grids import GridIndex, assign_grid, place_camera, subtree_codes
from storage.models import Camera
from storage.tokens import create_token
from tests.api.conftest import Api

G = "/api/v1/grids"


def square(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    """A closed counter-clockwise rectangle (lon x, lat y)."""
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Polygon", "coordinates": [ring]}


def feature(
    code: str, level: str, parent: str | None, geometry: dict[str, Any] | None
) -> dict[str, Any]:
    props = {"code": code, "name": f"Grid {code}", "level": level, "parent_code": parent}
    return {"type": "Feature", "properties": props, "geometry": geometry}


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


# A city 120..122 x 30..31 with one county, one town and two communities:
#  C1 = 120.0..120.6: grids GA (120.0..120.4) and GB (120.4..120.6) share lon 120.4;
#                     GE1 and GE2 (120.0..120.2 x 30.6..30.8, same size) share lat 30.7.
#  C2 = 120.6..121.0: one grid GS with exactly C2's boundary; no grid covers C3.
NESTED = collection(
    feature("CITY", "city", None, square(120.0, 30.0, 122.0, 31.0)),
    feature("CTY", "county", "CITY", square(120.0, 30.0, 121.0, 31.0)),
    feature("TWN", "town", "CTY", square(120.0, 30.0, 121.0, 31.0)),
    feature("C1", "community", "TWN", square(120.0, 30.0, 120.6, 31.0)),
    feature("C2", "community", "TWN", square(120.6, 30.0, 121.0, 30.5)),
    feature("C3", "community", "TWN", square(120.6, 30.5, 121.0, 31.0)),
    feature("GA", "grid", "C1", square(120.0, 30.0, 120.4, 30.5)),
    feature("GB", "grid", "C1", square(120.4, 30.0, 120.6, 30.5)),
    feature("GE2", "grid", "C1", square(120.0, 30.7, 120.2, 30.8)),
    feature("GE1", "grid", "C1", square(120.0, 30.6, 120.2, 30.7)),
    feature("GS", "grid", "C2", square(120.6, 30.0, 121.0, 30.5)),
)


def _import(api: Api, body: dict[str, Any], role: str = "integrator") -> Any:
    return api.client.post(f"{G}/import", json=body, headers=api.as_role(role))


def test_put_builds_a_hierarchy_that_lists_pages_and_audits(api: Api) -> None:
    h = api.as_role("integrator")
    r = api.client.put(f"{G}/CITY", json={"name": "City", "level": "city"}, headers=h)
    assert r.status_code == 201, r.text
    for code, level, parent in [("K1", "county", "CITY"), ("K2", "county", "CITY")]:
        body: dict[str, Any] = {"name": code, "level": level, "parent_code": parent}
        assert api.client.put(f"{G}/{code}", json=body, headers=h).status_code == 201
    body = {"name": "Town", "level": "town", "parent_code": "K1", "boundary": square(0, 0, 1, 1)}
    assert api.client.put(f"{G}/T1", json=body, headers=h).status_code == 201
    body["name"] = "Town renamed"
    again = api.client.put(f"{G}/T1", json=body, headers=h)
    assert again.status_code == 200 and again.json()["name"] == "Town renamed"
    assert again.json()["boundary"] == square(0, 0, 1, 1)

    reader = api.as_role("grid_platform")
    kids = api.client.get(G, params={"parent": "CITY"}, headers=reader).json()
    assert [g["code"] for g in kids["items"]] == ["K1", "K2"]
    towns = api.client.get(G, params={"level": "town"}, headers=reader).json()["items"]
    assert [g["code"] for g in towns] == ["T1"] and towns[0]["boundary"] is None
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.client.get(G, params=params, headers=reader).json()
        pages.append([g["code"] for g in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [["CITY", "K1"], ["K2", "T1"]]
    assert api.client.get(f"{G}/T1", headers=reader).json()["parent_code"] == "K1"
    assert api.client.get(f"{G}/NOPE", headers=reader).status_code == 404
    assert api.client.get(G, params={"cursor": "!!"}, headers=reader).status_code == 400

    audit = api.client.get(
        "/api/v1/audit", params={"resource": "grid"}, headers=api.as_role("admin")
    ).json()
    assert [(a["action"], a["resource_id"]) for a in audit][:2] == [
        ("update", "T1"),
        ("create", "T1"),
    ]
    with api.services.db.session() as session:
        assert subtree_codes(session, "CITY") == ["CITY", "K1", "K2", "T1"]
        assert subtree_codes(session, "K1") == ["K1", "T1"]
        assert subtree_codes(session, "UNKNOWN") == ["UNKNOWN"]
        # Grids without a boundary (CITY, K1, K2) are never chosen; T1 contains the point.
        assert assign_grid(session, lat=0.5, lon=0.5) == "T1"
        assert assign_grid(session, lat=5.0, lon=5.0) is None


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"name": "x", "level": "grid", "parent_code": "NOPE"}, None, "no such grid"),
        ({"name": "x", "level": "city", "parent_code": "TOP"}, None, "cannot be below"),
        ({"name": "x", "level": "hamlet"}, "level", "Input should be"),
        (
            {
                "name": "x",
                "level": "grid",
                "boundary": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
                },
            },
            "boundary",
            "self-intersecting ring at (0.5, 0.5)",
        ),
        (
            {
                "name": "x",
                "level": "grid",
                "boundary": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]},
            },
            "boundary",
            "ring 0 is not closed",
        ),
        (
            {"name": "x", "level": "grid", "boundary": square(30, 120, 31, 122)},
            "boundary",
            "latitude 120 outside -90..90",
        ),
        (
            {"name": "x", "level": "grid", "boundary": {"type": "Point", "coordinates": [1, 2]}},
            "boundary",
            "Polygon or MultiPolygon",
        ),
    ],
)
def test_put_refuses_bad_grids_saying_why(
    api: Api, body: dict[str, Any], field: str | None, message: str
) -> None:
    h = api.as_role("integrator")
    assert api.client.put(f"{G}/TOP", json={"name": "t", "level": "city"}, headers=h).is_success
    r = api.client.put(f"{G}/NEW", json=body, headers=h)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    if field is None:
        assert message in detail
    else:
        assert detail[0]["loc"][-1] == field and message in detail[0]["msg"], detail
    assert api.client.get(f"{G}/NEW", headers=h).status_code == 404


def test_a_level_change_may_not_put_a_grid_below_its_children(api: Api) -> None:
    h = api.as_role("integrator")
    api.client.put(f"{G}/T", json={"name": "t", "level": "town"}, headers=h)
    api.client.put(
        f"{G}/C", json={"name": "c", "level": "community", "parent_code": "T"}, headers=h
    )
    r = api.client.put(f"{G}/T", json={"name": "t", "level": "grid"}, headers=h)
    assert r.status_code == 422 and "has child 'C'" in r.json()["detail"]


# (lon, lat) → expected grid: the rule is most specific level, then smallest area, then code.
PLACEMENTS = [
    ((120.1, 30.1), "GA"),  # inside one grid
    ((120.4, 30.2), "GB"),  # on the GA|GB border: GB is smaller
    ((120.1, 30.7), "GE1"),  # on the GE1|GE2 border, equal areas: lowest code
    ((120.0, 30.65), "GE1"),  # on the outer edge of GE1 (and of C1, TWN, CTY, CITY)
    ((120.8, 30.2), "GS"),  # GS has exactly C2's boundary: the grid level wins
    ((120.8, 30.8), "C3"),  # a community without grids
    ((121.5, 30.5), "CITY"),  # only the city
    ((125.0, 30.5), None),  # nowhere
]


def test_import_nested_grids_and_place_points_in_the_smallest_grid(api: Api) -> None:
    r = _import(api, NESTED)
    assert r.status_code == 200, r.text
    assert r.json() == {"created": 11, "updated": 0, "cameras_reassigned": 0}
    with api.services.db.session() as session:
        got = [assign_grid(session, lat, lon) for (lon, lat), _ in PLACEMENTS]
        assert subtree_codes(session, "C1") == ["C1", "GA", "GB", "GE1", "GE2"]
    assert got == [expected for _, expected in PLACEMENTS]
    again = _import(api, NESTED)
    assert again.json() == {"created": 0, "updated": 11, "cameras_reassigned": 0}


def test_index_rule_is_independent_of_insertion_order() -> None:
    rows = [
        (f["properties"]["code"], f["properties"]["level"], f["geometry"])
        for f in NESTED["features"]
    ]
    for ordering in (rows, rows[::-1]):
        index = GridIndex(ordering)
        assert [index.locate(*p) for p, _ in PLACEMENTS] == [e for _, e in PLACEMENTS]
        assert index.locate_many([p for p, _ in PLACEMENTS]) == [e for _, e in PLACEMENTS]


def test_an_invalid_feature_is_named_and_nothing_is_imported(api: Api) -> None:
    bow_tie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    body = collection(
        feature("R", "city", None, square(0, 0, 2, 2)),
        feature("G-10", "grid", "R", square(0, 0, 1, 1)),
        feature("G-11", "grid", "R", square(1, 0, 2, 1)),
        feature("G-12", "grid", "R", bow_tie),
        feature("G-13", "grid", "MISSING", None),
        feature("G-10", "grid", "R", None),
    )
    r = _import(api, body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert 'features[3] (code "G-12"): self-intersecting ring at (0.5, 0.5)' in detail
    assert "features[4] (code \"G-13\"): parent_code 'MISSING': no such grid" in detail
    assert 'features[5] (code "G-10"): duplicate of features[1]' in detail
    with api.services.db.session() as session:
        assert session.scalars(select(Grid)).all() == []
    not_geojson = _import(api, {"type": "Feature"})
    assert not_geojson.status_code == 422 and "FeatureCollection" in not_geojson.json()["detail"]


def _camera(api: Api, name: str, lon: float, lat: float, grid: str | None = None) -> str:
    body: dict[str, Any] = {
        "name": name,
        "rtsp_url": "rtsp://127.0.0.1:1/none",
        "location": {"lat": lat, "lon": lon},
        "enabled": False,
    }
    if grid is not None:
        body["grid_code"] = grid
    r = api.client.post("/api/v1/cameras", json=body, headers=api.as_role("integrator"))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _grid_of(api: Api, camera_id: str) -> tuple[str | None, bool]:
    with api.services.db.session() as session:
        cam = session.get(Camera, camera_id)
        assert cam is not None
        return cam.grid_code, cam.grid_auto


def test_importing_grids_places_and_re_places_automatic_cameras_only(api: Api) -> None:
    unplaced = _camera(api, "unplaced", 120.1, 30.1)
    explicit = _camera(api, "explicit", 120.1, 30.1, grid="HANDPICKED")
    r = _import(api, NESTED)
    assert r.json()["cameras_reassigned"] == 1
    assert _grid_of(api, unplaced) == ("GA", True)
    assert _grid_of(api, explicit) == ("HANDPICKED", False)

    # GB grows west over the camera: re-importing moves the automatic camera only.
    moved = collection(feature("GB", "grid", "C1", square(120.05, 30.0, 120.6, 30.5)))
    moved["features"].append(feature("GA", "grid", "C1", square(120.0, 30.0, 120.05, 30.5)))
    r = _import(api, moved)
    assert r.json() == {"created": 0, "updated": 2, "cameras_reassigned": 1}
    assert _grid_of(api, unplaced) == ("GB", True)
    assert _grid_of(api, explicit) == ("HANDPICKED", False)
    # One grid's PUT re-places too.
    body = {
        "name": "GA",
        "level": "grid",
        "parent_code": "C1",
        "boundary": square(120.0, 30.0, 120.2, 30.5),
    }
    h = api.as_role("integrator")
    assert api.client.put(f"{G}/GA", json=body, headers=h).status_code == 200
    assert _grid_of(api, unplaced) == ("GA", True)
    camera = api.client.get(f"/api/v1/cameras/{unplaced}", headers=h).json()
    assert camera["grid_code"] == "GA"


def _placement(cam: Camera) -> tuple[str | None, bool]:
    """``(grid_code, grid_auto)`` as ``place_camera`` left them (a call, so that mypy does
    not carry the narrowing of an assignment to ``cam`` across ``place_camera``)."""
    return cam.grid_code, cam.grid_auto


def test_place_camera_keeps_explicit_grids_and_follows_the_location_otherwise(api: Api) -> None:
    assert _import(api, NESTED).status_code == 200
    with api.services.db.session() as session:
        cam = Camera(id="c1", name="c", lat=30.1, lon=120.1)
        place_camera(session, cam, grid_given=False)
        assert _placement(cam) == ("GA", True)
        cam.lat, cam.lon = 30.2, 120.5  # moved
        place_camera(session, cam, grid_given=False)
        assert _placement(cam) == ("GB", True)
        cam.grid_code = "MINE"
        place_camera(session, cam, grid_given=True)
        assert _placement(cam) == ("MINE", False)
        cam.lat, cam.lon = 30.1, 120.1  # an explicit grid sticks when the camera moves
        place_camera(session, cam, grid_given=False)
        assert _placement(cam) == ("MINE", False)
        cam.grid_code = None  # explicitly cleared: placed again
        place_camera(session, cam, grid_given=True)
        assert _placement(cam) == ("GA", True)
        cam.lat = cam.lon = None
        place_camera(session, cam, grid_given=False)
        assert _placement(cam) == (None, False)


def _scoped(api: Api, role: str, scope: str) -> dict[str, str]:
    with api.services.db.session() as session:
        token, _ = create_token(session, role, f"{role}-{scope}", grid_scope=scope)
    return {"Authorization": f"Bearer {token}"}


def test_a_scoped_token_sees_and_writes_its_subtree_only(api: Api) -> None:
    assert _import(api, NESTED).status_code == 200
    reader = _scoped(api, "grid_platform", "C1")
    codes = [g["code"] for g in api.client.get(G, headers=reader).json()["items"]]
    assert codes == ["C1", "GA", "GB", "GE1", "GE2"]
    assert api.client.get(f"{G}/GA", headers=reader).status_code == 200
    assert api.client.get(f"{G}/GS", headers=reader).status_code == 404
    assert api.client.get(f"{G}/TWN", headers=reader).status_code == 404

    writer = _scoped(api, "integrator", "C1")
    new_grid = {"name": "n", "level": "grid", "parent_code": "C1"}
    assert api.client.put(f"{G}/GN", json=new_grid, headers=writer).status_code == 201
    outside = {"name": "n", "level": "grid", "parent_code": "C2"}
    assert api.client.put(f"{G}/GX", json=outside, headers=writer).status_code == 403
    assert api.client.put(f"{G}/GS", json=outside, headers=writer).status_code == 404
    escape = {"name": "GA", "level": "grid", "parent_code": "C2"}
    assert api.client.put(f"{G}/GA", json=escape, headers=writer).status_code == 403
    body = collection(
        feature("GN2", "grid", "C1", None),
        feature("GS", "grid", "C2", None),
    )
    r = api.client.post(f"{G}/import", json=body, headers=writer)
    assert r.status_code == 422
    assert r.json()["detail"] == 'features[1] (code "GS"): outside this token\'s grid scope'


def _lattice(cols: int, rows: int, cell: float) -> dict[str, Any]:
    """A city of cols x rows grid cells; communities 10x10, towns 50x50, counties 100x100."""

    def lon(i: int) -> float:
        return round(110.0 + i * cell, 6)

    def lat(j: int) -> float:
        return round(20.0 + j * cell, 6)

    def block(i: int, j: int, size: int) -> dict[str, Any]:
        return square(lon(i * size), lat(j * size), lon((i + 1) * size), lat((j + 1) * size))

    features = [feature("CITY", "city", None, square(lon(0), lat(0), lon(cols), lat(rows)))]
    levels = [("county", 100, "K"), ("town", 50, "T"), ("community", 10, "C"), ("grid", 1, "G")]
    parent_prefix, parent_size = None, 0
    for level, size, prefix in levels:
        for i in range(cols // size):
            for j in range(rows // size):
                if parent_prefix is None:
                    parent = "CITY"
                else:
                    parent = f"{parent_prefix}{i * size // parent_size}-{j * size // parent_size}"
                features.append(feature(f"{prefix}{i}-{j}", level, parent, block(i, j, size)))
        parent_prefix, parent_size = prefix, size
    return collection(*features)


@pytest.mark.slow
@pytest.mark.slow
def test_twenty_thousand_grids_import_and_a_thousand_placements(api: Api) -> None:
    cols, rows, cell = 200, 100, 0.002
    body = _lattice(cols, rows, cell)
    grids = sum(1 for f in body["features"] if f["properties"]["level"] == "grid")
    assert grids == 20_000
    started = time.perf_counter()
    r = _import(api, body)
    imported_s = time.perf_counter() - started
    assert r.status_code == 200, r.text[:500]
    assert r.json()["created"] == len(body["features"])

    rng = random.Random(7)
    cells = [(rng.randrange(cols), rng.randrange(rows)) for _ in range(1000)]
    points = [
        (110.0 + (i + rng.uniform(0.1, 0.9)) * cell, 20.0 + (j + rng.uniform(0.1, 0.9)) * cell)
        for i, j in cells
    ]
    with api.services.db.session() as session:
        started = time.perf_counter()
        assign_grid(session, 20.0, 110.0)  # builds the index once
        index_s = time.perf_counter() - started
        started = time.perf_counter()
        got = [assign_grid(session, lat, lon) for lon, lat in points]
        assign_s = time.perf_counter() - started
    assert got == [f"G{i}-{j}" for i, j in cells]
    print(
        f"\n[{api.services.db.dialect}] import of {len(body['features'])} grids: "
        f"{imported_s:.2f} s; index build: {index_s:.2f} s; "
        f"1000 placements: {assign_s * 1000:.0f} ms"
    )
