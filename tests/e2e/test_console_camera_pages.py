"""The camera wall of a city in headless Chromium: filtered by grid and state on the server,
paged with ``next_cursor`` (issue "A city, measured: 20,000 cameras").

135 cameras imported at once (``POST /cameras/import``, disabled: nothing to connect to),
130 in grid G1 and 5 in G2. The wall reads ``GET /cameras`` 100 at a time by name, for the
grid picked in its selector (the tree follows), and asks for the next hundred only when
the operator pages past them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from api.app import create_app
from config.settings import Settings
from storage.tokens import create_token
from tests.conftest import LiveServer
from tests.e2e.conftest import ADMIN, screenshot

IN_G1, IN_G2 = 130, 5


@dataclass
class City:
    url: str
    operator: str


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    workdir: Path = tmp_path_factory.mktemp("camera-pages")
    app = create_app(Settings(data_dir=workdir / "data", auth={"bootstrap_token": ADMIN}))
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:
        with app.state.services.db.session() as session:
            operator, _ = create_token(session, "operator", "city operator")
        for code, level, parent in (("C", "city", None), ("G1", "grid", "C"), ("G2", "grid", "C")):
            body = {"name": f"Grid {code}", "level": level, "parent_code": parent}
            assert http.put(f"/api/v1/grids/{code}", json=body).is_success
        rows = ["name,rtsp_url,grid_code,enabled"]
        rows += [f"g1 cam {n:03d},rtsp://192.0.2.1/{n},G1,false" for n in range(IN_G1)]
        rows += [f"g2 cam {n:03d},rtsp://192.0.2.2/{n},G2,false" for n in range(IN_G2)]
        made = http.post(
            "/api/v1/cameras/import",
            content="\n".join(rows),
            headers={"Content-Type": "text/csv"},
        )
        assert made.status_code == 201, made.text
        yield City(server.url, operator)


def _names(page: Page) -> list[str]:
    names: list[str] = page.eval_on_selector_all(
        "#wall li.tile .tile-bar a", "links => links.map((a) => a.textContent)"
    )
    return names


def test_the_wall_pages_a_grid_read_from_the_server(city: City, context: BrowserContext) -> None:
    context.add_init_script(f"sessionStorage.setItem('xl.token', {city.operator!r});")
    page = context.new_page()
    asked: list[dict[str, list[str]]] = []
    page.on(
        "request",
        lambda r: (
            asked.append(parse_qs(urlsplit(r.url).query))
            if urlsplit(r.url).path == "/api/v1/cameras"
            else None
        ),
    )
    page.goto(city.url + "/console/#/cameras")
    tiles = page.locator("#wall li.tile")
    expect(tiles).to_have_count(4)
    page.click(".layouts [data-layout='4']")
    expect(tiles).to_have_count(16)

    page.select_option("#wall-grid", "G1")
    expect(page.locator("#grid-tree [data-code='G1']")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#wall-page")).to_have_text("Page 1")  # more than read so far
    assert _names(page) == [f"g1 cam {n:03d}" for n in range(16)]
    wall_asks = [q for q in asked if q.get("grid_code")]
    assert wall_asks == [{"grid_code": ["G1"], "order": ["name"], "limit": ["100"]}]

    for _ in range(6):  # to page 7: past the first hundred
        page.click("#wall-next")
    expect(page.locator("#wall-page")).to_have_text(f"Page 7 of {-(-IN_G1 // 16)}")
    assert _names(page) == [f"g1 cam {n:03d}" for n in range(96, 112)]
    wall_asks = [q for q in asked if q.get("grid_code")]
    assert len(wall_asks) == 2 and wall_asks[1]["cursor"] and wall_asks[1]["grid_code"] == ["G1"]
    page.click("#wall-next")
    page.click("#wall-next")
    expect(tiles).to_have_count(IN_G1 - 8 * 16)
    expect(page.locator("#wall-next")).to_be_disabled()
    assert _names(page) == ["g1 cam 128", "g1 cam 129"]
    screenshot(page, "console-wall-city.png")

    # The state, on the server too: every camera here is disabled.
    page.select_option("#wall-state", "online")
    expect(page.locator("#wall-empty")).to_have_text("No cameras match these filters.")
    expect(tiles).to_have_count(0)
    page.select_option("#wall-state", "disabled")
    expect(tiles).to_have_count(16)
    expect(page.locator("#wall-page")).to_have_text("Page 1")  # another filter: page 1
    assert [q.get("state") for q in asked[-2:]] == [["online"], ["disabled"]]

    page.select_option("#wall-grid", "G2")
    expect(tiles).to_have_count(IN_G2)
    expect(page.locator(".pager")).to_be_hidden()
    page.select_option("#wall-grid", "")  # all grids
    expect(page.locator("#grid-tree button[aria-pressed='true']")).to_have_text("All grids")
    expect(tiles).to_have_count(16)
    assert _names(page)[0] == "g1 cam 000"
