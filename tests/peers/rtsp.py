"""A real RTSP server for tests (GStreamer's gst-rtsp-server) and its pytest fixture.

The server runs under Debian's ``/usr/bin/python3`` (python3-gi lives only there) from
``rtsp_server_main.py``, bound to 127.0.0.1 on a port the kernel picks, so several test
sessions can run at once. Usage::

    def test_x(rtsp_server):
        server = rtsp_server({"/cam": live_pattern(fps=15), "/walk": file_mount(VTEST, fps=10),
                              "/locked": live_pattern(user="admin", password="secret")})
        url = server.url("/cam")                       # rtsp://127.0.0.1:PORT/cam
        url = server.url("/locked", "admin", "secret")
        server.stop()      # SIGKILL, like a crash or a pulled cable
        server.restart()   # same port, same mounts
        server.freeze()    # SIGSTOP: connections stay open, nothing flows
        server.thaw()      # SIGCONT

``rtsp_server`` is a function-scoped factory: call it with the mounts (path → options, see
``rtsp_server_main.py``); every server it started is killed at teardown.
``make_h264_clip`` writes a small H.264 MP4 with PyAV for ``h264file`` mounts.

Hostile cameras: ``h265_pattern``, ``audio_only``, ``audio_video_pattern`` and
``garbage_h264`` (RTP carrying corrupted H.264) are mounts like the others;
``server.restart(mounts)`` brings the same port back with other mounts (a camera switched
from H.264 to H.265). ``hostile_tcp(mode)`` starts a :class:`HostileTcpServer`: a port that
accepts and never answers, answers with random bytes, floods them, or answers HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import av
import numpy as np
import pytest

__all__ = [
    "VTEST",
    "HostileTcpServer",
    "RtspServer",
    "audio_only",
    "audio_video_pattern",
    "file_mount",
    "garbage_h264",
    "h264file_mount",
    "h265_pattern",
    "hostile_tcp",
    "live_pattern",
    "make_h264_clip",
    "rtsp_server",
]

SYSTEM_PYTHON = "/usr/bin/python3"
LAUNCHER = Path(__file__).with_name("rtsp_server_main.py")
SHARED_DATA = (Path(__file__).resolve().parents[3] / "shared" / "data").resolve()
VTEST = SHARED_DATA / "vtest.avi"  # 768x576, 10 fps, 79.5 s, MS-MPEG4v3 (transcoded)


def live_pattern(
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 15,
    keyint: int | None = None,
    user: str | None = None,
    password: str | None = None,
    profile: Literal["baseline", "main", "high"] = "baseline",
    parameter_sets: Literal["in-band", "sdp"] = "in-band",
) -> dict[str, Any]:
    """A live test pattern camera (x264), optionally behind Basic auth.

    ``profile`` is the H.264 profile its SPS declares (x264's baseline is Constrained
    Baseline); ``parameter_sets="sdp"`` sends SPS/PPS only in the SDP's
    ``sprop-parameter-sets``, never before the IDRs (cameras that send them only at SETUP).
    """
    mount: dict[str, Any] = {"kind": "testsrc", "width": width, "height": height, "fps": fps}
    mount["keyint"] = keyint or fps
    if profile != "baseline":
        mount["profile"] = profile
    if parameter_sets != "in-band":
        mount["parameter_sets"] = parameter_sets
    if user is not None:
        mount.update(user=user, password=password or "")
    return mount


def file_mount(path: Path, *, fps: int = 10, loop: bool = True) -> dict[str, Any]:
    """A file decoded and re-encoded to H.264 at ``fps``; looped like a live camera."""
    return {"kind": "file", "path": str(path), "fps": fps, "loop": loop}


def h264file_mount(
    path: Path, *, fps: float | None = None, loop: bool = True, codec: str = "h264"
) -> dict[str, Any]:
    """An H.264 (or ``codec="h265"``) file served as is (no re-encoding), at its own rate
    unless ``fps``."""
    mount: dict[str, Any] = {"kind": "h264file", "path": str(path), "loop": loop, "codec": codec}
    if fps is not None:
        mount["fps"] = fps
    return mount


def _raw_video(width: int, height: int, fps: int) -> str:
    return (
        f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
        f"framerate={fps}/1"
    )


def _x264(fps: int) -> str:
    return f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=500"


def h265_pattern(*, width: int = 320, height: int = 240, fps: int = 10) -> dict[str, Any]:
    """A live H.265 (HEVC, Main profile) camera, keyframe every second."""
    return {
        "kind": "launch",
        "launch": f"( {_raw_video(width, height, fps)} ! x265enc tune=zerolatency "
        f"speed-preset=ultrafast key-int-max={fps} bitrate=500 ! video/x-h265,profile=main "
        f"! rtph265pay name=pay0 pt=96 config-interval=1 )",
    }


def audio_only() -> dict[str, Any]:
    """A stream that offers nothing but Opus audio (an intercom, a mis-set camera)."""
    return {
        "kind": "launch",
        "launch": "( audiotestsrc is-live=true ! audioconvert ! opusenc "
        "! rtpopuspay name=pay0 pt=97 )",
    }


def audio_video_pattern(*, width: int = 320, height: int = 240, fps: int = 10) -> dict[str, Any]:
    """H.264 video plus an Opus audio track (the usual camera with a microphone)."""
    return {
        "kind": "launch",
        "launch": f"( {_raw_video(width, height, fps)} ! {_x264(fps)} "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 "
        f"audiotestsrc is-live=true ! audioconvert ! opusenc ! rtpopuspay name=pay1 pt=97 )",
    }


def garbage_h264(
    *, width: int = 320, height: int = 240, fps: int = 10, probability: float = 0.5, seed: int = 7
) -> dict[str, Any]:
    """Valid RTSP and RTP whose H.264 payload is garbage: every NAL unit keeps its start
    code and header (so it is packetised as usual) and ``probability`` of its other bytes,
    parameter sets included, are random (GStreamer's ``breakmydata``)."""
    return {
        "kind": "launch",
        "launch": f"( {_raw_video(width, height, fps)} ! {_x264(fps)} ! h264parse "
        f"! video/x-h264,stream-format=byte-stream,alignment=nal "
        f"! breakmydata probability={probability} seed={seed} skip=5 "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )",
    }


class RtspServer:
    """One gst-rtsp-server process; see the module docstring."""

    def __init__(self, mounts: Mapping[str, Mapping[str, Any]], workdir: Path) -> None:
        self.mounts = {path: dict(opts) for path, opts in mounts.items()}
        self.workdir = workdir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def running(self) -> bool:
        """Whether the process is alive (frozen counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._proc is not None, "server not started"
        return self._proc.pid

    def start(self, timeout: float = 20.0) -> RtspServer:
        """Start and wait for the ready line; reuses the port after the first start."""
        assert not self.running, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._spawn(deadline)
                return self
            except RuntimeError:
                # Right after a kill the port can be briefly unavailable; retry until the
                # deadline, then report what the server printed.
                if self.port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _spawn(self, deadline: float) -> None:
        config = self.workdir / "rtsp.json"
        config.write_text(json.dumps({"port": self.port, "mounts": self.mounts}))
        self._starts += 1
        stderr = (self.workdir / f"rtsp-{self._starts}.log").open("wb")
        with stderr:
            proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(LAUNCHER), str(config)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "GST_DEBUG": "1"},
            )
        self._proc = proc
        line = _read_line(proc, deadline)
        if not line.startswith("READY port="):
            self._kill()
            log = (self.workdir / f"rtsp-{self._starts}.log").read_text(errors="replace")
            raise RuntimeError(f"RTSP server did not start: {line!r}\n{log[-2000:]}")
        self.port = int(line.removeprefix("READY port="))

    def stop(self) -> None:
        """Kill the server (SIGKILL): connections drop at once, like a crash."""
        self._kill()

    def restart(
        self, mounts: Mapping[str, Mapping[str, Any]] | None = None, timeout: float = 20.0
    ) -> None:
        """Start again on the same port, with the same mounts or with ``mounts``."""
        self._kill()
        if mounts is not None:
            self.mounts = {path: dict(opts) for path, opts in mounts.items()}
        self.start(timeout)

    def freeze(self) -> None:
        """SIGSTOP: sockets stay open but nothing is sent (a hung camera)."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        os.kill(self.pid, signal.SIGCONT)

    def url(self, mount: str, user: str | None = None, password: str | None = None) -> str:
        """The RTSP URL of ``mount``, with percent-encoded credentials when given."""
        auth = ""
        if user is not None:
            auth = quote(user, safe="") + ":" + quote(password or "", safe="") + "@"
        return f"rtsp://{auth}127.0.0.1:{self.port}/{mount.lstrip('/')}"

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()  # works on a SIGSTOPped process too
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(max(0.0, deadline - time.monotonic())):
            return "<no ready line before the deadline>"
    return proc.stdout.readline().decode(errors="replace").strip()


def make_h264_clip(
    path: Path, *, seconds: float = 2.0, fps: int = 12, width: int = 320, height: int = 240
) -> Path:
    """Encode a moving gradient as H.264 (keyframe every second) into an MP4 with PyAV."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(fps), "preset": "ultrafast", "tune": "zerolatency"}
        ramp = np.linspace(0, 255, width, dtype=np.float32)
        for i in range(int(seconds * fps)):
            row = ((ramp + i * 8) % 256).astype(np.uint8)
            image = np.repeat(np.repeat(row[None, :, None], height, 0), 3, 2)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


class HostileTcpServer:
    """A loopback port that misbehaves towards RTSP clients (threads in this process).

    Modes: ``silent`` accepts and never answers; ``garbage`` answers the first request
    with random bytes, then stays silent; ``flood`` sends random bytes without end;
    ``http`` answers like a web server and hangs up. ``accepted`` counts connections so
    far, ``connections`` those still open (0 once every client has gone).
    """

    MODES = ("silent", "garbage", "flood", "http")

    def __init__(self, mode: str, *, seed: int = 7) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}")
        self.mode = mode
        self._seed = seed
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self.accepted = 0
        self._accepter = threading.Thread(target=self._accept, name=f"hostile-{mode}", daemon=True)
        self._accepter.start()

    @property
    def connections(self) -> int:
        """Accepted connections not yet closed."""
        with self._lock:
            return len(self._open)

    def url(self, path: str = "/cam", scheme: str = "rtsp") -> str:
        """A URL pointing at this port."""
        return f"{scheme}://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def close(self) -> None:
        """Stop accepting, hang up on every client and wait for the threads."""
        self._closed.set()
        self._accepter.join()
        self._listener.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._open.add(conn)
                self.accepted += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        rng = random.Random(self._seed)
        try:
            conn.settimeout(0.2)
            if self.mode != "silent":
                self._recv(conn)  # the client's first request
            if self.mode == "http":
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            if self.mode == "garbage":
                conn.sendall(rng.randbytes(4096))
            while not self._closed.is_set():
                if self.mode == "flood":
                    conn.sendall(rng.randbytes(4096))
                    time.sleep(0.01)
                elif self._recv(conn) == b"":
                    return  # the client hung up
        except OSError:
            pass  # reset by the client, or shut down by close()
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def _recv(self, conn: socket.socket) -> bytes | None:
        """What arrived within 0.2 s (None: nothing yet; b"": the client hung up)."""
        while not self._closed.is_set():
            try:
                return conn.recv(4096)
            except TimeoutError:
                if self.mode != "flood":
                    return None
        return b""


@pytest.fixture
def hostile_tcp() -> Iterator[Callable[[str], HostileTcpServer]]:
    """Factory: ``hostile_tcp(mode)`` starts a :class:`HostileTcpServer`; closed at teardown."""
    servers: list[HostileTcpServer] = []

    def start(mode: str) -> HostileTcpServer:
        servers.append(HostileTcpServer(mode))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def rtsp_server(
    tmp_path: Path,
) -> Iterator[Callable[[Mapping[str, Mapping[str, Any]]], RtspServer]]:
    """Factory: ``rtsp_server(mounts)`` starts a server; all are killed at teardown."""
    servers: list[RtspServer] = []

    def start(mounts: Mapping[str, Mapping[str, Any]]) -> RtspServer:
        server = RtspServer(mounts, tmp_path / f"rtsp-server-{len(servers)}")
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
