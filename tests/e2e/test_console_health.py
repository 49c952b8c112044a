"""The console's health page (完好率, issue #17) in headless Chromium, under the console's CSP.

A city (HC) with two counties: HW, whose one camera was online and healthy the whole day,
and HE, with a real RTSP camera (in HE-1) whose picture has been degraded for the last hour
and a camera (in HE-2) offline for the last 6 hours, its stream unreachable; 21 more
unreachable cameras in no grid fill more than a page of the list. The history is seeded in
the database (state and quality transitions, the degraded camera's quality row and a
reference view learnt from a real frame); the picture checks are off, so nothing
overwrites it. The page must show the figures the API computes from that history, colour
the map's grids by them, drill down, list the two cameras with why and both pictures, page
the list, and speak Chinese.

The screenshot goes to tests/.artifacts/console-health.png, and with
XL_DOCS_SCREENSHOTS=1 to docs/console-health.png (the one docs/contract.md shows).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from analytics.quality import QualityMonitor, reference_to_bytes
from api.app import create_app
from config.settings import Settings
from storage.models import (
    CameraQuality,
    CameraQualityChange,
    CameraQualityReference,
    CameraStateChange,
    utcnow,
)
from storage.tokens import create_token
from tests.conftest import REPO, LiveServer, wait_for
from tests.e2e.conftest import VTEST, screenshot
from tests.e2e.test_console_csp import WATCH_VIOLATIONS
from tests.e2e.test_console_map import box
from tests.peers.rtsp import RtspServer, file_mount

ADMIN = "xl_test_admin_token_for_health_0001"
DEAD = "rtsp://127.0.0.1:9"  # nothing listens: connection refused at once
SPARES = 21  # unreachable cameras in no grid: with the two above, more than a page (20)

CITY = {
    "type": "FeatureCollection",
    "features": [
        box("HC", "健康市 Health City", "city", None, 120.00, 30.10, 120.40, 30.40),
        box("HW", "西区 West", "county", "HC", 120.00, 30.10, 120.20, 30.40),
        box("HE", "东区 East", "county", "HC", 120.20, 30.10, 120.40, 30.40),
        box("HW-1", "西一 West 1", "grid", "HW", 120.03, 30.15, 120.10, 30.25),
        box("HE-1", "东一 East 1", "grid", "HE", 120.22, 30.20, 120.30, 30.30),
        box("HE-2", "东二 East 2", "grid", "HE", 120.31, 30.20, 120.38, 30.30),
    ],
}
# Colours map.css gives each level (var(--ok), var(--fair), var(--new)).
GREEN, AMBER, RED = "rgb(30, 122, 70)", "rgb(217, 145, 0)", "rgb(192, 57, 43)"


@dataclass
class City:
    url: str
    operator: str
    http: httpx.Client  # as admin
    services: Any
    healthy: str  # HW-1: online all day (disabled: the runtime leaves its history alone)
    degraded: str  # HE-1: the RTSP camera, its picture degraded for the last hour
    offline: str  # HE-2: online until 6 h ago, its stream unreachable since


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    workdir = tmp_path_factory.mktemp("console-health")
    rtsp = RtspServer({"/campus": file_mount(VTEST, fps=10)}, workdir / "rtsp").start()
    settings = Settings(
        data_dir=workdir / "data",
        auth={"bootstrap_token": ADMIN},
        quality={"enabled": False},  # the seeded quality stays as seeded
        ingest={"backoff_initial_s": 0.5, "backoff_max_s": 5.0},
    )
    app = create_app(settings)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:
            services = app.state.services
            with services.db.session() as session:
                operator, _ = create_token(session, "operator", "Health operator")
            assert http.post("/api/v1/grids/import", json=CITY).status_code == 200
            found = City(
                server.url,
                operator,
                http,
                services,
                healthy=_camera(http, "Alpha 西门 West gate", f"{DEAD}/a", "HW-1", enabled=False),
                degraded=_camera(http, "Bravo 校门 Campus gate", rtsp.url("/campus"), "HE-1"),
                offline=_camera(http, "Charlie 东门 East gate", f"{DEAD}/c", "HE-2"),
            )
            _spares(http)
            _history(found)
            yield found
    finally:
        rtsp.stop()


def _camera(http: httpx.Client, name: str, url: str, grid: str, enabled: bool = True) -> str:
    body = {"name": name, "rtsp_url": url, "grid_code": grid, "enabled": enabled}
    r = http.post("/api/v1/cameras", json=body)
    assert r.status_code == 201, r.text
    camera_id: str = r.json()["id"]
    return camera_id


def _spares(http: httpx.Client) -> None:
    rows = ["name,rtsp_url,enabled"] + [f"zz spare {n:02d},{DEAD}/s{n},true" for n in range(SPARES)]
    r = http.post(
        "/api/v1/cameras/import", content="\n".join(rows), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 201, r.text


def _history(city: City) -> None:
    """Two days of states, an hour of degraded picture, and the degraded camera's
    reference view (learnt from a frame of the video it streams)."""
    now = utcnow()

    def ago(hours: float) -> datetime:
        return now - timedelta(hours=hours)

    with city.services.tx() as session:
        for camera_id in (city.healthy, city.degraded, city.offline):
            session.add(CameraStateChange(camera_id=camera_id, state="online", at=ago(48)))
        session.add(CameraStateChange(camera_id=city.offline, state="offline", at=ago(6)))
        session.add(CameraQualityChange(camera_id=city.degraded, state="degraded", at=ago(1)))
        problems = [
            _problem("occlusion", ago(1), 0.62, tamper=True),
            _problem("blur", ago(0.8), 0.7, tamper=False),
        ]
        picture = CameraQuality(camera_id=city.degraded, state="degraded", since=ago(1))
        picture.problems = problems
        session.add(picture)
        session.add(
            CameraQualityReference(
                camera_id=city.degraded, monochrome=False, data=_reference(), learnt_at=ago(30)
            )
        )


def _problem(kind: str, since: datetime, score: float, tamper: bool) -> dict[str, Any]:
    return {"kind": kind, "since": since.isoformat(), "score": score, "tamper": tamper}


def _reference() -> bytes:
    capture = cv2.VideoCapture(str(VTEST))
    ok, frame = capture.read()
    capture.release()
    assert ok
    return reference_to_bytes(QualityMonitor().set_reference(np.asarray(frame, np.uint8), 0.0))


def _ready(city: City) -> str:
    """Wait until the RTSP camera streams and the unreachable one has its error; the
    error, as the API gives it."""

    def status(camera_id: str) -> dict[str, Any]:
        body: dict[str, Any] = city.http.get(f"/api/v1/cameras/{camera_id}/status").json()
        return body

    def offline_with_error() -> str | None:
        found = status(city.offline)
        return found["last_error"] if found["state"] == "offline" else None

    wait_for(lambda: status(city.degraded)["state"] == "online", 30, "the RTSP camera online")
    error: str = wait_for(offline_with_error, 30, "the unreachable camera offline with its error")
    return error


def _open(context: BrowserContext, city: City) -> tuple[Page, list[str]]:
    context.add_init_script(WATCH_VIOLATIONS)
    context.add_init_script(f"sessionStorage.setItem('xl.token', {city.operator!r});")
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    page.goto(f"{city.url}/console/#/health")
    return page, messages


def _percent(locator: Locator) -> float:
    text = locator.inner_text()
    found = re.fullmatch(r"(\d+\.\d) %", text.strip())
    assert found, text
    return float(found.group(1))


def _row(page: Page, code: str) -> Locator:
    return page.locator(f"#health-grids tbody tr[data-code='{code}']")


def _good(page: Page, code: str) -> float:
    return _percent(_row(page, code).locator("td").nth(3))


def _online(page: Page, code: str) -> float:
    return _percent(_row(page, code).locator("td").nth(2))


def _codes(page: Page) -> list[str]:
    codes: list[str] = page.eval_on_selector_all(
        "#health-grids tbody tr", "rows => rows.map((r) => r.dataset.code)"
    )
    return codes


def _fill(page: Page, code: str) -> tuple[str, str]:
    """The fill and stroke Chromium renders for a grid's path on the health map."""
    expect(page.locator("#health-map")).to_have_attribute("data-health", "1")
    path = page.locator(f"#health-map path[data-grid-code='{code}']")
    colours: list[str] = path.evaluate(
        "p => { const s = getComputedStyle(p); return [s.fill, s.stroke]; }"
    )
    return colours[0], colours[1]


def test_the_health_page_shows_figures_colours_and_the_cameras_not_healthy(
    city: City, context: BrowserContext
) -> None:
    error = _ready(city)
    page, messages = _open(context, city)
    expect(page.locator("#nav a[href='#/health']")).to_have_attribute("aria-current", "")
    expect(page.locator("main h1")).to_have_text("Video health")

    # All grids: the city, 66 of its 72 camera-hours online, 65 healthy (one hour degraded).
    expect(_row(page, "HC")).to_be_visible()
    assert _codes(page) == ["HC"]
    assert _online(page, "HC") == pytest.approx(100 * 66 / 72, abs=0.15)
    assert _good(page, "HC") == pytest.approx(100 * 65 / 72, abs=0.15)
    assert _fill(page, "HC") == (AMBER, AMBER)  # 90.3 %: between 90 and 98

    # A row drills down: the counties, HW all healthy (green), HE not (red).
    _row(page, "HC").click()
    expect(page.locator("#grid-tree [data-code='HC']")).to_have_attribute("aria-pressed", "true")
    expect(_row(page, "HW")).to_be_visible()
    assert _codes(page) == ["HE", "HW"]
    assert _good(page, "HW") == 100.0 and _online(page, "HW") == 100.0
    assert _good(page, "HE") == pytest.approx(100 * 41 / 48, abs=0.15)  # 85.4 %
    assert _online(page, "HE") == pytest.approx(100 * 42 / 48, abs=0.15)  # 87.5 %
    assert _percent(page.locator("#health-good")) == pytest.approx(100 * 65 / 72, abs=0.15)
    expect(page.locator("#health-cameras")).to_have_text(re.compile("Bravo"))
    assert _fill(page, "HW") == (GREEN, GREEN)
    assert _fill(page, "HE") == (RED, RED)
    assert _fill(page, "HE-1")[0] == "none"  # not in the table: an outline only

    # A grid clicked on the map drills down too: the degraded hour shows as 95.8 %.
    page.locator("#health-map path[data-grid-code='HE']").click()
    expect(page.locator("#grid-tree [data-code='HE']")).to_have_attribute("aria-pressed", "true")
    expect(_row(page, "HE-1")).to_be_visible()
    assert _codes(page) == ["HE-1", "HE-2"]
    assert _good(page, "HE-1") == pytest.approx(100 * 23 / 24, abs=0.15)
    assert _online(page, "HE-1") == pytest.approx(100.0, abs=0.15)
    assert _good(page, "HE-2") == pytest.approx(75.0, abs=0.15)
    expect(_row(page, "HE-1").locator("td").nth(5)).to_have_text("0")  # none ≥ 98 % healthy
    assert _fill(page, "HE-1") == (AMBER, AMBER)
    assert _fill(page, "HE-2") == (RED, RED)
    _the_two_cameras(page, city, error)

    # A week: the cameras were online two days of the seven.
    page.select_option("#health-period", "7d")
    expect(_row(page, "HE-1").locator("td").nth(3)).to_have_text(
        re.compile(r"^2[78]\.\d %$")  # 47 of 168 hours: 28.0 %
    )
    assert _good(page, "HE-1") == pytest.approx(100 * 47 / 168, abs=0.15)
    page.select_option("#health-period", "24h")
    expect(_row(page, "HE-1").locator("td").nth(3)).to_have_text(re.compile(r"^95\.\d %$"))

    _screenshot(page)
    _all_cameras_paged(page)
    assert _violations(page, messages) == []


def _the_two_cameras(page: Page, city: City, error: str) -> None:
    """HE's cameras not healthy: the offline one with its error, the degraded one with its
    problems (tamper marked) and both pictures; a new reference view can be asked for."""
    items = page.locator("#health-cameras li.health-camera")
    expect(items).to_have_count(2)
    offline = page.locator(f"li.health-camera[data-camera='{city.offline}']")
    expect(offline).to_have_attribute("data-kind", "offline")
    expect(offline.locator(".badge")).to_have_text("Offline")
    expect(offline.locator("dt").first).to_have_text("Offline since")
    expect(offline.locator(".health-error")).to_have_text(error)
    degraded = page.locator(f"li.health-camera[data-camera='{city.degraded}']")
    expect(degraded).to_have_attribute("data-kind", "degraded")
    expect(degraded.locator("li[data-kind='occlusion']")).to_contain_text("Covered")
    expect(degraded.locator("li[data-kind='occlusion']")).to_contain_text("Possible tampering")
    expect(degraded.locator("li[data-kind='blur']")).to_contain_text("Blurred")
    expect(degraded.locator("li[data-kind='blur'] .badge")).to_have_count(0)
    degraded.scroll_into_view_if_needed()
    for picture in ("img.health-now", "img.health-ref"):
        page.wait_for_function(
            "(sel) => { const i = document.querySelector(sel);"
            " return i && i.complete && i.naturalWidth > 0; }",
            arg=f"li[data-camera='{city.degraded}'] {picture}",
        )
    assert degraded.locator("img.health-ref").evaluate("i => i.naturalHeight") == 180

    degraded.locator("button.health-reference").click()
    expect(degraded.locator(".actions [role='status']")).to_contain_text("Requested")
    with city.services.db.session() as session:
        row = session.get(CameraQuality, city.degraded)
        assert row is not None and row.reference_requested_at is not None


def _all_cameras_paged(page: Page) -> None:
    """All grids: 23 cameras not healthy, by name, 20 a page."""
    page.locator("#grid-tree button", has_text="All grids").click()
    items = page.locator("#health-cameras li.health-camera")
    expect(items).to_have_count(20)
    names = items.locator(".tile-bar a")
    expect(names.first).to_have_text("Bravo 校门 Campus gate")
    page.click("#health-more")
    expect(items).to_have_count(2 + SPARES)
    expect(page.locator("#health-more")).to_be_hidden()
    expect(names.last).to_have_text(f"zz spare {SPARES - 1:02d}")


def _screenshot(page: Page) -> None:
    """In Chinese: the labels, the problems and the marks (and the docs' screenshot)."""
    page.select_option("#lang", "zh-CN")
    expect(page.locator("#nav a[href='#/health']")).to_have_text("完好率")
    expect(page.locator("main h1")).to_have_text("视频完好率")
    expect(page.locator("#health-grids thead th").nth(3)).to_have_text("完好率")
    expect(page.locator("li[data-kind='occlusion']")).to_contain_text("遮挡")
    expect(page.locator("li[data-kind='occlusion']")).to_contain_text("疑似人为破坏")
    expect(page.locator("#health-map-summary")).to_contain_text("完好率")
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.health-now, img.health-ref')]"
        ".every((i) => i.complete && i.naturalWidth > 0)"
    )
    page.mouse.move(0, 0)
    path = screenshot(page, "console-health.png")
    if os.environ.get("XL_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(path, REPO / "docs" / "console-health.png")
    page.select_option("#lang", "en")
    expect(page.locator("main h1")).to_have_text("Video health")


def _violations(page: Page, messages: list[str]) -> list[str]:
    reported: list[str] = page.evaluate("window.__csp")
    return reported + [m for m in messages if "Content Security Policy" in m]
