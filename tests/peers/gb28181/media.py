"""Media of the GB/T 28181 test device: MPEG-PS files made by GStreamer, sent as RTP.

``make_ps_file`` encodes a test pattern with ``x264enc`` and muxes it with GStreamer's
``mpegpsmux`` (plugins-bad), which writes the program stream map with stream type 0x1B
as GB/T 28181 expects (FFmpeg's ``-f mpeg`` writes no PSM). Files are cached by their
parameters in ``.cache/`` beside this module.

The sender (``python -m tests.peers.gb28181.media send --file F --host H --port P
--ssrc S [--tcp] [--loop]``) is what the device's UAS scenario starts on ACK. GStreamer has
no PS payloader, hence this small packetizer:

- the file is cut into access units: a unit starts at a video PES whose PTS differs from
  the previous one, and takes along the pack header, system header and PSM just before it
  (PES without a PTS, or with the same PTS, continue the unit: mpegpsmux cuts a frame
  larger than 64 KiB into several PES and repeats the PTS on each). Files without any
  video PTS are cut at pack headers and timed by their SCR;
- each unit becomes RTP packets (payload type 96, payload <= 1400 bytes) sharing one
  90 kHz timestamp taken from the PTS, the marker bit on its last packet; units are paced
  in real time from their timestamps;
- UDP, or TCP per RFC 4571 (2-byte big-endian length before each packet) as the *active*
  side connecting to the platform's passive port (the platform's SDP says
  ``a=setup:passive``);
- ``--loop`` starts the file again after its end. The RTP timestamps and sequence numbers
  run on (timestamps advance by one frame interval across the seam), but the PS bytes are
  sent unchanged, so the SCR/PTS *inside* the PS jump back to the file's start at each
  loop: a demuxer on the platform sees that discontinuity, as it would from a camera
  whose clock was reset.

How mpegpsmux lays out a file (GStreamer 1.22, measured): one pack header about every
0.7 s, not one per frame; system header and PSM once at the start of the file, not before
every keyframe; one PES per frame, with PTS = DTS (x264 with ``tune=zerolatency`` makes no
B-frames). Cameras usually write a pack header per frame and the PSM before each keyframe:
a platform must not rely on either, since both layouts are valid MPEG-PS. mpegpsmux does
not accept H.265 (its sink pads take no ``video/x-h265``), so ``codec="h265"`` is refused.

The sender stops cleanly on SIGTERM or SIGINT, when ``--stop-file`` appears, when the
process ``--watch-pid`` is gone, or after ``--max-seconds``; it can write a JSON summary
(``--stats-file``) and removes ``--pid-file``. It imports nothing beyond the standard
library so that it starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

__all__ = [
    "CACHE_DIR",
    "PsFrame",
    "RtpPacketizer",
    "make_ps_file",
    "parse_ssrc",
    "read_ps_frames",
]

CACHE_DIR = Path(__file__).with_name(".cache")
MAX_PAYLOAD = 1400
PAYLOAD_TYPE = 96
CLOCK_RATE = 90_000
_PIPELINE_VERSION = "1"  # bump when the pipeline changes, to invalidate cached files

Codec = Literal["h264", "h265"]
Motion = Literal["ball", "static", "snow"]


def make_ps_file(
    path: Path | None = None,
    *,
    seconds: float = 4.0,
    fps: int = 10,
    width: int = 320,
    height: int = 240,
    codec: Codec = "h264",
    profile: Literal["baseline", "main", "high"] = "baseline",
    motion: Motion = "ball",
    moving_s: float | None = None,
    bitrate_kbps: int = 500,
) -> Path:
    """An MPEG-PS file (H.264, keyframe every second) of a test scene; returns its path.

    The scene is SMPTE colour bars (static) with a black box in the lower right quarter in
    which a ball moves: during the first ``moving_s`` seconds (the whole clip when None) for
    ``motion="ball"``; never for ``motion="static"`` (the ball stands still). Looped by the
    sender, a clip with ``moving_s`` shorter than ``seconds`` moves now and then.
    ``motion="snow"`` replaces the bars by random noise: every frame changes everywhere and
    is as large as the bitrate allows (heavy streams, frames split over several PES).

    The file is made once per set of parameters in :data:`CACHE_DIR`; with ``path`` it is
    copied there too. ``codec="h265"`` raises ValueError: mpegpsmux cannot mux H.265.
    """
    if codec != "h264":
        raise ValueError("mpegpsmux (GStreamer 1.22) does not accept H.265: only codec='h264'")
    frames = round(seconds * fps)
    moving = frames if moving_s is None else min(frames, round(moving_s * fps))
    if motion == "static":
        moving = 1
    background = "snow" if motion == "snow" else "smpte100"
    pipeline = _pipeline(frames, moving, fps, (width, height), profile, bitrate_kbps, background)
    key = hashlib.sha256(f"{_PIPELINE_VERSION}|{' '.join(pipeline)}".encode()).hexdigest()[:16]
    cached = CACHE_DIR / f"{motion}-{width}x{height}-{fps}fps-{frames}f-{profile}-{key}.ps"
    if not cached.exists():
        _encode(pipeline, cached)
    if path is None:
        return cached
    shutil.copyfile(cached, path)
    return path


def _pipeline(
    frames: int,
    moving: int,
    fps: int,
    size: tuple[int, int],
    profile: str,
    kbps: int,
    background: str,
) -> list[str]:
    width, height = size
    box_w, box_h = _even(width // 4), _even(height // 4)
    x, y = _even(width - box_w - width // 16), _even(height - box_h - height // 16)
    preset = "ultrafast" if profile == "baseline" else "superfast"  # ultrafast: no CABAC
    # repeat-after-eos keeps the last ball frame on screen once the ball source has ended.
    return [
        f"compositor name=mix sink_1::xpos={x} sink_1::ypos={y} sink_1::repeat-after-eos=true",
        f"! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1",
        f"! x264enc tune=zerolatency speed-preset={preset} key-int-max={fps} bitrate={kbps}",
        f"! video/x-h264,profile={profile} ! h264parse config-interval=-1 ! mpegpsmux",
        "! filesink location=@OUT@",
        f"videotestsrc pattern={background} num-buffers={frames}",
        f"! video/x-raw,width={width},height={height},framerate={fps}/1 ! mix.",
        f"videotestsrc pattern=ball num-buffers={moving}",
        f"! video/x-raw,width={box_w},height={box_h},framerate={fps}/1 ! mix.",
    ]


def _even(value: int) -> int:
    return value - value % 2


def _encode(pipeline: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write under a unique name and rename: parallel test sessions may encode the same file.
    partial = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
    words = " ".join(pipeline).replace("@OUT@", str(partial)).split()
    try:
        result = subprocess.run(
            ["gst-launch-1.0", "-q", *words], capture_output=True, timeout=120, check=False
        )
        if result.returncode != 0 or not partial.exists() or partial.stat().st_size == 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise RuntimeError(f"gst-launch-1.0 failed ({result.returncode}):\n{output[-2000:]}")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


# -- MPEG-PS parsing --


@dataclass(frozen=True)
class PsFrame:
    """One access unit of a program stream, with the PS headers that precede it."""

    pts: int  # 90 kHz, from the video PES (or the pack's SCR base when there is no PTS)
    data: bytes


@dataclass(frozen=True)
class _Unit:
    code: int  # the byte after 00 00 01
    start: int
    end: int
    pts: int | None  # video PES PTS, or the SCR base for a pack header


def read_ps_frames(data: bytes) -> list[PsFrame]:
    """Cut a program stream into access units (see the module docstring)."""
    units = list(_units(data))
    starts: list[int] = []
    timing: list[int] = []
    for index, unit in enumerate(units):
        # mpegpsmux repeats the PTS on every PES of a frame too large for one (> 64 KiB)
        if _is_video(unit.code) and unit.pts is not None and unit.pts not in timing[-1:]:
            starts.append(_with_leading_headers(units, index))
            timing.append(unit.pts)
    if not starts:
        starts = [i for i, u in enumerate(units) if u.code == 0xBA]
        timing = [units[i].pts or 0 for i in starts]
    if not starts:
        raise ValueError("no pack header and no video PES with a PTS: not an MPEG-PS file")
    bounds = [*starts[1:], len(units)]
    frames = []
    for number, (start, end, pts) in enumerate(zip(starts, bounds, timing, strict=True)):
        begin = units[0 if number == 0 else start].start  # leading units go with frame 0
        frames.append(PsFrame(pts=pts, data=data[begin : units[end - 1].end]))
    return frames


def _is_video(code: int) -> bool:
    return 0xE0 <= code <= 0xEF


def _with_leading_headers(units: list[_Unit], index: int) -> int:
    while index > 0 and units[index - 1].code in (0xBA, 0xBB, 0xBC):
        index -= 1
    return index


def _units(data: bytes) -> Iterator[_Unit]:
    pos = data.find(b"\x00\x00\x01\xba")
    while 0 <= pos <= len(data) - 4:
        if data[pos : pos + 3] != b"\x00\x00\x01":
            pos = data.find(b"\x00\x00\x01", pos)  # resynchronise after garbage
            continue
        code = data[pos + 3]
        if code == 0xBA:
            if pos + 14 > len(data):
                return  # truncated pack header at the end
            length, pts = _pack_header(data, pos)
        elif code == 0xB9:  # program end code
            length, pts = 4, None
        elif code >= 0xBB:
            length = 6 + int.from_bytes(data[pos + 4 : pos + 6], "big")
            pts = _pes_pts(data, pos) if _is_video(code) else None
        else:
            pos += 3
            continue
        yield _Unit(code, pos, min(pos + length, len(data)), pts)
        pos += length


def _pack_header(data: bytes, pos: int) -> tuple[int, int | None]:
    if data[pos + 4] & 0xC0 != 0x40:  # MPEG-1 pack header: 12 bytes, not used for timing
        return 12, None
    b = data[pos + 4 : pos + 9]
    scr = (
        ((b[0] >> 3) & 0x07) << 30
        | (b[0] & 0x03) << 28
        | b[1] << 20
        | (b[2] >> 3) << 15
        | (b[2] & 0x03) << 13
        | b[3] << 5
        | b[4] >> 3
    )
    return 14 + (data[pos + 13] & 0x07), scr


def _pes_pts(data: bytes, pos: int) -> int | None:
    if (
        pos + 14 > len(data) or data[pos + 6] & 0xC0 != 0x80 or not data[pos + 7] & 0x80
    ):  # MPEG-2 PES with a PTS
        return None
    p = data[pos + 9 : pos + 14]
    return ((p[0] >> 1) & 0x07) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1


# -- RTP --


class RtpPacketizer:
    """RTP packets (RFC 3550) for PS access units: one timestamp per unit, marker on the
    last packet of each unit, sequence numbers from a random start."""

    def __init__(self, ssrc: int, *, payload_type: int = PAYLOAD_TYPE) -> None:
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError(f"SSRC {ssrc} does not fit in 32 bits")
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.sequence = secrets.randbelow(0x10000)

    def packets(self, unit: bytes, timestamp: int) -> list[bytes]:
        """The packets carrying ``unit`` (payloads of at most :data:`MAX_PAYLOAD` bytes)."""
        chunks = [unit[i : i + MAX_PAYLOAD] for i in range(0, len(unit), MAX_PAYLOAD)]
        packets = []
        for index, chunk in enumerate(chunks):
            marker = 0x80 if index == len(chunks) - 1 else 0
            header = struct.pack(
                "!BBHII",
                0x80,
                marker | self.payload_type,
                self.sequence,
                timestamp & 0xFFFFFFFF,
                self.ssrc,
            )
            packets.append(header + chunk)
            self.sequence = (self.sequence + 1) & 0xFFFF
        return packets


# -- the sender --


class _Stopped(Exception):
    """SIGTERM/SIGINT, the stop file, or the watched process went away."""


@dataclass
class _Stats:
    frames: int = 0
    packets: int = 0
    bytes: int = 0
    loops: int = 0
    first_packet_at: float | None = None  # time.time()
    ended: str = "running"


@dataclass(frozen=True)
class _Limits:
    stop_file: Path | None
    watch_pid: int | None
    deadline: float | None  # time.monotonic()


def send_ps(
    frames: Sequence[PsFrame],
    transmit: _Transmit,
    packetizer: RtpPacketizer,
    *,
    loop: bool,
    limits: _Limits,
    stats: _Stats,
) -> None:
    """Send ``frames`` in real time (once, or looped) until the end or a stop condition."""
    interval = _frame_interval(frames)
    shift = 0  # added to the PTS for the RTP timestamp: one file length per loop
    started = time.monotonic()
    next_check = 0.0
    while True:
        for frame in frames:
            timestamp = frame.pts + shift
            due = started + (timestamp - frames[0].pts) / CLOCK_RATE
            next_check = _wait_until(due, limits, next_check)
            for packet in packetizer.packets(frame.data, timestamp):
                transmit(packet)
                if stats.first_packet_at is None:
                    stats.first_packet_at = time.time()
                stats.packets += 1
                stats.bytes += len(packet)
            stats.frames += 1
        if not loop:
            return
        stats.loops += 1
        shift += frames[-1].pts - frames[0].pts + interval


def _frame_interval(frames: Sequence[PsFrame]) -> int:
    steps = [b.pts - a.pts for a, b in itertools.pairwise(frames) if b.pts > a.pts]
    return int(statistics.median(steps)) if steps else CLOCK_RATE // 25


def _wait_until(due: float, limits: _Limits, next_check: float) -> float:
    """Sleep until ``due`` (monotonic); check the stop conditions at most every 0.25 s."""
    while True:
        now = time.monotonic()
        if now >= next_check:
            _check_limits(limits, now)
            next_check = now + 0.25
        if now >= due:
            return next_check
        time.sleep(min(due - now, max(0.0, next_check - now)) or 0.001)


def _check_limits(limits: _Limits, now: float) -> None:
    if limits.deadline is not None and now >= limits.deadline:
        raise _Stopped("max-seconds")
    if limits.stop_file is not None and limits.stop_file.exists():
        raise _Stopped("stop-file")
    if limits.watch_pid is not None and not _alive(limits.watch_pid):
        raise _Stopped("watched process gone")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie counts as gone (an init that is slow to reap them
    would otherwise keep the senders of a killed device alive)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class _Transmit:
    """Sends one RTP packet over UDP, or over TCP with the RFC 4571 length prefix."""

    def __init__(self, sock: socket.socket, target: tuple[str, int], tcp: bool) -> None:
        self.sock, self.target, self.tcp = sock, target, tcp

    def __call__(self, packet: bytes) -> None:
        if self.tcp:
            self.sock.sendall(len(packet).to_bytes(2, "big") + packet)
        else:
            self.sock.sendto(packet, self.target)


def _open_socket(args: argparse.Namespace, limits: _Limits) -> socket.socket:
    if not args.tcp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((args.bind, 0))
        return sock
    # The platform opened its passive port before sending the INVITE, but allow it a
    # moment (and a restart) before giving up.
    deadline = time.monotonic() + args.connect_timeout
    while True:
        _check_limits(limits, time.monotonic())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((args.bind, 0))
        try:
            sock.connect((args.host, args.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def parse_ssrc(text: str) -> int:
    """The SSRC from an SDP ``y=`` line: a decimal string such as ``0100000001`` (never
    octal, whatever its leading zero suggests)."""
    value = int(text.strip(), 10)
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"SSRC {text!r} does not fit in 32 bits")
    return value


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.peers.gb28181.media")
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser("send", help="send a PS file as RTP (payload type 96)")
    send.add_argument("--file", type=Path, required=True)
    send.add_argument("--host", required=True)
    send.add_argument("--port", type=int, required=True)
    send.add_argument("--ssrc", type=parse_ssrc, required=True, help="decimal, as in y=")
    send.add_argument("--tcp", action="store_true", help="RFC 4571 framing, active side")
    send.add_argument("--loop", action="store_true", help="start the file again at its end")
    send.add_argument("--bind", default="127.0.0.1", help="local address to send from")
    send.add_argument("--connect-timeout", type=float, default=5.0)
    send.add_argument("--stop-file", type=Path, help="stop once this file exists")
    send.add_argument("--watch-pid", type=int, help="stop once this process is gone")
    send.add_argument("--max-seconds", type=float, help="stop after this long")
    send.add_argument("--stats-file", type=Path, help="write a JSON summary here on exit")
    send.add_argument("--pid-file", type=Path, help="removed on exit (written by the caller)")
    return parser.parse_args(argv)


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise _Stopped(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGINT, _raise_stopped)
    stats = _Stats()
    deadline = None if args.max_seconds is None else time.monotonic() + args.max_seconds
    limits = _Limits(args.stop_file, args.watch_pid, deadline)
    status = 0
    try:
        frames = read_ps_frames(args.file.read_bytes())
        with _open_socket(args, limits) as sock:
            transmit = _Transmit(sock, (args.host, args.port), args.tcp)
            packetizer = RtpPacketizer(args.ssrc)
            send_ps(frames, transmit, packetizer, loop=args.loop, limits=limits, stats=stats)
        stats.ended = "end of file"
    except _Stopped as why:
        stats.ended = f"stopped: {why}"
    except OSError as err:  # the platform closed the TCP connection, or never listened
        stats.ended = f"error: {err!r}"
        status = 1
    finally:
        if args.stats_file is not None:
            with contextlib.suppress(OSError):
                args.stats_file.write_text(json.dumps(stats.__dict__))
        if args.pid_file is not None:
            args.pid_file.unlink(missing_ok=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
