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
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import quote

import av
import numpy as np
import pytest

__all__ = [
    "VTEST",
    "RtspServer",
    "file_mount",
    "h264file_mount",
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
) -> dict[str, Any]:
    """A live test pattern camera (x264, baseline), optionally behind Basic auth."""
    mount: dict[str, Any] = {"kind": "testsrc", "width": width, "height": height, "fps": fps}
    mount["keyint"] = keyint or fps
    if user is not None:
        mount.update(user=user, password=password or "")
    return mount


def file_mount(path: Path, *, fps: int = 10, loop: bool = True) -> dict[str, Any]:
    """A file decoded and re-encoded to H.264 at ``fps``; looped like a live camera."""
    return {"kind": "file", "path": str(path), "fps": fps, "loop": loop}


def h264file_mount(path: Path, *, fps: float | None = None, loop: bool = True) -> dict[str, Any]:
    """An H.264 file served as is (no re-encoding), at its own rate unless ``fps``."""
    mount: dict[str, Any] = {"kind": "h264file", "path": str(path), "loop": loop}
    if fps is not None:
        mount["fps"] = fps
    return mount


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

    def restart(self, timeout: float = 20.0) -> None:
        """Start again on the same port with the same mounts."""
        self._kill()
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
