"""Recording from a real RTSP server: ring + recorder fed by a PyAV reader thread.

The server (gst-rtsp-server, ``tests/peers/rtsp.py``) serves an H.264 file whose frames
carry their index, without re-encoding, so the test can tell exactly which frames a clip
holds. The reader here is deliberately minimal (open, on_stream, demux, on_disconnect,
reconnect); the camera runner of ``ingest`` drives a sink the same way.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import av
import pytest

from ingest.recorder import ClipRecorder, ClipResult, EndReason
from ingest.ring import PacketRing
from ingest.types import PacketSink
from tests.peers.rtsp import RtspServer, h264file_mount
from tests.unit.synthetic_h264 import FPS, decode_errors, decoded_indices, encode_video, ffprobe

pytestmark = pytest.mark.slow  # make check leaves it to make test

ServerFactory = Callable[[Mapping[str, Mapping[str, Any]]], RtspServer]
OPTIONS = {"rtsp_transport": "tcp", "analyzeduration": "500000", "timeout": "5000000"}


class Reader(threading.Thread):
    """Reads the camera into ``sink`` and reconnects until stopped."""

    def __init__(self, url: str, sink: PacketSink) -> None:
        super().__init__(daemon=True)
        self.url, self.sink = url, sink
        self.halt = threading.Event()
        self.connections = 0

    def run(self) -> None:
        while not self.halt.is_set():
            with contextlib.suppress(av.FFmpegError, OSError):  # the camera went away
                self._read_once()
            self.halt.wait(0.2)

    def _read_once(self) -> None:
        with av.open(self.url, options=OPTIONS, timeout=(5.0, 5.0)) as container:
            stream = container.streams.video[0]
            self.sink.on_stream(stream)
            self.connections += 1
            try:
                for packet in container.demux(stream):
                    if self.halt.is_set():
                        return
                    self.sink.on_packet(packet, time.time())
            finally:
                self.sink.on_disconnect()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@pytest.fixture
def camera(
    rtsp_server: ServerFactory, tmp_path: Path
) -> Iterator[tuple[RtspServer, PacketRing, ClipRecorder, Reader]]:
    """A served indexed video (60 s, keyframe every second) being read into a ring."""
    video = encode_video(tmp_path / "camera.mkv", 60 * FPS, gop=FPS)
    server = rtsp_server({"/cam": h264file_mount(video)})
    ring = PacketRing(capacity_s=10.0, camera_id="rtsp-cam")
    recorder = ClipRecorder(ring, tmp_path / "spool", camera_id="rtsp-cam")
    reader = Reader(server.url("/cam"), ring)
    reader.start()
    yield server, ring, recorder, reader
    reader.halt.set()
    reader.join(timeout=15)
    recorder.close()


def runs(indices: list[int]) -> list[list[int]]:
    """Split frame indices into runs of consecutive numbers."""
    groups = itertools.groupby(enumerate(indices), key=lambda item: item[1] - item[0])
    return [[index for _, index in group] for _, group in groups]


def assert_plays(result: ClipResult) -> list[int]:
    assert decode_errors(result.path) == ""
    packets = ffprobe(result.path, "-show_packets")["packets"]
    assert packets[0]["flags"].startswith("K")
    indices = decoded_indices(result.path)
    assert indices[0] % FPS == 0  # starts at a keyframe of the source
    assert len(indices) == result.frames
    return indices


async def test_clip_from_a_live_rtsp_camera(
    camera: tuple[RtspServer, PacketRing, ClipRecorder, Reader],
) -> None:
    _, ring, recorder, _ = camera
    wait_for(lambda: ring.stats().span_s >= 3.0)
    start = time.time()
    job = recorder.start(start - 0.5, 1.5)
    wait_for(lambda: time.time() >= start + 1.0)
    end = time.time()
    job.finish(end, 1.0)

    result = await job

    indices = assert_plays(result)
    assert len(runs(indices)) == 1, "frames missing in between"
    assert result.start_wallclock <= start - 2.0
    assert result.end_wallclock >= end + 1.0
    assert not result.truncated and not result.preroll_short


async def test_clip_spans_a_server_restart(
    camera: tuple[RtspServer, PacketRing, ClipRecorder, Reader],
) -> None:
    server, ring, recorder, reader = camera
    wait_for(lambda: ring.stats().span_s >= 2.0)
    job = recorder.start(time.time(), 1.0)
    time.sleep(1.0)
    server.stop()
    wait_for(lambda: not ring.stats().connected)
    server.restart()
    wait_for(lambda: reader.connections == 2 and ring.stats().connected)
    resumed = time.time()
    wait_for(lambda: time.time() >= resumed + 2.0)
    job.finish(time.time(), 0.5)

    result = await job

    assert result.end_reason is EndReason.COMPLETE and not result.truncated
    pieces = runs(assert_plays(result))
    assert len(pieces) == 2  # before the crash, and the restarted server's from its start
    assert pieces[1][0] == 0
    dts = [float(p["dts_time"]) for p in ffprobe(result.path, "-show_packets")["packets"]]
    assert all(a < b for a, b in itertools.pairwise(dts))
