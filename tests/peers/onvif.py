"""Real ONVIF cameras for tests: ``ipycam`` (PyPI) inside a private network namespace.

ipycam binds 0.0.0.0 and multicasts WS-Discovery Hello/Bye, so it runs in a network
namespace of its own that has nothing but loopback (with multicast routed to it): no packet
can leave the machine. The test code that talks to the cameras runs in the same namespace:

- processes (ipycam, ``xueliang serve``) are started under ``nsenter --net=…``;
- Python code of the test runs on a worker thread that entered the namespace
  (``setns`` is per thread) — ``ns.call(fn)``. The thread checks that loopback is its only
  interface before running anything, and every thread or socket it creates stays inside.

ipycam needs ``opencv-python``, which must not share an environment with the service's
``opencv-python-headless`` (both install ``cv2``): it gets its own virtualenv,
``.venv-ipycam/`` in the repository, created on first use (``python -m tests.peers.onvif``
creates it ahead of time). Root is needed for the namespace (``unshare``/``nsenter``).

Fixtures (module scope, so a test module starts its cameras once):

- ``onvif_netns`` — a :class:`NetNamespace`;
- ``ipycams`` — two :class:`IpyCam` running in it (``Gate-North`` and ``Yard-South``).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.peers.rtsp import VTEST

__all__ = [
    "IPYCAM_VENV",
    "IpyCam",
    "NetNamespace",
    "NsHttp",
    "ensure_ipycam_venv",
    "ipycams",
    "kill_group",
    "onvif_netns",
]

REPO = Path(__file__).resolve().parents[2]
IPYCAM_VERSION = "1.3.0"
IPYCAM_VENV = REPO / ".venv-ipycam"
HOST = "127.0.0.1"
_CLONE_NEWNET = 0x40000000
# Inside the namespace: loopback up, with multicast (WS-Discovery) routed to it.
_NS_SETUP = (
    "set -e; ip link set lo up; ip link set lo multicast on; ip route add 239.0.0.0/8 dev lo"
)

T = TypeVar("T")


def ensure_ipycam_venv(venv: Path = IPYCAM_VENV) -> Path:
    """The Python of a virtualenv with ipycam, created (pip, PyPI) if missing."""
    python = venv / "bin" / "python"
    marker = venv / f".ipycam-{IPYCAM_VERSION}"
    if marker.exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / ".venv-ipycam.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test sessions install once
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*pip, f"ipycam=={IPYCAM_VERSION}"], check=True)
            marker.touch()
    return python


def _enter_namespace(ns_path: str) -> None:
    """Move the calling thread into the network namespace, and check it really is there."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(ns_path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns_path}): {os.strerror(err)}")
    finally:
        os.close(fd)
    interfaces = [name for _, name in socket.if_nameindex()]
    if interfaces != ["lo"]:
        raise RuntimeError(f"not in the private namespace: interfaces {interfaces}")


class NetNamespace:
    """A network namespace with only loopback, alive while its holder process runs.

    The holder exits when its stdin closes, so a killed test session does not leave the
    namespace behind (processes still inside it are killed by the fixtures).
    """

    def __init__(self) -> None:
        self._holder: subprocess.Popen[bytes] | None = None
        self._worker: ThreadPoolExecutor | None = None

    @property
    def path(self) -> str:
        """``/proc/PID/ns/net`` of the holder."""
        assert self._holder is not None, "namespace not started"
        return f"/proc/{self._holder.pid}/ns/net"

    def start(self) -> NetNamespace:
        script = f"{_NS_SETUP}; echo ready; exec cat >/dev/null"
        self._holder = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline().decode().strip()
        if line != "ready":
            err = self._holder.stderr.read().decode() if self._holder.stderr else ""
            self.close()
            raise RuntimeError(
                f"cannot create a network namespace (needs root, unshare and ip): {err}"
            )
        self._worker = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="netns",
            initializer=_enter_namespace,
            initargs=(self.path,),
        )
        return self

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the thread inside the namespace; return its result."""
        assert self._worker is not None, "namespace not started"
        return self._worker.submit(fn, *args, **kwargs).result()

    def http(self, base_url: str, **kwargs: Any) -> NsHttp:
        """An HTTP client whose requests are all made from inside the namespace."""
        return NsHttp(self, httpx.Client(base_url=base_url, trust_env=False, **kwargs))

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process inside the namespace, in a process group of its own."""
        return subprocess.Popen(
            ["nsenter", f"--net={self.path}", "--", *argv], start_new_session=True, **kwargs
        )

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        holder, self._holder = self._holder, None
        if holder is not None:
            for pipe in (holder.stdin, holder.stdout, holder.stderr):
                if pipe is not None:
                    pipe.close()
            try:
                holder.wait(timeout=5)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()


class NsHttp:
    """``httpx.Client`` methods, each run on :meth:`NetNamespace.call`'s thread."""

    def __init__(self, ns: NetNamespace, client: httpx.Client) -> None:
        self.ns, self.client = ns, client

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.ns.call(self.client.get, url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.ns.call(self.client.post, url, **kwargs)

    def close(self) -> None:
        self.ns.call(self.client.close)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started by :meth:`NetNamespace.popen` and everything it started."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@dataclass
class IpyCam:
    """One ipycam virtual camera in a namespace: ONVIF on ``onvif_port``, RTSP on ``rtsp_port``."""

    ns: NetNamespace
    workdir: Path
    name: str
    onvif_port: int
    rtsp_port: int
    username: str = "admin"
    password: str = "Onv1f-Secret-42"
    presets: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    python: Path | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "ipycam.log"

    def config(self) -> dict[str, Any]:
        """ipycam's camera_config.json: small streams (main 640x360, sub 320x180 at 10 fps)."""
        base = self.onvif_port
        return {
            "name": self.name,
            "local_ip": HOST,
            "onvif_port": self.onvif_port,
            "rtsp_port": self.rtsp_port,
            "rtmp_port": base + 1,
            "web_port": base + 2,
            "go2rtc_api_port": base + 3,
            "main_width": 640,
            "main_height": 360,
            "main_fps": 10,
            "main_bitrate": "1M",
            "sub_width": 320,
            "sub_height": 180,
            "sub_fps": 10,
            "sub_bitrate": "256K",
            "hw_accel": "cpu",
            "username": self.username,
            "password": self.password,
        }

    def start(self, python: Path, timeout: float = 30.0) -> IpyCam:
        """Start and wait for "IP Camera is running!"; PTZ presets come from ``presets``."""
        self.python = python
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "cam.json").write_text(json.dumps(self.config()))
        presets = {
            token: {"token": token, "name": token, "pan": p, "tilt": t, "zoom": z}
            for token, (p, t, z) in self.presets.items()
        }
        (self.workdir / "ptz_presets.json").write_text(json.dumps(presets))
        with self.log_path.open("wb") as out:
            argv = [str(python), "-m", "ipycam", "--config", "cam.json", "--source", str(VTEST)]
            self.proc = self.ns.popen(
                argv,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while b"IP Camera is running!" not in self.log_path.read_bytes():
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log_path.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"ipycam {self.name} did not start:\n{log}")
            time.sleep(0.05)

    def restart(self, *, rtsp_port: int) -> None:
        """Start again with its streams on another port, as after a firmware update."""
        assert self.python is not None, "never started"
        self.stop()
        self.rtsp_port = rtsp_port
        self.start(self.python)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            kill_group(proc)

    def ptz_status(self) -> dict[str, Any]:
        """ipycam's own view of its PTZ (its REST API; ONVIF GetStatus answers bad XML)."""

        def get() -> dict[str, Any]:
            url = f"http://{HOST}:{self.onvif_port}/api/ptz"
            auth = (self.username, self.password)
            status: dict[str, Any] = httpx.get(url, auth=auth, trust_env=False).json()
            return status

        return self.ns.call(get)


@pytest.fixture(scope="module")
def onvif_netns() -> Iterator[NetNamespace]:
    """A private network namespace (loopback only) for ONVIF peers and the code testing them."""
    ns = NetNamespace().start()
    yield ns
    ns.close()


@pytest.fixture(scope="module")
def ipycams(
    onvif_netns: NetNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[IpyCam]]:
    """Two ipycam cameras in ``onvif_netns``, started in parallel; killed at teardown."""
    python = ensure_ipycam_venv()
    base = tmp_path_factory.mktemp("ipycam")
    cams = [
        IpyCam(
            onvif_netns, base / "a", "Gate-North", 18080, 18554, presets={"door": (0.5, -0.25, 0.0)}
        ),
        IpyCam(onvif_netns, base / "b", "Yard-South", 18180, 18654, password="Other-Pass-9"),
    ]
    try:
        with ThreadPoolExecutor(len(cams)) as pool:
            for started in [pool.submit(cam.start, python) for cam in cams]:
                started.result()
        yield cams
    finally:
        for cam in cams:
            cam.stop()


if __name__ == "__main__":
    # `python -m tests.peers.onvif`: install the ipycam virtualenv ahead of the tests.
    print(ensure_ipycam_venv())
