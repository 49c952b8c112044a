"""CPU cost of recording one camera: pre-roll ring + clip recorder, against ffmpeg -c copy.

Builds 60 s of 1080p25 H.264 at ~4.6 Mbit/s (4 s of ffmpeg's ``testsrc2`` encoded with
libx264, keyframe every 2 s, looped with ``-c copy`` — packet sizes and rates are what
matter here, not the pictures), demuxes it once with PyAV (the camera reader's job, not
measured), then measures process CPU time (all threads, including the clip writer) for:

- ``ring only``: every packet through ``PacketRing.on_packet`` (no incident: the steady
  state of every camera);
- ``ring + clip``: the same with one clip job recording all 60 s, then writing the MP4
  (remux, faststart rewrite, SHA-256, fsync) — the worst case, a camera always recording;
  twice, alternating: ``in memory`` (the clip's packets held until its end, as before
  issue #21) and ``journaled`` (each packet appended to the spool's journal on the
  writing thread, fsynced every second, its payload then dropped from memory; the MP4
  muxed from the journal). Also reported: the fsyncs of the paced journaled run and their
  wall time, and the payload bytes the clip job held at its end in each mode;
- ``ffmpeg -c copy -f mp4``: the ffmpeg CLI remuxing the same file (child CPU time; it
  also demuxes the MPEG-TS, which our figures leave to the reader);
- ``paced``: the same at the real 25 packets/s for ``--paced-s`` seconds — ring + clip,
  an empty loop that only sleeps until each packet is due (what waking up 25 times a
  second costs by itself), and ``ffmpeg -re`` (reads at the native rate). On a VM or a
  loaded machine every wake-up runs with cold caches, so the paced figures are several
  times the batch ones for any code, ffmpeg's included; compare paced with paced.

Costs are CPU seconds per second of video, as % of one core; the ratios are ring + clip
against ffmpeg (batch and paced). Prints a table and one JSON line; runs in about a
minute::

    .venv/bin/python bench/bench_recording.py [--repeat 3] [--paced-s 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

import av
import av.video.stream

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.recorder import ClipRecorder, RecorderConfig
from ingest.ring import PacketRing

FPS = 25
SECONDS = 60
SEGMENT_S = 4
Packets: TypeAlias = "list[av.Packet[av.video.stream.VideoStream]]"


def make_video(workdir: Path) -> Path:
    """60 s of 1080p25 H.264 in MPEG-TS (Annex B, like RTSP)."""
    segment, looped = workdir / "segment.ts", workdir / "camera.ts"
    x264 = "keyint=50:min-keyint=50:scenecut=0"
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc2=size=1920x1080:rate={FPS}", "-t", str(SEGMENT_S),
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-x264-params", x264, "-b:v", "4M", "-maxrate", "4M", "-bufsize", "8M",
            "-pix_fmt", "yuv420p", str(segment),
        ],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y",
            "-stream_loop", str(SECONDS // SEGMENT_S - 1), "-i", str(segment),
            "-c", "copy", "-f", "mpegts", str(looped),
        ],
        check=True,
    )  # fmt: skip
    return looped


def demux(path: Path) -> tuple[av.container.InputContainer, Packets]:
    """All video packets of ``path`` in memory (the container stays open for on_stream)."""
    container = av.open(str(path))
    stream = container.streams.video[0]
    return container, [p for p in container.demux(stream) if p.size]


def cpu_of(action: Callable[[], None]) -> float:
    """Process CPU seconds (all threads) spent in ``action``."""
    before = time.process_time()
    action()
    return time.process_time() - before


def ring_only(stream: av.video.stream.VideoStream, packets: Packets) -> None:
    ring = PacketRing(capacity_s=30.0, camera_id="bench")
    ring.on_stream(stream)
    t0 = time.time()
    for i, packet in enumerate(packets):
        ring.on_packet(packet, t0 + i / FPS)


HELD: dict[bool, int] = {}  # payload bytes the clip job held at its end, journal off / on


def ring_and_clip(
    stream: av.video.stream.VideoStream,
    packets: Packets,
    spool: Path,
    paced: bool = False,
    journal: bool = True,
) -> None:
    """Everything recorded in one clip; returns once the MP4 is on disk. ``journal``:
    packets journaled to the spool as they come (issue #21), else kept in memory until
    the end (before #21)."""
    ring = PacketRing(capacity_s=30.0, camera_id="bench")
    config = RecorderConfig(max_clip_s=3600.0, journal=journal)
    recorder = ClipRecorder(ring, spool, camera_id="bench", config=config)
    ring.on_stream(stream)
    t0 = time.time()
    job = recorder.start(t0, 0.0)
    last = t0
    for i, packet in enumerate(packets):
        last = t0 + i / FPS
        if paced:
            time.sleep(max(0.0, last - time.time()))
        ring.on_packet(packet, last)
    time.sleep(0.05)  # the writing thread journals the last packets
    if not paced:
        HELD[journal] = job.held_bytes
    job.finish(last, 0.0)
    result = job.wait(timeout=120)
    recorder.close()
    result.path.unlink()


def paced_idle(count: int) -> None:
    """The pacing loop alone: sleep until each packet is due, do nothing with it."""
    t0 = time.time()
    for i in range(count):
        time.sleep(max(0.0, t0 + i / FPS - time.time()))


def ffmpeg_copy(source: Path, target: Path, paced_s: float | None = None) -> float:
    """Child CPU seconds of ``ffmpeg -c copy -f mp4`` (faststart, like our clips).

    With ``paced_s``: ``-re`` (read at the native frame rate) for that many seconds.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pacing = [] if paced_s is None else ["-re", "-t", str(paced_s)]
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y", *pacing, "-i", str(source),
            "-c", "copy", "-f", "mp4", "-movflags", "+faststart", str(target),
        ],
        check=True,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    target.unlink()
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_of(repeat: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(repeat))


class FsyncMeter:
    """Counts ``os.fsync`` calls and the wall time spent in them (all threads)."""

    def __init__(self) -> None:
        self.calls, self.seconds = 0, 0.0
        self._real = os.fsync

    def __enter__(self) -> FsyncMeter:
        def fsync(fd: Any) -> None:
            t0 = time.perf_counter()
            self._real(fd)
            self.seconds += time.perf_counter() - t0
            self.calls += 1

        os.fsync = fsync
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync = self._real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median)")
    parser.add_argument("--paced-s", type=float, default=10.0, help="real-time phase length")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-recording-") as tmp:
        workdir = Path(tmp)
        video = make_video(workdir)
        demux_cpu = time.process_time()
        container, packets = demux(video)
        demux_cpu = time.process_time() - demux_cpu
        stream = container.streams.video[0]
        video_s = len(packets) / FPS
        spool = workdir / "spool"

        ring_cpu = median_of(args.repeat, lambda: cpu_of(lambda: ring_only(stream, packets)))
        # Before and after #21 alternate (ABAB: this VM's speed drifts between minutes).
        before, after = [], []
        for _ in range(args.repeat):
            before.append(cpu_of(lambda: ring_and_clip(stream, packets, spool, journal=False)))
            after.append(cpu_of(lambda: ring_and_clip(stream, packets, spool, journal=True)))
        memory_cpu, clip_cpu = statistics.median(before), statistics.median(after)
        ffmpeg_cpu = median_of(args.repeat, lambda: ffmpeg_copy(video, workdir / "copy.mp4"))
        paced_packets = packets[: int(args.paced_s * FPS)]
        paced_s = len(paced_packets) / FPS
        paced_memory_cpu = cpu_of(
            lambda: ring_and_clip(stream, paced_packets, spool, paced=True, journal=False)
        )
        with FsyncMeter() as fsyncs:
            paced_cpu = cpu_of(lambda: ring_and_clip(stream, paced_packets, spool, paced=True))
        idle_cpu = cpu_of(lambda: paced_idle(len(paced_packets)))
        paced_ffmpeg_cpu = ffmpeg_copy(video, workdir / "copy.mp4", paced_s)
        container.close()

    bitrate = sum(p.size for p in packets) * 8 / video_s / 1000
    rows = {
        "demux": ("PyAV demux (reader's cost, reference)", demux_cpu, video_s),
        "ring": ("ring only (no incident)", ring_cpu, video_s),
        "record_in_memory": ("ring + clip in memory (before #21)", memory_cpu, video_s),
        "record": ("ring + clip journaled, MP4 written", clip_cpu, video_s),
        "ffmpeg_copy": ("ffmpeg -c copy -f mp4 (+faststart)", ffmpeg_cpu, video_s),
        "paced_record_in_memory": (
            f"paced {FPS}/s: ring + clip in memory",
            paced_memory_cpu,
            paced_s,
        ),
        "paced_record": (f"paced {FPS}/s: ring + clip journaled", paced_cpu, paced_s),
        "paced_idle": (f"paced {FPS}/s: pacing loop alone", idle_cpu, paced_s),
        "paced_ffmpeg_copy": ("paced: ffmpeg -re -c copy -f mp4", paced_ffmpeg_cpu, paced_s),
    }
    ratios = {
        "journal_vs_in_memory": clip_cpu / memory_cpu,
        "ratio_vs_ffmpeg_copy": clip_cpu / ffmpeg_cpu,
        "paced_ratio_vs_ffmpeg_copy": paced_cpu / paced_ffmpeg_cpu,
    }
    print(f"1920x1080 @ {FPS} fps H.264, {bitrate:.0f} kbit/s, {len(packets)} packets")
    print(f"{'case':<42} {'cpu s':>8} {'video s':>8} {'% core':>8}")
    for name, cpu, seconds in rows.values():
        print(f"{name:<42} {cpu:8.3f} {seconds:8.1f} {100 * cpu / seconds:8.3f}")
    print(f"{'ratio journaled / in memory':<42} {ratios['journal_vs_in_memory']:>26.2f}")
    print(f"{'ratio ring + clip / ffmpeg -c copy':<42} {ratios['ratio_vs_ffmpeg_copy']:>26.2f}")
    print(
        f"paced, journaled: {fsyncs.calls} fsyncs in {paced_s:.0f} s "
        f"({fsyncs.calls / paced_s:.2f}/s, {1000 * fsyncs.seconds / max(1, fsyncs.calls):.2f} ms "
        f"each, on the writing thread)"
    )
    print(
        f"payload held by a clip job at {video_s:.0f} s: in memory {HELD[False] / 2**20:.1f} MiB, "
        f"journaled {HELD[True] / 2**20:.2f} MiB"
    )
    print(f"{'ratio, paced':<42} {ratios['paced_ratio_vs_ffmpeg_copy']:>26.2f}")
    summary = {
        "bench": "recording",
        "resolution": "1920x1080",
        "fps": FPS,
        "video_s": video_s,
        "paced_s": paced_s,
        "bitrate_kbps": round(bitrate),
        **{f"{k}_pct_core": round(100 * cpu / s, 4) for k, (_, cpu, s) in rows.items()},
        **{k: round(v, 3) for k, v in ratios.items()},
        "paced_fsyncs_per_s": round(fsyncs.calls / paced_s, 3),
        "fsync_ms": round(1000 * fsyncs.seconds / max(1, fsyncs.calls), 3),
        "held_mib_in_memory": round(HELD[False] / 2**20, 2),
        "held_mib_journaled": round(HELD[True] / 2**20, 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
