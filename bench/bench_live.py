"""Live view CPU: per viewer of a passed-through camera, per transcoded H.265 camera.

Run: ``.venv/bin/python bench/bench_live.py [--viewers 4] [--rounds 3] [--window 15]``
(about 6 minutes), or ``--quick`` (one round of 8 s windows).

The service runs as ``python -m cli.main serve`` (role ``all``, SQLite) with two cameras
from gst-rtsp-server (``tests/peers/rtsp.py``, ``h264file`` mounts: pre-encoded access
units sent as they are), both the real footage ``../shared/data/vtest.avi`` sped up 2.5x,
1920x1080@25, 2 Mbit/s, a keyframe every 2 s, as a camera's main stream:

* ``h264``: H.264 Main. Browsers decode it as it is: each viewer is RTP packetization and
  SRTP of the camera's packets (``live/webrtc.py``, ``PassthroughFeed``).
* ``h265``: H.265 Main (libx265). No browser here takes it over WebRTC, so the service
  decodes it once, scales it to 1280x720 and encodes Constrained Baseline H.264 with
  libx264 (``TranscodeFeed``), one transcoder per camera however many watch.

Viewers are aiortc peer connections in a child process (``--viewer-child``), offering
H.264 recvonly like a browser; they complete ICE and DTLS and count the RTP packets they
receive without decoding them (decoding 1080p in software would take this 2-core machine
from the service). Only the service process's CPU is measured (``/proc/PID/stat``, all
threads), over ``--window`` seconds once every viewer receives media:

* **passthrough, per viewer** = (CPU with N viewers − CPU with none) / N, both camera
  connections running all along. Baseline: ``ffmpeg -i RTSP -c copy -f tee`` relaying the
  same stream to RTP outputs, (CPU with N+1 outputs − CPU with 1) / N: FFmpeg's marginal
  cost of one more RTP copy of the stream (no SRTP, no ICE: a floor, not the same job).
* **transcode, per camera** = CPU with one viewer of ``h265`` − CPU with none. Baseline:
  ``ffmpeg -i RTSP -vf scale=1280:720 -c:v libx264 -preset ultrafast -tune zerolatency
  -profile:v baseline -b:v 1500k -f null -`` minus ``ffmpeg -i RTSP -c copy -f null -``:
  FFmpeg's marginal cost of the same transcode, live from the same server.

Ours and FFmpeg alternate in every round (this VM's speed drifts by a third between
minutes); reported: each round's numbers, the median and spread of each and of the ratio
ours / FFmpeg, and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    CACHE,
    FPS,
    TOKEN,
    VTEST,
    ServiceProcess,
    camera_inputs,
    cpu_seconds,
    h264file_mount,
    load_avg,
    machine,
    print_table,
    rounded,
    start_rtsp,
    workdir,
)

TRANSCODE_SIZE = "1280:720"  # live.webrtc.TRANSCODE_MAX
VIEWER_READY_S = 60.0


# Inputs ---------------------------------------------------------------------------------------


def h265_main() -> Path:
    """The main stream's footage as H.265 Main, 1920x1080@25, 2 Mbit/s (cached)."""
    out = CACHE / "cam_walk_main_1920x1080_25fps_2M.hevc.mp4"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(VTEST),
            "-vf", f"setpts=PTS/2.5,scale=1920:1080,fps={FPS}", "-t", "20",
            "-c:v", "libx265", "-preset", "veryfast", "-profile:v", "main",
            "-x265-params", f"bframes=0:keyint={2 * FPS}:min-keyint={2 * FPS}:scenecut=0",
            "-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M", "-pix_fmt", "yuv420p",
            "-tag:v", "hvc1", "-an", str(tmp),
        ],
        check=True,
    )  # fmt: skip
    tmp.replace(out)
    return out


# Viewers (child process) --------------------------------------------------------------------


async def _viewers(url: str, camera_id: str, count: int) -> None:
    """Open ``count`` WHEP sessions; print READY once each has media, then counts on exit."""
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    received = [0]

    async def count_only(self: Any, packet: Any, arrival_time_ms: int) -> None:
        received[0] += 1  # after SRTP; no jitter buffer, no decoder

    RTCRtpReceiver._handle_rtp_packet = count_only  # type: ignore[method-assign]
    pcs: list[RTCPeerConnection] = []
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as http:
        for _ in range(count):
            pc = RTCPeerConnection()
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            answer = await http.post(
                f"/api/v1/cameras/{camera_id}/webrtc",
                content=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            )
            answer.raise_for_status()
            await pc.setRemoteDescription(RTCSessionDescription(answer.text, "answer"))
            pcs.append(pc)
    deadline = time.monotonic() + VIEWER_READY_S
    while not all(pc.connectionState == "connected" for pc in pcs) or received[0] < 100 * count:
        if time.monotonic() > deadline:
            raise SystemExit(f"viewers not receiving: {[pc.connectionState for pc in pcs]}")
        await asyncio.sleep(0.2)
    print("READY", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print(json.dumps({"packets": received[0]}), flush=True)
    for pc in pcs:
        await pc.close()


@contextlib.contextmanager
def viewers(url: str, camera_id: str, count: int) -> Iterator[subprocess.Popen[str]]:
    """``count`` viewers of a camera, receiving, for the duration of the block."""
    if count == 0:
        yield subprocess.Popen(["true"], text=True)
        return
    child = [sys.executable, __file__, "--viewer-child", url, camera_id, str(count)]
    proc = subprocess.Popen(child, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise RuntimeError(f"viewers failed (exit {proc.wait()})")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


# Measurements ---------------------------------------------------------------------------------


def measure(pid: int, window: float) -> float:
    """Cores of ``pid`` used over ``window`` seconds."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(window)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


@contextlib.contextmanager
def ffmpeg(args: Sequence[str]) -> Iterator[int]:
    """An ``ffmpeg`` job running for the duration of the block; yields its PID."""
    command = ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", *args]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        time.sleep(3)  # connected and past the first keyframe
        if proc.poll() is not None:
            raise RuntimeError(f"ffmpeg exited {proc.returncode}: {' '.join(command)}")
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def ffmpeg_relay(url: str, outputs: int, window: float) -> float:
    base = 30000 + (os.getpid() % 500) * 40
    tee = "|".join(f"[f=rtp]rtp://127.0.0.1:{base + 2 * i}" for i in range(outputs))
    with ffmpeg(["-i", url, "-map", "0:v", "-c", "copy", "-f", "tee", tee]) as pid:
        return measure(pid, window)


def ffmpeg_transcode(url: str, window: float) -> tuple[float, float]:
    """(cores of the transcode, cores of reading the stream alone)."""
    encode = [
        "-i", url, "-vf", f"scale={TRANSCODE_SIZE}", "-c:v", "libx264", "-preset", "ultrafast",
        "-tune", "zerolatency", "-profile:v", "baseline", "-b:v", "1500k", "-f", "null", "-",
    ]  # fmt: skip
    with ffmpeg(encode) as pid:
        full = measure(pid, window)
    with ffmpeg(["-i", url, "-c", "copy", "-f", "null", "-"]) as pid:
        read = measure(pid, window)
    return full, read


@dataclass
class Round:
    idle: float  # service cores, both cameras, no viewer
    viewers: float  # with N viewers of h264 (passthrough)
    transcoding: float  # with one viewer of h265
    ffmpeg_relay_1: float
    ffmpeg_relay_n: float
    ffmpeg_transcode: float
    ffmpeg_read: float
    n: int

    @property
    def per_viewer(self) -> float:
        return (self.viewers - self.idle) / self.n

    @property
    def ffmpeg_per_output(self) -> float:
        return (self.ffmpeg_relay_n - self.ffmpeg_relay_1) / self.n

    @property
    def transcode(self) -> float:
        return self.transcoding - self.idle

    @property
    def ffmpeg_transcode_marginal(self) -> float:
        return self.ffmpeg_transcode - self.ffmpeg_read


def one_round(
    service: ServiceProcess, ids: dict[str, str], urls: dict[str, str], args: Any
) -> Round:
    n, window = args.viewers, args.window
    idle = measure(service.pid, window)
    with viewers(service.url, ids["h264"], n):
        time.sleep(1)
        watched = measure(service.pid, window)
    relay_1 = ffmpeg_relay(urls["h264"], 1, window)
    relay_n = ffmpeg_relay(urls["h264"], n + 1, window)
    with viewers(service.url, ids["h265"], 1):
        time.sleep(2)  # the transcoder's first GOP
        transcoding = measure(service.pid, window)
    full, read = ffmpeg_transcode(urls["h265"], window)
    return Round(idle, watched, transcoding, relay_1, relay_n, full, read, n)


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def report(rounds: list[Round], n: int) -> dict[str, Any]:
    rows = []
    for i, r in enumerate(rounds, 1):
        rows.append(
            [
                i, 100 * r.idle, 100 * r.per_viewer, 100 * r.ffmpeg_per_output,
                100 * r.transcode, 100 * r.ffmpeg_transcode_marginal,
                r.transcode / r.ffmpeg_transcode_marginal,
            ]
        )  # fmt: skip
    print()
    print_table(
        [
            "round", "idle %", f"per viewer % (n={n})", "ffmpeg per RTP copy %",
            "transcode %", "ffmpeg transcode %", "transcode ours/ffmpeg",
        ],
        rows,
    )  # fmt: skip
    result = {
        "per_viewer_pct": _stats([100 * r.per_viewer for r in rounds]),
        "ffmpeg_per_rtp_copy_pct": _stats([100 * r.ffmpeg_per_output for r in rounds]),
        "transcode_pct": _stats([100 * r.transcode for r in rounds]),
        "ffmpeg_transcode_pct": _stats([100 * r.ffmpeg_transcode_marginal for r in rounds]),
        "transcode_ratio": _stats([r.transcode / r.ffmpeg_transcode_marginal for r in rounds]),
        "viewer_ratio": _stats([r.per_viewer / r.ffmpeg_per_output for r in rounds]),
    }
    print()
    for key, s in result.items():
        print(f"{key:26s} median {s['median']:.3f}  ({s['min']:.3f}-{s['max']:.3f})")
    return result


def run(args: argparse.Namespace) -> None:
    info = machine()
    print(f"machine: {info}")
    mounts = {
        "/h264": h264file_mount(camera_inputs().main),
        "/h265": h264file_mount(h265_main(), codec="h265"),
    }
    with workdir("xl-bench-live-") as tmp:
        rtsp = start_rtsp(mounts, tmp / "rtsp")
        try:
            urls = {name: rtsp.url(f"/{name}") for name in ("h264", "h265")}
            env = {"XUELIANG_INGEST__ALLOW_FILE_SOURCES": "true"}
            with ServiceProcess(tmp / "service", env) as service, service.client() as http:
                ids = {}
                for name, url in urls.items():
                    body = {
                        "name": name,
                        "rtsp_url": url,
                        "analytics": {"motion": {"enabled": False}},
                    }
                    created = http.post("/api/v1/cameras", json=body)
                    created.raise_for_status()
                    ids[name] = created.json()["id"]
                _wait_online(http, ids.values())
                time.sleep(3)
                rounds = []
                for i in range(args.rounds):
                    rounds.append(one_round(service, ids, urls, args))
                    r = rounds[-1]
                    print(
                        f"round {i + 1}: idle {100 * r.idle:.1f} %, per viewer "
                        f"{100 * r.per_viewer:.2f} % (ffmpeg per RTP copy "
                        f"{100 * r.ffmpeg_per_output:.2f} %), transcode {100 * r.transcode:.1f} % "
                        f"(ffmpeg {100 * r.ffmpeg_transcode_marginal:.1f} %); load {load_avg()}",
                        flush=True,
                    )
        finally:
            rtsp.stop()
    result = report(rounds, args.viewers)
    out = {"machine": info, "args": vars(args), "rounds": [asdict(r) for r in rounds], **result}
    print(json.dumps(rounded(out)))


def _wait_online(http: httpx.Client, ids: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for camera_id in ids:
        while http.get(f"/api/v1/cameras/{camera_id}/status").json()["state"] != "online":
            if time.monotonic() > deadline:
                raise RuntimeError(f"camera {camera_id} not online")
            time.sleep(0.5)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--viewer-child":
        asyncio.run(_viewers(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--viewers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--quick", action="store_true", help="one round, 8 s windows")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.window = 1, 8.0
    run(args)


if __name__ == "__main__":
    main()
