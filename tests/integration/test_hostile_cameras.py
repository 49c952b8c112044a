"""Hostile camera input: URLs, hosts and streams that are broken or malicious.

Against real peers: gst-rtsp-server (H.265, audio only, audio + video, H.264 with a garbage
payload, a mount that switches codec), TCP ports that accept and never answer, answer
random bytes, flood them or answer HTTP, and the whole service over HTTP. Each case must
end in a status that says what is wrong, keep the service running, and leave no reader
thread or file descriptor behind once the camera is removed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from api.app import create_app
from config.settings import Settings
from ingest.backoff import Backoff, BackoffPolicy
from ingest.camera import CameraState
from ingest.manager import CameraManager
from ingest.ring import PacketRing
from ingest.sources import Source, SourceOptions
from ingest.types import CameraStreamConfig
from storage.clips import write_mp4
from tests.conftest import LiveServer, wait_for
from tests.integration.test_ingest import (
    Listener,
    RecordingSink,
    ingest_threads,
    open_fds,
    wait_until,
)
from tests.peers.rtsp import (
    HostileTcpServer,
    RtspServer,
    audio_only,
    audio_video_pattern,
    garbage_h264,
    h265_pattern,
    live_pattern,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

StartServer = Callable[[Mapping[str, Mapping[str, Any]]], RtspServer]
StartTcp = Callable[[str], HostileTcpServer]

# Short timeouts so every hostile case settles within seconds.
FAST: dict[str, Any] = {
    "open_timeout_s": 1.5,
    "read_timeout_s": 1.5,
    "stall_timeout_s": 3.0,
    "analyzeduration_us": 200_000,
    "backoff_initial_s": 0.3,
    "backoff_max_s": 1.0,
}
# Shell metacharacters, valid in a URL: they must reach the camera as data, never a shell.
META_PATH = "$(touch${IFS}MARKER);id|id`id`&x"
META_PASSWORD = "pa;$(id)|x`y&z'\""

NO_ANSWER = "accepts connections on port {port} but does not answer"
NOT_RTSP = "answer on port {port} is not RTSP"
HTTP = "port {port} answers HTTP, not RTSP"
NO_VIDEO = "no video stream: the camera offers only audio (opus)"
NO_PICTURE = "no picture: "
NOT_FOUND = "stream not found (RTSP 404): check the path"
SCHEME = "URL scheme {scheme!r} is not allowed: cameras are read over rtsp:// or rtsps://"
NO_FILES = "file sources are disabled on this server (ingest.allow_file_sources)"
CONTROL = "the camera URL contains spaces or control characters"


def cam(camera_id: str, url: str, **overrides: Any) -> CameraStreamConfig:
    return CameraStreamConfig(camera_id, url, **{**FAST, **overrides})


class PermanentFailures(Backoff):
    """The real backoff, recording what each failure was told (permanent or not)."""

    def __init__(self, config: CameraStreamConfig, log: dict[str, list[tuple[bool, float]]]):
        super().__init__(
            BackoffPolicy(
                initial_s=config.backoff_initial_s,
                max_s=config.backoff_max_s,
                permanent_s=config.permanent_retry_s,
                jitter=0.0,
            )
        )
        self._log = log.setdefault(config.camera_id, [])

    def failed(self, *, permanent: bool = False) -> float:
        delay = super().failed(permanent=permanent)
        self._log.append((permanent, delay))
        return delay


# -- the ingest engine against every hostile peer at once ---------------------------------


def hostile_configs(
    server: RtspServer, tcp: Mapping[str, HostileTcpServer], tmp_path: Path
) -> dict[str, tuple[CameraStreamConfig, CameraState, str | None]]:
    """camera id → (config, the state it must reach, what its last_error must contain)."""
    sentinel = tcp["sentinel"]  # no camera may ever connect to it
    base = f"127.0.0.1:{server.port}"
    video = tmp_path / "clip.mp4"
    off, on = CameraState.OFFLINE, CameraState.ONLINE
    rows: dict[str, tuple[str, CameraState, str | None]] = {
        "silent": (tcp["silent"].url(), off, NO_ANSWER.format(port=tcp["silent"].port)),
        "garbage": (tcp["garbage"].url(), off, NOT_RTSP.format(port=tcp["garbage"].port)),
        "flood": (tcp["flood"].url(), off, NOT_RTSP.format(port=tcp["flood"].port)),
        "http": (tcp["http"].url(), off, HTTP.format(port=tcp["http"].port)),
        "audio": (server.url("/audio"), off, NO_VIDEO),
        "payload": (server.url("/garbage"), off, NO_PICTURE),
        "meta": (f"rtsp://{base}/{META_PATH}", off, NOT_FOUND),
        "h265": (server.url("/h265"), on, None),
        "av": (server.url("/av"), on, None),
        "metapw": (f"rtsp://admin:{META_PASSWORD}@{base}/locked", on, None),
        # Refused before any connection: FFmpeg would otherwise happily open these.
        "http_url": (sentinel.url("/x.mjpg", "http"), off, SCHEME.format(scheme="http")),
        "tcp_url": (sentinel.url("/", "tcp"), off, SCHEME.format(scheme="tcp")),
        "concat": (f"concat:{video}|{video}", off, SCHEME.format(scheme="concat")),
        "file_off": (f"file://{video}", off, NO_FILES),
        "FILE_off": (f"FILE://{video}", off, NO_FILES),
        "path_off": (str(video), off, NO_FILES),
        "crlf": (f"{sentinel.url('/a')}\r\nAuthorization: Basic YWRtaW46YWRtaW4=", off, CONTROL),
        "nul": (f"{sentinel.url('/a')}\x00", off, CONTROL),
    }
    return {
        cid: (cam(cid, url, allow_file_sources=False), state, error)
        for cid, (url, state, error) in rows.items()
    }


def settled(
    manager: CameraManager, expected: Mapping[str, tuple[CameraStreamConfig, CameraState, Any]]
) -> Callable[[], bool]:
    def check() -> bool:
        for cid, (_cfg, state, error) in expected.items():
            status = manager.status(cid)
            if status.state is not state:
                return False
            if state is CameraState.ONLINE and not status.frames_analysed:
                return False
            if error is not None and error not in (status.last_error or ""):
                return False
        return True

    return check


async def test_hostile_cameras_get_clear_statuses_and_leave_nothing_behind(
    rtsp_server: StartServer, hostile_tcp: StartTcp, tmp_path: Path
) -> None:
    server = rtsp_server(
        {
            "/audio": audio_only(),
            "/garbage": garbage_h264(),
            "/h265": h265_pattern(width=352, height=288),
            "/av": audio_video_pattern(),
            "/locked": live_pattern(fps=10, user="admin", password=META_PASSWORD),
        }
    )
    tcp = {mode: hostile_tcp(mode) for mode in HostileTcpServer.MODES}
    tcp["sentinel"] = hostile_tcp("silent")
    expected = hostile_configs(server, tcp, tmp_path)
    configs = {cid: cfg for cid, (cfg, _s, _e) in expected.items()}
    listener = Listener()
    backoffs: dict[str, list[tuple[bool, float]]] = {}
    manager = CameraManager(
        listener=listener,
        sink_factory=lambda _cid: RecordingSink(),
        backoff_factory=lambda cfg: PermanentFailures(cfg, backoffs),
    )

    async def one_cycle() -> None:
        await manager.apply(configs)
        try:
            await wait_until(settled(manager, expected), 25, "every camera in its state")
        except AssertionError:
            statuses = {c: (s.state, s.last_error) for c, s in manager.statuses().items()}
            raise AssertionError(f"not settled: {statuses}") from None
        await manager.apply({})
        assert ingest_threads() == []
        await wait_until(lambda: all(s.connections == 0 for s in tcp.values()), 10, "hang-ups")

    try:
        await one_cycle()  # also the warm-up: FFmpeg opens some fds once per process
        gc.collect()  # sockets of earlier tests in this process close now, not mid-test
        threads, fds = threading.active_count(), open_fds()
        await one_cycle()
    finally:
        await manager.aclose()
    gc.collect()
    assert ingest_threads() == []
    assert threading.active_count() <= threads, "the second cycle left threads running"
    # Not ==: in the full suite an earlier test's objects may still close fds meanwhile.
    assert open_fds() <= fds, "the second cycle left file descriptors open"

    for cid, (_cfg, state, _error) in expected.items():
        states = listener.states(cid)
        if state is CameraState.OFFLINE:
            # Never online, not even for a moment (garbage must not look alive).
            assert "online" not in states, (cid, states)
        else:
            assert states[:1] == ["online"], (cid, states)
    # Permanent problems wait permanent_retry_s; a silent host is retried with backoff.
    for cid in ("garbage", "flood", "http", "audio", "meta", "http_url", "concat", "crlf"):
        assert backoffs[cid] and all(permanent for permanent, _d in backoffs[cid]), cid
    assert not any(permanent for permanent, _d in backoffs["silent"])
    assert not any(permanent for permanent, _d in backoffs["payload"])
    assert tcp["sentinel"].accepted == 0  # http://, tcp://, CR/LF, NUL: no connection made
    assert not (Path.cwd() / "MARKER").exists() and not (tmp_path / "MARKER").exists()


async def test_silent_host_is_retried_with_growing_backoff_and_stops_at_once(
    hostile_tcp: StartTcp,
) -> None:
    silent = hostile_tcp("silent")
    backoffs: dict[str, list[tuple[bool, float]]] = {}
    manager = CameraManager(backoff_factory=lambda cfg: PermanentFailures(cfg, backoffs))
    config = cam("s", silent.url(), open_timeout_s=1.0, backoff_initial_s=0.2, backoff_max_s=0.8)
    try:
        await manager.apply({"s": config})
        await wait_until(lambda: manager.status("s").attempts >= 4, 30, "four attempts")
        status = manager.status("s")
        assert status.state is CameraState.OFFLINE
        assert status.last_error == (
            f"the camera accepts connections on port {silent.port} but does not answer "
            "(nothing within 1 s): check its address and port"
        )
        delays = [delay for _permanent, delay in backoffs["s"]]
        assert delays[:3] == [0.2, 0.4, 0.8]  # capped exponential (jitter off)
        assert not any(permanent for permanent, _d in backoffs["s"])
        assert silent.accepted >= 4
        await manager.apply({})  # stopped in the middle of an attempt or a wait
        assert ingest_threads() == []
    finally:
        await manager.aclose()
    await wait_until(lambda: silent.connections == 0, 10, "the client hung up")


async def test_a_failing_source_factory_leaves_the_camera_offline_not_crashed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(url: str, options: SourceOptions) -> Source:
        raise RuntimeError("boom")

    manager = CameraManager(source_factory=broken)
    try:
        await manager.apply({"b": cam("b", "rtsp://127.0.0.1:9/x")})
        await wait_until(lambda: manager.status("b").attempts >= 2, 10, "retried")
        status = manager.status("b")
        assert status.state is CameraState.OFFLINE
        assert status.last_error == "internal error (RuntimeError); see the service log"
        assert "boom" in caplog.text  # the traceback is logged for whoever fixes it
    finally:
        await manager.aclose()


async def test_codec_switch_h264_to_h265_and_back_is_followed_and_recordable(
    rtsp_server: StartServer, tmp_path: Path
) -> None:
    h264 = {"/cam": live_pattern(fps=10, width=320, height=240)}
    h265 = {"/cam": h265_pattern(width=352, height=288)}
    server = rtsp_server(h264)
    listener = Listener()
    rings: dict[str, PacketRing] = {}

    def ring_for(camera_id: str) -> PacketRing:
        rings[camera_id] = PacketRing(capacity_s=10, camera_id=camera_id)
        return rings[camera_id]

    manager = CameraManager(listener=listener, sink_factory=ring_for)
    try:
        await manager.apply({"c": cam("c", server.url("/cam"))})
        for mounts, codec, (width, height) in (
            (h264, "h264", (320, 240)),
            (h265, "hevc", (352, 288)),
            (h264, "h264", (320, 240)),
        ):
            if listener.states("c"):  # the camera's web UI switched codec: RTSP restarts
                server.restart(mounts)
            await wait_until(_shows(manager, "c", codec, width), 20, f"{codec} online")
            frame = await asyncio.wait_for(_fresh_frame(manager, "c", width), 10)
            assert frame.image.shape == (height, width, 3)
            status = manager.status("c")
            assert (status.codec, status.width, status.height) == (codec, width, height)
            assert status.last_error is None
            await asyncio.sleep(1.5)  # a keyframe and some packets into the ring
            clip = _record(rings["c"], tmp_path / f"{codec}-{len(listener.states('c'))}.mp4")
            assert clip == (codec, width, height)
    finally:
        await manager.aclose()
    assert listener.states("c") == ["online", "offline", "online", "offline", "online"]
    assert ingest_threads() == []


def _shows(manager: CameraManager, camera_id: str, codec: str, width: int) -> Callable[[], bool]:
    def check() -> bool:
        st = manager.status(camera_id)
        return st.state is CameraState.ONLINE and st.codec == codec and st.width == width

    return check


async def _fresh_frame(manager: CameraManager, camera_id: str, width: int) -> Any:
    slot = manager.frames(camera_id)
    while True:
        frame = await slot.get()
        if frame.width == width:
            return frame


def _record(ring: PacketRing, path: Path) -> tuple[str, int, int]:
    """Remux the ring's newest packets into an MP4 (as a clip would be) and read it back."""
    snapshot = ring.snapshot(time.time() - 1)
    assert snapshot.params is not None and snapshot.packets
    info = write_mp4(path, snapshot.params, snapshot.packets)
    assert info.frames >= 2
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert frames == info.frames  # every remuxed packet decodes
        return stream.codec_context.name, stream.width, stream.height


# -- through the service --------------------------------------------------------------------


TOKEN = "xl_test_admin_token_hostile_cameras_01"

BAD_URLS = [
    ("http://127.0.0.1:8080/video.mjpg", "rtsp:// or rtsps://"),
    ("https://cam.example/live", "rtsp:// or rtsps://"),
    ("ftp://cam.example/x.mp4", "rtsp:// or rtsps://"),
    ("concat:/etc/passwd|/etc/hostname", "rtsp:// or rtsps://"),
    ("file:///etc/passwd", "file:// sources are disabled"),
    ("FILE:///etc/passwd", "file:// sources are disabled"),
    ("File:/var/lib/video.mp4", "file:// sources are disabled"),
    ("rtsp://127.0.0.1/a b", "spaces or control characters"),
    ("rtsp://127.0.0.1/a\nb", "spaces or control characters"),
    ("rtsp://127.0.0.1/a\r\nAuthorization: Basic eDp5", "spaces or control characters"),
    ("rtsp://127.0.0.1/a\tb", "spaces or control characters"),
    ("rtsp://127.0.0.1/a\x00", ""),  # refused before the schema too ("NUL character")
    ("rtsp://127.0.0.1:99999/x", "invalid port"),
    ("rtsp:///no-host", "must name a host"),
]


def _named_field(response: httpx.Response, field: str) -> str:
    assert response.status_code == 422, response.text
    details = response.json()["detail"]
    hits = [d for d in details if d["loc"][-1] == field or field in d["loc"]]
    assert hits, details
    return str(hits[0]["msg"])


def test_hostile_input_through_the_api(
    make_settings: Callable[..., Settings],
    rtsp_server: StartServer,
    hostile_tcp: StartTcp,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO)
    server = rtsp_server(
        {
            "/ok": live_pattern(fps=10),
            "/locked": live_pattern(fps=10, user="admin", password=META_PASSWORD),
            "/audio": audio_only(),
            "/garbage": garbage_h264(),
            "/h265": h265_pattern(),
        }
    )
    silent = hostile_tcp("silent")
    settings = make_settings(
        auth={"bootstrap_token": TOKEN},
        ingest={
            "open_timeout_s": 1.5,
            "read_timeout_s": 1.5,
            "stall_timeout_s": 3.0,
            "backoff_initial_s": 0.3,
            "backoff_max_s": 1.0,
            "auth_retry_s": 120.0,
            "allow_file_sources": False,
        },
    )
    app = create_app(settings)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with LiveServer(app) as live, httpx.Client(base_url=live.url, headers=auth) as http:

        def add(name: str, url: str) -> str:
            # No motion analytics: an open incident holds up the removal of its camera for
            # up to 30 s (its clip waits for post-roll packets a removed camera no longer
            # sends), which is not what this test is about.
            body = {"name": name, "rtsp_url": url, "analytics": {"motion": {"enabled": False}}}
            r = http.post("/api/v1/cameras", json=body)
            assert r.status_code == 201, r.text
            cid: str = r.json()["id"]
            return cid

        def status(cid: str) -> dict[str, Any]:
            r = http.get(f"/api/v1/cameras/{cid}/status")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        ok = add("ok", server.url("/ok"))

        # Refused with 422 naming the field, on create and on update, for both URLs.
        for url, why in BAD_URLS:
            for field in ("rtsp_url", "substream_url"):
                body = {"name": "bad", "rtsp_url": server.url("/ok"), field: url}
                assert why in _named_field(http.post("/api/v1/cameras", json=body), field)
                patched = http.patch(f"/api/v1/cameras/{ok}", json={field: url})
                assert why in _named_field(patched, field)
        assert [c["id"] for c in http.get("/api/v1/cameras").json()["items"]] == [ok]

        # Shell metacharacters are data: stored and shown as given, sent to the camera as
        # its path (404 here), never run. The password with them authenticates.
        meta_url = f"rtsp://127.0.0.1:{server.port}/{META_PATH}"
        meta = add("meta", meta_url)
        assert http.get(f"/api/v1/cameras/{meta}").json()["rtsp_url"] == meta_url
        locked_url = f"rtsp://admin:{META_PASSWORD}@127.0.0.1:{server.port}/locked"
        locked = add("metapw", locked_url)
        shown = http.get(f"/api/v1/cameras/{locked}").json()["rtsp_url"]
        assert shown == f"rtsp://admin:***@127.0.0.1:{server.port}/locked"

        cams = {
            "silent": add("silent", silent.url()),
            "audio": add("audio", server.url("/audio")),
            "garbage": add("garbage", server.url("/garbage")),
            "h265": add("h265", server.url("/h265")),
            "stored_file": add("stored_file", server.url("/ok")),
        }
        # A file URL that reached the database behind the API's back (an older row, an
        # ONVIF device's stream URI) is still not played on a server without file sources.
        _store_url(app, cams["stored_file"], f"file://{tmp_path / 'secret.mp4'}")

        def offline_with(cid: str, text: str) -> Callable[[], bool]:
            return lambda: (s := status(cid))["state"] == "offline" and text in s["last_error"]

        wait_for(lambda: status(ok)["state"] == "online", 20, "ok online")
        wait_for(lambda: status(locked)["state"] == "online", 20, "metapw online")
        wait_for(lambda: status(cams["h265"])["state"] == "online", 20, "h265 online")
        wait_for(offline_with(meta, NOT_FOUND), 20, "meta: 404")
        wait_for(offline_with(cams["silent"], NO_ANSWER.format(port=silent.port)), 20, "silent")
        wait_for(offline_with(cams["audio"], NO_VIDEO), 20, "audio only")
        wait_for(offline_with(cams["garbage"], NO_PICTURE), 25, "garbage payload")
        wait_for(offline_with(cams["stored_file"], NO_FILES), 20, "stored file URL")
        snap = http.get(f"/api/v1/cameras/{cams['h265']}/snapshot.jpg")
        assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8"
        assert not (Path.cwd() / "MARKER").exists()

        # Names and ids in paths are looked up, never used as file names: no 500, no 200.
        for path in _hostile_paths():
            r = http.get(path)
            assert r.status_code in (404, 405, 422), (path, r.status_code, r.text[:200])
        r = http.put("/api/v1/grids/..%2F..%2Fx", json={"name": "x", "level": "grid"})
        assert r.status_code in (404, 422), r.text

        # The service survived all of it: the good camera never left, health is fine.
        assert status(ok)["state"] == "online" and status(ok)["reconnects"] == 0
        assert http.get("/healthz").status_code == 200
        ids = [ok, meta, locked, *cams.values()]
        for cid in ids:
            assert http.delete(f"/api/v1/cameras/{cid}").status_code == 204
        manager = app.state.process.cameras.manager
        wait_for(lambda: manager.camera_ids() == [], 15, "every camera stopped")
        wait_for(lambda: ingest_threads() == [], 15, "every reader thread ended")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert META_PASSWORD not in logged


def _store_url(app: Any, camera_id: str, url: str) -> None:
    services = app.state.services
    with services.tx() as session:
        from storage.models import Camera

        row = session.get(Camera, camera_id)
        row.main_url_enc = services.secrets.encrypt(url)
        row.version += 1
        row.updated_at = datetime.now(UTC)
    app.state.process.camera_control.changed()


def _hostile_paths() -> list[str]:
    ids = [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "..%252F..%252Fetc%252Fpasswd",
        "%2e%2e",
        "..%5C..%5Cwindows",
        "%00",
        "cam%00.jpg",
        "x" * 2000,
        "%E2%80%AE",
        "$(id)",
    ]
    paths = []
    for i in ids:
        paths += [
            f"/api/v1/cameras/{i}",
            f"/api/v1/cameras/{i}/status",
            f"/api/v1/cameras/{i}/snapshot.jpg",
            f"/api/v1/incidents/{i}",
            f"/api/v1/incidents/{i}/clip",
            f"/api/v1/incidents/{i}/snapshot",
            f"/api/v1/grids/{i}",
            f"/api/v1/cases/{i}",
        ]
    return paths
