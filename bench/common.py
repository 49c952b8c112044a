"""Helpers shared by the service benchmarks (cameras, latency, API, memory).

Inputs are made from the real footage ``../shared/data/vtest.avi`` with the ``ffmpeg`` CLI
and cached under ``bench/.cache``; the RTSP cameras are the test suite's gst-rtsp-server
(``tests/peers/rtsp.py``, ``h264file`` mounts: pre-encoded H.264 sent without
re-encoding, so the server stays cheap); the service runs either in this process (a
uvicorn thread, when a benchmark reads the ingest engine's counters) or as
``python -m cli.main serve`` (when only its outside matters). CPU and memory are read from
``/proc`` (no psutil needed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.peers.rtsp import RtspServer, h264file_mount  # noqa: E402

__all__ = [
    "REPO",
    "TOKEN",
    "CameraInputs",
    "InProcessService",
    "RtspServer",
    "ServiceProcess",
    "add_cameras",
    "api_client",
    "camera_inputs",
    "cpu_seconds",
    "encode",
    "ffmpeg_decode_cpu",
    "free_port",
    "h264file_mount",
    "load_avg",
    "machine",
    "machine_jiffies",
    "percentile",
    "pg_database",
    "print_table",
    "rss_mib",
    "start_rtsp",
    "thread_cpu_seconds",
    "workdir",
]

CACHE = REPO / "bench" / ".cache"
VTEST = REPO.parent / "shared" / "data" / "vtest.avi"
TOKEN = "xl_bench_admin_token_0000000000000001"
CLK_TCK = os.sysconf("SC_CLK_TCK")
FPS = 25


# Machine and processes ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM and the load average now (for every reported number)."""
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "python": sys.version.split()[0],
        "load": load_avg(),
    }


def load_avg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process, all its threads (``/proc/PID/stat``)."""
    with open(f"/proc/{pid or 'self'}/stat", encoding="utf-8") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of stat(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds of every thread of this process (``/proc/self/task``), keyed
    ``NAME#TID``: the Python thread's name where there is one, else ``native:COMM``
    (threads started by libraries: OpenCV's pool, libuv workers…)."""
    import threading as _threading

    names = {t.native_id: t.name for t in _threading.enumerate() if t.native_id is not None}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="utf-8") as fh:
                raw = fh.read()
        except FileNotFoundError:
            continue  # ended meanwhile
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        name = names.get(int(tid), f"native:{comm}")
        out[f"{name}#{tid}"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def rss_mib(pid: int | None = None) -> tuple[float, float]:
    """Resident set size now and its peak (VmRSS, VmHWM) in MiB."""
    values = {}
    with open(f"/proc/{pid or 'self'}/status", encoding="utf-8") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine since boot (``/proc/stat``)."""
    with open("/proc/stat", encoding="utf-8") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, which is already in user
    return total - idle, total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Statistics and output -----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; nan when empty."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table (right-aligned numbers)."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


# Inputs ---------------------------------------------------------------------------------------


def encode(out: Path, vf: str, *, seconds: float, bitrate: str, preset: str = "medium") -> Path:
    """Encode ``vtest.avi`` through filter ``vf`` as a camera would: H.264 (Main profile,
    no B-frames), a keyframe every 2 s, constant-ish bitrate. Cached by file name."""
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(VTEST), "-vf", vf,
            "-t", str(seconds), "-c:v", "libx264", "-preset", preset, "-profile:v", "main",
            "-bf", "0", "-g", str(2 * FPS), "-keyint_min", str(2 * FPS), "-sc_threshold", "0",
            "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate,
            "-pix_fmt", "yuv420p", "-an", str(tmp),
        ],
        check=True,
    )  # fmt: skip
    tmp.replace(out)
    return out


@dataclass(frozen=True)
class CameraInputs:
    sub: Path  # 640x360@25, analysed
    main: Path  # 1920x1080@25, recorded


def camera_inputs(main_bitrate: str = "2M") -> CameraInputs:
    """20 s of a camera's two streams from vtest (768x576, 10 fps) sped up 2.5x, so each of
    the 25 frames/s is a new picture (repeated frames would make decoding unfairly cheap)
    and people walk through all the time."""
    speed = "setpts=PTS/2.5"
    sub = encode(
        CACHE / "cam_walk_sub_640x360_25fps_800k.mp4",
        f"{speed},scale=640:360,fps={FPS}",
        seconds=20,
        bitrate="800k",
    )
    main = encode(
        CACHE / f"cam_walk_main_1920x1080_25fps_{main_bitrate}.mp4",
        f"{speed},scale=1920:1080,fps={FPS}",
        seconds=20,
        bitrate=main_bitrate,
        preset="veryfast",
    )
    return CameraInputs(sub, main)


def ffmpeg_decode_cpu(path: Path, loops: int = 4) -> tuple[float, float]:
    """CPU seconds of ``ffmpeg -threads 1 -i PATH -f null -`` over ``loops`` passes, and the
    seconds of video decoded: the cost of decoding that stream in real time, per second."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-threads", "1",
            "-stream_loop", str(loops - 1), "-i", str(path), "-f", "null", "-",
        ],
        check=True,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, loops * _duration_s(path)


def _duration_s(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout)["format"]["duration"])


# RTSP server -----------------------------------------------------------------------------------


def start_rtsp(mounts: Mapping[str, Mapping[str, Any]], workdir: Path) -> RtspServer:
    """The test suite's gst-rtsp-server with these mounts, bound to a free loopback port."""
    return RtspServer(mounts, workdir).start(timeout=60)


# The service -----------------------------------------------------------------------------------


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("XUELIANG_")}


class ServiceProcess:
    """``python -m cli.main serve`` as a child process (what an installation runs)."""

    def __init__(self, workdir: Path, env: Mapping[str, str] | None = None, role: str = "all"):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **_base_env(),
            "XUELIANG_DATA_DIR": str(workdir / "data"),
            "XUELIANG_AUTH__BOOTSTRAP_TOKEN": TOKEN,
            **(env or {}),
        }
        self.role = role
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> ServiceProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "service.log").open("wb")
        with log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "cli.main", "serve", "--role", self.role,
                    "--port", str(self.port),
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_healthy(self.url, self.proc, self.workdir / "service.log")
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return api_client(self.url, timeout)

    def log_tail(self, lines: int = 20) -> str:
        text = (self.workdir / "service.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class InProcessService:
    """The whole service (``create_app``, role ``all``) served by uvicorn in a thread of this
    process, so a benchmark can read the ingest engine's counters while it runs."""

    def __init__(self, workdir: Path, **overrides: Any) -> None:
        import uvicorn

        from api.app import create_app
        from config.settings import Settings

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = Settings(data_dir=workdir / "data", auth={"bootstrap_token": TOKEN}, **overrides)
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> InProcessService:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return api_client(self.url, timeout)

    @property
    def runtime(self) -> Any:
        """The camera runtime (``runtime.cameras.CameraRuntime``) once the lifespan started."""
        return self.app.state.process.cameras


def api_client(url: str, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=timeout)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the service did not answer /healthz:\n{log.read_text()[-3000:]}")


def add_cameras(
    client: httpx.Client, count: int, main_url: str, sub_url: str | None, **extra: Any
) -> list[str]:
    """Register ``count`` cameras (main stream recorded, substream analysed)."""
    ids = []
    for i in range(count):
        body: dict[str, Any] = {"name": f"bench {i}", "rtsp_url": main_url, **extra}
        if sub_url is not None:
            body["substream_url"] = sub_url
        r = client.post("/api/v1/cameras", json=body)
        r.raise_for_status()
        ids.append(r.json()["id"])
    return ids


PG_ADMIN = os.environ.get("XL_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """A fresh database on the local PostgreSQL server (``XL_BENCH_PG_URL`` to change it),
    dropped afterwards; yields its SQLAlchemy URL."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary directory, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def rounded(value: Any) -> Any:
    """Floats rounded to 4 places, through dicts and lists (for the JSON line)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value
