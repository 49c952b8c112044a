"""H.265 clips are tagged ``hvc1`` with the parameter sets in their hvcC box, so Safari
(AVFoundation) plays them: it refuses FFmpeg's default ``hev1``. Recorded from a real H.265
camera (gst-rtsp-server with x265enc) the way every clip is (ring snapshot → remux), and
checked with ffprobe and by reading the hvcC box."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import av
import pytest

from ingest.camera import CameraState
from ingest.manager import CameraManager
from ingest.ring import PacketRing
from storage.clips import write_mp4
from tests.integration.test_hostile_cameras import StartServer, cam
from tests.integration.test_ingest import Listener, wait_until
from tests.peers.rtsp import h265_pattern, live_pattern

pytestmark = pytest.mark.slow

VPS, SPS, PPS = 32, 33, 34


def _ffprobe(path: Path) -> dict[str, str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,codec_tag_string", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    stream: dict[str, str] = json.loads(out)["streams"][0]
    return stream


def _hvcc_nal_types(path: Path) -> set[int]:
    """The NAL unit types in the file's hvcC box (ISO/IEC 14496-15 8.3.3.1)."""
    data = path.read_bytes()
    at = data.index(b"hvcC") + 4
    arrays, at = data[at + 22], at + 23
    found = set()
    for _ in range(arrays):
        nal_type = data[at] & 0x3F
        (count,) = struct.unpack(">H", data[at + 1 : at + 3])
        at += 3
        for _ in range(count):
            (size,) = struct.unpack(">H", data[at : at + 2])
            assert size > 0
            at += 2 + size
        found.add(nal_type)
    return found


def _clip(ring: PacketRing, path: Path) -> int:
    snapshot = ring.snapshot(time.time() - 1.5)
    assert snapshot.params is not None and snapshot.packets
    info = write_mp4(path, snapshot.params, snapshot.packets)
    with av.open(str(path)) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    assert decoded == info.frames >= 2  # every packet decodes
    return decoded


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffprobe (make test installs it)")
async def test_h265_clips_are_hvc1_with_their_parameter_sets(
    rtsp_server: StartServer, tmp_path: Path
) -> None:
    server = rtsp_server({"/h265": h265_pattern(), "/h264": live_pattern(fps=10)})
    listener = Listener()
    rings: dict[str, PacketRing] = {}

    def ring_for(camera_id: str) -> PacketRing:
        rings[camera_id] = PacketRing(capacity_s=10, camera_id=camera_id)
        return rings[camera_id]

    manager = CameraManager(listener=listener, sink_factory=ring_for)
    online: Callable[[str], Callable[[], bool]] = lambda c: (  # noqa: E731
        lambda: manager.status(c).state is CameraState.ONLINE
    )
    try:
        await manager.apply(
            {"h265": cam("h265", server.url("/h265")), "h264": cam("h264", server.url("/h264"))}
        )
        for camera_id in ("h265", "h264"):
            await wait_until(online(camera_id), 20, f"{camera_id} online")
        await asyncio.sleep(2.5)  # a keyframe and some packets into the rings
        hevc, avc = tmp_path / "h265.mp4", tmp_path / "h264.mp4"
        _clip(rings["h265"], hevc)
        _clip(rings["h264"], avc)
    finally:
        await manager.aclose()
    assert _ffprobe(hevc) == {"codec_name": "hevc", "codec_tag_string": "hvc1"}
    assert {VPS, SPS, PPS} <= _hvcc_nal_types(hevc)
    assert _ffprobe(avc) == {"codec_name": "h264", "codec_tag_string": "avc1"}  # unchanged
