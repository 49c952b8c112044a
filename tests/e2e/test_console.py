"""The operator console in headless Chromium against the whole service and a real camera.

1. An operator signs in, sees a new incident arrive without reloading, opens it, the clip
   plays (streamed with Range requests), acknowledges and resolves it with notes, and the
   history shows both.
2. The camera wall shows the camera; its live view (WebRTC, H.264 passed through) shows
   moving video within 3 s; four viewers share one upstream; closing tabs releases them.
Screenshots go to tests/.artifacts/.
"""

from __future__ import annotations

import os
import re
import time

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import Console, screenshot, signed_in, wait_until
from tests.integration.test_webrtc import rtsp_connections

INCIDENT_WAIT_S = 60
CLIP_WAIT_S = 45


def row_ids(page: Page) -> set[str]:
    return set(page.eval_on_selector_all("#queue tbody tr", "rows => rows.map(r => r.dataset.id)"))


def test_operator_reviews_a_new_incident_and_plays_its_clip(
    console: Console, context: BrowserContext
) -> None:
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    page.goto(console.url + "/")  # the service's front door redirects to the console
    expect(page).to_have_url(re.compile(re.escape(console.url + "/console/")))
    expect(page.locator("#token")).to_be_focused()
    page.fill("#token", "xl_wrong_token")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("not accepted")
    page.fill("#token", console.operator)
    page.click("button[type=submit]")
    expect(page.locator("#queue")).to_be_visible()
    expect(page.locator("#live-state")).to_have_attribute("data-live", "1")
    # The grid tree lists the grids, nested.
    expect(page.locator("#grid-tree [data-code='XL-G-001']")).to_be_visible()

    # A new incident appears in the queue without reloading the page.
    page.evaluate("window.__sameDocument = true")
    before = row_ids(page)
    new_id = wait_until(
        lambda: next(iter(row_ids(page) - before), None), INCIDENT_WAIT_S, "an incident"
    )
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator(f"tr[data-id='{new_id}']").get_attribute("class") or ""

    # Chinese, then the queue's screenshot.
    page.select_option("#lang", "zh-CN")
    expect(page.locator("#nav a[href='#/incidents']")).to_have_text("事件")
    expect(page.locator(f"tr[data-id='{new_id}']")).to_be_visible()
    screenshot(page, "console-queue.png")
    page.select_option("#lang", "en")

    # The grid tree narrows the queue: the camera is in grid 1, not grid 2.
    page.click("#grid-tree [data-code='XL-G-002']")
    expect(page.locator("#queue tbody tr")).to_have_count(0)
    page.click("#grid-tree [data-code='XL-G-001']")
    expect(page.locator(f"tr[data-id='{new_id}']")).to_be_visible()
    page.click("#grid-tree button >> nth=0")  # all grids

    # Open it: the clip arrives when archived (live update) and plays, seekable.
    page.click(f"tr[data-id='{new_id}'] a")
    expect(page.locator("h1")).to_contain_text("Motion")
    video = page.locator("video#clip")
    expect(video).to_be_attached(timeout=CLIP_WAIT_S * 1000)
    expect(video).to_have_attribute("data-source", "stream")  # via the service worker
    started = clip_plays(page)
    assert started["duration"] > 1.0, started
    expect(page.locator("img#snapshot")).to_be_visible()
    check_ranges(console, new_id)

    # Acknowledge, then resolve, each with a note; the history shows both.
    page.fill("#note", "已核实：行人经过 (checked on camera)")
    page.click("button[data-action=acknowledge]")
    expect(page.locator("#history tr[data-action=acknowledge]")).to_be_visible()
    expect(page.locator("button[data-action=acknowledge]")).to_be_disabled()
    page.fill("#note", "resolved: no action needed")
    page.click("button[data-action=resolve]")
    expect(page.locator("#history tr[data-action=resolve]")).to_be_visible()
    history = page.locator("#history tbody").inner_text()
    assert "已核实" in history and "no action needed" in history
    assert "值班员 Li" in history
    expect(page.locator("button[data-action=reopen]")).to_be_enabled()
    expect(page.locator("h1 .badge")).to_have_text("Resolved")
    screenshot(page, "console-incident.png")

    incident = console.http.get(f"/api/v1/incidents/{new_id}").json()
    assert incident["status"] == "resolved"
    reviews = [h["action"] for h in incident["history"] if h["actor"] != "system"]
    assert reviews == ["acknowledge", "resolve"]
    # The clip was streamed with Range requests (206), each audited.
    audit = console.http.get("/api/v1/audit", params={"resource": "clip"}).json()
    ranges = [a["detail"].get("range") for a in audit if a["resource_id"] == new_id]
    assert any(r and r.startswith("bytes=") for r in ranges), ranges
    assert not [m for m in messages if "Content Security Policy" in m], messages


def check_ranges(console: Console, incident_id: str) -> None:
    """The local store serves byte ranges of the clip (RFC 9110), as a seeking player asks."""
    url = f"/api/v1/incidents/{incident_id}/clip"
    full = console.http.get(url)
    assert full.status_code == 200 and full.headers["accept-ranges"] == "bytes"
    data, etag = full.content, full.headers["etag"]
    size = len(data)
    part = console.http.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{size}"
    assert console.http.get(url, headers={"Range": "bytes=-10"}).content == data[-10:]
    assert console.http.get(url, headers={"Range": f"bytes={size - 5}-"}).content == data[-5:]
    past = console.http.get(url, headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    stale = console.http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == data
    fresh = console.http.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.content == data[:10]


def test_console_is_served_with_a_strict_policy_and_caching(console: Console) -> None:
    page = httpx.get(console.url + "/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-cache"
    script = httpx.get(console.url + "/console/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    again = httpx.get(
        console.url + "/console/app.js", headers={"If-None-Match": script.headers["etag"]}
    )
    assert again.status_code == 304
    assert httpx.get(console.url + "/console/../api/app.py").status_code == 404
    assert httpx.get(console.url + "/console/%2e%2e/app.py").status_code == 404


def clip_plays(page: Page) -> dict[str, float]:
    """Wait until the clip plays and its currentTime advances; seek and check it again."""
    page.wait_for_function(
        "() => { const v = document.querySelector('video#clip');"
        " return v && !v.paused && v.readyState >= 3 && v.currentTime > 0.3; }",
        timeout=15_000,
    )
    first = page.evaluate("document.querySelector('video#clip').currentTime")
    page.wait_for_function(
        f"() => document.querySelector('video#clip').currentTime > {first} + 0.3"
        " || document.querySelector('video#clip').ended",
        timeout=5_000,
    )
    # Seeking back works on a streamed (Range-served) clip.
    page.evaluate("document.querySelector('video#clip').currentTime = 0.1")
    page.wait_for_function(
        "() => { const v = document.querySelector('video#clip');"
        " return !v.seeking && v.readyState >= 2; }",
        timeout=5_000,
    )
    facts: dict[str, float] = page.evaluate(
        "(() => { const v = document.querySelector('video#clip');"
        " return {duration: v.duration, currentTime: v.currentTime}; })()"
    )
    return facts


LIVE_PLAYING = (
    "() => { const v = document.querySelector('video#live');"
    " return v && v.readyState >= 2 && v.currentTime > 0.2"
    " && v.getVideoPlaybackQuality().totalVideoFrames > 3; }"
)


def frame_signature(page: Page, selector: str) -> list[int]:
    """A coarse 16x9 grey picture of the video's current frame (to see it move)."""
    result: list[int] = page.evaluate(
        """(selector) => {
          const v = document.querySelector(selector);
          const c = document.createElement('canvas'); c.width = 16; c.height = 9;
          const g = c.getContext('2d'); g.drawImage(v, 0, 0, 16, 9);
          const d = g.getImageData(0, 0, 16, 9).data;
          const out = []; for (let i = 0; i < d.length; i += 4) out.push(d[i] + d[i+1] + d[i+2]);
          return out; }""",
        selector,
    )
    return result


def test_camera_wall_and_live_view_with_four_viewers(
    console: Console, context: BrowserContext
) -> None:
    cam = console.camera_id
    page = signed_in(context, console)
    page.goto(console.url + "/console/#/cameras")
    tile = page.locator(f"li.tile[data-camera='{cam}']")
    expect(tile).to_have_attribute("data-state", "online", timeout=30_000)
    expect(tile.locator("img")).to_be_visible()
    offline = page.locator(f"li.tile[data-camera='{console.offline_camera_id}']")
    expect(offline).to_have_attribute("data-state", "offline", timeout=15_000)
    # A live tile: WebRTC in the wall.
    tile.locator("button").click()
    page.wait_for_function(
        f"() => {{ const v = document.querySelector(\"li.tile[data-camera='{cam}'] video\");"
        " return v && v.readyState >= 2 && v.currentTime > 0.2; }"
    )
    screenshot(page, "console-wall.png")
    tile.locator("button").click()  # stop it: the idle measurement has no viewer
    wait_until(lambda: not console.live.sessions(cam), 5, "the tile's session to end")

    # The camera page: live video moving within 3 s of opening it.
    idle_cpu = cpu_per_second(console.loop_thread, 3.0)
    t0 = time.monotonic()
    page.goto(console.url + f"/console/#/cameras/{cam}")
    page.wait_for_function(LIVE_PLAYING, timeout=3_000)
    first_frame_s = time.monotonic() - t0
    a = frame_signature(page, "video#live")
    t_a = page.evaluate("document.querySelector('video#live').currentTime")
    page.wait_for_timeout(1000)
    b = frame_signature(page, "video#live")
    t_b = page.evaluate("document.querySelector('video#live').currentTime")
    assert t_b > t_a + 0.5, (t_a, t_b)
    assert sum(abs(x - y) for x, y in zip(a, b, strict=True)) > 0, "the picture did not move"
    expect(page.locator("#camera-status")).to_contain_text("Online")
    # Online nearly all the time since it was added (connecting took a moment).
    expect(page.locator("#camera-status")).to_contain_text(re.compile(r"([5-9]\d|100)\.\d %"))
    print(f"\nlive view: moving video {first_frame_s * 1000:.0f} ms after opening the page")
    screenshot(page, "console-camera.png")

    # Four viewers of the camera: one upstream RTSP connection, one ring tap.
    pages = [page] + [signed_in(context, console) for _ in range(3)]
    for other in pages[1:]:
        other.goto(console.url + f"/console/#/cameras/{cam}")
    for other in pages:
        other.wait_for_function(LIVE_PLAYING, timeout=5_000)
    wait_until(lambda: len(console.live.sessions(cam)) == 4, 5, "four live sessions")
    assert {s.mode for s in console.live.sessions(cam)} == {"passthrough"}
    feed = console.live.feed(cam)
    assert feed is not None and feed.subscribers == 4
    assert rtsp_connections(console.rtsp.port) == 1
    busy_cpu = cpu_per_second(console.loop_thread, 3.0)
    per_viewer = (busy_cpu - idle_cpu) / 4
    print(
        f"event-loop thread CPU: {idle_cpu * 100:.1f} % of a core with no viewer, "
        f"{busy_cpu * 100:.1f} % with 4 → {per_viewer * 100:.2f} % per viewer"
    )
    assert busy_cpu > idle_cpu  # the measurement sees the viewers at all
    assert per_viewer < 0.05  # packetizing + SRTP of 10 fps 768x576 H.264, no encoder

    # Closing the tabs releases their peer connections, then the upstream tap.
    t_close = time.monotonic()
    for other in pages:
        other.close()
    wait_until(lambda: not console.live.sessions(cam), 10, "the sessions to close")
    print(f"tabs closed → sessions released in {time.monotonic() - t_close:.2f} s")
    wait_until(lambda: console.live.feed(cam) is None, 5, "the ring tap to detach")
    assert rtsp_connections(console.rtsp.port) == 1  # recording goes on


def cpu_per_second(thread_id: int, seconds: float) -> float:
    """CPU time of one thread of this process per wall second (from /proc).

    The service's event loop runs aiortc (packetizing, SRTP) and the live feeds; ingest
    and analysis have their own threads, so this thread's load is what viewers add.
    """

    def cpu() -> float:
        with open(f"/proc/self/task/{thread_id}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    start_cpu, start = cpu(), time.monotonic()
    time.sleep(seconds)
    return (cpu() - start_cpu) / (time.monotonic() - start)


def test_without_a_service_worker_the_clip_plays_from_a_blob(
    console: Console, browser: Browser
) -> None:
    """Plain-HTTP LAN addresses give no service worker: the clip is fetched whole."""
    archived = wait_until(
        lambda: next(
            (
                i
                for i in console.http.get("/api/v1/incidents").json()["items"]
                if i["clip"] and i["clip"]["state"] == "archived"
            ),
            None,
        ),
        CLIP_WAIT_S,
        "an archived clip",
    )
    ctx = browser.new_context(service_workers="block")
    try:
        page = signed_in(ctx, console)
        page.goto(console.url + f"/console/#/incidents/{archived['id']}")
        video = page.locator("video#clip")
        expect(video).to_have_attribute("data-source", "blob", timeout=10_000)
        clip_plays(page)
    finally:
        ctx.close()
