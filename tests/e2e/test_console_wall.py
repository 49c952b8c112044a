"""The camera wall in headless Chromium: layouts, paging, and live tiles that come back.

A service with ten cameras: one live test pattern (gst-rtsp-server) and nine whose stream
does not exist. The wall's layout picker gives 1, 4, 9 or 16 tiles (remembered across a
reload) and pages through the cameras; a live tile whose RTSP server is killed shows the
camera offline, and plays again — a new WebRTC session the tile opens by itself, frames
decoded by Chromium (``getStats`` ``framesDecoded``) — once the server is back, without
reloading the page.

The PTZ pad of the camera page steers a real ONVIF camera: ipycam, in a private network
namespace with the service (its threads started from inside the namespace) and Chromium
(launched through ``nsenter``), see :func:`ns_chromium`.
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioice.ice
import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect

from api.app import create_app
from config.settings import Settings
from storage.tokens import create_token
from tests.conftest import LiveServer
from tests.e2e.conftest import ADMIN, CHROMIUM, CHROMIUM_ARGS, screenshot, wait_until
from tests.e2e.test_console import LIVE_PLAYING
from tests.e2e.test_live_profiles import RECORD_PEERS
from tests.peers.onvif import IpyCam, NetNamespace, NsHttp, ensure_ipycam_venv
from tests.peers.rtsp import RtspServer, live_pattern

FPS = 15
OTHER_CAMERAS = 9

# The newest open peer connection of the page and the frames it decoded.
NEWEST_PEER = """
async () => {
  const open = window.__xlPeers.filter((p) => p.pc.connectionState !== "closed");
  if (!open.length) return null;
  const newest = open[open.length - 1];
  let frames = 0;
  (await newest.pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") frames = r.framesDecoded || 0;
  });
  return { index: window.__xlPeers.indexOf(newest), frames, state: newest.pc.connectionState };
}
"""


@dataclass
class Wall:
    url: str
    operator: str
    live_id: str  # the camera of the live test pattern
    rtsp: RtspServer
    app: Any


@pytest.fixture(scope="module")
def wall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wall]:
    workdir = tmp_path_factory.mktemp("wall")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aioice.ice, "get_host_addresses", lambda *_a, **_k: ["127.0.0.1"])
        mounts = {"/pattern": live_pattern(width=640, height=360, fps=FPS)}
        rtsp = RtspServer(mounts, workdir / "rtsp").start()
        try:
            yield from _service(workdir, rtsp)
        finally:
            rtsp.stop()


def _service(workdir: Path, rtsp: RtspServer) -> Iterator[Wall]:
    settings = Settings(
        data_dir=workdir / "data",
        auth={"bootstrap_token": ADMIN},
        ingest={"backoff_initial_s": 0.5, "backoff_max_s": 2.0},
    )
    app = create_app(settings)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:
        with app.state.services.db.session() as session:
            operator, _ = create_token(session, "operator", "wall operator")
        no_motion = {"motion": {"enabled": False}}
        live_id = _add(http, "01 pattern", rtsp.url("/pattern"), no_motion)
        for n in range(OTHER_CAMERAS):
            _add(http, f"{n + 2:02d} missing", rtsp.url(f"/missing-{n}"), no_motion)
        yield Wall(server.url, operator, live_id, rtsp, app)


def _add(http: httpx.Client, name: str, url: str, analytics: dict[str, Any]) -> str:
    created = http.post(
        "/api/v1/cameras", json={"name": name, "rtsp_url": url, "analytics": analytics}
    )
    assert created.status_code == 201, created.text
    camera_id: str = created.json()["id"]
    return camera_id


def _wall_page(context: BrowserContext, wall: Wall) -> Page:
    context.add_init_script(f"sessionStorage.setItem('xl.token', {wall.operator!r});")
    context.add_init_script(RECORD_PEERS)
    page = context.new_page()
    page.goto(wall.url + "/console/#/cameras")
    return page


def _names(page: Page) -> list[str]:
    names: list[str] = page.eval_on_selector_all(
        "#wall li.tile .tile-bar a", "links => links.map((a) => a.textContent)"
    )
    return names


def test_layouts_page_through_the_cameras_and_are_remembered(
    wall: Wall, context: BrowserContext
) -> None:
    page = _wall_page(context, wall)
    tiles = page.locator("#wall li.tile")
    expect(tiles).to_have_count(4)  # 2×2 by default
    expect(page.locator("#wall-page")).to_have_text("Page 1 of 3")
    expect(page.locator("#wall-prev")).to_be_disabled()
    assert _names(page) == ["01 pattern", "02 missing", "03 missing", "04 missing"]
    page.click("#wall-next")
    expect(page.locator("#wall-page")).to_have_text("Page 2 of 3")
    assert _names(page) == ["05 missing", "06 missing", "07 missing", "08 missing"]
    page.click("#wall-next")
    expect(tiles).to_have_count(2)
    expect(page.locator("#wall-next")).to_be_disabled()
    expect(page.locator("#wall-limit")).to_be_empty()  # 4 tiles: every one may play live

    # 3×3 from the keyboard; the first tile shown (camera 09) stays in view.
    page.focus(".layouts [data-layout='3']")
    page.keyboard.press("Enter")
    expect(page.locator(".layouts [data-layout='3']")).to_have_attribute("aria-pressed", "true")
    expect(tiles).to_have_count(9)
    expect(page.locator("#wall-page")).to_have_text("Page 1 of 2")
    assert _names(page)[-1] == "09 missing"
    page.click("#wall-next")
    expect(tiles).to_have_count(1)
    page.click("#wall-prev")
    expect(tiles).to_have_count(9)

    # Live video for the page: its first 4 tiles only, the others keep their pictures.
    live = wall.app.state.process.live
    page.click("#wall-live")
    expect(page.locator("#wall-live")).to_have_attribute("aria-pressed", "true")
    live_tiles = page.locator("#wall li.tile:not([data-live='off'])")
    expect(live_tiles).to_have_count(4)
    expect(tiles.first).to_have_attribute("data-live", "playing", timeout=15_000)
    # The three offline cameras among them wait for their camera, holding no session.
    expect(page.locator("#wall li.tile[data-live='waiting']")).to_have_count(3)
    assert [s.camera_id for s in live.sessions()] == [wall.live_id]
    tiles.nth(5).locator("button").click()
    expect(page.get_by_text("At most 4 live tiles at once")).to_be_visible()
    expect(tiles.nth(5)).to_have_attribute("data-live", "off")
    page.click("#wall-live")
    expect(live_tiles).to_have_count(0)
    wait_until(lambda: not live.sessions(), 10, "the live sessions to end")
    # More tiles than may play live: the page says what the others show.
    expect(page.locator("#wall-limit")).to_contain_text("at most 4 tiles")
    # Cameras without a stream say so on their tile.
    expect(page.locator("#wall li.tile[data-state='offline']").first).to_be_visible(timeout=20_000)

    page.click(".layouts [data-layout='4']")
    expect(tiles).to_have_count(1 + OTHER_CAMERAS)
    expect(page.locator(".pager")).to_be_hidden()  # one page
    screenshot(page, "console-wall-16.png")

    page.click(".layouts [data-layout='1']")
    expect(tiles).to_have_count(1)
    expect(page.locator("#wall-page")).to_have_text("Page 1 of 10")
    page.click("#wall-next")
    assert _names(page) == ["02 missing"]

    page.reload()  # the layout is remembered (localStorage)
    expect(page.locator(".layouts [data-layout='1']")).to_have_attribute("aria-pressed", "true")
    expect(tiles).to_have_count(1)
    page.click(".layouts [data-layout='2']")
    expect(tiles).to_have_count(4)


def test_a_live_tile_shows_its_camera_offline_and_plays_again_by_itself(
    wall: Wall, context: BrowserContext
) -> None:
    page = _wall_page(context, wall)
    tile = page.locator(f"li.tile[data-camera='{wall.live_id}']")
    expect(tile).to_have_attribute("data-state", "online", timeout=30_000)
    tile.locator("button").click()
    expect(tile).to_have_attribute("data-live", "playing", timeout=15_000)
    first = _decoding(page, "the first session")
    page.evaluate("window.__sameDocument = true")
    screenshot(page, "console-wall-live.png")

    # The camera's RTSP server dies: the tile says offline, its live view dropped.
    t_kill = time.monotonic()
    wall.rtsp.stop()
    expect(tile).to_have_attribute("data-state", "offline", timeout=30_000)
    offline_s = time.monotonic() - t_kill
    expect(tile).to_have_attribute("data-live", "waiting", timeout=30_000)
    dropped_s = time.monotonic() - t_kill
    # No session while the camera is away (the service would replay its last GOP: frames
    # decoded, picture frozen); the last picture instead of a black tile.
    expect(tile.locator(".live-label")).to_contain_text("resumes when it is back")
    expect(tile.locator("img")).to_be_visible()
    screenshot(page, "console-wall-offline.png")
    page.wait_for_timeout(3000)
    assert page.evaluate(NEWEST_PEER) is None

    # Back: the same page plays again, on a session the tile opened by itself.
    t_back = time.monotonic()
    wall.rtsp.start()
    expect(tile).to_have_attribute("data-state", "online", timeout=30_000)
    online_s = time.monotonic() - t_back
    again = wait_until(
        lambda: (
            (p := page.evaluate(NEWEST_PEER))
            and p["index"] > first["index"]
            and p["frames"] > 0
            and p
        ),
        45,
        "a new session decoding frames",
    )
    playing_s = time.monotonic() - t_back
    expect(tile).to_have_attribute("data-live", "playing", timeout=15_000)
    later = _decoding(page, "the new session", after=again["frames"])
    assert later["index"] == again["index"], (again, later)
    assert page.evaluate("window.__sameDocument") is True  # not reloaded
    assert int(tile.get_attribute("data-reconnects") or 0) >= 1
    sessions = page.evaluate("window.__xlPeers.length")
    print(
        f"\nRTSP killed: tile offline after {offline_s:.1f} s, live view dropped after "
        f"{dropped_s:.1f} s. Server back: camera online after {online_s:.1f} s, frames "
        f"decoding again after {playing_s:.1f} s ({sessions} sessions in all; the new one "
        f"decoded {later['frames']} frames so far, the first {first['frames']})"
    )
    screenshot(page, "console-wall-back.png")

    # The service ends the session (as when it restarts): the tile opens another by itself.
    live = wall.app.state.process.live
    (session,) = live.sessions(wall.live_id)
    t_end = time.monotonic()
    ended = httpx.delete(
        f"{wall.url}/api/v1/cameras/{wall.live_id}/webrtc/{session.id}",
        headers={"Authorization": f"Bearer {wall.operator}"},
    )
    assert ended.status_code == 204, ended.text
    replaced = wait_until(
        lambda: (
            (p := page.evaluate(NEWEST_PEER))
            and p["index"] > later["index"]
            and p["frames"] > 0
            and p
        ),
        45,
        "a session replacing the one the service ended",
    )
    print(
        f"session ended by the service: frames decoding again after "
        f"{time.monotonic() - t_end:.1f} s (peer #{replaced['index']})"
    )
    _decoding(page, "the replacing session", after=replaced["frames"])
    assert page.evaluate("window.__sameDocument") is True

    tile.locator("button").click()  # stop: the session ends at the service
    wait_until(lambda: not live.sessions(wall.live_id), 10, "the tile's session to end")

    # Its camera page plays too, without PTZ controls (an RTSP camera has none).
    tile.locator(".tile-bar a").click()
    page.wait_for_function(LIVE_PLAYING, timeout=15_000)
    expect(page.locator("video#live")).to_have_attribute("data-live", "playing")
    expect(page.locator("#ptz")).to_have_count(0)


def _decoding(page: Page, what: str, after: int = 0) -> dict[str, Any]:
    """Wait until the newest peer connection decodes frames, and more a second later."""
    found: dict[str, Any] = wait_until(
        lambda: (p := page.evaluate(NEWEST_PEER)) and p["frames"] > after and p,
        20,
        f"{what} to decode frames",
    )
    page.wait_for_timeout(1000)
    later: dict[str, Any] = page.evaluate(NEWEST_PEER)
    assert later["index"] == found["index"] and later["frames"] > found["frames"], (found, later)
    return later


# --- PTZ against a real ONVIF camera ---------------------------------------------------------


@dataclass
class PtzService:
    url: str  # inside the namespace
    operator: str
    camera_id: str
    cam: IpyCam
    http: NsHttp  # as admin


@pytest.fixture(scope="module")
def ptz_service(
    onvif_netns: NetNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PtzService]:
    """One ipycam and the whole service in the namespace (uvicorn's thread, and so every
    thread the service starts, is created from the namespace's thread)."""
    workdir = tmp_path_factory.mktemp("ptz")
    cam = IpyCam(onvif_netns, workdir / "ipycam", "Gate-North", 18080, 18554)
    cam.start(ensure_ipycam_venv())
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(aioice.ice, "get_host_addresses", lambda *_a, **_k: ["127.0.0.1"])
            yield from _ptz_service(onvif_netns, workdir, cam)
    finally:
        cam.stop()


def _ptz_service(ns: NetNamespace, workdir: Path, cam: IpyCam) -> Iterator[PtzService]:
    settings = Settings(
        data_dir=workdir / "data",
        auth={"bootstrap_token": ADMIN},
        ingest={"backoff_initial_s": 0.5, "backoff_max_s": 2.0},
    )
    app = ns.call(create_app, settings)
    server = LiveServer(app)
    ns.call(server.__enter__)
    http = ns.http(server.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    try:
        with app.state.services.db.session() as session:
            operator, _ = create_token(session, "operator", "PTZ operator")
        onvif = {"host": "127.0.0.1", "port": cam.onvif_port, "username": cam.username}
        created = http.post(
            "/api/v1/cameras",
            json={
                "name": "北门 Gate north (PTZ)",
                "onvif": {**onvif, "password": cam.password},
                "analytics": {"motion": {"enabled": False}},
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["ptz"] is True
        yield PtzService(server.url, operator, created.json()["id"], cam, http)
    finally:
        http.close()
        server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def ns_chromium(
    playwright: Playwright, onvif_netns: NetNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    """Chromium inside the namespace: Playwright starts it through ``nsenter`` (it drives
    the browser over inherited pipes, not the network)."""
    wrapper = tmp_path_factory.mktemp("ns-chromium") / "chromium"
    wrapper.write_text(f'#!/bin/sh\nexec nsenter --net={onvif_netns.path} -- {CHROMIUM} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    browser = playwright.chromium.launch(
        executable_path=str(wrapper), headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


def test_the_ptz_pad_steers_an_onvif_camera_while_held(
    ptz_service: PtzService, ns_chromium: Browser
) -> None:
    cam = ptz_service.cam
    ctx = ns_chromium.new_context(viewport={"width": 1366, "height": 820}, locale="en-US")
    ctx.set_default_timeout(15_000)
    try:
        ctx.add_init_script(f"sessionStorage.setItem('xl.token', {ptz_service.operator!r});")
        page = ctx.new_page()
        sent: list[dict[str, Any]] = []
        page.on(
            "request",
            lambda r: (
                sent.append(json.loads(r.post_data or "{}"))
                if r.method == "POST" and r.url.endswith("/ptz")
                else None
            ),
        )
        page.goto(f"{ptz_service.url}/console/#/cameras/{ptz_service.camera_id}")
        expect(page.locator("#ptz")).to_be_visible()
        page.wait_for_function(LIVE_PLAYING, timeout=30_000)  # the camera's own stream
        start = cam.ptz_status()

        # Held with the mouse for 3 s, twice as long as one move lasts (1.5 s): the pad
        # renews the move, so the camera pans on to its end stop, then stops on release.
        right = page.locator("[data-ptz='right']")
        box = right.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        expect(right).to_have_attribute("aria-pressed", "true")
        page.wait_for_timeout(3000)
        page.mouse.up()
        expect(right).to_have_attribute("aria-pressed", "false")
        _wait_for_stop(page, sent)
        held = wait_until(lambda: not (s := cam.ptz_status())["moving"] and s, 5, "PTZ stop")
        assert held["pan"] >= 0.95, (start, held)  # one unrenewed move ends near 0.75
        moves = [b for b in sent if b["action"] == "move"]
        assert len(moves) >= 3 and sent[-1] == {"action": "stop"}, sent
        assert {(m["pan"], m["tilt"], m["zoom"]) for m in moves} == {(0.5, 0, 0)}, moves

        # The keyboard: a focused button, then the arrow key held about a second.
        page.focus("[data-ptz='up']")
        sent.clear()
        page.keyboard.down("ArrowLeft")
        expect(page.locator("[data-ptz='left']")).to_have_attribute("aria-pressed", "true")
        page.wait_for_timeout(1000)
        page.keyboard.up("ArrowLeft")
        _wait_for_stop(page, sent)
        left = wait_until(lambda: not (s := cam.ptz_status())["moving"] and s, 5, "PTZ stop")
        assert 0.1 < held["pan"] - left["pan"] < 0.9, (held, left)
        assert sent[0]["pan"] == -0.5 and sent[-1] == {"action": "stop"}, sent

        # Zoom in: Enter held on the focused "zoom in" button (like Space, or the + key).
        page.focus("[data-ptz='zoom_in']")
        page.keyboard.down("Enter")
        page.wait_for_timeout(800)
        page.keyboard.up("Enter")
        _wait_for_stop(page, sent)
        zoomed = wait_until(lambda: not (s := cam.ptz_status())["moving"] and s, 5, "PTZ stop")
        assert zoomed["zoom"] > left["zoom"], (left, zoomed)
        expect(page.locator("#ptz-note")).not_to_contain_text("failed")
        print(f"\nPTZ: {start} → held right 3 s {held} → left 1 s {left} → zoom {zoomed}")
        screenshot(page, "console-camera-ptz.png")
    finally:
        ctx.close()


def _wait_for_stop(page: Page, sent: list[dict[str, Any]], timeout_s: float = 5.0) -> None:
    """Until the page has sent the stop of a release (waiting through Playwright, which
    delivers the page's request events meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while not (sent and sent[-1]["action"] == "stop"):
        assert time.monotonic() < deadline, f"no stop sent on release: {sent}"
        page.wait_for_timeout(100)
