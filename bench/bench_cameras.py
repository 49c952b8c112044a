"""Cameras sustained in real time by one service process, against ffmpeg on the same streams.

Run: ``.venv/bin/python bench/bench_cameras.py [--steps 4,8,12,16,24,32] [--window 12]``.

Each camera is what the issue describes: a 640x360@25 substream (decoded, 5 frames/s
analysed for motion) and a 1920x1080@25 main stream at 2 Mbit/s (recorded: pre-roll ring,
clip jobs while an incident is open). Both are pre-encoded H.264 made from the real footage
``vtest.avi`` (people walking all the time, so every camera has an incident open and
records), served by the test suite's gst-rtsp-server *without re-encoding*. The service
(``create_app``, role ``all``, SQLite, local object store) runs in this process in a
uvicorn thread; cameras are added through ``POST /api/v1/cameras``, in steps, and each
step is measured over a window once every camera is online:

* service CPU: ``/proc/self/stat`` (all threads of this process: ingest, decode, motion,
  recording, database, HTTP), split by thread role; the RTSP server (another process) is
  reported apart and not counted;
* real time: per camera, frames decoded from the substream per second (25 expected),
  analysed frames dropped by the slot, decode errors, main-stream fps, and how much the
  latest analysed frame fell behind (wall clock minus stream time, growth over the window).

A step is *sustained* when every camera decodes ≥ 97 % of 25 frames/s, the slots dropped
≤ 1 % of the analysed frames, no camera fell behind by more than 1 s and every main stream
shows ≥ 90 % of 25 frames/s (the service's smoothed reading; the other work on this machine
comes in bursts, so the raw counts are printed too). Cameras are added until a step is not
sustained (or the time budget ends). Reported: cameras per core = N / service cores at
the largest sustained N, and the marginal CPU per camera (slope of service CPU over N).

Baselines, same files, same machine, same run:

* ``ffmpeg -threads 1 -i sub.mp4 -f null -`` (batch, from the file): CPU seconds per
  second of video → cameras per core if all we did was ffmpeg's decode;
* ffmpeg doing one camera's job *live* from the same RTSP server (decode the substream,
  ``-c copy`` the main stream), a few processes at once → cameras per core for ffmpeg;
  and each half alone (substream decode, main-stream copy), to compare with the service's
  substream and main-stream reader threads.

``--rounds R [--cameras N]`` measures ABAB instead: R rounds at N cameras, each the
service then ffmpeg doing the same N cameras' jobs live (the service's cameras disabled
meanwhile), and prints the median and spread of both and of their ratio (issue #18: two
quiet runs of the steps gave 0.67x and 1.03x, the VM having drifted between the phases).

Prints a table and one JSON line; takes 2–4 minutes (the first run also encodes the
inputs, ~1 minute, cached in ``bench/.cache``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    InProcessService,
    RtspServer,
    add_cameras,
    camera_inputs,
    cpu_seconds,
    ffmpeg_decode_cpu,
    h264file_mount,
    load_avg,
    machine,
    machine_jiffies,
    print_table,
    rounded,
    start_rtsp,
    thread_cpu_seconds,
    workdir,
)

FPS = 25
DECODED_MIN = 0.97  # share of 25 frames/s every camera must decode
DROPPED_MAX = 0.01  # share of the analysed frames the slots may drop
MAIN_FPS_MIN = 0.9  # share of 25 frames/s every main stream must keep (a smoothed reading)
MAX_FALL_BEHIND_S = 1.0
#: (thread name prefix, part of the name, role); see ingest/camera.py and ingest/recorder.py.
ROLES = (
    ("ingest-", "-sub#", "substream readers: RTSP demux, H.264 decode, Y plane at 5 fps"),
    ("ingest-", "-main#", "main-stream readers: RTSP demux, pre-roll ring, clip jobs"),
    ("uvicorn#", "", "event loop: HTTP, pipelines, runtime, status flush"),
    ("uvloop_", "", "to_thread pool: motion detection, database writes"),
    ("asyncio_", "", "to_thread pool: motion detection, database writes"),
    ("clips-", "", "clip writers: MP4 remux, SHA-256"),
    ("native:python", "", "native threads (OpenCV's worker pool)"),
)


#: Functions whose thread CPU time is added up while the benchmark runs (module, class or
#: None, function, label): where the per-camera cost goes, inside the thread roles.
ATTRIBUTED = (
    ("ingest.handler", None, "analysis_frame", "analysis_frame: Y plane view (5 fps)"),
    ("ingest.handler", None, "to_bgr", "to_bgr: BGR on demand (snapshots, persons)"),
    ("analytics.motion", "MotionDetector", "detect", "MotionDetector.detect (5 fps)"),
    ("ingest.ring", "PacketRing", "on_packet", "PacketRing.on_packet, with clip taps"),
    ("runtime.cameras", "CameraRuntime", "_flush", "CameraRuntime._flush: status every 2 s"),
    ("runtime.camera_state", "StateWriter", "write", "StateWriter.write: transitions"),
    ("runtime.leasing", "LeaseKeeper", "renew_now", "LeaseKeeper.renew_now: leases"),
    ("runtime.cameras", "CameraRuntime", "_load_plans", "CameraRuntime._load_plans"),
)


class Attribution:
    """Adds up the thread CPU time spent in the :data:`ATTRIBUTED` functions (wrapped in
    place in this process; the service's files are untouched)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._lock = threading.Lock()

    def install(self) -> None:
        for module_name, class_name, name, label in ATTRIBUTED:
            module = importlib.import_module(module_name)
            owner = getattr(module, class_name) if class_name else module
            original = getattr(owner, name, None)
            if original is None:
                continue  # renamed meanwhile: attribute less, measure the rest
            self.totals[label] = 0.0
            setattr(owner, name, self._wrap(original, label))

    def _wrap(self, fn: Any, label: str) -> Any:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - start
                with self._lock:
                    self.totals[label] += spent

        return timed

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.totals)


@dataclass
class Step:
    cameras: int
    window_s: float
    service_cores: float
    server_cores: float
    machine_busy: float  # share of all cores busy (everyone's work), 0..1
    decoded_fps_min: float
    decoded_fps_mean: float
    analysed_fps_mean: float
    main_fps_min: float
    dropped: int
    decode_errors: int
    behind_s_max: float
    load: list[float]
    roles: dict[str, float]  # cores used by each kind of thread (ROLES), plus "other"
    functions: dict[str, float]  # cores used inside the ATTRIBUTED functions
    sustained: bool = False

    @property
    def cpu_per_camera(self) -> float:
        return self.service_cores / self.cameras

    @property
    def cameras_per_core(self) -> float:
        return self.cameras / self.service_cores if self.service_cores else float("inf")


@dataclass
class _Probe:
    """One camera's counters at an instant (read from the ingest engine)."""

    decoded: int
    analysed: int
    dropped: int
    decode_errors: int
    main_fps: float
    frame_pts: float | None
    frame_wallclock: float | None


@dataclass
class ErrorLog(logging.Handler):
    """Counts the service's ERROR lines during the run and keeps the first few."""

    count: int = 0
    first: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        logging.Handler.__init__(self, logging.ERROR)

    def __hash__(self) -> int:
        return id(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            exc = record.exc_info[1] if record.exc_info else None
            detail = f": {type(exc).__name__}: {str(exc).splitlines()[0]}" if exc else ""
            self.first.append(f"{record.name}: {record.getMessage()}{detail}")


# Baselines ------------------------------------------------------------------------------------


def ffmpeg_live_cores(
    server: RtspServer, job: str, count: int, settle: float, window: float
) -> float:
    """Cores per camera of ``count`` ffmpeg processes each doing ``job`` live from the RTSP
    server: ``camera`` (decode the substream with one thread, copy the main stream),
    ``sub`` (decode the substream only) or ``main`` (copy the main stream only)."""
    rtsp = ["-rtsp_transport", "tcp", "-analyzeduration", "500000"]
    decode_sub = [*rtsp, "-threads", "1", "-i", server.url("/sub")]
    copy_main = [*rtsp, "-i", server.url("/main")]
    to_null = ["-f", "null", "-"]
    both = ["-map", "0:v", *to_null, "-map", "1:v", "-c", "copy", *to_null]
    outputs = {
        "camera": [*decode_sub, *copy_main, *both],
        "sub": [*decode_sub, *to_null],
        "main": [*copy_main, "-c", "copy", *to_null],
    }
    command = ["ffmpeg", "-nostdin", "-v", "error", *outputs[job]]
    procs = [subprocess.Popen(command) for _ in range(count)]
    try:
        time.sleep(settle)
        cpu0, t0 = sum(cpu_seconds(p.pid) for p in procs), time.monotonic()
        time.sleep(window)
        cpu1, t1 = sum(cpu_seconds(p.pid) for p in procs), time.monotonic()
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("an ffmpeg baseline process exited early")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return (cpu1 - cpu0) / (t1 - t0) / count


# The service under test -----------------------------------------------------------------------


def _runners(service: InProcessService) -> dict[str, Any]:
    # The engine exposes statuses, not the decoded-frame counter or the latest frame's
    # stream time, which tell whether decoding keeps up: read them from the runners.
    cameras = dict(service.runtime.manager._cameras)
    return {cid: cam.runner for cid, cam in cameras.items()}


def _probe(runner: Any) -> _Probe:
    status = runner.status()
    frame = runner.latest_frame()
    return _Probe(
        decoded=runner._counters.frames_decoded,
        analysed=status.frames_analysed,
        dropped=status.frames_dropped,
        decode_errors=status.decode_errors,
        main_fps=status.fps or 0.0,
        frame_pts=frame.pts_s if frame is not None else None,
        frame_wallclock=frame.wallclock if frame is not None else None,
    )


def _wait_online(service: InProcessService, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runners = _runners(service)
        online = [r for r in runners.values() if r.status().state.value == "online"]
        if len(runners) >= count and len(online) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"not all of {count} cameras came online within {timeout:.0f} s")


def measure(
    service: InProcessService, server_pid: int, cameras: int, window_s: float, attr: Attribution
) -> Step:
    """One window: CPU of the service (by thread role) and of the server, frame counters."""
    runners = _runners(service)
    before = {cid: _probe(r) for cid, r in runners.items()}
    threads0, jiffies0, functions0 = thread_cpu_seconds(), machine_jiffies(), attr.snapshot()
    cpu0, srv0, t0 = cpu_seconds(), cpu_seconds(server_pid), time.monotonic()
    time.sleep(window_s)
    cpu1, srv1, t1 = cpu_seconds(), cpu_seconds(server_pid), time.monotonic()
    threads1, jiffies1, functions1 = thread_cpu_seconds(), machine_jiffies(), attr.snapshot()
    after = {cid: _probe(r) for cid, r in runners.items()}
    wall = t1 - t0
    decoded = [(after[c].decoded - before[c].decoded) / wall for c in runners]
    analysed = [(after[c].analysed - before[c].analysed) / wall for c in runners]
    step = Step(
        cameras=cameras,
        window_s=round(wall, 1),
        service_cores=(cpu1 - cpu0) / wall,
        server_cores=(srv1 - srv0) / wall,
        machine_busy=(jiffies1[0] - jiffies0[0]) / max(1, jiffies1[1] - jiffies0[1]),
        decoded_fps_min=min(decoded),
        decoded_fps_mean=statistics.fmean(decoded),
        analysed_fps_mean=statistics.fmean(analysed),
        main_fps_min=min(p.main_fps for p in after.values()),
        dropped=sum(after[c].dropped - before[c].dropped for c in runners),
        decode_errors=sum(after[c].decode_errors - before[c].decode_errors for c in runners),
        behind_s_max=max(_fell_behind(before[c], after[c]) for c in runners),
        load=load_avg(),
        roles=_roles(threads0, threads1, cpu1 - cpu0, wall),
        functions={k: (v - functions0.get(k, 0.0)) / wall for k, v in functions1.items()},
    )
    step.sustained = (
        step.decoded_fps_min >= DECODED_MIN * FPS
        and step.dropped <= DROPPED_MAX * step.analysed_fps_mean * cameras * wall
        and step.behind_s_max <= MAX_FALL_BEHIND_S
        and step.main_fps_min >= MAIN_FPS_MIN * FPS
    )
    return step


def _roles(
    before: dict[str, float], after: dict[str, float], total: float, wall: float
) -> dict[str, float]:
    """Cores used per thread role over the window; "other" is the rest of the process
    (the main thread, threads that started or ended within the window)."""
    used = {label: 0.0 for _, _, label in ROLES}
    for name, cpu in after.items():
        label = next(
            (lbl for pre, part, lbl in ROLES if name.startswith(pre) and part in name), None
        )
        if label is not None:
            used[label] += cpu - before.get(name, cpu)
    used["other"] = total - sum(used.values())
    return {k: v / wall for k, v in used.items()}


def _fell_behind(a: _Probe, b: _Probe) -> float:
    """How much further the latest analysed frame lags its stream time than before."""
    if a.frame_pts is None or b.frame_pts is None:
        return float("inf")
    assert a.frame_wallclock is not None and b.frame_wallclock is not None
    return (b.frame_wallclock - a.frame_wallclock) - (b.frame_pts - a.frame_pts)


def slope(steps: Sequence[Step]) -> tuple[float, float]:
    """Least squares of service cores over cameras: (cores per camera, fixed cores)."""
    if len(steps) < 2:
        return steps[0].cpu_per_camera, 0.0
    fit = statistics.linear_regression([s.cameras for s in steps], [s.service_cores for s in steps])
    return fit.slope, fit.intercept


# The run ----------------------------------------------------------------------------------------


def run(args: argparse.Namespace, errors: ErrorLog) -> dict[str, Any]:
    started = time.monotonic()
    attr = Attribution()
    attr.install()
    inputs = camera_inputs(args.main_bitrate)
    ff_cpu, ff_video = ffmpeg_decode_cpu(inputs.sub)
    baselines = {"ffmpeg_decode_file": ff_video / ff_cpu}
    print(f"ffmpeg -threads 1 decode of sub.mp4: {baselines['ffmpeg_decode_file']:.1f} cams/core")
    steps: list[Step] = []
    with workdir("bench-cameras-") as tmp:
        mounts = {"/sub": h264file_mount(inputs.sub), "/main": h264file_mount(inputs.main)}
        server = start_rtsp(mounts, tmp / "rtsp")
        try:
            for job in ("camera", "sub", "main"):
                cores = ffmpeg_live_cores(server, job, args.ffmpeg_procs, 3.0, args.ffmpeg_window)
                baselines[f"ffmpeg_live_{job}_pct"] = 100 * cores
            baselines["ffmpeg_live_camera"] = 100 / baselines["ffmpeg_live_camera_pct"]
            b = baselines
            print(
                f"ffmpeg live from the RTSP server, % of a core per camera: whole job "
                f"{b['ffmpeg_live_camera_pct']:.2f} (= {b['ffmpeg_live_camera']:.1f} cams/core), "
                f"substream decode {b['ffmpeg_live_sub_pct']:.2f}, main stream copy "
                f"{b['ffmpeg_live_main_pct']:.2f}",
                flush=True,
            )
            with InProcessService(tmp) as service, service.client() as http:
                if args.opencv_threads is not None:  # after the service set its own (1)
                    import cv2

                    cv2.setNumThreads(args.opencv_threads)
                added = 0
                for n in args.steps:
                    if time.monotonic() - started > args.budget_s:
                        print(f"time budget of {args.budget_s:.0f} s used up before {n} cameras")
                        break
                    add_cameras(http, n - added, server.url("/main"), server.url("/sub"))
                    added = n
                    _wait_online(service, n)
                    time.sleep(args.settle)
                    step = measure(service, server.pid, n, args.window, attr)
                    steps.append(step)
                    _print_step(step)
                    if not step.sustained:
                        break
        finally:
            server.stop()
    return _summary(steps, baselines, args, errors)


def run_interleaved(args: argparse.Namespace, errors: ErrorLog) -> dict[str, Any]:
    """ABAB: at ``--cameras`` cameras, rounds of the service (A) and of ffmpeg doing the
    same cameras' jobs live (B), one after the other, so that the VM's drift (a third
    between minutes) falls on both alike. The service's cameras are disabled during B (its
    process stays up); each round's ratio is ffmpeg's CPU per camera over ours."""
    attr = Attribution()
    attr.install()
    inputs = camera_inputs(args.main_bitrate)
    n = args.cameras
    rounds: list[dict[str, Any]] = []
    with workdir("bench-cameras-") as tmp:
        mounts = {"/sub": h264file_mount(inputs.sub), "/main": h264file_mount(inputs.main)}
        server = start_rtsp(mounts, tmp / "rtsp")
        try:
            with InProcessService(tmp) as service, service.client() as http:
                ids = add_cameras(http, n, server.url("/main"), server.url("/sub"))
                for r in range(args.rounds):
                    _wait_online(service, n)
                    time.sleep(args.settle)
                    step = measure(service, server.pid, n, args.window, attr)
                    _print_step(step)
                    for cid in ids:
                        http.patch(f"/api/v1/cameras/{cid}", json={"enabled": False})
                    _wait_stopped(service)
                    ff = ffmpeg_live_cores(server, "camera", n, 3.0, args.window)
                    for cid in ids:
                        http.patch(f"/api/v1/cameras/{cid}", json={"enabled": True})
                    ours = 100 * step.cpu_per_camera
                    rounds.append(
                        {
                            "round": r + 1,
                            "ours_pct": ours,
                            "ffmpeg_pct": 100 * ff,
                            "ratio": 100 * ff / ours,
                            "sustained": step.sustained,
                            "load": step.load[0],
                        }
                    )
                    print(
                        f"  round {r + 1}: ours {ours:.2f} % of a core per camera, ffmpeg "
                        f"{100 * ff:.2f} %: {100 * ff / ours:.2f}x",
                        flush=True,
                    )
        finally:
            server.stop()
    return {
        "bench": "cameras-interleaved",
        "machine": machine(),
        "cameras": n,
        "rounds": rounds,
        "service_errors_logged": errors.count,
    }


def _wait_stopped(service: InProcessService, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _runners(service) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _runners(service):
        raise RuntimeError(f"disabled cameras still ran after {timeout:.0f} s")


def _report_interleaved(result: dict[str, Any]) -> None:
    rounds = result["rounds"]
    m = result["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores; {result['cameras']} cameras, ABAB")
    print_table(
        ("round", "ours %/cam", "ffmpeg %/cam", "ffmpeg/ours", "real time", "load"),
        [
            (
                x["round"],
                f"{x['ours_pct']:.2f}",
                f"{x['ffmpeg_pct']:.2f}",
                f"{x['ratio']:.2f}",
                "yes" if x["sustained"] else "NO",
                x["load"],
            )
            for x in rounds
        ],
    )
    for key, label in (("ours_pct", "ours"), ("ffmpeg_pct", "ffmpeg"), ("ratio", "ratio")):
        values = [x[key] for x in rounds]
        print(
            f"{label}: median {statistics.median(values):.2f} "
            f"(spread {min(values):.2f}-{max(values):.2f})"
        )
    print(json.dumps(rounded(result)))


def _print_step(s: Step) -> None:
    print(
        f"  {s.cameras:3d} cameras: service {100 * s.service_cores:5.1f} % core, "
        f"server {100 * s.server_cores:5.1f} %, machine busy {100 * s.machine_busy:3.0f} %, "
        f"decoded min {s.decoded_fps_min:4.1f}/s, dropped {s.dropped}, "
        f"behind {s.behind_s_max:+.2f} s, load {s.load[0]} -> "
        f"{'ok' if s.sustained else 'NOT sustained'}",
        flush=True,
    )


def _summary(
    steps: list[Step], baselines: dict[str, float], args: argparse.Namespace, errors: ErrorLog
) -> dict[str, Any]:
    ok = [s for s in steps if s.sustained]
    best = ok[-1] if ok else None
    per_camera, fixed = slope(ok) if ok else (float("nan"), float("nan"))
    ours = best.cameras_per_core if best else float("nan")
    return {
        "bench": "cameras",
        "machine": machine(),
        "main_bitrate": args.main_bitrate,
        "opencv_threads": args.opencv_threads,
        "max_sustained_cameras": best.cameras if best else 0,
        "first_not_sustained": next((s.cameras for s in steps if not s.sustained), None),
        "cameras_per_core": round(ours, 1),
        "cpu_per_camera_pct_core": round(100 * best.cpu_per_camera, 2) if best else None,
        "marginal_cpu_per_camera_pct_core": round(100 * per_camera, 2),
        "marginal_cameras_per_core": round(1 / per_camera, 1) if per_camera > 0 else None,
        "fixed_cpu_pct_core": round(100 * fixed, 1),
        "server_cpu_per_camera_pct_core": round(100 * best.server_cores / best.cameras, 2)
        if best
        else None,
        "ffmpeg_decode_file_cameras_per_core": round(baselines["ffmpeg_decode_file"], 1),
        "ffmpeg_live_cameras_per_core": round(baselines["ffmpeg_live_camera"], 1),
        "ffmpeg_live_camera_pct_core": round(baselines["ffmpeg_live_camera_pct"], 2),
        "ffmpeg_live_sub_decode_pct_core": round(baselines["ffmpeg_live_sub_pct"], 2),
        "ffmpeg_live_main_copy_pct_core": round(baselines["ffmpeg_live_main_pct"], 2),
        "ratio_vs_ffmpeg_decode_file": round(ours / baselines["ffmpeg_decode_file"], 3),
        "ratio_vs_ffmpeg_live": round(ours / baselines["ffmpeg_live_camera"], 3),
        "target_cameras_per_core": 40,
        "service_errors_logged": errors.count,
        "service_first_errors": errors.first,
        "steps": [asdict(s) | {"cpu_per_camera_pct": 100 * s.cpu_per_camera} for s in steps],
    }


def _report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB; load now {m['load']}")
    rows = [
        (
            s["cameras"],
            f"{100 * s['service_cores']:.1f}",
            f"{s['cpu_per_camera_pct']:.2f}",
            f"{s['cameras'] / s['service_cores']:.1f}",
            f"{100 * s['server_cores']:.1f}",
            f"{100 * s['machine_busy']:.0f}",
            f"{s['decoded_fps_min']:.1f}",
            f"{s['analysed_fps_mean']:.2f}",
            f"{s['main_fps_min']:.1f}",
            s["dropped"],
            f"{s['behind_s_max']:+.2f}",
            s["load"][0],
            "yes" if s["sustained"] else "NO",
        )
        for s in result["steps"]
    ]
    headers = (
        "cams", "svc %core", "%/cam", "cams/core", "rtsp srv %", "busy %", "dec fps min",
        "ana fps", "main fps", "drop", "behind s", "load", "real time",
    )  # fmt: skip
    print_table(headers, rows)
    print(
        f"max sustained: {result['max_sustained_cameras']} cameras (first not sustained: "
        f"{result['first_not_sustained']}); {result['cameras_per_core']} cameras/core, "
        f"{result['cpu_per_camera_pct_core']} % of a core per camera; marginal "
        f"{result['marginal_cpu_per_camera_pct_core']} % (= {result['marginal_cameras_per_core']}"
        f" cameras/core) + fixed {result['fixed_cpu_pct_core']} %"
    )
    # The breakdown of the largest sustained step (an overloaded one inflates every part).
    ok = [s for s in result["steps"] if s["sustained"]]
    at = (ok or result["steps"])[-1]
    n = at["cameras"]
    print(f"where the service's CPU went at {n} cameras (% of a core per camera):")
    for label, cores in at["roles"].items():
        print(f"  {100 * cores / n:6.2f}  {label}")
    print("  of which, inside these functions (thread CPU time):")
    for label, cores in at["functions"].items():
        print(f"  {100 * cores / n:6.2f}    {label}")
    print(
        f"ffmpeg live, % of a core per camera: substream decode "
        f"{result['ffmpeg_live_sub_decode_pct_core']}, main-stream copy "
        f"{result['ffmpeg_live_main_copy_pct_core']}, both in one process "
        f"{result['ffmpeg_live_camera_pct_core']}"
    )
    print(
        f"baselines (cameras/core): ffmpeg decode of the substream file "
        f"{result['ffmpeg_decode_file_cameras_per_core']}, ffmpeg doing a camera's job live "
        f"{result['ffmpeg_live_cameras_per_core']}; ratios ours/ffmpeg: "
        f"{result['ratio_vs_ffmpeg_decode_file']} and {result['ratio_vs_ffmpeg_live']} "
        f"(target: 40 cameras/core)"
    )
    if result["service_errors_logged"]:
        print(f"service logged {result['service_errors_logged']} error(s), first:")
        for line in result["service_first_errors"]:
            print(f"  {line}")
    keep = ("cameras", "service_cores", "server_cores", "decoded_fps_min", "dropped", "sustained")
    steps = [
        {k: round(v, 3) if isinstance(v, float) else v for k, v in s.items() if k in keep}
        | {
            "pct_core_per_camera": {
                label: round(100 * cores / s["cameras"], 2)
                for label, cores in (s["roles"] | s["functions"]).items()
            }
        }
        for s in result["steps"]
    ]
    print(json.dumps({k: v for k, v in result.items() if k != "steps"} | {"steps": steps}))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--steps",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[4, 8, 12, 16, 20, 24, 32, 40, 48],
        help="camera counts to measure, ascending",
    )
    parser.add_argument("--window", type=float, default=12.0, help="seconds measured per step")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds after all are online")
    parser.add_argument("--main-bitrate", default="2M", help="of the 1080p main stream")
    parser.add_argument("--ffmpeg-procs", type=int, default=4, help="for the live baselines")
    parser.add_argument("--ffmpeg-window", type=float, default=8.0, help="seconds measured")
    parser.add_argument("--budget-s", type=float, default=220.0, help="no new step after this")
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="ABAB instead of steps: this many rounds of the service, then ffmpeg, at --cameras",
    )
    parser.add_argument("--cameras", type=int, default=16, help="cameras of the ABAB rounds")
    parser.add_argument(
        "--opencv-threads",
        type=int,
        default=None,
        help="diagnosis: cv2.setNumThreads(N) once the service started (it sets 1; -1: "
        "OpenCV's default pool)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    if args.rounds:
        _report_interleaved(run_interleaved(args, errors))
    else:
        _report(run(args, errors))


if __name__ == "__main__":
    main()
