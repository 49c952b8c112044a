"""The console under its Content-Security-Policy in headless Chromium, with clips in S3.

The service stores evidence in SeaweedFS (real S3), so the clip and the snapshot reach the
browser through a 307 to a presigned URL on another origin: the policy must allow exactly
that origin (derived from the settings) and nothing inline. Every CSP violation the page
reports (``securitypolicyviolation`` events and console messages) fails the test; a
deliberate violation shows the listener works. The camera wall and WebRTC live view run
under the same policy against a real RTSP camera (the ``console`` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cv2
import httpx
import numpy as np
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from api.app import create_app
from config.settings import Settings
from storage.incidents import ArchivedClip, NewIncident, create_incident, mark_archived
from storage.models import utcnow
from storage.tokens import create_token
from tests.conftest import LiveServer
from tests.e2e.conftest import Console
from tests.e2e.test_console import LIVE_PLAYING
from tests.peers.seaweedfs import SeaweedS3, unique_bucket
from tests.unit.synthetic_h264 import encode_video

ADMIN = "xl_test_admin_token_for_csp_00000001"
PRESIGN_S = 60

# Collects what the browser reports, from before the page's own scripts run.
WATCH_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@dataclass
class S3Console:
    url: str
    operator: str
    incident_id: str
    s3_origin: str
    http: httpx.Client  # as admin


@pytest.fixture(scope="module")
def s3_console(
    seaweedfs: SeaweedS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Console]:
    seaweedfs.ensure_running()
    workdir = tmp_path_factory.mktemp("console-csp")
    settings = Settings(
        data_dir=workdir / "data",
        auth={"bootstrap_token": ADMIN},
        storage={
            "backend": "s3",
            "presign_s": PRESIGN_S,
            "s3": {
                "endpoint": seaweedfs.endpoint,
                "access_key": seaweedfs.credentials.access_key,
                "secret_key": seaweedfs.credentials.secret_key,
                "bucket": unique_bucket(),
                "region": "us-east-1",
            },
        },
    )
    app = create_app(settings, role="api")
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:
        services = app.state.services
        with services.db.session() as session:
            operator, _ = create_token(session, "operator", "CSP operator")
        incident_id = _incident_in_s3(services, workdir)
        yield S3Console(server.url, operator, incident_id, f"http://{seaweedfs.endpoint}", http)


def _incident_in_s3(services: Any, workdir: Path) -> str:
    """An incident whose clip (H.264 MP4, 3 s) and snapshot (JPEG) are archived in S3."""
    clip_path = encode_video(workdir / "clip.mp4", 75, fmt="mp4")
    ok, jpeg = cv2.imencode(".jpg", np.full((90, 160, 3), 128, np.uint8))
    assert ok
    with services.tx() as session:
        row = create_incident(session, NewIncident("cam_csp", None, "motion", utcnow()))
        clip = services.objects.put_file(f"clips/{row.id}.mp4", clip_path, "video/mp4")
        snap = services.objects.put_bytes(f"snapshots/{row.id}.jpg", jpeg.tobytes(), "image/jpeg")
        archived = ArchivedClip(clip.key, clip.sha256, clip.size, 3.0, snap.key, snap.sha256)
        mark_archived(session, row.id, archived)
        incident_id: str = row.id
    return incident_id


def _watched_page(context: BrowserContext, token: str) -> tuple[Page, list[str]]:
    context.add_init_script(WATCH_VIOLATIONS)
    context.add_init_script(f"sessionStorage.setItem('xl.token', {token!r});")
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    return page, messages


def _violations(page: Page, messages: list[str]) -> list[str]:
    reported: list[str] = page.evaluate("window.__csp")
    return reported + [m for m in messages if "Content Security Policy" in m]


def test_clip_and_snapshot_from_s3_play_under_the_policy(
    s3_console: S3Console, context: BrowserContext
) -> None:
    page, messages = _watched_page(context, s3_console.operator)
    page.goto(f"{s3_console.url}/console/#/incidents/{s3_console.incident_id}")
    csp = page.evaluate(
        "async () => (await fetch('/console/')).headers.get('content-security-policy')"
    )
    assert f"media-src 'self' blob: {s3_console.s3_origin}" in csp

    video = page.locator("video#clip")
    expect(video).to_be_attached()
    # Straight from S3: a fetch following the API's 307 would fail CORS (no Origin header
    # after a same-origin to cross-origin redirect), so the console asks for the link.
    expect(video).to_have_attribute("data-source", "direct")
    assert video.evaluate("v => new URL(v.src).origin") == s3_console.s3_origin
    page.wait_for_function(
        "() => { const v = document.querySelector('video#clip');"
        " return v && v.readyState >= 2 && v.duration > 2; }",
        timeout=20_000,
    )
    page.wait_for_function(
        "() => { const i = document.querySelector('img#snapshot');"
        " return i && i.complete && i.naturalWidth === 160; }",
        timeout=20_000,
    )
    assert _violations(page, messages) == []

    # The bytes came from S3 over a presigned URL that lives presign_s.
    r = s3_console.http.get(
        f"/api/v1/incidents/{s3_console.incident_id}/clip", follow_redirects=False
    )
    assert r.status_code == 307
    location = urlsplit(r.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == s3_console.s3_origin
    assert parse_qs(location.query)["X-Amz-Expires"] == [str(PRESIGN_S)]
    audit = s3_console.http.get("/api/v1/audit", params={"resource": "clip"}).json()
    mine = [a for a in audit if a["resource_id"] == s3_console.incident_id]
    assert any(a["action"] == "link" and a["actor"] == "CSP operator" for a in mine), mine


def test_camera_wall_and_live_view_raise_no_violation(
    console: Console, context: BrowserContext
) -> None:
    """WebRTC needs nothing from the policy but connect-src 'self' (the WHEP exchange): the
    video arrives as a MediaStream (srcObject), which no fetch directive governs."""
    page, messages = _watched_page(context, console.operator)
    page.goto(f"{console.url}/console/#/cameras")
    tile = page.locator(f"li.tile[data-camera='{console.camera_id}']")
    expect(tile).to_have_attribute("data-state", "online", timeout=30_000)
    expect(tile.locator("img")).to_be_visible()  # a blob: snapshot
    page.goto(f"{console.url}/console/#/cameras/{console.camera_id}")
    page.wait_for_function(LIVE_PLAYING, timeout=15_000)
    page.select_option("#lang", "zh-CN")
    page.goto(f"{console.url}/console/#/incidents")
    expect(page.locator("#queue")).to_be_visible()
    assert _violations(page, messages) == []


def test_a_violation_would_be_seen(s3_console: S3Console, context: BrowserContext) -> None:
    """The policy is enforced and the watch above reports it: inline code and a foreign
    origin are refused."""
    page, messages = _watched_page(context, s3_console.operator)
    page.goto(f"{s3_console.url}/console/")
    expect(page.locator("#queue")).to_be_visible()
    page.evaluate(
        """() => {
          const s = document.createElement('script');
          s.textContent = 'window.__inlineRan = true';
          document.body.append(s);
          const i = document.createElement('img');
          i.src = 'http://203.0.113.9/x.png';
          document.body.append(i);
        }"""
    )
    page.wait_for_function("() => window.__csp.length >= 2")
    assert page.evaluate("window.__inlineRan === undefined")
    found = _violations(page, messages)
    assert any(v.startswith("script-src") for v in found), found
    assert any(v.startswith("img-src") and "203.0.113.9" in v for v in found), found
