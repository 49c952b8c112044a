"""The soak on the city stack (issue #19): a PostgreSQL of the soak's own, SeaweedFS, one API
node and two workers, each a real ``xueliang serve --role`` process.

Besides the single-process soak's disruptions, a worker is SIGKILLed (its cameras must move
to the other within the lease) and PostgreSQL is restarted (every process must carry on).
The PostgreSQL is made with ``initdb`` in a temp dir, so restarting it disturbs nothing else
on the machine. An :class:`Owners` thread reads every worker's ``/metrics`` each second: a
camera listed by two workers at once, or by none for longer than the lease (plus the
workers' poll), fails the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.integration.test_delivery import Receiver, Service
from tests.peers.rtsp import RtspServer, h264file_mount
from tests.peers.seaweedfs import SeaweedS3
from tests.soak.checks import Result
from tests.soak.peers import MOUNT, Peers, cycle_video, service_env

log = logging.getLogger("soak")

LEASE_S = 15.0  # the default camera lease (``workers.lease_s``)
#: A worker looks for cameras to take this often; a dead worker's are free after the lease.
TAKEOVER_SLACK_S = 10.0
OWNERS_EVERY_S = 1.0
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


class OwnPostgres:
    """A PostgreSQL cluster of the soak's own (``initdb`` in a temp dir, its own port)."""

    def __init__(self) -> None:
        if not PG_BIN:
            raise RuntimeError("no PostgreSQL server binaries: run scripts/ensure-postgres")
        self.bin = PG_BIN[-1]
        self.root = Path(tempfile.mkdtemp(prefix="xl-soak-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/xueliang"

    def _as_postgres(self, *command: str) -> list[str]:
        # initdb and the server refuse to run as root.
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else [*command]

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            self._as_postgres(
                str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                "--auth=trust", "-E", "UTF8", "--no-sync",
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        self.start()
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
             "postgres", "xueliang"],
            check=True,
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c max_connections=200 -c fsync=on"
        )
        subprocess.run(
            self._as_postgres(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"),
                "-o", options, "-w", "-t", "60", "start",
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip

    def stop(self) -> None:
        subprocess.run(
            self._as_postgres(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
            ),
            check=False,
            capture_output=True,
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class CityPeers(Peers):
    """The single-process soak's peers, with the service split in an API node and two
    workers on a PostgreSQL of its own."""

    workers: list[Service] = field(default_factory=list)
    postgres: OwnPostgres | None = None

    def do(self, action: str) -> None:
        handler = {
            "worker.kill": self._worker_kill,
            "worker.start": self._worker_start,
            "postgres.restart": self._postgres_restart,
        }.get(action)
        if handler is None:
            super().do(action)
            return
        log.info("step %s", action)
        with self._lock:
            handler()
            self.counts[action] = self.counts.get(action, 0) + 1

    def _worker_kill(self) -> None:
        self.kills.append(time.time())
        self.workers[0].kill()

    def _worker_start(self) -> None:
        self.workers[0].start()

    def _postgres_restart(self) -> None:
        assert self.postgres is not None
        started = time.monotonic()
        self.postgres.restart()
        log.info("PostgreSQL restarted in %.1f s", time.monotonic() - started)

    def pids(self) -> dict[str, int | None]:
        nodes = {"api": self.service, **{f"worker{i}": w for i, w in enumerate(self.workers)}}
        return {
            name: n.proc.pid if n.proc is not None and n.proc.poll() is None else None
            for name, n in nodes.items()
        }

    @property
    def data_dirs(self) -> list[Path]:
        return [self.service.data_dir, *(w.data_dir for w in self.workers)]

    def all_up(self) -> None:
        super().all_up()
        with self._lock:
            for worker in self.workers:
                if worker.proc is None or worker.proc.poll() is not None:
                    worker.start()

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()
        super().stop_all()
        if self.postgres is not None:
            self.postgres.remove()


@contextlib.contextmanager
def city_peers(workdir: Path, cache: Path) -> Iterator[CityPeers]:
    """Start PostgreSQL, S3, the RTSP server, the receiver, the API node and two workers."""
    video = cycle_video(cache)
    postgres = OwnPostgres()
    postgres.init()
    s3 = SeaweedS3(workdir / "seaweedfs")
    s3.start()
    rtsp = RtspServer({MOUNT: h264file_mount(video)}, workdir / "rtsp").start(timeout=60)
    receiver = Receiver()
    receiver.start()
    bucket = f"soak-{uuid.uuid4().hex[:12]}"
    key = os.environ.get("XL_SOAK_CAMERA_KEY") or _fernet_key()
    nodes = [
        Service(workdir, postgres.url, role, name)
        for role, name in (("api", "api"), ("worker", "worker-a"), ("worker", "worker-b"))
    ]
    for node in nodes:
        node.env.pop("XUELIANG_MQTT__URL", None)
        node.env.update(service_env(node.data_dir, postgres.url, s3, bucket))
        node.env["XUELIANG_SECRETS__CAMERA_KEY"] = key  # one installation: one key
        node.env["XUELIANG_WORKERS__LEASE_S"] = str(LEASE_S)
    api, *workers = nodes
    p = CityPeers(rtsp, s3, receiver, api, bucket, workers=workers, postgres=postgres)
    try:
        for node in nodes:
            node.start()
        yield p
    finally:
        p.stop_all()


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


class Owners(threading.Thread):
    """Which worker runs which camera, once a second, from each worker's ``/metrics``
    (``xueliang_camera_up{camera=...}``: listed while the worker holds the camera)."""

    def __init__(self, workers: Sequence[Service], cameras: Sequence[str]) -> None:
        super().__init__(name="soak-owners", daemon=True)
        self.workers, self.cameras = workers, list(cameras)
        self.twice: list[tuple[float, str]] = []
        self.unowned_since: dict[str, float] = {}
        self.longest_unowned: dict[str, float] = {}
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(OWNERS_EVERY_S):
            try:
                self._sample()
            except Exception:  # the watcher must outlive any surprise
                log.exception("owners")

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)

    def _sample(self) -> None:
        now = time.monotonic()
        held: dict[str, int] = {}
        for worker in self.workers:
            for camera in _listed(worker.url):
                held[camera] = held.get(camera, 0) + 1
        self.samples += 1
        for camera in self.cameras:
            if held.get(camera, 0) > 1:
                self.twice.append((now, camera))
                log.warning("camera %s listed by both workers", camera)
            if held.get(camera, 0) == 0:
                self.unowned_since.setdefault(camera, now)
            elif camera in self.unowned_since:
                self._ended(camera, now)

    def _ended(self, camera: str, now: float) -> None:
        gap = now - self.unowned_since.pop(camera)
        self.longest_unowned[camera] = max(self.longest_unowned.get(camera, 0.0), gap)

    def result(self) -> Result:
        now = time.monotonic()
        for camera in list(self.unowned_since):
            self._ended(camera, now)
        limit = LEASE_S + TAKEOVER_SLACK_S
        longest = max(self.longest_unowned.values(), default=0.0)
        failures = [f"camera {c} on two workers at once" for _t, c in self.twice[:10]]
        failures += [
            f"camera {c} unowned for {s:.1f} s (lease {LEASE_S:.0f} s + {TAKEOVER_SLACK_S:.0f} s)"
            for c, s in self.longest_unowned.items()
            if s > limit
        ]
        numbers = {
            "samples": self.samples,
            "on_two_workers": len(self.twice),
            "longest_unowned_s": round(longest, 1),
            "limit_s": limit,
        }
        return Result(numbers, failures)


def _listed(url: str) -> set[str]:
    """The cameras a worker holds (an unreachable worker holds none: it is dead)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return set()
    prefix = 'xueliang_camera_up{camera="'
    return {
        line[len(prefix) :].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith(prefix)
    }
