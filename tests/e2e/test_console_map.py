"""The console's map view in headless Chromium, under the console's CSP.

1. A city (2 counties, 4 grids) imported as GeoJSON is drawn nested (the finer level on
   top), cameras are markers coloured by their state (a real RTSP camera online, cameras
   that cannot connect offline, a disabled one), open incidents are pins that follow the
   event stream; clicking a grid filters the queue and the wall to it, clicking a camera
   (or Enter on it) opens its page. No CSP violation; no base tiles.
2. With base tiles configured, from another origin: the policy allows exactly that origin
   for images, the tiles load, the credit is shown.

The screenshot of (1) goes to tests/.artifacts/console-map.png, and with
XL_DOCS_SCREENSHOTS=1 to docs/console-map.png (the one docs/contract.md shows).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from api.app import create_app
from config.settings import Settings
from storage.incidents import NewIncident, create_incident
from storage.models import utcnow
from storage.tokens import create_token
from tests.conftest import REPO, LiveServer
from tests.e2e.conftest import Console, screenshot
from tests.e2e.test_console_csp import WATCH_VIOLATIONS

ADMIN = "xl_test_admin_token_for_map_tiles_01"


def box(
    code: str, name: str, level: str, parent: str | None, w: float, s: float, e: float, n: float
) -> dict[str, Any]:
    """A rectangular grid as a GeoJSON feature (lon, lat)."""
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return {
        "type": "Feature",
        "properties": {"code": code, "name": name, "level": level, "parent_code": parent},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


CITY = {
    "type": "FeatureCollection",
    "features": [
        box("MAP-CITY", "雪亮市 Xueliang City", "city", None, 120.00, 30.10, 120.40, 30.40),
        box("MAP-W", "西区 West District", "county", "MAP-CITY", 120.00, 30.10, 120.20, 30.40),
        box("MAP-E", "东区 East District", "county", "MAP-CITY", 120.20, 30.10, 120.40, 30.40),
        box("MAP-W-1", "西一网格 West 1", "grid", "MAP-W", 120.03, 30.15, 120.10, 30.25),
        box("MAP-W-2", "西二网格 West 2", "grid", "MAP-W", 120.11, 30.15, 120.18, 30.25),
        box("MAP-E-1", "东一网格 East 1", "grid", "MAP-E", 120.22, 30.20, 120.30, 30.30),
        box("MAP-E-2", "东二网格 East 2", "grid", "MAP-E", 120.31, 30.20, 120.38, 30.30),
    ],
}


@dataclass
class City:
    console: Console
    online: str  # the RTSP camera, in MAP-W-1
    missing: str  # its stream does not exist, in MAP-E-1 (two open incidents)
    south: str  # nothing listens, in MAP-E-2
    disabled: str  # in MAP-W-2
    unplaced: str  # no location


def _where(lat: float, lon: float) -> dict[str, Any]:
    return {"location": {"lat": lat, "lon": lon}, "grid_code": None}  # placed by location


@pytest.fixture(scope="module")
def city(console: Console) -> City:
    http = console.http
    r = http.post("/api/v1/grids/import", json=CITY)
    assert r.status_code == 200, r.text
    # Off the grids' centres, where the tests click the grids.
    for camera_id, where in [
        (console.camera_id, _where(30.235, 120.045)),
        (console.offline_camera_id, _where(30.285, 120.24)),
    ]:
        assert http.patch(f"/api/v1/cameras/{camera_id}", json=where).status_code == 200
    south = _camera(http, "南门 South gate", "rtsp://127.0.0.1:9/none", **_where(30.21, 120.37))
    disabled = _camera(
        http, "停用 Disabled", "rtsp://127.0.0.1:9/x", enabled=False, **_where(30.16, 120.17)
    )
    unplaced = _camera(http, "无位置 No location", "rtsp://127.0.0.1:9/y", enabled=False)
    assert http.get(f"/api/v1/cameras/{console.camera_id}").json()["grid_code"] == "MAP-W-1"
    services = console.app.state.services
    ids = [_incident(services, console.offline_camera_id, "MAP-E-1") for _ in range(3)]
    for incident_id, action in [(ids[1], "acknowledge"), (ids[2], "dismiss")]:
        r = http.post(f"/api/v1/incidents/{incident_id}/review", json={"action": action})
        assert r.status_code == 200, r.text
    return City(console, console.camera_id, console.offline_camera_id, south, disabled, unplaced)


def _camera(http: httpx.Client, name: str, url: str, **body: Any) -> str:
    r = http.post("/api/v1/cameras", json={"name": name, "rtsp_url": url, **body})
    assert r.status_code == 201, r.text
    camera_id: str = r.json()["id"]
    return camera_id


def _incident(services: Any, camera_id: str, grid_code: str) -> str:
    with services.tx() as session:  # wakes the event stream
        incident_id: str = create_incident(
            session, NewIncident(camera_id, grid_code, "motion", utcnow(), clip=False)
        ).id
    return incident_id


def _open_map(context: BrowserContext, url: str, token: str) -> tuple[Page, list[str]]:
    context.add_init_script(WATCH_VIOLATIONS)
    context.add_init_script(f"sessionStorage.setItem('xl.token', {token!r});")
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    page.goto(f"{url}/console/#/map")
    expect(page.locator("#map")).to_have_attribute("data-ready", "1")
    return page, messages


def _violations(page: Page, messages: list[str]) -> list[str]:
    reported: list[str] = page.evaluate("window.__csp")
    return reported + [m for m in messages if "Content Security Policy" in m]


def _camera_marker(page: Page, camera_id: str) -> Any:
    return page.locator(f".map-camera[data-camera-id='{camera_id}']")


def test_the_map_draws_the_city_and_leads_to_queue_wall_and_cameras(
    city: City, context: BrowserContext
) -> None:
    console = city.console
    page, messages = _open_map(context, console.url, console.operator)
    expect(page.locator("#nav a[href='#/map']")).to_have_attribute("aria-current", "")
    csp = page.evaluate(
        "async () => (await fetch('/console/')).headers.get('content-security-policy')"
    )
    assert "img-src 'self' blob: data:;" in csp  # no tiles configured: no other origin

    # Grids, nested: every level drawn, the finer one on top where they overlap.
    grids = page.locator("path[data-grid-code]")
    expect(grids).to_have_count(7)
    assert page.locator("path[data-level='county']").count() == 2
    assert page.locator("path[data-level='grid']").count() == 4
    on_top = page.locator("path[data-grid-code='MAP-W-2']").evaluate(
        """p => { const r = p.getBoundingClientRect();
                  const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
                  return hit.dataset.gridCode; }"""
    )
    assert on_top == "MAP-W-2"

    # Cameras with a location, coloured by state; the one without is counted.
    expect(page.locator(".map-camera[data-camera-id]")).to_have_count(4)
    expect(_camera_marker(page, city.online)).to_have_attribute(
        "data-state", "online", timeout=40_000
    )
    expect(_camera_marker(page, city.missing)).to_have_attribute(
        "data-state", "offline", timeout=30_000
    )
    expect(_camera_marker(page, city.south)).to_have_attribute(
        "data-state", "offline", timeout=30_000
    )
    expect(_camera_marker(page, city.disabled)).to_have_attribute("data-state", "disabled")
    expect(_camera_marker(page, city.unplaced)).to_have_count(0)
    expect(page.locator("#map-summary")).to_contain_text(
        "4 cameras on the map, 1 without a location"
    )

    # Open incidents as pins (new and acknowledged, not dismissed), following the stream.
    pin = page.locator(f".map-pin[data-pin-camera='{city.missing}']")
    expect(pin).to_have_attribute("data-count", "2")
    expect(page.locator(f".map-pin[data-pin-camera='{city.south}']")).to_have_count(0)
    page.evaluate("window.__sameDocument = true")
    _incident(console.app.state.services, city.south, "MAP-E-2")
    expect(page.locator(f".map-pin[data-pin-camera='{city.south}']")).to_have_attribute(
        "data-count", "1"
    )
    first = console.http.get(
        "/api/v1/incidents", params={"camera_id": city.missing, "status": "new"}
    )
    r = console.http.post(
        f"/api/v1/incidents/{first.json()['items'][0]['id']}/review", json={"action": "resolve"}
    )
    assert r.status_code == 200, r.text
    expect(pin).to_have_attribute("data-count", "1")
    pin.click()
    expect(page.locator(".map-popup a[href^='#/incidents/']")).to_have_count(1)
    assert page.evaluate("window.__sameDocument") is True

    _screenshot(page)

    # A grid picked on the map filters the queue and the wall, as the tree does.
    page.locator("path[data-grid-code='MAP-E-2']").click()
    expect(page.locator("#grid-tree [data-code='MAP-E-2']")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(page.locator("#map-selection .chip")).to_contain_text("East 2")
    expect(page.locator("path[data-grid-code='MAP-E-2']")).to_have_class(
        re.compile(r"\bselected\b")
    )
    page.locator("#map-selection a[href='#/incidents']").click()
    expect(page.locator("#queue")).to_be_visible()
    expect(page.locator("main .title-row .chip")).to_contain_text("East 2")
    page.goto(f"{console.url}/console/#/cameras")
    expect(page.locator("li.tile")).to_have_count(1)
    expect(page.locator(f"li.tile[data-camera='{city.south}']")).to_be_visible()

    # A county (clicked outside its grids) selects its whole subtree.
    page.goto(f"{console.url}/console/#/map")
    expect(page.locator("#map")).to_have_attribute("data-ready", "1")
    page.locator("#map-selection button").click()  # all grids: the map shows the city again
    expect(page.locator("#map-selection .chip")).to_have_count(0)
    county = page.locator("path[data-grid-code='MAP-W']")
    size = county.bounding_box()
    assert size is not None
    county.click(position={"x": size["width"] / 2, "y": size["height"] * 0.1})
    expect(page.locator("#grid-tree [data-code='MAP-W']")).to_have_attribute("aria-pressed", "true")
    page.goto(f"{console.url}/console/#/cameras")
    expect(page.locator("li.tile")).to_have_count(2)  # the online and the disabled camera
    expect(page.locator(f"li.tile[data-camera='{city.online}']")).to_be_visible()

    # A camera marker opens the camera's page, by click or by Enter.
    page.goto(f"{console.url}/console/#/map")
    _camera_marker(page, city.south).click()
    expect(page).to_have_url(f"{console.url}/console/#/cameras/{city.south}")
    expect(page.locator("main h1")).to_have_text("南门 South gate")
    page.go_back()
    expect(page.locator("#map")).to_have_attribute("data-ready", "1")
    _camera_marker(page, city.missing).focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{console.url}/console/#/cameras/{city.missing}")
    assert _violations(page, messages) == []


def _screenshot(page: Page) -> None:
    """The map in Chinese, the city in view (tiles off): tests/.artifacts, docs/ on demand."""
    page.select_option("#lang", "zh-CN")
    expect(page.locator("#map")).to_have_attribute("data-ready", "1")
    expect(page.locator("#map-summary")).to_contain_text("地图上 4 台摄像机")
    page.mouse.move(0, 0)  # no hover, no tooltip
    path = screenshot(page, "console-map.png")
    if os.environ.get("XL_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(path, REPO / "docs" / "console-map.png")
    page.select_option("#lang", "en")
    expect(page.locator("#map")).to_have_attribute("data-ready", "1")


# --- 2. base tiles from another origin ---------------------------------------------------


class TileServer:
    """Serves one grey 256×256 PNG for every path, counting the requests."""

    def __init__(self) -> None:
        ok, png = cv2.imencode(".png", np.full((256, 256, 3), 220, np.uint8))
        assert ok
        body = png.tobytes()
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, TileServer]]:
    with TileServer() as tiles:
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("console-map") / "data",
            auth={"bootstrap_token": ADMIN},
            console={
                "map_tiles_url": tiles.origin + "/{z}/{x}/{y}.png",
                "map_attribution": "测试底图 Test tiles",
            },
        )
        app = create_app(settings, role="api")
        auth = {"Authorization": f"Bearer {ADMIN}"}
        with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:
            assert http.post("/api/v1/grids/import", json=CITY).status_code == 200
            with app.state.services.db.session() as session:
                operator, _ = create_token(session, "operator", "Map operator")
            yield server.url, operator, tiles


def test_base_tiles_from_their_origin_load_under_the_policy(
    tiled: tuple[str, str, TileServer], context: BrowserContext
) -> None:
    url, operator, tiles = tiled
    config = httpx.get(f"{url}/console/config.json")
    assert config.json() == {
        "map": {
            "tiles": {"url": tiles.origin + "/{z}/{x}/{y}.png", "subdomains": "abc"},
            "attribution": "测试底图 Test tiles",
        }
    }
    assert (
        f"img-src 'self' blob: data: {tiles.origin};" in config.headers["content-security-policy"]
    )
    assert tiles.origin not in httpx.get(f"{url}/healthz").headers["content-security-policy"]

    page, messages = _open_map(context, url, operator)
    expect(page.locator("path[data-grid-code]")).to_have_count(7)
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.leaflet-tile')]"
        ".some((i) => i.complete && i.naturalWidth === 256)"
    )
    assert tiles.requests > 0
    expect(page.locator(".map-credit")).to_have_text("Map tiles: 测试底图 Test tiles")
    assert _violations(page, messages) == []
