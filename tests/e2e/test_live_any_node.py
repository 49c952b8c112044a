"""Live view from any node (issue #15), in Chromium's own WebRTC stack.

An installation of three processes on one PostgreSQL schema: an ``api`` node, which runs
no camera, and two camera workers. A High-profile camera (gst-rtsp-server) is leased to
one worker. The console, loaded from the ``api`` node, opens the camera's live view: the
``api`` node forwards the WHEP offer to the worker holding the lease (its ``workers.url``,
the internal token) and Chromium decodes the worker's media — the first frame within 2 s,
at least 20 frames within 8 s. The DELETE of a session's ``Location`` is forwarded too.
The worker is then SIGKILLed: the other worker takes the lease over, and the console's
view comes back by itself, decoding frames again from the new owner.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext
from sqlalchemy import select

from storage.db import Database
from storage.models import CameraLease
from storage.tokens import create_token
from tests.conftest import wait_for
from tests.e2e.test_console_wall import NEWEST_PEER
from tests.e2e.test_live_profiles import (
    FIRST_FRAME_S,
    MEASURE,
    MIN_FRAMES,
    RECORD_PEERS,
    WINDOW_S,
)
from tests.installation import Installation, Node, pid_of
from tests.peers.rtsp import RtspServer, live_pattern

pytestmark = pytest.mark.timeout(240)

TOKEN = "xl_test_admin_token_live_any_node"
LEASE_S = 6.0
FPS = 15
#: Lease expiry, the camera's start on the survivor, the console's retry backoff.
RECOVERY_S = 45.0

# A WHEP exchange of the page's own: offer to the api node, DELETE its Location twice.
WHEP_DELETE = """
async ({ path, token }) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  await pc.setLocalDescription(await pc.createOffer());
  const auth = { Authorization: `Bearer ${token}` };
  const posted = await fetch(path, {
    method: "POST", body: pc.localDescription.sdp,
    headers: { ...auth, "Content-Type": "application/sdp" },
  });
  const location = posted.headers.get("Location");
  const first = await fetch(location, { method: "DELETE", headers: auth });
  const again = await fetch(location, { method: "DELETE", headers: auth });
  pc.close();
  return { posted: posted.status, location, first: first.status, again: again.status };
}
"""


@dataclass
class Site:
    api: Node
    workers: list[Node]
    db: Database
    camera_id: str
    operator: str


@pytest.fixture
def site(shared_db: str, tmp_path: Path) -> Iterator[Site]:
    rtsp = RtspServer(
        {"/high": live_pattern(width=640, height=360, fps=FPS, profile="high")}, tmp_path / "rtsp"
    ).start()
    db = Database(shared_db)
    db.migrate()
    install = Installation(shared_db, tmp_path, TOKEN, LEASE_S)
    failed = True
    try:
        launcher = "tests.e2e.loopback_node"  # aiortc on 127.0.0.1, as Chromium is allowed
        workers = [install.start(f"w{n}", "worker", module=launcher) for n in range(2)]
        api = install.start("api", "api", module=launcher)
        wait_for(lambda: all(n.ready() for n in install.nodes), 60, "three processes serving")
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            created = http.post(
                "/api/v1/cameras",
                json={
                    "name": "High camera",
                    "rtsp_url": rtsp.url("/high"),
                    "analytics": {"motion": {"enabled": False}},
                },
            )
        assert created.status_code == 201, created.text
        with db.session() as session:
            operator, _ = create_token(session, "operator", "operator-any-node")
        yield Site(api, workers, db, created.json()["id"], operator)
        failed = False
    finally:
        install.close(failed)
        db.dispose()
        rtsp.stop()


def _owner(site: Site) -> Node | None:
    """The worker whose process holds the camera's lease and reports it up."""
    with site.db.session() as session:
        lease = session.scalar(select(CameraLease).where(CameraLease.camera_id == site.camera_id))
    pid = pid_of(lease.worker_id) if lease is not None else None
    node = next((w for w in site.workers if w.process.pid == pid), None)
    if node is None or node.process.poll() is not None:
        return None
    return node if _camera_up(node, site.camera_id) else None


def _camera_up(node: Node, camera_id: str) -> bool:
    try:
        metrics = httpx.get(f"{node.url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return False
    return f'xueliang_camera_up{{camera="{camera_id}"}} 1.0' in metrics


def test_an_api_node_forwards_live_view_and_it_comes_back_after_the_worker_dies(
    site: Site, context: BrowserContext
) -> None:
    owner = wait_for(lambda: _owner(site), 60, "a worker running the camera")
    time.sleep(1.5)  # a keyframe in its ring to start viewers from

    context.add_init_script(f"sessionStorage.setItem('xl.token', {site.operator!r});")
    context.add_init_script(RECORD_PEERS)
    page = context.new_page()
    page.goto(f"{site.api.url}/console/#/cameras/{site.camera_id}")
    result: dict[str, Any] = page.evaluate(MEASURE, {"windowMs": WINDOW_S * 1000, "pollMs": 100})
    print(
        f"\nthrough the api node, from worker {owner.name}: first frame after "
        f"{result.get('firstMs')} ms, {result.get('framesDecoded')} frames decoded in "
        f"{WINDOW_S:.0f} s, sent as {result.get('codec')}"
    )
    assert "error" not in result, result
    assert result["firstMs"] is not None, f"Chromium decoded no frame: {result}"
    assert result["firstMs"] <= FIRST_FRAME_S * 1000, result
    assert result["framesDecoded"] >= MIN_FRAMES, result

    # The DELETE of a forwarded session reaches the worker that has it, once.
    path = f"/api/v1/cameras/{site.camera_id}/webrtc"
    whep = page.evaluate(WHEP_DELETE, {"path": path, "token": site.operator})
    assert (whep["posted"], whep["first"], whep["again"]) == (201, 204, 404), whep

    first_peer = page.evaluate(NEWEST_PEER)["index"]
    owner.process.send_signal(signal.SIGKILL)
    owner.process.wait(timeout=10)
    killed = time.monotonic()

    def playing_again() -> dict[str, Any] | None:
        newest: dict[str, Any] | None = page.evaluate(NEWEST_PEER)
        if newest is None or newest["index"] <= first_peer:
            return None  # still the connection to the dead worker, or none yet
        return newest if newest["frames"] >= MIN_FRAMES else None

    back: dict[str, Any] = wait_for(
        playing_again, RECOVERY_S, "the live view back from the other worker", 0.5
    )
    recovered = time.monotonic() - killed
    survivor = next(w for w in site.workers if w is not owner)
    print(
        f"worker {owner.name} SIGKILLed: {back['frames']} frames decoded from {survivor.name} "
        f"{recovered:.1f} s later (lease {LEASE_S:g} s, peer connection #{back['index']})"
    )
    assert _owner(site) is survivor
