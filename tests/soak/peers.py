"""The soak's real peers, started and disrupted on the schedule's orders.

All are the test suite's own: gst-rtsp-server (``tests.peers.rtsp``), SeaweedFS
(``tests.peers.seaweedfs``), the webhook receiver and the killable service process of
``tests.integration.test_delivery``. The cameras' input is real footage with motion that
comes and goes, so incidents start and end all through the run.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import SHARED_DATA
from tests.integration.test_delivery import SECRET, TOKEN, Receiver, Service
from tests.peers.rtsp import RtspServer, h264file_mount
from tests.peers.seaweedfs import SeaweedS3

log = logging.getLogger("soak")

CYCLE_S = 30  # one input cycle: 8 s of people walking, then 22 s of a still picture
MOUNT = "/cycle"
HOOK = "/hook"


def cycle_video(cache: Path) -> Path:
    """vtest.avi's walking people for 8 s, then its last picture held for 22 s.

    320x240 at 10 fps, H.264 without B-frames, a keyframe every second: served as is by
    the RTSP server (no re-encoding per client), cheap to decode for 16 cameras. The motion
    detector sees ~16 s of motion (the background adapts to the still people), then quiet:
    with ``quiet_s`` 3 every camera has one incident per cycle.
    """
    out = cache / "soak_cycle_320x240_10fps.mp4"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    still = CYCLE_S * 10 - 80 - 1
    graph = (
        "[0:v]trim=start=10:end=18,setpts=PTS-STARTPTS,scale=320:240,fps=10[a];"
        "[0:v]trim=start=18:end=18.1,setpts=PTS-STARTPTS,scale=320:240,fps=10,"
        f"loop=loop={still}:size=1:start=0,setpts=N/10/TB[b];[a][b]concat=n=2:v=1[out]"
    )
    tmp = out.with_suffix(".tmp.mp4")
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(SHARED_DATA / "vtest.avi"),
            "-filter_complex", graph, "-map", "[out]", "-c:v", "libx264", "-preset", "veryfast",
            "-profile:v", "main", "-bf", "0", "-g", "10", "-keyint_min", "10",
            "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-an", str(tmp),
        ],
        check=True,
    )  # fmt: skip
    tmp.replace(out)
    return out


def service_env(data_dir: Path, db_url: str, s3: SeaweedS3, bucket: str) -> dict[str, str]:
    """The soak's settings: short incidents, and retry caps short enough that recovery after
    each outage shows within the run (the defaults, 60 s and 300 s, would only stretch it)."""
    return {
        "XUELIANG_DATA_DIR": str(data_dir),
        "XUELIANG_DATABASE__URL": db_url,
        "XUELIANG_AUTH__BOOTSTRAP_TOKEN": TOKEN,
        "XUELIANG_STORAGE__BACKEND": "s3",
        "XUELIANG_STORAGE__S3__ENDPOINT": s3.endpoint,
        "XUELIANG_STORAGE__S3__ACCESS_KEY": s3.credentials.access_key,
        "XUELIANG_STORAGE__S3__SECRET_KEY": s3.credentials.secret_key,
        "XUELIANG_STORAGE__S3__BUCKET": bucket,
        "XUELIANG_INCIDENTS__QUIET_S": "3",
        "XUELIANG_INCIDENTS__MAX_LEN_S": "60",
        "XUELIANG_RECORDING__PRE_S": "2",
        "XUELIANG_RECORDING__POST_S": "2",
        "XUELIANG_ARCHIVE__RETRY_INITIAL_S": "0.5",
        "XUELIANG_ARCHIVE__RETRY_MAX_S": "5",
        "XUELIANG_INGEST__BACKOFF_MAX_S": "5",
        "XUELIANG_DELIVERY__BACKOFF_INITIAL_S": "0.5",
        "XUELIANG_DELIVERY__BACKOFF_MAX_S": "5",
        "XUELIANG_DELIVERY__TIMEOUT_S": "5",
        "XUELIANG_EGRESS__ALLOW": "127.0.0.0/8",  # the webhook receiver is on loopback
    }


@dataclass
class Peers:
    """Everything the service talks to, plus the service itself."""

    rtsp: RtspServer
    s3: SeaweedS3
    receiver: Receiver
    service: Service
    bucket: str
    counts: dict[str, int] = field(default_factory=dict)
    #: Wall-clock times of the service kills (clips open then must end within 2 s of one).
    kills: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def api(self) -> str:
        return self.service.url

    def do(self, action: str) -> None:
        """Carry out one schedule step (``peer.verb``); logs and counts it."""
        handler = {
            "rtsp.kill": self.rtsp.stop,
            "rtsp.start": self._rtsp_start,
            "s3.stop": self.s3.stop,
            "s3.start": self.s3.start,
            "service.kill": self.service.kill,
            "service.start": self.service.start,
            "receiver.down": self._receiver_down,
            "receiver.fail": self._receiver_fail,
            "receiver.up": self._receiver_up,
        }[action]
        log.info("step %s", action)
        with self._lock:
            if action == "service.kill":
                self.kills.append(time.time())
            handler()
            self.counts[action] = self.counts.get(action, 0) + 1

    def service_pid(self) -> int | None:
        proc = self.service.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def all_up(self) -> None:
        """Undo whatever disruption is in force (end of the run)."""
        with self._lock:
            if not self.rtsp.running:
                self._rtsp_start()
            self.s3.start()
            if self.service_pid() is None:
                self.service.start()
            if self._receiver_is_down():
                self.receiver.start()
            self.receiver.failing = False

    def _rtsp_start(self) -> None:
        if not self.rtsp.running:
            self.rtsp.start(timeout=60)

    def _receiver_is_down(self) -> bool:
        return self.receiver._server is None

    def _receiver_down(self) -> None:
        if not self._receiver_is_down():
            self.receiver.stop()
            self.receiver._server = None

    def _receiver_fail(self) -> None:
        if self._receiver_is_down():
            self.receiver.start()
        self.receiver.failing = True

    def _receiver_up(self) -> None:
        if self._receiver_is_down():
            self.receiver.start()
        self.receiver.failing = False

    def stop_all(self) -> None:
        self.service.stop()
        self.rtsp.stop()
        self.s3.stop()
        if not self._receiver_is_down():
            self.receiver.stop()


@contextlib.contextmanager
def peers(workdir: Path, db_url: str, cache: Path) -> Iterator[Peers]:
    """Start S3, the RTSP server, the receiver and the service; stop them all at the end."""
    video = cycle_video(cache)
    s3 = SeaweedS3(workdir / "seaweedfs")
    s3.start()
    rtsp = RtspServer({MOUNT: h264file_mount(video)}, workdir / "rtsp").start(timeout=60)
    receiver = Receiver()
    receiver.start()
    service = Service(workdir, db_url)
    service.env.pop("XUELIANG_MQTT__URL", None)
    bucket = f"soak-{uuid.uuid4().hex[:12]}"
    service.env.update(service_env(workdir / "data", db_url, s3, bucket))
    p = Peers(rtsp, s3, receiver, service, bucket)
    try:
        service.start()
        yield p
    finally:
        p.stop_all()


def subscribe(api: str, receiver: Receiver) -> None:
    """One webhook subscription for every event, to the flapping receiver."""
    r = httpx.post(
        f"{api}/api/v1/subscriptions",
        json={"url": receiver.url + HOOK, "secret": SECRET},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    r.raise_for_status()
