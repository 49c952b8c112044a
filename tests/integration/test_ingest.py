"""The ingest engine against a real RTSP server (GStreamer's gst-rtsp-server on loopback).

Timeouts and backoffs are shortened through the camera config so the suite stays fast; the
one number taken from the acceptance list as is: the server stays down for 10 s.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from av.packet import Packet
from av.video.stream import VideoStream

from ingest.camera import CameraState
from ingest.manager import CameraManager, UnknownCameraError
from ingest.slot import SlotClosedError
from ingest.types import CameraStreamConfig, Frame
from tests.conftest import steady_async
from tests.peers.rtsp import (
    VTEST,
    RtspServer,
    file_mount,
    h264file_mount,
    live_pattern,
    make_h264_clip,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

USER = "admin"
PASSWORD = "Sup3r-S3cret-pw"
WRONG = "Wr0ng-Pa55word"

StartServer = Callable[[Mapping[str, Mapping[str, Any]]], RtspServer]

# Short timeouts for tests; the defaults (5 s / 20 s / 60 s) are for real networks.
FAST: dict[str, Any] = {
    "open_timeout_s": 3.0,
    "read_timeout_s": 3.0,
    "stall_timeout_s": 5.0,
    "analyzeduration_us": 200_000,
    "backoff_initial_s": 0.2,
    "backoff_max_s": 1.5,
}


def cam(camera_id: str, url: str, **overrides: Any) -> CameraStreamConfig:
    return CameraStreamConfig(camera_id, url, **{**FAST, **overrides})


@dataclass
class Transition:
    camera_id: str
    old: CameraState
    new: CameraState
    error: str | None
    at: datetime
    thread: int


@dataclass
class Listener:
    transitions: list[Transition] = field(default_factory=list)

    def on_state(
        self,
        camera_id: str,
        old_state: CameraState,
        new_state: CameraState,
        error: str | None,
        at: datetime,
    ) -> None:
        self.transitions.append(
            Transition(camera_id, old_state, new_state, error, at, threading.get_ident())
        )

    def states(self, camera_id: str) -> list[str]:
        """The states ``camera_id`` went through (error-only updates left out)."""
        return [str(t.new) for t in self.transitions if t.camera_id == camera_id and t.old != t.new]


@dataclass
class RecordingSink:
    """A PacketSink that keeps what it was told (as the pre-roll ring would)."""

    events: list[str] = field(default_factory=list)
    streams: list[tuple[int, int, str]] = field(default_factory=list)
    pts_s: list[float] = field(default_factory=list)
    keyframes: int = 0
    threads: set[str] = field(default_factory=set)

    def on_stream(self, stream: VideoStream) -> None:
        self.events.append("stream")
        self.streams.append((stream.width, stream.height, stream.codec_context.name))
        self.threads.add(threading.current_thread().name)

    def on_packet(self, packet: Packet[VideoStream], wallclock: float) -> None:
        if not self.events or self.events[-1] != "packet":
            self.events.append("packet")
        self.keyframes += packet.is_keyframe
        if packet.pts is not None:
            self.pts_s.append(float(packet.pts * packet.time_base))

    def on_disconnect(self) -> None:
        self.events.append("disconnect")


@pytest.fixture(autouse=True)
def no_password_in_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """Every test here: no log line, at any level, carries a password."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        message = record.getMessage()
        assert PASSWORD not in message and WRONG not in message, message
    assert PASSWORD not in caplog.text and WRONG not in caplog.text


@pytest.fixture
async def manager_parts() -> AsyncIterator[
    tuple[CameraManager, Listener, dict[str, RecordingSink]]
]:
    listener = Listener()
    sinks: dict[str, RecordingSink] = {}

    def sink_for(camera_id: str) -> RecordingSink:
        sinks[camera_id] = RecordingSink()
        return sinks[camera_id]

    manager = CameraManager(listener=listener, sink_factory=sink_for)
    yield manager, listener, sinks
    await manager.aclose()


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until true; return the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def all_in(manager: CameraManager, state: CameraState) -> Callable[[], bool]:
    return lambda: all(s.state is state for s in manager.statuses().values())


def ingest_threads(prefix: str = "ingest-") -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- acceptance ---------------------------------------------------------------------------


async def test_four_cameras_stream_at_once_at_their_source_fps(
    rtsp_server: StartServer, manager_parts: Any, tmp_path: Path
) -> None:
    manager, listener, sinks = manager_parts
    clip = make_h264_clip(tmp_path / "clip.mp4", seconds=3, fps=12)
    server = rtsp_server(
        {
            "/a": live_pattern(fps=15),
            "/b": live_pattern(fps=25, width=640, height=360, user=USER, password=PASSWORD),
            "/walk": file_mount(VTEST, fps=10),
            "/clip": h264file_mount(clip),
        }
    )
    expected = {
        "a": (15, 320, 240),
        "b": (25, 640, 360),
        "walk": (10, 768, 576),
        "clip": (12, 320, 240),
    }
    configs = {
        "a": cam("a", server.url("/a")),
        "b": cam("b", server.url("/b", USER, PASSWORD)),
        "walk": cam("walk", server.url("/walk")),
        "clip": cam("clip", server.url("/clip")),
    }
    await manager.apply(configs)
    await wait_until(all_in(manager, CameraState.ONLINE), 10, "all four cameras online")
    await asyncio.sleep(5)  # let the smoothed rate settle

    statuses = {camera_id: manager.status(camera_id) for camera_id in expected}
    for camera_id, (fps, width, height) in expected.items():
        status = statuses[camera_id]
        assert status.state is CameraState.ONLINE, status
        rate = await steady_async(partial(_fps, manager, camera_id))
        assert rate == pytest.approx(fps, rel=0.1), status
        assert (status.width, status.height, status.codec) == (width, height, "h264")
        assert status.attempts == 1 and status.reconnects == 0 and status.last_error is None
        assert status.last_frame_at is not None
        frame = manager.frames(camera_id).get_nowait()
        assert frame.image.shape == (height, width, 3) and frame.camera_id == camera_id
        # Decimated to analysis_fps: about 5 of every `fps` frames reach the slot.
        assert 4 * 5 <= status.frames_analysed <= 6.5 * 6
        jpeg = manager.snapshot_jpeg(camera_id)
        assert jpeg is not None
        decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None and decoded.shape == (height, width, 3)
        sink = sinks[camera_id]
        assert sink.events == ["stream", "packet"] and sink.keyframes >= 2
        assert sink.threads == {f"ingest-{camera_id}-main"}
    assert [listener.states(c) for c in expected] == [["online"]] * 4
    assert {t.thread for t in listener.transitions} == {threading.get_ident()}  # on the loop


async def test_every_camera_comes_back_within_10s_of_a_server_restart(
    rtsp_server: StartServer, manager_parts: Any
) -> None:
    manager, listener, sinks = manager_parts
    server = rtsp_server(
        {
            "/a": live_pattern(fps=15),
            "/b": live_pattern(fps=10),
            "/c": live_pattern(fps=15, user=USER, password=PASSWORD),
            "/d": live_pattern(fps=5),
        }
    )
    configs = {
        "a": cam("a", server.url("/a")),
        "b": cam("b", server.url("/b")),
        "c": cam("c", server.url("/c", USER, PASSWORD)),
        "d": cam("d", server.url("/d")),
    }
    await manager.apply(configs)
    await wait_until(all_in(manager, CameraState.ONLINE), 10, "online before the kill")

    server.stop()
    killed = time.monotonic()
    await wait_until(all_in(manager, CameraState.OFFLINE), 3, "offline after the kill")
    for status in manager.statuses().values():
        assert status.last_error is not None and status.fps == 0.0
    await asyncio.sleep(max(0.0, 10 - (time.monotonic() - killed)))
    server.restart()
    back = await wait_until(all_in(manager, CameraState.ONLINE), 10, "online again")

    print(f"back online {back:.2f} s after the server returned")
    for camera_id, status in manager.statuses().items():
        assert status.reconnects == 1, status
        assert status.attempts >= 2
        assert listener.states(camera_id) == ["online", "offline", "online"]
        # The recorder saw one stream per connection, closed in between.
        assert sinks[camera_id].events[:4] == ["stream", "packet", "disconnect", "stream"]


async def test_frozen_server_is_detected_by_the_stall_watchdog(
    rtsp_server: StartServer, manager_parts: Any
) -> None:
    manager, listener, _ = manager_parts
    server = rtsp_server({"/a": live_pattern(fps=15)})
    # The watchdog (1.5 s) fires well before the read timeout (4 s) would.
    await manager.apply({"a": cam("a", server.url("/a"), stall_timeout_s=1.5, read_timeout_s=4)})
    await wait_until(all_in(manager, CameraState.ONLINE), 10, "online")

    server.freeze()
    try:
        took = await wait_until(all_in(manager, CameraState.OFFLINE), 4, "stall detected")
        assert manager.status("a").last_error == "no data for 1.5 s (stalled)"
        assert took < 3.5  # 1.5 s of silence plus the watchdog's check interval
    finally:
        server.thaw()
    await wait_until(all_in(manager, CameraState.ONLINE), 10, "online after the thaw")
    assert manager.status("a").reconnects == 1
    assert listener.states("a") == ["online", "offline", "online"]


async def test_wrong_password_is_reported_and_not_hammered(
    rtsp_server: StartServer, manager_parts: Any
) -> None:
    manager, listener, _ = manager_parts
    server = rtsp_server({"/a": live_pattern(fps=10, user=USER, password=PASSWORD)})
    # A short transient backoff: were auth failures retried like network errors, this
    # would make ~10 attempts in the 3 s below.
    wrong = cam("a", server.url("/a", USER, WRONG), backoff_initial_s=0.1, backoff_max_s=0.3)
    await manager.apply({"a": wrong})
    await wait_until(all_in(manager, CameraState.OFFLINE), 5, "offline")
    await asyncio.sleep(3)

    status = manager.status("a")
    assert status.last_error == "authentication failed: check the camera's username and password"
    assert status.attempts == 1
    assert status.next_attempt_at is not None
    wait_s = (status.next_attempt_at - datetime.now(status.next_attempt_at.tzinfo)).total_seconds()
    assert wait_s > 200  # the next try is minutes away: < 1 attempt per minute
    assert listener.states("a") == ["offline"]

    # Fixing the password in the config takes effect at once.
    await manager.apply({"a": cam("a", server.url("/a", USER, PASSWORD))})
    await wait_until(all_in(manager, CameraState.ONLINE), 10, "online with the right password")
    assert manager.status("a").last_error is None


async def test_missing_stream_and_refused_connection_say_what_to_check(
    rtsp_server: StartServer, manager_parts: Any, tmp_path: Path
) -> None:
    manager, _, _ = manager_parts
    server = rtsp_server({"/a": live_pattern(fps=5)})
    dead = RtspServer({"/a": live_pattern()}, tmp_path / "dead").start()
    refused_url = dead.url("/a")
    dead.stop()
    await manager.apply(
        {
            "nf": cam("nf", server.url("/nope", USER, PASSWORD)),
            "refused": cam("refused", refused_url),
            "nofile": cam("nofile", f"file:{tmp_path / 'missing.mp4'}"),
        }
    )
    await wait_until(all_in(manager, CameraState.OFFLINE), 5, "all offline")
    await wait_until(lambda: manager.status("refused").attempts >= 3, 5, "refused retried")
    assert manager.status("nf").last_error == "stream not found (RTSP 404): check the path"
    assert manager.status("nf").attempts == 1  # permanent: retried rarely
    assert manager.status("refused").last_error == (
        "connection refused: check the camera's address and port"
    )
    assert manager.status("nofile").last_error == f"file not found: {tmp_path / 'missing.mp4'}"


async def test_stopping_a_camera_ends_its_threads_and_frees_its_memory(
    rtsp_server: StartServer,
) -> None:
    server = rtsp_server({"/a": live_pattern(fps=15), "/b": live_pattern(fps=15)})
    manager = CameraManager(sink_factory=lambda _cid: RecordingSink())
    try:
        await manager.apply(
            {
                "a": cam("a", server.url("/a")),
                "b": cam("b", server.url("/a"), sub_url=server.url("/b")),
            }
        )
        await wait_until(all_in(manager, CameraState.ONLINE), 10, "online")
        assert sorted(ingest_threads()) == ["ingest-a-main", "ingest-b-main", "ingest-b-sub"]
        slot = manager.frames("b")
        frame: Frame | None = await asyncio.wait_for(slot.get(), 5)
        assert frame is not None
        image_ref = weakref.ref(frame.image)
        frame = None

        await manager.apply({"a": cam("a", server.url("/a"))})  # remove b
        assert sorted(ingest_threads()) == ["ingest-a-main"]
        assert slot.closed and len(slot) == 0
        with pytest.raises(SlotClosedError):
            await slot.get()
        with pytest.raises(UnknownCameraError):
            manager.status("b")
        del slot
        gc.collect()
        assert image_ref() is None  # no frame of b survives: runner, slot, snapshot all gone
    finally:
        await manager.aclose()
    assert ingest_threads() == []


async def test_50_start_stop_cycles_leave_no_thread_or_fd_behind(
    rtsp_server: StartServer,
) -> None:
    server = rtsp_server({"/a": live_pattern(fps=15), "/b": live_pattern(fps=15)})
    configs = {
        "a": cam("a", server.url("/a"), analyzeduration_us=100_000),
        "b": cam("b", server.url("/a"), sub_url=server.url("/b"), analyzeduration_us=100_000),
    }
    manager = CameraManager(sink_factory=lambda _cid: RecordingSink())
    rng = random.Random(7)

    async def cycle(i: int) -> None:
        await manager.apply(configs)
        if i % 2 == 0:  # half the cycles stop a streaming camera, half stop while connecting
            await wait_until(all_in(manager, CameraState.ONLINE), 10, f"online in cycle {i}")
        else:
            await asyncio.sleep(rng.uniform(0, 0.3))
        await manager.apply({})

    try:
        await cycle(0)  # warm-up: FFmpeg and the resolver open some fds once per process
        threads, fds = threading.active_count(), open_fds()
        for i in range(1, 51):
            await cycle(i)
            assert ingest_threads() == [], f"cycle {i}"
    finally:
        await manager.aclose()
    gc.collect()
    assert threading.active_count() == threads
    assert open_fds() == fds


# -- behaviour the integrators rely on ----------------------------------------------------


async def test_substream_is_analysed_and_main_stream_recorded(
    rtsp_server: StartServer, manager_parts: Any
) -> None:
    manager, _, sinks = manager_parts
    server = rtsp_server(
        {
            "/main": live_pattern(fps=15, width=640, height=360),
            "/sub": live_pattern(fps=10, width=320, height=240),
        }
    )
    await manager.apply({"c": cam("c", server.url("/main"), sub_url=server.url("/sub"))})
    await wait_until(all_in(manager, CameraState.ONLINE), 10, "online")
    frame = await asyncio.wait_for(manager.frames("c").get(), 5)
    assert frame.image.shape == (240, 320, 3)  # analysed: the substream
    await asyncio.sleep(3)
    status = manager.status("c")
    assert (status.width, status.height) == (640, 360)  # the main stream's
    assert await steady_async(lambda: manager.status("c").fps) == pytest.approx(15, rel=0.15)
    assert sinks["c"].streams == [(640, 360, "h264")]  # only the main stream is recorded


async def test_file_source_loops_as_if_live(manager_parts: Any, tmp_path: Path) -> None:
    manager, _, sinks = manager_parts
    clip = make_h264_clip(tmp_path / "short.mp4", seconds=1.5, fps=12)
    await manager.apply({"f": cam("f", f"file://{clip}")})
    await wait_until(all_in(manager, CameraState.ONLINE), 5, "online")
    await asyncio.sleep(4.5)  # three passes over the clip
    assert await steady_async(lambda: manager.status("f").fps) == pytest.approx(12, rel=0.1)
    pts = sinks["f"].pts_s
    assert len(pts) >= 12 * 4
    # Timestamps keep growing across loops (a recorder sees one continuous stream).
    assert all(b > a for a, b in itertools.pairwise(pts)), pts
    assert pts[-1] > 3.0
    assert sinks["f"].events == ["stream", "packet"]


async def test_apply_adds_changes_and_removes_without_touching_the_rest(
    rtsp_server: StartServer, manager_parts: Any
) -> None:
    manager, listener, _ = manager_parts
    server = rtsp_server({"/a": live_pattern(fps=10), "/b": live_pattern(fps=10)})
    await manager.apply({"a": cam("a", server.url("/a")), "b": cam("b", server.url("/b"))})
    await wait_until(all_in(manager, CameraState.ONLINE), 10, "online")
    since_a = manager.status("a").since
    slot_b = manager.frames("b")

    await manager.apply(
        {
            "a": cam("a", server.url("/a")),  # unchanged
            "b": cam("b", server.url("/b"), analysis_fps=2),  # changed: restarts
            "off": cam("off", server.url("/a"), enabled=False),  # added, disabled
        }
    )
    assert manager.status("off").state is CameraState.DISABLED
    await wait_until(all_in_except(manager, "off", CameraState.ONLINE), 10, "b back online")
    assert manager.status("a").since == since_a and manager.status("a").attempts == 1
    assert manager.frames("b") is slot_b  # the analyser keeps awaiting the same slot
    assert listener.states("b") == ["online", "connecting", "online"]
    assert sorted(ingest_threads()) == ["ingest-a-main", "ingest-b-main"]  # none for "off"

    await manager.apply({"b": cam("b", server.url("/b"), analysis_fps=2)})
    assert manager.camera_ids() == ["b"]
    with pytest.raises(UnknownCameraError):
        manager.frames("a")
    with pytest.raises(ValueError, match="differs"):
        await manager.apply({"x": cam("y", server.url("/a"))})


async def test_slow_analyser_loses_the_oldest_frames_and_they_are_counted(
    rtsp_server: StartServer, manager_parts: Any
) -> None:
    manager, _, _ = manager_parts
    server = rtsp_server({"/a": live_pattern(fps=15)})
    await manager.apply({"a": cam("a", server.url("/a"), analysis_fps=15, slot_size=2)})
    await wait_until(all_in(manager, CameraState.ONLINE), 10, "online")
    await asyncio.sleep(2)  # nobody reads
    status = manager.status("a")
    slot = manager.frames("a")
    assert status.frames_analysed >= 20
    assert status.frames_dropped == status.frames_analysed - len(slot) > 0
    first, second = slot.get_nowait(), slot.get_nowait()
    assert second.index > first.index  # the newest two, in order


def all_in_except(manager: CameraManager, skip: str, state: CameraState) -> Callable[[], bool]:
    return lambda: all(s.state is state for cid, s in manager.statuses().items() if cid != skip)


def _fps(manager: CameraManager, camera_id: str) -> float | None:
    return manager.status(camera_id).fps
