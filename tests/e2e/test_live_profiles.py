"""Live view of each kind of H.264 cameras send, decoded by Chromium's own WebRTC stack.

Chromium's recvonly offer lists H.264 only as 42001f, 42e01f, 4d001f and f4001f: no High.
Each case opens a camera's page in the console (the console's own WHEP code, under the
service's CSP) and reads ``inbound-rtp`` ``framesDecoded`` from the page's peer connection
(``pc.getStats()``, found through an init script that records every RTCPeerConnection):
what counts is frames Chromium decoded, not packets received nor a ``<video>`` element.

Cameras: gst-rtsp-server test patterns in Constrained Baseline (what x264 calls baseline),
Main, High with SPS/PPS before every IDR, High with SPS/PPS only in the SDP
(``sprop-parameter-sets``), and the demo camera of ``make run`` (``cli/demo.py``: a
generated High-profile MP4 played as a file source, SPS/PPS only in its ``avcC``). Every
one must be passed through (no transcoding) and play: the first frame within 2 s of the
page creating its peer connection (4 s under the suite's load), at least 20 frames within 8 s.

And an H.265 camera (x265, Main): Chromium 156 on Linux offers no H.265 to WebRTC (its
offer lists VP8, VP9, H.264 and AV1 only; H.265 needs a hardware decoder there), so the
service transcodes it to Constrained Baseline H.264 — once for the camera, however many
watch it, and only while someone does. Two viewers, the same bounds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioice.ice
import httpx
import pytest
from playwright.sync_api import BrowserContext

from api.app import create_app
from cli.demo import demo_video, ensure_demo_camera
from config.settings import Settings
from live.webrtc import LiveService
from storage.tokens import create_token
from tests.conftest import LiveServer
from tests.e2e.conftest import ADMIN, wait_until
from tests.peers.rtsp import RtspServer, h265_pattern, live_pattern

FPS = 15
# The target is a first frame within 2 s; alone these cameras' first frames come after
# 0.37-0.9 s. The suite runs three test processes on two cores, and there a first frame
# once came after 2.27 s (ICE and DTLS wait for a core): the bound leaves room for that
# load; the 2-s figure is the one printed when the test runs alone.
FIRST_FRAME_S = 4.0
WINDOW_S = 8.0
MIN_FRAMES = 20

MOUNTS = {
    "baseline": live_pattern(width=640, height=360, fps=FPS, profile="baseline"),
    "main": live_pattern(width=640, height=360, fps=FPS, profile="main"),
    "high": live_pattern(width=640, height=360, fps=FPS, profile="high"),
    "high-sdp-only": live_pattern(
        width=640, height=360, fps=FPS, profile="high", parameter_sets="sdp"
    ),
    "h265": h265_pattern(width=640, height=360, fps=FPS),
}
CASES = [*(m for m in MOUNTS if m != "h265"), "demo"]
EXPECTED_PROFILE = {
    "baseline": "Constrained Baseline",
    "main": "Main",
    "high": "High",
    "high-sdp-only": "High",
    "demo": "High",
}
TRANSCODE_THREAD = "live-transcode-{camera_id}"

# Before the console's scripts run: remember every peer connection and when it was made.
RECORD_PEERS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__xlPeers = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      window.__xlPeers.push({ pc: this, created: performance.now() });
    }
  };
})();
"""

# Polls the first peer connection's inbound video for `windowMs` after it was created.
MEASURE = """
async ({ windowMs, pollMs }) => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const waitStart = performance.now();
  while (!window.__xlPeers.length) {
    if (performance.now() - waitStart > 10000) return { error: "no RTCPeerConnection" };
    await sleep(20);
  }
  const { pc, created } = window.__xlPeers[0];
  let firstMs = null;
  let inbound = null;
  let report = null;
  do {
    report = await pc.getStats();
    inbound = null;
    report.forEach((r) => { if (r.type === "inbound-rtp" && r.kind === "video") inbound = r; });
    if (inbound && inbound.framesDecoded > 0 && firstMs === null) {
      firstMs = performance.now() - created;
    }
    await sleep(pollMs);
  } while (performance.now() - created < windowMs);
  const codec = inbound && inbound.codecId ? report.get(inbound.codecId) : null;
  const h264 = (sdp) =>
    (sdp || "").split("\\r\\n").filter((l) => /^a=fmtp:\\d+ .*profile-level-id/.test(l));
  return {
    firstMs,
    framesDecoded: inbound ? inbound.framesDecoded : 0,
    packetsReceived: inbound ? inbound.packetsReceived : 0,
    keyFramesDecoded: inbound ? inbound.keyFramesDecoded : 0,
    pliCount: inbound ? inbound.pliCount : 0,
    decoder: inbound ? inbound.decoderImplementation : null,
    codec: codec ? `${codec.mimeType} pt=${codec.payloadType} ${codec.sdpFmtpLine}` : null,
    offered: h264(pc.localDescription && pc.localDescription.sdp),
    answered: h264(pc.remoteDescription && pc.remoteDescription.sdp),
  };
}
"""


@dataclass
class Cameras:
    """The service with one camera per case."""

    app: Any
    url: str
    operator: str
    ids: dict[str, str]

    @property
    def live(self) -> LiveService:
        live: LiveService = self.app.state.process.live
        return live


@pytest.fixture(scope="module")
def cameras(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cameras]:
    workdir = tmp_path_factory.mktemp("profiles")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aioice.ice, "get_host_addresses", lambda *_a, **_k: ["127.0.0.1"])
        rtsp = RtspServer({f"/{k}": v for k, v in MOUNTS.items()}, workdir / "rtsp").start()
        try:
            yield from _service(workdir, rtsp)
        finally:
            rtsp.stop()


def _service(workdir: Path, rtsp: RtspServer) -> Iterator[Cameras]:
    settings = Settings(
        data_dir=workdir / "data",
        auth={"bootstrap_token": ADMIN},
        ingest={"backoff_initial_s": 0.5, "backoff_max_s": 2.0, "allow_file_sources": True},
    )
    app = create_app(settings)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:
        with app.state.services.db.session() as session:
            operator, _ = create_token(session, "operator", "operator-profiles")
        ids = {name: _add_camera(http, name, rtsp.url(f"/{name}")) for name in MOUNTS}
        ids["demo"] = ensure_demo_camera(app.state.services, demo_video(settings.data_dir))
        app.state.process.cameras.changed()
        for name, camera_id in ids.items():
            wait_until(lambda c=camera_id: _has_video(app, c), 60, f"video from {name}")
        yield Cameras(app, server.url, operator, ids)


def _add_camera(http: httpx.Client, name: str, url: str) -> str:
    created = http.post(
        "/api/v1/cameras",
        json={"name": name, "rtsp_url": url, "analytics": {"motion": {"enabled": False}}},
    )
    assert created.status_code == 201, created.text
    camera_id: str = created.json()["id"]
    return camera_id


def _has_video(app: Any, camera_id: str) -> bool:
    """More than a second of packets: a keyframe to start from and the profile known."""
    ring = app.state.process.cameras.ring(camera_id)
    return ring is not None and ring.stats().packets > FPS


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_chromium_decodes_live_view(cameras: Cameras, context: BrowserContext, case: str) -> None:
    camera_id = cameras.ids[case]
    ring = cameras.app.state.process.cameras.ring(camera_id)
    params = ring.params
    assert params is not None and params.template is not None
    assert params.template.codec_context.profile == EXPECTED_PROFILE[case]

    context.add_init_script(f"sessionStorage.setItem('xl.token', {cameras.operator!r});")
    context.add_init_script(RECORD_PEERS)
    page = context.new_page()
    page.goto(cameras.url + f"/console/#/cameras/{camera_id}")
    result: dict[str, Any] = page.evaluate(MEASURE, {"windowMs": WINDOW_S * 1000, "pollMs": 100})
    print(
        f"\n{case} ({EXPECTED_PROFILE[case]}): sent as {result.get('codec')}; first frame "
        f"after {result.get('firstMs')} ms, {result.get('framesDecoded')} frames decoded "
        f"in {WINDOW_S:.0f} s ({result.get('packetsReceived')} packets, "
        f"{result.get('pliCount')} PLI)"
    )

    sessions = cameras.live.sessions(camera_id)
    assert [s.mode for s in sessions] == ["passthrough"], sessions
    assert "error" not in result, result
    # The answer uses the browser's own payload type numbers and fmtp, nothing else.
    assert result["answered"] and set(result["answered"]) <= set(result["offered"]), result
    assert result["firstMs"] is not None, f"Chromium decoded no frame in {WINDOW_S} s: {result}"
    assert result["firstMs"] <= FIRST_FRAME_S * 1000, result
    assert result["framesDecoded"] >= MIN_FRAMES, result
    page.close()
    wait_until(lambda: not cameras.live.sessions(camera_id), 10, "the session to close")


@pytest.mark.slow
def test_chromium_decodes_an_h265_camera_through_one_shared_transcoder(
    cameras: Cameras, context: BrowserContext
) -> None:
    camera_id = cameras.ids["h265"]
    ring = cameras.app.state.process.cameras.ring(camera_id)
    assert ring.params is not None and ring.params.codec_name == "hevc"
    thread = TRANSCODE_THREAD.format(camera_id=camera_id)

    context.add_init_script(f"sessionStorage.setItem('xl.token', {cameras.operator!r});")
    context.add_init_script(RECORD_PEERS)
    pages, results = [], []
    for _ in range(2):  # the second joins while the first still watches
        page = context.new_page()
        page.goto(cameras.url + f"/console/#/cameras/{camera_id}")
        results.append(page.evaluate(MEASURE, {"windowMs": WINDOW_S * 1000, "pollMs": 100}))
        pages.append(page)
    for n, result in enumerate(results):
        print(
            f"\nh265 viewer {n + 1}: sent as {result.get('codec')}; first frame after "
            f"{result.get('firstMs')} ms, {result.get('framesDecoded')} frames decoded in "
            f"{WINDOW_S:.0f} s"
        )
        assert "error" not in result, result
        assert not any("H265" in line for line in result["offered"]), "Chromium offers H.265"
        assert result["firstMs"] is not None, f"Chromium decoded no frame: {result}"
        assert result["firstMs"] <= FIRST_FRAME_S * 1000, result
        assert result["framesDecoded"] >= MIN_FRAMES, result

    sessions = cameras.live.sessions(camera_id)
    assert [s.mode for s in sessions] == ["transcode", "transcode"], sessions
    transcoder = cameras.live.transcoder(camera_id)
    assert transcoder is not None and all(s.track.feed is transcoder for s in sessions)
    assert [t.name for t in threading.enumerate()].count(thread) == 1

    for page in pages:
        page.close()
    wait_until(lambda: not cameras.live.sessions(camera_id), 10, "the sessions to close")
    assert cameras.live.transcoder(camera_id) is None
    wait_until(
        lambda: thread not in {t.name for t in threading.enumerate()},
        5,
        "the transcoder's thread to end with its last viewer",
    )
