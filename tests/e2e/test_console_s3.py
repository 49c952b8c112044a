"""A clip archived in SeaweedFS plays in the console, with no CORS on the bucket.

The whole service (role ``all``) records motion incidents of a real RTSP camera and its
archiver uploads the clips to SeaweedFS; the console plays the presigned URL directly in
``<video>`` (``evidence.js``). A media element's request is a no-cors request: it needs
no ``Access-Control-*`` header from the store, only the store's origin in the page's CSP
(``media-src``) and byte ranges (``206``) to read the MP4's index and seek.

SeaweedFS answers CORS for every origin by default (``-s3.allowedOrigins=*``), even on a
bucket without a CORS configuration; that would hide a console that depended on CORS. So
the store here allows one unrelated origin only: the console's origin gets no CORS header
and its preflights are refused (403), as from AWS S3 with no CORS rule on the bucket. The
test shows both: a ``fetch()`` of the clip's URL from the page fails, its ``<video>`` plays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aioice.ice
import httpx
import pytest
from minio.error import S3Error
from playwright.sync_api import BrowserContext, expect

from api.app import create_app
from config.settings import Settings
from storage.tokens import create_token
from tests.conftest import LiveServer
from tests.e2e.conftest import ADMIN, VTEST, wait_until
from tests.e2e.test_console import clip_plays
from tests.peers.rtsp import RtspServer, file_mount
from tests.peers.seaweedfs import SeaweedS3, unique_bucket

CLIP_WAIT_S = 90  # an incident (motion), its end, post-roll, then the upload
OTHER_ORIGIN = "http://cors-elsewhere.invalid"  # the only origin the store answers CORS for

WATCH_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


class SeaweedWithoutCors(SeaweedS3):
    """``weed mini`` answering CORS for :data:`OTHER_ORIGIN` only (not the console's)."""

    def _command(self) -> list[str]:
        return [*super()._command(), f"-s3.allowedOrigins={OTHER_ORIGIN}"]


@dataclass
class S3Service:
    url: str
    operator: str
    bucket: str
    s3: SeaweedS3
    http: httpx.Client  # as admin


@pytest.fixture(scope="module")
def s3_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    workdir = tmp_path_factory.mktemp("console-s3")
    s3 = SeaweedWithoutCors(workdir / "seaweedfs")
    s3.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aioice.ice, "get_host_addresses", lambda *_a, **_k: ["127.0.0.1"])
        rtsp = RtspServer({"/campus": file_mount(VTEST, fps=10)}, workdir / "rtsp").start()
        try:
            yield from _service(workdir, s3, rtsp)
        finally:
            rtsp.stop()
            s3.stop()


def _service(workdir: Path, s3: SeaweedS3, rtsp: RtspServer) -> Iterator[S3Service]:
    bucket = unique_bucket()
    settings = Settings(
        data_dir=workdir / "data",
        auth={"bootstrap_token": ADMIN},
        incidents={"start_frames": 3, "quiet_s": 2.0, "max_len_s": 6.0},
        ingest={"backoff_initial_s": 0.5, "backoff_max_s": 2.0},
        storage={
            "backend": "s3",
            "s3": {
                "endpoint": s3.endpoint,
                "access_key": s3.credentials.access_key,
                "secret_key": s3.credentials.secret_key,
                "bucket": bucket,
                "region": "us-east-1",
            },
        },
    )
    app = create_app(settings)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:
        with app.state.services.db.session() as session:
            operator, _ = create_token(session, "operator", "S3 operator")
        created = http.post(
            "/api/v1/cameras",
            json={
                "name": "校门 Campus gate",
                "rtsp_url": rtsp.url("/campus"),
                "recording": {"pre_s": 1.0, "post_s": 1.0},
            },
        )
        assert created.status_code == 201, created.text
        yield S3Service(server.url, operator, bucket, s3, http)


def _archived_incident(http: httpx.Client) -> dict[str, Any]:
    def archived() -> dict[str, Any] | None:
        items = http.get("/api/v1/incidents").json()["items"]
        return next((i for i in items if (i["clip"] or {}).get("state") == "archived"), None)

    found: dict[str, Any] = wait_until(archived, CLIP_WAIT_S, "a clip archived in S3")
    return found


def test_a_clip_archived_in_seaweedfs_plays_without_cors(
    s3_service: S3Service, context: BrowserContext
) -> None:
    incident = _archived_incident(s3_service.http)
    s3_origin = f"http://{s3_service.s3.endpoint}"
    # The bucket has no CORS configuration, and the store sends the console no CORS header.
    with pytest.raises(S3Error, match="NoSuchCORSConfiguration"):
        s3_service.s3.client()._url_open(
            "GET", "us-east-1", bucket_name=s3_service.bucket, query_params={"cors": ""}
        )
    link = s3_service.http.get(f"/api/v1/incidents/{incident['id']}/clip/link").json()
    assert link["expires_at"] and link["url"].startswith(s3_origin + "/")
    probe = httpx.get(link["url"], headers={"Origin": s3_service.url, "Range": "bytes=0-99"})
    assert probe.status_code == 206
    assert "access-control-allow-origin" not in probe.headers, probe.headers
    preflight = httpx.options(
        link["url"],
        headers={"Origin": s3_service.url, "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers, preflight.headers

    context.add_init_script(WATCH_VIOLATIONS)
    context.add_init_script(f"sessionStorage.setItem('xl.token', {s3_service.operator!r});")
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    media: list[tuple[int, str | None]] = []
    page.on(
        "response",
        lambda r: (
            media.append((r.status, r.request.headers.get("range")))
            if r.url.startswith(s3_origin)
            else None
        ),
    )
    page.goto(f"{s3_service.url}/console/#/incidents/{incident['id']}")
    video = page.locator("video#clip")
    expect(video).to_have_attribute("data-source", "direct", timeout=15_000)
    assert video.evaluate("v => new URL(v.src).origin") == s3_origin
    facts = clip_plays(page)  # currentTime advances, then a seek back
    print(f"\nS3 clip: {facts}; store answers seen by the page: {media}")
    assert facts["duration"] > 1.0, facts
    assert any(status == 206 for status, _ in media), media  # read with byte ranges

    # The same URL read by script needs CORS, which the store does not give this origin.
    fetched = page.evaluate(
        "async (u) => { try { await fetch(u); return 'ok'; } catch (e) { return String(e); } }",
        video.evaluate("v => v.src"),
    )
    assert fetched != "ok" and "TypeError" in fetched, fetched
    expect(page.locator("img#snapshot")).to_be_visible()
    assert (
        urlsplit(page.locator("img#snapshot").evaluate("i => i.src")).netloc
        == urlsplit(s3_origin).netloc
    )
    violations = page.evaluate("window.__csp") + [
        m for m in messages if "Content Security Policy" in m
    ]
    assert violations == [], violations
