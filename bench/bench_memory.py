"""Memory per camera: resident memory of the service process with 0, 8, 16 and 32 cameras,
against ffmpeg doing the same job.

Run: ``.venv/bin/python bench/bench_memory.py [--steps 0,8,16,32] [--settle 30]``.

Cameras as in ``bench_cameras.py``: a 640x360@25 substream (decoded) and a 1920x1080@25
main stream at 2 Mbit/s (recorded into the pre-roll ring), pre-encoded from ``vtest.avi``
and served by the test suite's gst-rtsp-server without re-encoding. The service runs as
``python -m cli.main serve`` (SQLite, local objects). Motion analysis is switched off on
these cameras (``analytics.motion.enabled: false``; frames are still decoded and converted
for analysis) so that no incident opens: an open incident holds its clip's packets in
memory, which grows with its length (see the README), and would mix time into the slope.
After each step the RSS (``VmRSS`` in ``/proc/PID/status``) is sampled once every camera is
online and the pre-roll rings had time to fill (``--settle`` ≥ ``recording.pre_s`` + 20 s);
the slope of a least-squares line over the steps is the memory per camera. Only steps at
which every camera kept ≥ 24 frames/s count: the rings hold 25 s of wall-clock time, so
when this 2-core machine cannot keep up with 32 cameras (the RTSP server shares it) they
hold fewer packets and that step would understate the memory; the slope over every step
is printed too.

Baselines, same streams, same run: ffmpeg decoding the substream (``-threads 1``, its RSS
— the issue's baseline); ffmpeg doing one camera's whole job (decode the substream, copy
the main stream) and four cameras' jobs in one process, whose difference gives ffmpeg's
own memory per camera. Prints a table and one JSON line; about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RtspServer,
    ServiceProcess,
    add_cameras,
    camera_inputs,
    cpu_seconds,
    h264file_mount,
    load_avg,
    machine,
    print_table,
    rounded,
    rss_mib,
    start_rtsp,
    workdir,
)

NO_MOTION = {"analytics": {"motion": {"enabled": False}}}
#: A step counts for the slope only if every camera's main stream kept this rate: the rings
#: hold ``pre_s`` + 20 s of wall-clock time, so a machine too busy to keep up fills them less.
REAL_TIME_FPS = 24.0


def sample_rss(pid: int, seconds: float = 5.0) -> float:
    """Median VmRSS (MiB) over ``seconds``, one sample a second."""
    samples = []
    for _ in range(max(1, int(seconds))):
        samples.append(rss_mib(pid)[0])
        time.sleep(1.0)
    return statistics.median(samples)


def ffmpeg_baselines(server: RtspServer, settle: float) -> dict[str, float]:
    """RSS of ffmpeg decoding the substream, and doing 1 and 4 cameras' jobs (concurrently)."""
    rtsp = ["-rtsp_transport", "tcp", "-analyzeduration", "500000"]

    def camera_job(n: int) -> list[str]:
        args = []
        for _ in range(n):
            args += [*rtsp, "-threads", "1", "-i", server.url("/sub"), *rtsp]
            args += ["-i", server.url("/main")]
        for i in range(n):
            args += ["-map", f"{2 * i}:v", "-f", "null", "-"]
            args += ["-map", f"{2 * i + 1}:v", "-c", "copy", "-f", "null", "-"]
        return args

    decode_sub = [*rtsp, "-threads", "1", "-i", server.url("/sub"), "-f", "null", "-"]
    commands = {
        "ffmpeg_decode_sub_mib": decode_sub,
        "ffmpeg_camera_job_mib": camera_job(1),
        "ffmpeg_4_camera_jobs_mib": camera_job(4),
    }
    procs = {
        key: subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", *args])
        for key, args in commands.items()
    }
    try:
        time.sleep(settle)
        if any(p.poll() is not None for p in procs.values()):
            raise RuntimeError("an ffmpeg baseline process exited early")
        out = {key: rss_mib(p.pid)[0] for key, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    out["ffmpeg_per_camera_mib"] = (
        out["ffmpeg_4_camera_jobs_mib"] - out["ffmpeg_camera_job_mib"]
    ) / 3
    return out


def cameras_up(http: httpx.Client) -> tuple[int, list[float]]:
    """Cameras online and their measured fps, from the service's /metrics."""
    text = http.get("/metrics").text
    up = len(re.findall(r'^xueliang_camera_up\{camera="[^"]+"\} 1\.0$', text, re.M))
    fps = [
        float(v) for v in re.findall(r'^xueliang_camera_fps\{camera="[^"]+"\} (\S+)$', text, re.M)
    ]
    return up, fps


def wait_online(http: httpx.Client, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cameras_up(http)[0] >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"not all of {count} cameras came online within {timeout:.0f} s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    inputs = camera_inputs(args.main_bitrate)
    steps = []
    with workdir("bench-memory-") as tmp:
        mounts = {"/sub": h264file_mount(inputs.sub), "/main": h264file_mount(inputs.main)}
        server = start_rtsp(mounts, tmp / "rtsp")
        try:
            baselines = ffmpeg_baselines(server, args.ffmpeg_settle)
            print("ffmpeg RSS (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in baselines.items()))
            env = dict(kv.split("=", 1) for kv in args.service_env)
            with ServiceProcess(tmp / "svc", env) as svc, svc.client() as http:
                added = 0
                for n in args.steps:
                    add_cameras(
                        http, n - added, server.url("/main"), server.url("/sub"), **NO_MOTION
                    )
                    added = n
                    wait_online(http, n)
                    cpu0, t0 = cpu_seconds(svc.pid), time.monotonic()
                    time.sleep(args.settle if n else 5.0)
                    rss = sample_rss(svc.pid)
                    cores = (cpu_seconds(svc.pid) - cpu0) / (time.monotonic() - t0)
                    up, fps = cameras_up(http)
                    step = {
                        "cameras": n,
                        "rss_mib": rss,
                        "peak_mib": rss_mib(svc.pid)[1],
                        "online": up,
                        "fps_min": min(fps) if fps else None,
                        "service_cores": cores,
                        "load": load_avg(),
                    }
                    steps.append(step)
                    print(
                        f"  {n:3d} cameras: RSS {rss:7.1f} MiB, {up} online, service "
                        f"{100 * cores:.0f} % core, load {step['load'][0]}",
                        flush=True,
                    )
        finally:
            server.stop()
    for step in steps:
        step["real_time"] = step["cameras"] == 0 or (step["fps_min"] or 0.0) >= REAL_TIME_FPS
    kept = [s for s in steps if s["real_time"]]
    kept = kept if len(kept) >= 2 else steps
    fit = statistics.linear_regression([s["cameras"] for s in kept], [s["rss_mib"] for s in kept])
    every = statistics.linear_regression(
        [s["cameras"] for s in steps], [s["rss_mib"] for s in steps]
    )
    return {
        "bench": "memory",
        "machine": machine(),
        "main_bitrate": args.main_bitrate,
        "settle_s": args.settle,
        "service_env": args.service_env,
        "mib_per_camera": fit.slope,
        "mib_at_zero": fit.intercept,
        "slope_over_steps": [s["cameras"] for s in kept],
        "mib_per_camera_all_steps": every.slope,
        **baselines,
        "ratio_vs_ffmpeg_decode_sub": fit.slope / baselines["ffmpeg_decode_sub_mib"],
        "ratio_vs_ffmpeg_camera_job": fit.slope / baselines["ffmpeg_camera_job_mib"],
        "ratio_vs_ffmpeg_per_camera": fit.slope / baselines["ffmpeg_per_camera_mib"],
        "steps": steps,
    }


def _report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB; load now {m['load']}")
    rows = [
        (
            s["cameras"],
            f"{s['rss_mib']:.1f}",
            f"{s['peak_mib']:.1f}",
            s["online"],
            "-" if s["fps_min"] is None else f"{s['fps_min']:.1f}",
            f"{100 * s['service_cores']:.0f}",
            s["load"][0],
            "yes" if s["real_time"] else "NO",
        )
        for s in r["steps"]
    ]
    headers = ("cameras", "RSS MiB", "peak MiB", "online", "main fps min", "svc %core", "load")
    print_table((*headers, "real time"), rows)
    print(
        f"slope over the real-time steps {r['slope_over_steps']}: {r['mib_per_camera']:.2f} MiB "
        f"per camera (intercept {r['mib_at_zero']:.0f} MiB); over every step "
        f"{r['mib_per_camera_all_steps']:.2f} MiB"
    )
    print(
        f"ffmpeg: decoding the substream {r['ffmpeg_decode_sub_mib']:.1f} MiB; one camera's job "
        f"{r['ffmpeg_camera_job_mib']:.1f} MiB; 4 in one process "
        f"{r['ffmpeg_4_camera_jobs_mib']:.1f} MiB (= {r['ffmpeg_per_camera_mib']:.2f} MiB per "
        f"camera)"
    )
    print(
        f"ratio ours per camera / ffmpeg: {r['ratio_vs_ffmpeg_decode_sub']:.2f} (decoding the "
        f"substream), {r['ratio_vs_ffmpeg_camera_job']:.2f} (one camera's job), "
        f"{r['ratio_vs_ffmpeg_per_camera']:.2f} (ffmpeg's own per-camera slope)"
    )
    print(json.dumps(rounded(r)))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--steps", type=lambda s: [int(x) for x in s.split(",")], default=[0, 8, 16, 32]
    )
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after online")
    parser.add_argument("--ffmpeg-settle", type=float, default=10.0)
    parser.add_argument("--main-bitrate", default="2M")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="diagnosis: extra environment of the service, e.g. MALLOC_ARENA_MAX=2",
    )
    args = parser.parse_args()
    _report(run(args))


if __name__ == "__main__":
    main()
