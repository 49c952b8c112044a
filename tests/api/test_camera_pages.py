"""GET /cameras a page at a time (issue "A city, measured: 20,000 cameras"): keyset pages
newest first and by name, stable while cameras are added; filters by grid subtree, state
and text; the token's grid scope; bad cursors and limits refused. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import storage.grid_models  # noqa: F401  (every table in the metadata, as migrations see it)
from storage.cameras import StatusUpdate, record_status
from storage.models import Base
from storage.tokens import create_token
from tests.api.conftest import Api

CAMS = "/api/v1/cameras"
GRIDS = (("C", "city", None), ("A", "county", "C"), ("A1", "town", "A"), ("B", "county", "C"))


def _grids(api: Api) -> None:
    admin = api.as_role("admin")
    for code, level, parent in GRIDS:
        body = {"name": code, "level": level, "parent_code": parent}
        r = api.client.put(f"/api/v1/grids/{code}", json=body, headers=admin)
        assert r.status_code in (200, 201), r.text


def _add(api: Api, name: str, **extra: Any) -> str:
    # Disabled unless asked: the camera runtime has nothing to connect to.
    body = {"name": name, "rtsp_url": "rtsp://u:pw@192.0.2.1/x", "enabled": False} | extra
    r = api.client.post(CAMS, json=body, headers=api.as_role("integrator"))
    assert r.status_code == 201, r.text
    camera_id: str = r.json()["id"]
    return camera_id


def _pages(api: Api, headers: dict[str, str], between: Any = None, **params: Any) -> list[str]:
    """Every camera id of the list, page by page; ``between(n)`` runs after page ``n``."""
    ids: list[str] = []
    cursor = None
    for n in range(100):
        query = params | ({"cursor": cursor} if cursor else {})
        r = api.client.get(CAMS, params=query, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= int(params.get("limit", 100))
        ids += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
        if between is not None:
            between(n)
    raise AssertionError("more than 100 pages")


def test_pages_newest_first_and_by_name_without_duplicates_or_gaps(api: Api) -> None:
    h = api.as_role("operator")
    names = [f"cam {n:02d}" for n in (7, 3, 11, 0, 9, 5, 1, 10, 2, 8, 6, 4)]
    created = [_add(api, name) for name in names]  # in this order, so oldest first

    first = api.client.get(CAMS, headers=h).json()
    assert [c["id"] for c in first["items"]] == created[::-1]
    assert first["next_cursor"] is None

    newer: list[str] = []
    newest = _pages(api, h, lambda n: newer.append(_add(api, f"cam new {n}")), limit=5)
    # Cameras added while paging are newer than the cursor: on no page, and none is skipped.
    assert newest == created[::-1]
    assert len(newer) == 2

    names += ["cam new 0", "cam new 1"]
    created += newer
    late: dict[str, str] = {}

    def add_between(n: int) -> None:
        if n == 0:  # page 1 showed "cam 00".."cam 04"
            late["before"] = _add(api, "cam 01b")  # sorts before the cursor
            late["after"] = _add(api, "cam 99")  # and after it

    ordered = _pages(api, h, add_between, limit=5, order="name")
    shown = zip([*names, "cam 99"], [*created, late["after"]], strict=True)
    assert ordered == [camera_id for _, camera_id in sorted(shown)]
    everything = _pages(api, h, limit=4, order="name")
    assert len(everything) == len(set(everything)) == len(created) + 2


def test_filters_grid_subtree_state_and_text(api: Api) -> None:
    _grids(api)
    h = api.as_role("operator")
    a = _add(api, "Gate North", grid_code="A")
    a1 = _add(api, "gate south", grid_code="A1", national_id="15050200001320000001")
    b = _add(api, "Market", grid_code="B", enabled=True, rtsp_url="rtsp://192.0.2.1/m")
    loose = _add(api, "no grid 100% _x_")
    with api.services.tx() as session:
        record_status(session, a1, StatusUpdate(state="online"))  # disabled: still "disabled"

    def listed(**params: Any) -> set[str]:
        return set(_pages(api, h, **params))

    assert listed(grid_code="A") == {a, a1}
    assert listed(grid_code="A1") == {a1}
    assert listed(grid_code="C") == {a, a1, b}
    assert listed(grid_code="nowhere") == set()
    assert listed(state="disabled") == {a, a1, loose}
    with api.services.tx() as session:
        record_status(session, b, StatusUpdate(state="offline"))
    assert listed(state="offline") == {b}
    assert listed(state="online") == set()
    with api.services.tx() as session:
        record_status(session, b, StatusUpdate(state="online"))
    assert listed(state="online") == {b}
    assert listed(state="online", grid_code="A") == set()
    assert listed(q="GATE") == {a, a1}
    assert listed(q="20000") == {a1}  # the national ID
    assert listed(q=a[-6:]) == {a}  # the id
    assert listed(q="100%") == {loose}  # LIKE's wildcards are plain characters
    assert listed(q="_x_") == {loose}
    assert listed(q="%") == {loose}
    bad = api.client.get(CAMS, params={"state": "asleep"}, headers=h)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "state"]


def test_a_scoped_token_pages_through_its_grid_only(api: Api) -> None:
    _grids(api)
    inside = [_add(api, f"a{n}", grid_code="A1") for n in range(3)]
    _add(api, "b", grid_code="B")
    _add(api, "nowhere")
    with api.services.db.session() as session:
        token, _ = create_token(session, "operator", "district A", grid_scope="A")
    scoped = {"Authorization": f"Bearer {token}"}
    assert _pages(api, scoped, limit=2) == inside[::-1]
    assert _pages(api, scoped, grid_code="B") == []  # asking for another grid shows nothing
    assert _pages(api, scoped, grid_code="A1", order="name") == inside


def test_bad_cursor_and_limits_are_refused(api: Api) -> None:
    h = api.as_role("operator")
    for n in range(3):
        _add(api, f"c{n}")
    page = api.client.get(CAMS, params={"limit": 2}, headers=h).json()
    cursor = page["next_cursor"]
    assert cursor
    for params in (
        {"cursor": "!!not-ours"},
        {"cursor": "eyJ4IjogMX0"},  # base64 JSON, not a cursor
        {"cursor": cursor, "order": "name"},  # a cursor of the other order
    ):
        r = api.client.get(CAMS, params=params, headers=h)
        assert r.status_code == 400, (params, r.text)
        assert "cursor" in r.json()["detail"]
    for limit in (0, 1001):
        r = api.client.get(CAMS, params={"limit": limit}, headers=h)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["query", "limit"]
    assert len(api.client.get(CAMS, params={"limit": 1000}, headers=h).json()["items"]) == 3


def test_the_migration_creates_the_keyset_indexes_the_model_declares(api: Api) -> None:
    with api.services.db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if "cameras" in repr(d)] == []
    indexes = {i["name"] for i in inspect(api.services.db.engine).get_indexes("cameras")}
    assert {"ix_cameras_created", "ix_cameras_name"} <= indexes
