"""POST /cameras/import (issue "A city, measured: 20,000 cameras"): JSON or CSV, all or
none, every bad row named by its line, placed into grids, scoped tokens kept inside their
grid, passwords never shown; 20,000 cameras in one call. SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import pytest

from storage import gb28181
from storage.models import utcnow
from storage.tokens import create_token
from tests.api.conftest import Api

IMPORT = "/api/v1/cameras/import"
CAMS = "/api/v1/cameras"
SECRET = "Imp0rt-pw"
DEVICE, CHANNEL = "34020000001320000001", "34020000001310000001"
CSV = {"Content-Type": "text/csv; charset=utf-8"}


def _square(x0: float, y0: float, d: float) -> dict[str, Any]:
    ring = [[x0, y0], [x0 + d, y0], [x0 + d, y0 + d], [x0, y0 + d], [x0, y0]]
    return {"type": "Polygon", "coordinates": [ring]}


def _grids(api: Api) -> None:
    """City C with two counties: A (116.0-116.5 E, 39.0-39.5 N) and B (beside it)."""
    admin = api.as_role("admin")
    for code, level, parent, boundary in (
        ("C", "city", None, _square(116.0, 39.0, 1.0)),
        ("A", "county", "C", _square(116.0, 39.0, 0.5)),
        ("B", "county", "C", _square(116.5, 39.0, 0.5)),
    ):
        body = {"name": code, "level": level, "parent_code": parent, "boundary": boundary}
        r = api.client.put(f"/api/v1/grids/{code}", json=body, headers=admin)
        assert r.status_code in (200, 201), r.text


def _all(api: Api) -> list[dict[str, Any]]:
    page = api.client.get(CAMS, params={"limit": 1000}, headers=api.as_role("integrator"))
    assert page.status_code == 200 and page.json()["next_cursor"] is None
    items: list[dict[str, Any]] = page.json()["items"]
    return items


def _channel(api: Api) -> None:
    now = utcnow()
    with api.services.tx() as session:
        gb28181.register(
            session,
            DEVICE,
            transport="UDP",
            address="127.0.0.1:5062",
            contact=f"sip:{DEVICE}@127.0.0.1:5062",
            expires_at=now + timedelta(hours=1),
            now=now,
            accept_unknown=True,
        )
        items = [gb28181.CatalogItem(CHANNEL, name="东门", longitude=116.7, latitude=39.2)]
        gb28181.replace_catalog(session, DEVICE, items, now)


def test_a_json_import_creates_places_and_audits_every_camera(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    _grids(api)
    _channel(api)
    rows = [
        {  # placed by its location: county A
            "name": "east gate",
            "rtsp_url": f"rtsp://admin:{SECRET}@192.0.2.7/main",
            "substream_url": f"rtsp://admin:{SECRET}@192.0.2.7/sub",
            "location": {"lat": 39.2, "lon": 116.2},
            "national_id": "11010500001320000001",
            "enabled": False,
        },
        {"name": "market", "rtsp_url": "rtsp://192.0.2.8/m", "grid_code": "B", "enabled": False},
        {"name": "channel", "gb28181": {"device_id": DEVICE, "channel_id": CHANNEL}},
    ]
    with caplog.at_level(logging.DEBUG):
        r = api.client.post(IMPORT, json=rows, headers=api.as_role("integrator"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] == 3 and len(body["ids"]) == 3
    cams = {c["id"]: c for c in _all(api)}
    east, market, channel = (cams[i] for i in body["ids"])
    assert (east["grid_code"], market["grid_code"], channel["grid_code"]) == ("A", "B", "B")
    assert east["rtsp_url"] == "rtsp://admin:***@192.0.2.7/main"
    assert east["substream_url"] == "rtsp://admin:***@192.0.2.7/sub"
    assert east["national_id"] == "11010500001320000001" and east["enabled"] is False
    assert channel["gb28181"] == {"device_id": DEVICE, "channel_id": CHANNEL}
    assert channel["national_id"] == CHANNEL and channel["location"] == {"lat": 39.2, "lon": 116.7}
    shown = [r.text, api.client.get(CAMS, headers=api.as_role("integrator")).text, caplog.text]
    assert all(SECRET not in text for text in shown)
    with api.services.db.session() as session:
        from storage.cameras import get_camera

        row = get_camera(session, east["id"])
        assert row is not None and row.main_url_enc and SECRET not in row.main_url_enc
        assert api.services.secrets.decrypt(row.main_url_enc).endswith(f"{SECRET}@192.0.2.7/main")
        assert row.grid_auto is True  # placed from its location: re-placed by grid imports
    audit = api.client.get(
        "/api/v1/audit", params={"resource": "camera"}, headers=api.as_role("admin")
    ).json()
    imports = [a for a in audit if a["action"] == "import"]
    assert len(imports) == 1 and imports[0]["detail"]["ids"] == body["ids"]


def test_a_csv_import_reads_its_columns_in_any_order(api: Api) -> None:
    _grids(api)
    text = (
        "\ufeffName,lon,lat,rtsp_url,enabled,national_id\r\n"  # a BOM, as Excel writes
        f'"gate, north",116.2,39.1,rtsp://u:{SECRET}@192.0.2.1/a,false,11010500001320000002\r\n'
        "\r\n"
        "plain,,,rtsp://192.0.2.2/b,0,\r\n"
    )
    r = api.client.post(IMPORT, content=text.encode(), headers=CSV | api.as_role("integrator"))
    assert r.status_code == 201, r.text
    assert SECRET not in r.text
    gate, plain = (next(c for c in _all(api) if c["id"] == i) for i in r.json()["ids"])
    assert gate["name"] == "gate, north" and gate["grid_code"] == "A"
    assert gate["location"] == {"lat": 39.1, "lon": 116.2}
    assert plain["location"] is None and plain["grid_code"] is None
    assert gate["enabled"] is plain["enabled"] is False


def test_bad_rows_are_all_named_and_nothing_is_created(api: Api) -> None:
    h = api.as_role("integrator")
    text = (
        "name,rtsp_url,lat,lon,national_id,enabled\n"
        "ok,rtsp://192.0.2.1/a,,,11010500001320000003,false\n"
        f"no url,,,,,false\n"  # line 3
        "ok too,rtsp://192.0.2.1/b,,,,false\n"
        f'"bad\nplace",rtsp://u:{SECRET}@192.0.2.1:99999/c,91,,,false\n'  # line 5, 2 lines
        "same id,rtsp://192.0.2.1/d,,,11010500001320000003,false\n"  # line 7
    )
    r = api.client.post(IMPORT, content=text, headers=CSV | h)
    assert r.status_code == 422, r.text
    assert SECRET not in r.text
    found = {(p["line"], p["field"]) for p in r.json()["detail"]}
    assert found == {(3, "rtsp_url"), (5, "rtsp_url"), (5, "lat"), (5, "lon"), (7, "national_id")}
    assert all(p["loc"] == ["body", p["line"], p["field"]] for p in r.json()["detail"])
    assert _all(api) == []

    rows: list[Any] = [
        {"name": "ok", "rtsp_url": "rtsp://192.0.2.1/a"},
        {"name": "no url"},
        "not a camera",
        {"name": "onvif", "onvif": {"host": "192.0.2.9", "username": "u", "password": SECRET}},
        {"name": "x", "rtsp_url": "rtsp://192.0.2.1/a", "colour": "red"},
        {"name": "gb", "gb28181": {"device_id": DEVICE, "channel_id": CHANNEL}},
    ]
    r = api.client.post(IMPORT, json=rows, headers=h)
    assert r.status_code == 422, r.text
    assert SECRET not in r.text
    found = {(p["line"], p["field"]) for p in r.json()["detail"]}
    assert found == {
        (2, "rtsp_url"),
        (3, ""),
        (4, "onvif"),
        (5, "colour"),
        (6, "gb28181.device_id"),
    }
    onvif = next(p for p in r.json()["detail"] if p["field"] == "onvif")
    assert "POST /cameras" in onvif["msg"]
    assert _all(api) == []


def test_bodies_that_are_not_an_import(api: Api) -> None:
    h = api.as_role("integrator")
    assert api.client.post(IMPORT, json={"name": "x"}, headers=h).status_code == 422
    bad_json = api.client.post(
        IMPORT, content=b"[{", headers=h | {"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400
    latin1 = api.client.post(IMPORT, content="name\nGaré\n".encode("latin-1"), headers=CSV | h)
    assert latin1.status_code == 400
    xml = api.client.post(IMPORT, content=b"<x/>", headers=h | {"Content-Type": "text/xml"})
    assert xml.status_code == 415
    header = api.client.post(IMPORT, content="name,url\nx,y\n", headers=CSV | h)
    assert header.status_code == 422
    assert header.json()["detail"][0] | {"msg": ""} == {
        "line": 1,
        "field": "url",
        "msg": "",
        "loc": ["body", 1, "url"],
        "type": "value_error",
    }
    ragged = api.client.post(IMPORT, content="name,rtsp_url\nx\n", headers=CSV | h)
    assert ragged.status_code == 422 and ragged.json()["detail"][0]["line"] == 2
    empty = api.client.post(IMPORT, content="name,rtsp_url\n", headers=CSV | h)
    assert empty.status_code == 201 and empty.json() == {"created": 0, "ids": []}
    operator = api.client.post(IMPORT, json=[], headers=api.as_role("operator"))
    assert operator.status_code == 403


def test_file_sources_are_refused_unless_allowed(api: Api) -> None:
    rows = [
        {"name": "a", "rtsp_url": "rtsp://192.0.2.1/a"},
        {"name": "b", "rtsp_url": "FILE:///etc/passwd"},
        {"name": "c", "rtsp_url": "rtsp://192.0.2.1/c", "substream_url": "file:///x.mp4"},
    ]
    r = api.client.post(IMPORT, json=rows, headers=api.as_role("integrator"))
    assert r.status_code == 422, r.text
    found = {(p["line"], p["field"]) for p in r.json()["detail"]}
    assert found == {(2, "rtsp_url"), (3, "substream_url")}
    assert "file://" in r.json()["detail"][0]["msg"]
    assert _all(api) == []


def test_a_scoped_token_imports_only_into_its_grid(api: Api) -> None:
    _grids(api)
    with api.services.db.session() as session:
        token, _ = create_token(session, "integrator", "county A", grid_scope="A")
    scoped = {"Authorization": f"Bearer {token}"}
    inside = {"name": "in", "rtsp_url": "rtsp://192.0.2.1/a", "enabled": False}
    rows = [
        inside | {"location": {"lat": 39.1, "lon": 116.1}},
        inside | {"name": "out", "location": {"lat": 39.1, "lon": 116.7}},  # lands in B
        inside | {"name": "nowhere"},  # no grid: outside every scope
        inside | {"name": "given", "grid_code": "B"},
    ]
    r = api.client.post(IMPORT, json=rows, headers=scoped)
    assert r.status_code == 403, r.text
    detail = r.json()["detail"]
    assert "line 2: grid B" in detail and "line 3: no grid" in detail and "line 4" in detail
    assert "line 1" not in detail
    assert _all(api) == []
    r = api.client.post(IMPORT, json=rows[:1], headers=scoped)
    assert r.status_code == 201, r.text


def _city(n: int) -> str:
    lines = ["name,rtsp_url,substream_url,lat,lon,national_id,enabled"]
    for i in range(n):
        lat, lon = 39.0 + (i % 100) / 100, 116.0 + (i // 100 % 100) / 100
        lines.append(
            f"camera {i:05d},rtsp://admin:{SECRET}@10.{i // 65536}.{i // 256 % 256}.{i % 256}"
            f"/Streaming/Channels/101,rtsp://admin:{SECRET}@10.0.0.1/Streaming/Channels/102,"
            f"{lat:.5f},{lon:.5f},{11010500001320000000 + i},false"
        )
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_twenty_thousand_cameras_in_one_call(api: Api) -> None:
    _grids(api)
    text = _city(20_000)
    assert len(text) < api.services.settings.server.max_body_bytes
    h = CSV | api.as_role("integrator")
    t0 = time.monotonic()
    r = api.client.post(IMPORT, content=text, headers=h)
    took = time.monotonic() - t0
    assert r.status_code == 201, r.text[:500]
    assert r.json()["created"] == 20_000 and len(set(r.json()["ids"])) == 20_000
    assert SECRET not in r.text
    print(f"\n20,000 cameras imported ({len(text) / 1e6:.1f} MB of CSV) in {took:.1f} s")
    assert took < 30
    page = api.client.get(CAMS, params={"limit": 1000, "grid_code": "A"}, headers=h).json()
    assert len(page["items"]) == 1000 and page["next_cursor"]
    assert SECRET not in str(page)
