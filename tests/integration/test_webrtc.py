"""Live view over WebRTC (WHEP), against the real RTSP server and a real aiortc client.

The service runs whole (API, ingest); a Python WHEP client (aiortc) POSTs an offer and
counts decoded frames. Four viewers share the camera's one RTSP connection; closing a
peer (DELETE, or just closing the connection) releases it and detaches from the ring.
A MP4 (AVCC) stream is converted to Annex-B with its parameter sets, and a High 4:2:2
stream, which no browser plays, is transcoded once to Constrained Baseline.

ICE is kept on loopback: aioice skips 127.0.0.1 when gathering, so the tests hand it only
127.0.0.1 (nothing of these tests leaves the machine's loopback interface).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import aioice.ice
import av
import httpx
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from api.app import create_app
from config.settings import Settings
from ingest.ring import PacketRing
from live.webrtc import (
    BURST_STEP,
    LiveService,
    LiveTrack,
    PassthroughFeed,
    TranscodeFeed,
    check_stream,
)
from storage.tokens import create_token
from tests.conftest import LiveServer, wait_for
from tests.peers.rtsp import RtspServer, h264file_mount, live_pattern

# aiortc's client: make test (Chromium's own stack is tests/e2e/test_live_profiles.py).
pytestmark = pytest.mark.slow

TOKEN = "xl_test_admin_token_for_live_view_0001"
FPS = 15


def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gather ICE candidates on 127.0.0.1 only (see the module docstring)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *_a, **_k: ["127.0.0.1"])


@dataclass
class LiveSetup:
    """A running service with one camera online, and an operator token."""

    app: Any
    url: str
    camera_id: str
    operator: str
    rtsp: RtspServer

    @property
    def live(self) -> LiveService:
        live: LiveService = self.app.state.process.live
        return live

    @property
    def ring(self) -> PacketRing:
        ring: PacketRing | None = self.app.state.process.cameras.ring(self.camera_id)
        assert ring is not None
        return ring


@contextmanager
def start_service(
    make_settings: Callable[..., Settings], rtsp: RtspServer, mount: str
) -> Iterator[LiveSetup]:
    """The whole service on a free port with one camera from ``rtsp``, once it is online."""
    settings = make_settings(
        auth={"bootstrap_token": TOKEN},
        ingest={"backoff_initial_s": 0.5, "backoff_max_s": 2.0},
    )
    app = create_app(settings)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:
        with app.state.services.db.session() as session:
            operator, _ = create_token(session, "operator", "operator-1")
        created = http.post(
            "/api/v1/cameras",
            json={
                "name": "gate",
                "rtsp_url": rtsp.url(mount),
                "analytics": {"motion": {"enabled": False}},
            },
        )
        assert created.status_code == 201, created.text
        cam = created.json()["id"]

        def has_video() -> bool:
            ring = app.state.process.cameras.ring(cam)
            # More than a GOP: a keyframe to start from.
            return ring is not None and ring.stats().packets > FPS

        wait_for(has_video, 30, "video from the camera")
        yield LiveSetup(app, server.url, cam, operator, rtsp)


@pytest.fixture
def live_setup(
    make_settings: Callable[..., Settings],
    rtsp_server: Callable[..., RtspServer],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LiveSetup]:
    loopback_ice(monkeypatch)
    rtsp = rtsp_server({"/gate": live_pattern(fps=FPS)})
    with start_service(make_settings, rtsp, "/gate") as setup:
        yield setup


@dataclass
class Viewer:
    """One WHEP client."""

    pc: RTCPeerConnection
    track: MediaStreamTrack
    location: str
    answer: str


async def watch(base: str, camera_id: str, token: str) -> Viewer:
    """POST an offer like a browser would (recvonly video) and apply the answer."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
    pc.on("track", tracks.put_nowait)
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post(
            f"/api/v1/cameras/{camera_id}/webrtc",
            content=pc.localDescription.sdp,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"},
        )
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/sdp")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
    track = await asyncio.wait_for(tracks.get(), 5)
    return Viewer(pc, track, r.headers["location"], r.text)


async def frames(track: MediaStreamTrack, n: int, timeout: float = 5.0) -> list[av.VideoFrame]:
    """The next ``n`` decoded frames of a received track."""
    out = []
    for _ in range(n):
        frame = await asyncio.wait_for(track.recv(), timeout)
        assert isinstance(frame, av.VideoFrame)
        out.append(frame)
    return out


def rtsp_connections(port: int) -> int:
    """Established TCP connections to ``port`` (this machine): the cameras' upstreams."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01":
                    count += 1
    return count


def _pts(frame: av.VideoFrame) -> int:
    assert frame.pts is not None
    return frame.pts


def assert_moving(shots: list[av.VideoFrame]) -> None:
    """Timestamps advance and the picture changes (the pattern's clock ticks)."""
    pts = [_pts(f) for f in shots]
    assert all(b > a for a, b in itertools.pairwise(pts)), pts
    first, last = (f.to_ndarray(format="gray").astype(np.int16) for f in (shots[0], shots[-1]))
    assert np.abs(first - last).max() > 40, "the picture did not change"


async def test_live_view_passes_the_camera_through_within_a_second(live_setup: LiveSetup) -> None:
    s = live_setup
    t0 = time.monotonic()
    viewer = await watch(s.url, s.camera_id, s.operator)
    first = await frames(viewer.track, 1)
    first_frame_s = time.monotonic() - t0
    shots = first + await frames(viewer.track, 2 * FPS)
    print(f"\nfirst live frame after {first_frame_s * 1000:.0f} ms (POST to decoded frame)")
    assert first_frame_s < 3.0
    assert (shots[0].width, shots[0].height) == (320, 240)
    assert_moving(shots)
    # Passed through, not re-encoded: the answer carries the camera's profile.
    (session,) = s.live.sessions(s.camera_id)
    assert session.mode == "passthrough"
    assert "profile-level-id=42e01f" in viewer.answer or "42001f" in viewer.answer
    # Timestamps: the GOP so far replayed 1 ms apart (decoded at once, the newest shown),
    # then the camera's own spacing (90 kHz / 15 fps), not the arrival jitter.
    deltas = [b - a for a, b in itertools.pairwise(_pts(f) for f in shots)]
    burst = len(list(itertools.takewhile(lambda d: d == BURST_STEP, deltas)))
    assert burst < FPS, deltas  # at most one GOP of the 1 s keyframe interval
    assert all(d == 90_000 // FPS for d in deltas[burst:]), deltas
    # A keyframe request (RTCP PLI, as after packet loss) replays the GOP: a camera cannot
    # be asked for an IDR. The picture goes on decoding.
    receiver = viewer.pc.getTransceivers()[0].receiver
    ssrc = receiver.getSynchronizationSources()[0].source
    for _ in range(3):
        await receiver._send_rtcp_pli(ssrc)
        with contextlib.suppress(AssertionError):
            await _until(lambda: session.track.resyncs > 0, 1.2, "a GOP replay")
            break
    assert session.track.resyncs > 0
    assert_moving(await frames(viewer.track, FPS))
    # The DELETE of WHEP ends it; a second DELETE finds nothing.
    async with httpx.AsyncClient(base_url=s.url) as http:
        auth = {"Authorization": f"Bearer {s.operator}"}
        assert (await http.delete(viewer.location, headers=auth)).status_code == 204
        assert (await http.delete(viewer.location, headers=auth)).status_code == 404
    assert s.live.sessions() == [] and s.live.feed(s.camera_id) is None
    await viewer.pc.close()


async def test_four_viewers_share_one_upstream_and_leaving_releases_it(
    live_setup: LiveSetup,
) -> None:
    s = live_setup
    before = rtsp_connections(s.rtsp.port)
    assert before == 1
    viewers = await asyncio.gather(*(watch(s.url, s.camera_id, s.operator) for _ in range(4)))
    shots = await asyncio.gather(*(frames(v.track, FPS) for v in viewers))
    for shot in shots:
        assert_moving(shot)
    assert rtsp_connections(s.rtsp.port) == 1  # one upstream however many watch
    feed = s.live.feed(s.camera_id)
    assert feed is not None and feed.subscribers == 4
    assert sum(1 for tap in s.ring._taps if isinstance(tap, PassthroughFeed)) == 1
    assert s.app.state.process.cameras.manager.status(s.camera_id).reconnects == 0

    # Viewers leave without a DELETE (tab closed): the closed connection is noticed.
    t0 = time.monotonic()
    for viewer in viewers[:3]:
        await viewer.pc.close()
    await _until(lambda: len(s.live.sessions()) == 1, 10, "three sessions to close")
    print(f"\nclosed peers released after {time.monotonic() - t0:.2f} s")
    assert feed.subscribers == 1
    await viewers[3].pc.close()
    await _until(lambda: s.live.feed(s.camera_id) is None, 10, "the feed to detach")
    assert feed not in s.ring._taps
    assert rtsp_connections(s.rtsp.port) == 1  # the camera itself keeps running


async def test_live_view_refuses_what_it_cannot_serve(live_setup: LiveSetup) -> None:
    s = live_setup
    async with httpx.AsyncClient(base_url=s.url) as http:
        auth = {"Authorization": f"Bearer {s.operator}"}
        url = f"/api/v1/cameras/{s.camera_id}/webrtc"
        sdp = {**auth, "Content-Type": "application/sdp"}
        r = await http.post(url, content="v=0", headers={**auth, "Content-Type": "text/plain"})
        assert r.status_code == 415
        assert (await http.post(url, content="not sdp", headers=sdp)).status_code == 400
        missing = await http.post("/api/v1/cameras/nope/webrtc", content="v=0", headers=sdp)
        assert missing.status_code == 404
        vp8_only = await _vp8_only_offer()
        r = await http.post(url, content=vp8_only, headers=sdp)
        assert r.status_code == 422 and "H.264" in r.json()["detail"]
        # The integrator role may not watch (operator role).
        with s.app.state.services.db.session() as session:
            integrator, _ = create_token(session, "integrator", "integrator-1")
        r = await http.post(
            url, content=vp8_only, headers={**sdp, "Authorization": f"Bearer {integrator}"}
        )
        assert r.status_code == 403


async def test_disabling_a_camera_ends_its_live_view(live_setup: LiveSetup) -> None:
    s = live_setup
    viewer = await watch(s.url, s.camera_id, s.operator)
    await frames(viewer.track, 3)
    async with httpx.AsyncClient(base_url=s.url) as http:
        r = await http.patch(
            f"/api/v1/cameras/{s.camera_id}",
            json={"enabled": False},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 200, r.text
    await _until(lambda: not s.live.sessions(), 10, "the session of a disabled camera to end")
    assert s.live.feed(s.camera_id) is None
    await _until(lambda: viewer.pc.connectionState == "closed", 10, "the viewer to see it")
    await viewer.pc.close()


async def _vp8_only_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver("video", direction="recvonly")
    from aiortc import RTCRtpSender

    vp8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == "VP8"]
    transceiver.setCodecPreferences(vp8)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


# -- Streams a browser cannot take as they are -----------------------------------------------


def make_clip(path: Path, pix_fmt: str, seconds: float = 2.0, fps: int = 10) -> Path:
    """An MP4 (AVCC, parameter sets only in avcC) of a moving gradient, via libx264."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 320, 240, pix_fmt
        stream.options = {"g": str(fps), "preset": "ultrafast", "tune": "zerolatency"}
        ramp = np.linspace(0, 255, 320, dtype=np.float32)
        for i in range(int(seconds * fps)):
            row = ((ramp + i * 16) % 256).astype(np.uint8)
            image = np.repeat(np.repeat(row[None, :, None], 240, 0), 3, 2)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def play_into(ring: PacketRing, path: Path, stop: threading.Event) -> threading.Thread:
    """Feed ``path``'s packets to ``ring`` in real time, like a camera's reader thread."""
    container = av.open(str(path))
    stream = container.streams.video[0]
    ring.on_stream(stream)
    packets = [p for p in container.demux(stream) if p.size]

    def run() -> None:
        for packet in packets:
            if stop.wait(0.1):
                break
            ring.on_packet(packet, time.time())
        container.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def _decode_track(track: LiveTrack, n: int) -> list[av.VideoFrame]:
    """Decode a track's packets with a fresh decoder, as a browser would (no extradata)."""
    decoder = av.CodecContext.create("h264", "r")
    decoded: list[av.VideoFrame] = []
    while len(decoded) < n:
        packet = await asyncio.wait_for(track.recv(), 5)
        data = bytes(packet)
        assert data.startswith(b"\x00\x00\x00\x01")  # Annex-B, as aiortc's packetizer expects
        decoded += decoder.decode(av.Packet(data))
    return decoded


@pytest.mark.parametrize(
    ("pix_fmt", "passthrough"), [("yuv420p", True), ("yuv422p", False)], ids=["420", "422"]
)
async def test_mp4_streams_pass_through_as_annexb_and_422_is_transcoded(
    tmp_path: Path, pix_fmt: str, passthrough: bool
) -> None:
    clip = make_clip(tmp_path / f"{pix_fmt}.mp4", pix_fmt)
    ring = PacketRing(10.0, camera_id="clip")
    stop = threading.Event()
    thread = play_into(ring, clip, stop)
    loop = asyncio.get_running_loop()
    feed = PassthroughFeed(ring, loop, "clip")
    feed.start()
    try:
        assert check_stream(ring.params).passthrough is passthrough, check_stream(ring.params)
        source: PassthroughFeed | TranscodeFeed = feed
        if not passthrough:
            source = TranscodeFeed(feed, loop)
            source.start()
        track = LiveTrack(source)
        source.subscribe(track)
        decoded = await _decode_track(track, 8)
        assert decoded[0].format.name == "yuv420p"
        assert (decoded[0].width, decoded[0].height) == (320, 240)
        if not passthrough:
            assert ring.params is not None and ring.params.template is not None
            assert ring.params.template.codec_context.profile == "High 4:2:2"
        track.stop()
        assert feed.subscribers == 0  # the transcoder left with its last viewer
    finally:
        stop.set()
        thread.join(5)
        feed.stop()


async def test_a_high_422_camera_is_transcoded_for_the_browser(
    make_settings: Callable[..., Settings],
    rtsp_server: Callable[..., RtspServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    loopback_ice(monkeypatch)
    clip = make_clip(tmp_path / "hi422.mp4", "yuv422p", seconds=4.0)
    rtsp = rtsp_server({"/hi422": h264file_mount(clip)})
    with start_service(make_settings, rtsp, "/hi422") as s:
        viewer = await watch(s.url, s.camera_id, s.operator)
        shots = await frames(viewer.track, 10)
        assert shots[0].format.name == "yuv420p"
        (session,) = s.live.sessions(s.camera_id)
        assert session.mode == "transcode"
        assert_moving(shots)
        await viewer.pc.close()
        await _until(lambda: s.live.feed(s.camera_id) is None, 10, "the feed to detach")
