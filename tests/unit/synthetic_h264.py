"""H.264 test video whose frames carry their index, and checks on written clips.

Each frame shows its index as 12 bits in black/white blocks (robust to H.264 at any sane
quality), so a test can decode a clip and tell exactly WHICH frames it contains.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.video.stream
import numpy as np

from ingest.types import PacketSink

WIDTH, HEIGHT, FPS = 320, 240, 25
_BITS = 12  # 6 x 2 blocks of an 8th of the width each (40 px at 320 x 240)


def frame_image(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """An RGB frame showing ``index`` as bit blocks (white = 1), on a grey background."""
    img = np.full((height, width, 3), 128, np.uint8)
    block = width // 8
    for bit in range(_BITS):
        y, x = (bit // 6) * block, (bit % 6) * block
        img[y : y + block, x : x + block] = 255 if index >> bit & 1 else 0
    return img


def read_index(frame: av.VideoFrame) -> int:
    """The index drawn by :func:`frame_image` (sampled at the block centres)."""
    luma = frame.to_ndarray(format="gray")
    block = frame.width // 8
    index = 0
    for bit in range(_BITS):
        y, x = (bit // 6) * block + block // 2, (bit % 6) * block + block // 2
        if luma[y, x] > 128:
            index |= 1 << bit
    return index


def encode_video(
    path: Path,
    frames: int,
    *,
    gop: int = FPS,
    bframes: int = 0,
    fmt: str = "matroska",
    width: int = WIDTH,
    height: int = HEIGHT,
    first_index: int = 0,
) -> Path:
    """Encode ``frames`` indexed frames with libx264, a keyframe exactly every ``gop``."""
    with av.open(str(path), mode="w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {
            "preset": "ultrafast",
            "qp": "18",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}",
        }
        for i in range(frames):
            image = frame_image(first_index + i, width, height)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return path


@dataclass(frozen=True)
class Fed:
    """What :func:`feed` pushed: frame index and wallclock of each packet, in order."""

    indices: list[int]
    wallclocks: list[float]
    keyframes: list[bool]

    def index_at(self, wallclock: float) -> int:
        """Index of the last frame that arrived at or before ``wallclock``."""
        return max(i for i, t in zip(self.indices, self.wallclocks, strict=True) if t <= wallclock)


def feed(
    path: Path,
    sink: PacketSink,
    t0: float,
    *,
    first_index: int = 0,
    until: Callable[[float], bool] | None = None,
    each: Callable[[float], None] | None = None,
    close: bool = True,
) -> Fed:
    """Play ``path`` into ``sink`` like a reader thread: on_stream, packets, disconnect.

    Packet ``i`` (in decode order) arrives at ``t0 + i / FPS``. ``each(wallclock)`` runs
    after every packet (to start/finish jobs at given moments); ``until(wallclock)``
    stops early. The container is closed before returning, so anything muxed later uses
    the ring's detached codec parameters.
    """
    container = av.open(str(path))
    stream = container.streams.video[0]
    sink.on_stream(stream)
    fed = Fed([], [], [])
    base = None
    for i, packet in enumerate(p for p in container.demux(stream) if p.size):
        wallclock = t0 + i / FPS
        if until is not None and until(wallclock):
            break
        assert packet.pts is not None and packet.time_base is not None
        base = packet.pts if base is None else min(base, packet.pts)
        fed.indices.append(packet.pts)
        fed.wallclocks.append(wallclock)
        fed.keyframes.append(packet.is_keyframe)
        sink.on_packet(packet, wallclock)
        if each is not None:
            each(wallclock)
    assert base is not None and stream.time_base is not None
    tb = stream.time_base
    fed.indices[:] = [first_index + round((p - base) * tb * FPS) for p in fed.indices]
    if close:
        sink.on_disconnect()
    container.close()
    return fed


def decoded_indices(path: Path) -> list[int]:
    """Frame indices of a clip, in presentation order."""
    with av.open(str(path)) as container:
        return [read_index(f) for f in container.decode(video=0)]


def ffprobe(path: Path, *args: str) -> dict[str, Any]:
    """ffprobe's JSON for ``path`` (fails the test when ffprobe reports an error)."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stderr == "", done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def decode_errors(path: Path) -> str:
    """FFmpeg's error output when decoding all of ``path`` ('' when it decodes cleanly)."""
    done = subprocess.run(
        # Keep the file's timestamps (a repaired 1-tick step would collide in 1/fps).
        [
            *("ffmpeg", "-nostdin", "-v", "error", "-i", str(path)),
            *("-enc_time_base", "-1", "-fps_mode", "passthrough", "-f", "null", "-"),
        ],
        capture_output=True,
        text=True,
    )
    return done.stderr + ("" if done.returncode == 0 else f"exit {done.returncode}")


def top_level_boxes(path: Path) -> list[str]:
    """The MP4 top-level box types in file order (ftyp, moov, mdat, ...)."""
    return list(_boxes(path.read_bytes()))


def _boxes(data: bytes) -> Iterator[str]:
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        yield kind.decode("ascii")
        pos += size


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fraction_ticks(seconds: float, time_base: Fraction) -> int:
    """``seconds`` in ticks of ``time_base``."""
    return round(Fraction(seconds) / time_base)
