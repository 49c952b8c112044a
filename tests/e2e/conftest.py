"""End-to-end fixtures: the whole service with a real RTSP camera, and Debian's Chromium.

One service per module (starting it and waiting for incidents is the slow part): the
campus video (people walking) served by gst-rtsp-server, motion incidents with clips in
the local object store, an operator token. Chromium is driven by Playwright with
``executable_path=/usr/bin/chromium`` (no browser download). WebRTC stays on loopback:
aiortc gathers 127.0.0.1 only, Chromium is allowed loopback candidates, and the offer's
other candidates are dropped on the way to the service (see :func:`loopback_offers`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioice.ice
import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route, sync_playwright

from api.app import create_app
from config.settings import Settings
from live.webrtc import LiveService
from storage.tokens import create_token
from tests.conftest import REPO, SHARED_DATA, LiveServer
from tests.peers.rtsp import RtspServer, file_mount

ADMIN = "xl_test_admin_token_for_console_0001"
ARTIFACTS = REPO / "tests" / ".artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    # WebRTC on loopback: host candidates on 127.0.0.1, with real addresses (no mDNS).
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
VTEST = SHARED_DATA / "vtest.avi"


@dataclass
class Console:
    """The running service as the e2e tests see it."""

    app: Any
    url: str
    camera_id: str
    operator: str
    rtsp: RtspServer
    http: httpx.Client  # as admin
    offline_camera_id: str  # a camera whose stream does not exist
    loop_thread: int  # native id of the service's event-loop thread (aiortc runs there)

    @property
    def live(self) -> LiveService:
        live: LiveService = self.app.state.process.live
        return live


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    workdir = tmp_path_factory.mktemp("console")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aioice.ice, "get_host_addresses", lambda *_a, **_k: ["127.0.0.1"])
        rtsp = RtspServer({"/campus": file_mount(VTEST, fps=10)}, workdir / "rtsp").start()
        try:
            yield from _service(workdir, rtsp)
        finally:
            rtsp.stop()


def _service(workdir: Path, rtsp: RtspServer) -> Iterator[Console]:
    settings = Settings(
        data_dir=workdir / "data",
        auth={"bootstrap_token": ADMIN},
        incidents={"start_frames": 3, "quiet_s": 2.0, "max_len_s": 6.0},
        ingest={"backoff_initial_s": 0.5, "backoff_max_s": 2.0},
    )
    app = create_app(settings)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:
        with app.state.services.db.session() as session:
            operator, _ = create_token(session, "operator", "值班员 Li")
        _grids(http)
        created = http.post(
            "/api/v1/cameras",
            json={
                "name": "校门 Campus gate",
                "rtsp_url": rtsp.url("/campus"),
                "grid_code": "XL-G-001",
                "recording": {"pre_s": 1.0, "post_s": 1.0},
            },
        )
        assert created.status_code == 201, created.text
        missing = http.post(
            "/api/v1/cameras",
            json={
                "name": "东门 East gate",
                "rtsp_url": rtsp.url("/missing"),
                "grid_code": "XL-G-002",
            },
        )
        assert missing.status_code == 201, missing.text
        yield Console(
            app,
            server.url,
            created.json()["id"],
            operator,
            rtsp,
            http,
            missing.json()["id"],
            server.thread.native_id or 0,
        )


def _grids(http: httpx.Client) -> None:
    """A small grid tree for the console's tree (the grids API may still be partial)."""
    for code, name, level, parent in [
        ("XL-C", "雪亮社区 Xueliang community", "community", None),
        ("XL-G-001", "第一网格 Grid 1", "grid", "XL-C"),
        ("XL-G-002", "第二网格 Grid 2", "grid", "XL-C"),
    ]:
        body = {"name": name, "level": level, **({"parent_code": parent} if parent else {})}
        http.put(f"/api/v1/grids/{code}", json=body)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1366, "height": 820}, locale="en-US")
    ctx.set_default_timeout(15_000)
    loopback_offers(ctx)
    yield ctx
    ctx.close()


def loopback_offers(ctx: BrowserContext) -> None:
    """Keep only 127.0.0.1 candidates in the browser's WHEP offers, so the service's ICE
    agent never probes the machine's other addresses."""

    def keep_loopback(route: Route) -> None:
        body = route.request.post_data or ""
        lines = [
            line
            for line in body.split("\r\n")
            if not line.startswith("a=candidate:") or " 127.0.0.1 " in line
        ]
        route.continue_(post_data="\r\n".join(lines))

    ctx.route(re.compile(r".*/api/v1/cameras/[^/]+/webrtc$"), keep_loopback)


def signed_in(ctx: BrowserContext, console: Console) -> Page:
    """A console tab that starts signed in (the token as the login form would store it)."""
    ctx.add_init_script(f"sessionStorage.setItem('xl.token', {console.operator!r});")
    return ctx.new_page()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every Chromium test is slow (a browser and the service start for it)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)
