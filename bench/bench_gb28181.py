"""GB/T 28181 cameras against the same stream over RTSP: cameras per core, INVITE → first frame.

Run: ``.venv/bin/python bench/bench_gb28181.py [--cameras 8] [--pairs 3] [--starts 20]``
(3–4 minutes), or ``--quick`` (4 cameras, one pair, 3 starts each: under a minute).

The service runs as ``python -m cli.main serve`` (role ``all``, SQLite, the GB/T 28181 SIP
endpoint on a free loopback port). The peers are the test suite's, never the service's own
code: the GB/T 28181 device is an NVR played by SIPp (``tests/peers/gb28181/device.py``,
one channel per camera; on each INVITE its UAS starts a Python RTP sender of a PS file),
the RTSP camera is gst-rtsp-server (``tests/peers/rtsp.py``, an ``h264file`` mount: the
access units sent as they are, each client its own pipeline).

Content (the same H.264 on both paths): ``--content walk`` (default) is the real footage
``../shared/data/vtest.avi`` sped up 2.5x (people walking all the time), 640x360@25, H.264
Main, no B-frames, a keyframe every second, 800 kbit/s, 30 s, muxed into MPEG-PS by
GStreamer's ``mpegpsmux`` (the muxer of ``make_ps_file``); ``--content pattern`` is
``make_ps_file`` itself (test bars and a moving ball, 640x360@25, Main; x264 reaches only
≈ 115 kbit/s on it, a light stream). Either way the RTSP mount serves the H.264 elementary
stream copied out of that PS file (``ffmpeg -c copy``): the same access units, byte for
byte, packetised differently (PS in RTP vs RFC 6184, which may repeat SPS/PPS).

Each camera is one stream, recorded (pre-roll ring) and decoded with frames analysed at
5 fps; motion detection is off (``--motion`` turns it on) so that no incident, clip or
database write adds noise that differs between runs — the comparison is of the two ingest
paths, the rest of the job is the same code.

Part 1, cameras per core: ``--cameras`` N cameras through GB/T 28181 (the N channels of the
NVR), then N through RTSP, alternating (GB, RTSP, GB, RTSP…, ``--pairs`` pairs) in one
service process; each run waits until every camera is online, settles, then measures
``--window`` seconds:

* service CPU: ``/proc/PID/stat`` of the service process (and any child of it), every
  thread; the peers (SIPp, the RTP senders, the RTSP server) are other processes, measured
  apart and not counted;
* real time, from the service's ``/metrics`` at the end of the window: every camera up,
  its measured fps, the age of its last decoded frame, reconnects; for GB/T 28181 the RTP
  counters (packets, lost, late, foreign SSRC, malformed).

Cameras per core = N / service cores. Reported: per kind the median over its runs and the
spread (min–max), the GB/RTSP ratio of each pair and their median (target ≥ 0.9), and the
idle service (no camera, measured first) to give the marginal cost per camera.

Part 2, start latency: ``--starts`` times each, alternating, one camera is created and
deleted. Timestamps, all on this machine's wall clock:

* ``post``: just before ``POST /api/v1/cameras``;
* ``invite``: the device received the INVITE — when this benchmark saw the line SIPp's UAS
  logs for it appear (the log is polled every 2 ms), or the device's ACK timestamp if that
  is earlier (then SIPp's log was late); an upper bound of the true receipt, by ≤ 2 ms;
* ``ack``: the device's ``date`` when its UAS ran the media hook on the ACK (``media.log``);
* ``rtp``: the RTP sender's first packet (its JSON summary, read after the BYE);
* ``frame``: the first decoded frame — the ``since`` of the camera's ``online`` state
  (``GET /cameras/{id}/status``): the service sets it when its event loop handles the
  reader thread's callback for the first decoded picture (``ConnectionHandler.on_frame``
  → ``CameraRunner._flowing``), an internal timestamp, not the time of a poll.

Reported (p50 / p95 / max): INVITE → first frame (target p95 ≤ 1.5 s), split into
POST → INVITE (the runtime, a media port, SIP), INVITE → ACK, ACK → first RTP (the
device's shell and Python sender starting: a peer cost, a camera would be faster) and
first RTP → first frame (the service: RTP, the PS demuxer's probe, decoding); and
POST → first frame for both GB/T 28181 and RTSP, the same-machine baseline.

Prints a line per run and per start, tables, and one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    CACHE,
    VTEST,
    RtspServer,
    ServiceProcess,
    cpu_seconds,
    h264file_mount,
    load_avg,
    machine,
    machine_jiffies,
    percentile,
    print_table,
    rounded,
    start_rtsp,
    workdir,
)

from tests.peers.gb28181.device import ChannelSpec, GbDevice, make_channels
from tests.peers.gb28181.media import make_ps_file

FPS = 25
WIDTH, HEIGHT = 640, 360
KBPS = 800
CLIP_S = 30  # longer than a run (online + settle + window), so no loop seam falls inside
DEVICE = "34020000001320000001"
PASSWORD = "12345678"
KINDS = ("gb28181", "rtsp")
FPS_MIN = 0.9 * FPS  # every camera's measured rate at the end of a window
FRAME_AGE_MAX_S = 1.0  # and its last decoded frame at most this old
TARGET_RATIO = 0.9
TARGET_P95_S = 1.5
LOG_POLL_S = 0.002
STATUS_POLL_S = 0.05


# Content ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    label: str
    ps: Path  # what the GB/T 28181 device sends
    h264: Path  # the same H.264 access units, Annex B, for the RTSP mount
    frames: int
    kbps: float  # of the H.264 elementary stream


def make_content(kind: str) -> Content:
    """The PS file and the H.264 copied out of it (cached in ``bench/.cache``)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    if kind == "pattern":
        ps = make_ps_file(
            seconds=CLIP_S, fps=FPS, width=WIDTH, height=HEIGHT, profile="main", bitrate_kbps=KBPS
        )
        label = f"make_ps_file bars + ball {WIDTH}x{HEIGHT}@{FPS} Main, keyframe 1 s"
    else:
        ps = _walk_ps()
        label = f"vtest walk {WIDTH}x{HEIGHT}@{FPS} Main {KBPS}k, keyframe 1 s, mpegpsmux"
    h264 = CACHE / f"{ps.stem}.h264"
    if not h264.exists():
        _run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "mpeg", "-i", str(ps),
              "-map", "0:v:0", "-c", "copy", "-f", "h264", str(h264)])  # fmt: skip
    frames = _count_frames(h264)
    kbps = h264.stat().st_size * 8 / (frames / FPS) / 1000
    return Content(label, ps, h264, frames, kbps)


def _walk_ps() -> Path:
    name = f"gb_walk_{WIDTH}x{HEIGHT}_{FPS}fps_{KBPS}k_g{FPS}_{CLIP_S}s"
    mp4, ps = CACHE / f"{name}.mp4", CACHE / f"{name}.ps"
    if not mp4.exists():
        tmp = mp4.with_suffix(".tmp.mp4")
        rate = f"{KBPS}k"
        _run([
            "ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(VTEST),
            "-vf", f"setpts=PTS/2.5,scale={WIDTH}:{HEIGHT},fps={FPS}", "-t", str(CLIP_S),
            "-c:v", "libx264", "-preset", "medium", "-profile:v", "main", "-bf", "0",
            "-g", str(FPS), "-keyint_min", str(FPS), "-sc_threshold", "0",
            "-b:v", rate, "-maxrate", rate, "-bufsize", rate, "-pix_fmt", "yuv420p", "-an",
            str(tmp),
        ])  # fmt: skip
        tmp.replace(mp4)
    if not ps.exists():
        tmp = ps.with_suffix(".tmp.ps")
        _run([
            "gst-launch-1.0", "-q", "filesrc", f"location={mp4}", "!", "qtdemux", "!",
            "h264parse", "config-interval=-1", "!",
            "video/x-h264,stream-format=byte-stream,alignment=au", "!", "mpegpsmux", "!",
            "filesink", f"location={tmp}",
        ])  # fmt: skip
        tmp.replace(ps)
    return ps


def _count_frames(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_packets", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(json.loads(out.stdout)["streams"][0]["nb_read_packets"])


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True, timeout=300)


# Processes --------------------------------------------------------------------------------------


def _parents() -> dict[int, int]:
    """pid → parent pid of every process now."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _tree(root: int, parents: dict[int, int]) -> set[int]:
    """``root`` and its descendants."""
    found = {root}
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found


def _cpu(pids: set[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            out[pid] = cpu_seconds(pid)
    return out


def _used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used by the processes alive at both instants."""
    return sum(after[pid] - before[pid] for pid in after.keys() & before.keys())


def _free_sip_port() -> int:
    """A loopback port free for both UDP and TCP now (the SIP endpoint binds both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for SIP")


# Watching the device's logs ---------------------------------------------------------------------


class InviteWatch(threading.Thread):
    """Notes when each ``INVITE call=N`` line appears in SIPp's UAS log (wall clock),
    polling the file's size every :data:`LOG_POLL_S`."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="invite-watch", daemon=True)
        self.path = path
        self.seen: dict[int, float] = {}
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.caught_up = threading.Event()  # the lines already in the log are read

    def run(self) -> None:
        pos, partial = 0, b""
        while not self._stop_event.is_set():
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size > pos:
                now = time.time()
                with self.path.open("rb") as fh:
                    fh.seek(pos)
                    data = fh.read()
                pos += len(data)
                lines = (partial + data).split(b"\n")
                partial = lines.pop()
                self._note(lines, now)
            self.caught_up.set()
            self._stop_event.wait(LOG_POLL_S)

    def _note(self, lines: list[bytes], now: float) -> None:
        for line in lines:
            found = re.match(rb"INVITE call=(\d+)", line)
            if found:
                with self._lock:
                    self.seen.setdefault(int(found.group(1)), now)

    def snapshot(self) -> dict[int, float]:
        with self._lock:
            return dict(self.seen)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)


def _media_starts(device: GbDevice) -> dict[int, float]:
    """call → the device's timestamp of ``send.sh start`` (run on the ACK)."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for line in (device.workdir / "media.log").read_text(errors="replace").splitlines():
            words = line.split()
            if len(words) > 2 and words[1] == "start" and words[2].startswith("call="):
                with contextlib.suppress(ValueError):
                    out[int(words[2][5:])] = float(words[0])
    return out


# Metrics ----------------------------------------------------------------------------------------


def scrape(http: httpx.Client) -> dict[str, float]:
    """The service's ``/metrics`` as ``{"name{labels}": value}``."""
    out: dict[str, float] = {}
    for line in http.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def per_camera(metrics: dict[str, float], name: str) -> dict[str, float]:
    """``{camera_id: value}`` of a per-camera metric."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        found = re.fullmatch(re.escape(name) + r'\{camera="([^"]+)"\}', key)
        if found:
            out[found.group(1)] = value
    return out


RTP_COUNTERS = ("packets", "lost", "late", "foreign_ssrc", "malformed", "no_media")


def rtp_counters(metrics: dict[str, float]) -> dict[str, int]:
    """The GB/T 28181 media counters (``xueliang_gb28181_rtp_*_total``)."""
    out = {}
    for name in RTP_COUNTERS:
        key = f"xueliang_gb28181_rtp_{name}"
        out[name] = int(metrics.get(f"{key}_total", metrics.get(key, 0.0)))
    return out


# The rig ----------------------------------------------------------------------------------------


@dataclass
class Rig:
    """The service, the GB/T 28181 NVR, the RTSP server, and what the runs need of them."""

    svc: ServiceProcess
    http: httpx.Client
    device: GbDevice
    channels: list[ChannelSpec]
    server: RtspServer
    motion: bool
    invites: InviteWatch | None = None

    def body(self, kind: str, index: int) -> dict[str, Any]:
        body: dict[str, Any] = {"name": f"{kind} {index}"}
        if not self.motion:
            body["analytics"] = {"motion": {"enabled": False}}
        if kind == "gb28181":
            channel = self.channels[index].channel_id
            body["gb28181"] = {"device_id": DEVICE, "channel_id": channel}
        else:
            body["rtsp_url"] = self.server.url("/cam")
        return body

    def add(self, kind: str, index: int) -> str:
        r = self.http.post("/api/v1/cameras", json=self.body(kind, index))
        if r.status_code != 201:
            raise RuntimeError(f"POST /api/v1/cameras ({kind}): {r.status_code} {r.text}")
        camera_id: str = r.json()["id"]
        return camera_id

    def remove(self, kind: str, ids: Sequence[str], timeout: float = 20.0) -> None:
        """Delete the cameras; wait until the service runs none (and, for GB/T 28181, the
        device got a BYE for every call and its senders stopped)."""
        byes = self.device.count("BYE")
        for camera_id in ids:
            self.http.delete(f"/api/v1/cameras/{camera_id}").raise_for_status()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = per_camera(scrape(self.http), "xueliang_camera_up")
            done = not running
            if kind == "gb28181":
                done = done and self.device.count("BYE") >= byes + len(ids)
                done = done and not self.device.running_senders()
            if done:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{kind} cameras not stopped {timeout:.0f} s after DELETE")

    def wait_online(self, ids: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            up = per_camera(scrape(self.http), "xueliang_camera_up")
            if all(up.get(c) == 1.0 for c in ids):
                return
            time.sleep(0.25)
        up = per_camera(scrape(self.http), "xueliang_camera_up")
        missing = [c for c in ids if up.get(c) != 1.0]
        statuses = [self.http.get(f"/api/v1/cameras/{c}/status").json() for c in missing[:3]]
        raise RuntimeError(
            f"{len(missing)} of {len(ids)} cameras not online after {timeout:.0f} s: {statuses}\n"
            f"service log:\n{self.svc.log_tail(30)}"
        )

    def service_pids(self) -> set[int]:
        return _tree(self.svc.pid, _parents())

    def peer_pids(self) -> set[int]:
        """The test peers: SIPp runs, the RTSP server (children of this process) and the
        RTP senders (SIPp double-forks them: found by their PID files)."""
        parents = _parents()
        pids = _tree(os.getpid(), parents) - _tree(self.svc.pid, parents) - {os.getpid()}
        for pid_file in (self.device.workdir / "senders").glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids.add(int(pid_file.read_text()))
        return pids


@contextlib.contextmanager
def rig(args: argparse.Namespace, content: Content, tmp: Path) -> Iterator[Rig]:
    sip_port = _free_sip_port()
    low = 40000 + (os.getpid() % 200) * 100
    env = {
        "XUELIANG_GB28181__ENABLED": "true",
        "XUELIANG_GB28181__PORT": str(sip_port),
        "XUELIANG_GB28181__PASSWORD": PASSWORD,
        "XUELIANG_GB28181__MEDIA_PORTS": f"{low}-{low + 99}",
        "XUELIANG_GB28181__KEEPALIVE_S": str(args.keepalive),
        "XUELIANG_GB28181__MEDIA_TRANSPORT": args.transport,
    }
    channels = make_channels(DEVICE, args.cameras, content.ps)
    mounts = {"/cam": h264file_mount(content.h264, fps=FPS)}
    with contextlib.ExitStack() as stack:
        server = start_rtsp(mounts, tmp / "rtsp")
        stack.callback(server.stop)
        svc = stack.enter_context(ServiceProcess(tmp / "svc", env))
        http = stack.enter_context(svc.client())
        device = GbDevice(
            DEVICE,
            PASSWORD,
            platform_port=sip_port,
            channels=channels,
            keepalive_s=args.keepalive,
            transport=args.transport,
            workdir=tmp / "device",
        )
        stack.enter_context(device)  # __enter__ starts the UAS
        result = device.register()
        if not result.ok:
            raise RuntimeError(f"the device did not register: {result}\n{svc.log_tail()}")
        _wait_catalog(http, len(channels))
        yield Rig(svc, http, device, channels, server, args.motion)


def _wait_catalog(http: httpx.Client, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = http.get(f"/api/v1/gb28181/devices/{DEVICE}")
        if got.status_code == 200 and len(got.json().get("channels", [])) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the device's catalog of {count} channels did not arrive in {timeout} s")


# Part 1: cameras per core -----------------------------------------------------------------------


@dataclass
class Run:
    kind: str
    pair: int
    cameras: int
    online_s: float  # from the first POST until every camera was up
    window_s: float
    service_cores: float
    peer_cores: float
    machine_busy: float
    load: float
    fps_min: float
    frame_age_max_s: float
    reconnects: int
    rtp: dict[str, int] = field(default_factory=dict)  # GB/T 28181 counters over the window
    sustained: bool = False

    @property
    def cameras_per_core(self) -> float:
        return self.cameras / self.service_cores if self.service_cores > 0 else float("inf")


def idle_cores(r: Rig, seconds: float) -> float:
    """The service's CPU with no camera (SIP keepalives, status flushes, workers)."""
    pids = r.service_pids()
    c0, t0 = _cpu(pids), time.monotonic()
    time.sleep(seconds)
    c1, t1 = _cpu(pids), time.monotonic()
    return _used(c0, c1) / (t1 - t0)


def camera_run(r: Rig, kind: str, pair: int, args: argparse.Namespace) -> Run:
    started = time.monotonic()
    ids = [r.add(kind, i) for i in range(args.cameras)]
    try:
        r.wait_online(ids, args.online_timeout)
        online_s = time.monotonic() - started
        time.sleep(args.settle)
        m0 = scrape(r.http)
        svc_pids, peer_pids = r.service_pids(), r.peer_pids()
        s0, p0, j0, t0 = _cpu(svc_pids), _cpu(peer_pids), machine_jiffies(), time.monotonic()
        time.sleep(args.window)
        s1, p1, j1, t1 = _cpu(svc_pids), _cpu(peer_pids), machine_jiffies(), time.monotonic()
        m1 = scrape(r.http)
    finally:
        r.remove(kind, ids)
    wall = t1 - t0
    fps = per_camera(m1, "xueliang_camera_fps")
    age = per_camera(m1, "xueliang_camera_last_frame_age_seconds")
    rec0, rec1 = (per_camera(m, "xueliang_camera_reconnects_total") for m in (m0, m1))
    up = per_camera(m1, "xueliang_camera_up")
    rtp0, rtp1 = rtp_counters(m0), rtp_counters(m1)
    run = Run(
        kind=kind,
        pair=pair,
        cameras=len(ids),
        online_s=online_s,
        window_s=wall,
        service_cores=_used(s0, s1) / wall,
        peer_cores=_used(p0, p1) / wall,
        machine_busy=(j1[0] - j0[0]) / max(1, j1[1] - j0[1]),
        load=load_avg()[0],
        fps_min=min((fps.get(c, 0.0) for c in ids), default=0.0),
        frame_age_max_s=max((age.get(c, float("inf")) for c in ids), default=float("inf")),
        reconnects=int(sum(rec1.get(c, 0) - rec0.get(c, 0) for c in ids)),
        rtp={k: rtp1[k] - rtp0[k] for k in RTP_COUNTERS} if kind == "gb28181" else {},
    )
    run.sustained = (
        all(up.get(c) == 1.0 for c in ids)
        and run.fps_min >= FPS_MIN
        and run.frame_age_max_s <= FRAME_AGE_MAX_S
        and run.reconnects == 0
    )
    _print_run(run)
    return run


def _print_run(run: Run) -> None:
    rtp = ""
    if run.rtp:
        rtp = f", rtp {run.rtp['packets']} pkts lost {run.rtp['lost']} late {run.rtp['late']}"
    print(
        f"  pair {run.pair} {run.kind:>7}: {run.cameras} online in {run.online_s:.1f} s; "
        f"service {100 * run.service_cores:5.1f} % core (= {run.cameras_per_core:5.1f} "
        f"cameras/core), peers {100 * run.peer_cores:5.1f} %, busy {100 * run.machine_busy:3.0f}"
        f" %, fps min {run.fps_min:4.1f}, frame age max {run.frame_age_max_s:.2f} s{rtp}, "
        f"load {run.load} -> {'ok' if run.sustained else 'NOT real time'}",
        flush=True,
    )


def cameras_part(r: Rig, args: argparse.Namespace, started: float) -> list[Run]:
    runs: list[Run] = []
    for pair in range(1, args.pairs + 1):
        if pair > 2 and time.monotonic() - started > args.part1_budget_s:
            print(f"  time budget of {args.part1_budget_s:.0f} s used: no pair {pair}")
            break
        for kind in KINDS:
            runs.append(camera_run(r, kind, pair, args))
    return runs


# Part 2: start latency --------------------------------------------------------------------------


@dataclass
class Start:
    kind: str
    index: int
    post: float
    frame: float  # the online state's ``since``: the first decoded frame
    invite: float | None = None
    invite_seen: float | None = None
    ack: float | None = None
    rtp: float | None = None
    invites: int = 0  # INVITEs sent for this start (more than 1: an attempt failed)

    def span(self, a: str, b: str) -> float | None:
        x, y = getattr(self, a), getattr(self, b)
        return None if x is None or y is None else float(y - x)


def _since(http: httpx.Client, camera_id: str, timeout: float) -> float:
    """Poll the camera's status until online; its ``since`` (wall clock, seconds)."""
    deadline = time.monotonic() + timeout
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        st = http.get(f"/api/v1/cameras/{camera_id}/status").json()
        if st.get("state") == "online" and st.get("since"):
            since = datetime.fromisoformat(st["since"])
            # the service stamps UTC; SQLite hands datetimes back without their zone
            return (since if since.tzinfo else since.replace(tzinfo=UTC)).timestamp()
        time.sleep(STATUS_POLL_S)
    raise RuntimeError(f"camera {camera_id} not online after {timeout:.0f} s: {st}")


def one_start(r: Rig, kind: str, index: int, timeout: float) -> Start:
    assert r.invites is not None
    before = set(r.invites.snapshot())
    post = time.time()
    camera_id = r.add(kind, 0)
    try:
        frame = _since(r.http, camera_id, timeout)
    finally:
        r.remove(kind, [camera_id])
    start = Start(kind, index, post, frame)
    if kind == "gb28181":
        _device_side(r, start, before)
    _print_start(start)
    return start


def _device_side(r: Rig, start: Start, before: set[int]) -> None:
    """Fill in the INVITE, ACK and first-RTP times of the call that brought the frame."""
    assert r.invites is not None
    new = {c: t for c, t in r.invites.snapshot().items() if c not in before}
    start.invites = len(new)
    if not new:
        return
    # the last INVITE before the first frame is the call that delivered it
    calls = [c for c, t in new.items() if t <= start.frame] or list(new)
    call = max(calls)
    acks = _media_starts(r.device)
    start.invite_seen, start.ack = new[call], acks.get(call)
    start.invite = min(t for t in (start.invite_seen, start.ack) if t is not None)
    deadline = time.monotonic() + 3
    while call not in r.device.senders() and time.monotonic() < deadline:
        time.sleep(0.05)  # the sender writes its summary as it exits, after the BYE
    first = r.device.senders().get(call, {}).get("first_packet_at")
    start.rtp = float(first) if isinstance(first, int | float) else None


def _print_start(s: Start) -> None:
    def ms(a: str, b: str) -> str:
        v = s.span(a, b)
        return "   -" if v is None else f"{1000 * v:4.0f}"

    if s.kind == "rtsp":
        print(f"  start {s.index:2d}    rtsp: POST->frame {ms('post', 'frame')} ms", flush=True)
        return
    retry = f" ({s.invites} INVITEs)" if s.invites != 1 else ""
    print(
        f"  start {s.index:2d} gb28181: POST->frame {ms('post', 'frame')} ms = POST->INVITE "
        f"{ms('post', 'invite')} + INVITE->frame {ms('invite', 'frame')} (INVITE->ACK "
        f"{ms('invite', 'ack')}, ACK->RTP {ms('ack', 'rtp')}, RTP->frame {ms('rtp', 'frame')})"
        f"{retry}",
        flush=True,
    )


def starts_part(r: Rig, args: argparse.Namespace) -> list[Start]:
    r.invites = InviteWatch(r.device.workdir / "uas.log")
    r.invites.start()
    if not r.invites.caught_up.wait(5):
        raise RuntimeError("the device's UAS log could not be read")
    starts: list[Start] = []
    try:
        for index in range(1, args.starts + 1):
            for kind in KINDS:
                starts.append(one_start(r, kind, index, args.online_timeout))
    finally:
        r.invites.stop()
    return starts


# Summary ----------------------------------------------------------------------------------------

SEGMENTS = (
    ("gb28181", "invite", "frame", "INVITE -> first frame (GB/T 28181)"),
    ("gb28181", "post", "invite", "  POST -> INVITE at the device"),
    ("gb28181", "invite", "ack", "  INVITE -> ACK at the device"),
    ("gb28181", "ack", "rtp", "  ACK -> first RTP sent (peer)"),
    ("gb28181", "rtp", "frame", "  first RTP -> first frame"),
    ("gb28181", "post", "frame", "POST -> first frame, GB/T 28181"),
    ("rtsp", "post", "frame", "POST -> first frame, RTSP"),
)
LESS_PEER = "POST -> first frame, GB/T 28181, less ACK -> first RTP"


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values, default=float("nan")),
    }


def summary(
    runs: list[Run], starts: list[Start], idle: float, content: Content, args: argparse.Namespace
) -> dict[str, Any]:
    per_kind: dict[str, Any] = {}
    for kind in KINDS:
        mine = [x for x in runs if x.kind == kind]
        cpc = [x.cameras_per_core for x in mine]
        marginal = [(x.service_cores - idle) / x.cameras for x in mine]
        per_kind[kind] = {
            "cameras_per_core_median": statistics.median(cpc) if cpc else float("nan"),
            "cameras_per_core_min": min(cpc, default=float("nan")),
            "cameras_per_core_max": max(cpc, default=float("nan")),
            "pct_core_per_camera_median": 100 / statistics.median(cpc) if cpc else None,
            "marginal_pct_core_per_camera_median": 100 * statistics.median(marginal)
            if marginal
            else None,
            "peer_pct_core_per_camera_median": 100
            * statistics.median([x.peer_cores / x.cameras for x in mine])
            if mine
            else None,
            "all_real_time": all(x.sustained for x in mine),
        }
    pairs = sorted({x.pair for x in runs})
    ratios = []
    for p in pairs:
        by = {x.kind: x for x in runs if x.pair == p}
        if len(by) == 2:
            ratios.append(by["gb28181"].cameras_per_core / by["rtsp"].cameras_per_core)
    latency = {}
    for kind, a, b, label in SEGMENTS:
        values = [v for s in starts if s.kind == kind and (v := s.span(a, b)) is not None]
        latency[label.strip()] = _stats(values)
    gb = [s for s in starts if s.kind == "gb28181"]
    less_peer = [
        v - w
        for s in gb
        if (v := s.span("post", "frame")) is not None and (w := s.span("ack", "rtp")) is not None
    ]
    latency[LESS_PEER] = _stats(less_peer)
    gb_post = latency["POST -> first frame, GB/T 28181"]["p50"]
    rtsp_post = latency["POST -> first frame, RTSP"]["p50"]
    return {
        "bench": "gb28181",
        "machine": machine(),
        "content": asdict(content) | {"ps": str(content.ps), "h264": str(content.h264)},
        "transport": args.transport,
        "motion": args.motion,
        "cameras": args.cameras,
        "idle_service_pct_core": 100 * idle,
        "per_kind": per_kind,
        "pair_ratios_gb_over_rtsp": ratios,
        "ratio_median": statistics.median(ratios) if ratios else float("nan"),
        "ratio_min": min(ratios, default=float("nan")),
        "ratio_max": max(ratios, default=float("nan")),
        "target_ratio": TARGET_RATIO,
        "latency_s": latency,
        "invite_to_frame_p95_s": latency["INVITE -> first frame (GB/T 28181)"]["p95"],
        "target_p95_s": TARGET_P95_S,
        "post_to_frame_p50_ratio_gb_over_rtsp": gb_post / rtsp_post if rtsp_post else None,
        "post_to_frame_less_peer_p50_ratio_gb_over_rtsp": latency[LESS_PEER]["p50"] / rtsp_post
        if rtsp_post
        else None,
        "starts_with_retries": sum(1 for s in gb if s.invites != 1),
        # the UAS log line came after the device's ACK timestamp: SIPp's log was late
        "invite_log_after_ack": sum(
            1
            for s in gb
            if s.ack is not None and s.invite_seen is not None and s.invite_seen > s.ack
        ),
        "runs": [asdict(x) | {"cameras_per_core": x.cameras_per_core} for x in runs],
        "starts": [asdict(s) for s in starts],
    }


def report(result: dict[str, Any], service_log: Path) -> None:
    m = result["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB; load now {m['load']}")
    c = result["content"]
    motion = "on" if result["motion"] else "off"
    print(
        f"content: {c['label']}; {c['frames']} frames, H.264 {c['kbps']:.0f} kbit/s; "
        f"GB/T 28181 over {result['transport']}, motion {motion}"
    )
    rows = [
        (
            x["pair"], x["kind"], x["cameras"], f"{100 * x['service_cores']:.1f}",
            f"{x['cameras_per_core']:.1f}", f"{100 * x['peer_cores']:.1f}",
            f"{100 * x['machine_busy']:.0f}", f"{x['fps_min']:.1f}", f"{x['frame_age_max_s']:.2f}",
            x["rtp"].get("lost", "-"), x["load"], "yes" if x["sustained"] else "NO",
        )
        for x in result["runs"]
    ]  # fmt: skip
    print_table(
        ("pair", "kind", "cams", "svc %core", "cams/core", "peers %core", "busy %", "fps min",
         "age max s", "rtp lost", "load", "real time"),
        rows,
    )  # fmt: skip
    for kind, k in result["per_kind"].items():
        print(
            f"{kind:>7}: {k['cameras_per_core_median']:.1f} cameras/core median "
            f"(min {k['cameras_per_core_min']:.1f}, max {k['cameras_per_core_max']:.1f}); "
            f"{k['pct_core_per_camera_median']:.2f} % of a core per camera, "
            f"{k['marginal_pct_core_per_camera_median']:.2f} % above the idle service "
            f"({result['idle_service_pct_core']:.1f} %); peers "
            f"{k['peer_pct_core_per_camera_median']:.2f} % per camera (not counted)"
        )
    ratios = ", ".join(f"{v:.3f}" for v in result["pair_ratios_gb_over_rtsp"])
    print(
        f"ratio GB/T 28181 / RTSP cameras per core: median {result['ratio_median']:.3f} "
        f"(pairs: {ratios}; target >= {TARGET_RATIO})"
    )
    print()
    lat_rows = [
        (label, int(v["n"]), f"{v['p50']:.3f}", f"{v['p95']:.3f}", f"{v['max']:.3f}")
        for label, v in result["latency_s"].items()
    ]
    print_table(("seconds", "n", "p50", "p95", "max"), lat_rows)
    ratio = result["post_to_frame_p50_ratio_gb_over_rtsp"]
    ratio2 = result["post_to_frame_less_peer_p50_ratio_gb_over_rtsp"]
    print(
        f"INVITE -> first frame p95 {result['invite_to_frame_p95_s']:.3f} s (target <= "
        f"{TARGET_P95_S}); POST -> first frame p50 GB/T 28181 / RTSP = "
        f"{'-' if ratio is None else f'{ratio:.2f}'} "
        f"({'-' if ratio2 is None else f'{ratio2:.2f}'} without the sender's start-up); "
        f"starts with more than one INVITE: {result['starts_with_retries']}; "
        f"INVITE logged after the ACK: {result['invite_log_after_ack']}"
    )
    _print_log_errors(service_log)
    keep = {k: v for k, v in result.items() if k not in ("runs", "starts")}
    print(json.dumps(rounded(keep | {"runs": result["runs"]}), ensure_ascii=False))


def _print_log_errors(path: Path) -> None:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").splitlines()
        bad = [ln for ln in lines if " ERROR " in ln or " WARNING " in ln or "Traceback" in ln]
        if bad:
            print(f"service log: {len(bad)} warning/error line(s), first:")
            for line in bad[:8]:
                print(f"  {line[:300]}")


# Main -------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    content = make_content(args.content)
    print(
        f"content: {content.label}: {content.frames} frames, {content.kbps:.0f} kbit/s "
        f"(prepared in {time.monotonic() - started:.1f} s)",
        flush=True,
    )
    with workdir("bench-gb28181-") as tmp, rig(args, content, tmp) as r:
        print(f"service, NVR ({args.cameras} channels) and RTSP server up "
              f"({time.monotonic() - started:.1f} s)", flush=True)  # fmt: skip
        idle = idle_cores(r, args.idle)
        print(f"idle service: {100 * idle:.1f} % of a core", flush=True)
        print(f"part 1: {args.cameras} cameras, GB/T 28181 and RTSP alternating", flush=True)
        runs = cameras_part(r, args, started)
        print(
            f"part 2: {args.starts} starts each, alternating ({time.monotonic() - started:.0f} s)"
        )
        starts = starts_part(r, args)
        result = summary(runs, starts, idle, content, args)
        result["elapsed_s"] = time.monotonic() - started
        # the log goes with the work directory: report it before leaving
        report(result, r.svc.workdir / "service.log")
    print(f"done in {time.monotonic() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of under a minute")
    parser.add_argument("--cameras", type=int, default=8, help="cameras (and NVR channels) per run")
    parser.add_argument("--pairs", type=int, default=3, help="GB/RTSP pairs of runs (>= 2)")
    parser.add_argument("--window", type=float, default=15.0, help="seconds measured per run")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds after all are online")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of the idle measurement")
    parser.add_argument("--starts", type=int, default=20, help="starts of each kind (part 2)")
    parser.add_argument("--content", choices=("walk", "pattern"), default="walk")
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--motion", action="store_true", help="motion detection on")
    parser.add_argument("--keepalive", type=float, default=10.0, help="device keepalive (s)")
    parser.add_argument("--online-timeout", type=float, default=30.0)
    parser.add_argument(
        "--part1-budget-s", type=float, default=200.0, help="no pair after the 2nd past this"
    )
    args = parser.parse_args()
    if args.quick:
        args.cameras, args.pairs, args.window, args.settle = 4, 1, 6.0, 2.0
        args.idle, args.starts = 3.0, 3
    run(args)


if __name__ == "__main__":
    main()
