"""The demo camera: a generated street scene where a figure crosses every ~20 s."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

from runtime.services import Services
from storage.cameras import list_cameras, new_camera_id
from storage.models import Camera, utcnow

log = logging.getLogger(__name__)

WIDTH, HEIGHT, FPS, SECONDS = 640, 360, 10, 40
DEMO_NAME = "demo camera (generated)"
Image = npt.NDArray[np.uint8]


def demo_video(data_dir: Path) -> Path:
    """The demo video, generated once (H.264 MP4, 40 s, 640x360 at 10 fps)."""
    path = data_dir / "demo" / "street.mp4"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    rng = np.random.default_rng(7)
    background = _background(rng)
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"g": str(FPS), "preset": "veryfast", "tune": "zerolatency"}
        stream.codec_context.time_base = Fraction(1, FPS)
        for i in range(FPS * SECONDS):
            frame = _frame(background, i, rng)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)
    log.info("demo video written to %s", path)
    return path


def _background(rng: np.random.Generator) -> Image:
    img = np.full((HEIGHT, WIDTH, 3), (110, 120, 115), np.uint8)
    cv2.rectangle(img, (0, 250), (WIDTH, HEIGHT), (80, 85, 90), -1)  # road
    for x in range(20, WIDTH, 90):  # buildings
        h = int(rng.integers(80, 200))
        cv2.rectangle(img, (x, 250 - h), (x + 70, 250), (150, 140, 130), -1)
    return img


def _frame(background: Image, i: int, rng: np.random.Generator) -> Image:
    img: Image = background.copy()
    t = i / FPS
    phase = t % 20.0  # a figure crosses during the first 8 s of every 20 s
    if phase < 8.0:
        x = int(40 + (WIDTH - 120) * phase / 8.0)
        cv2.rectangle(img, (x, 190), (x + 28, 300), (40, 40, 60), -1)
        cv2.circle(img, (x + 14, 178), 13, (60, 70, 90), -1)
    noise = rng.normal(0, 2.0, img.shape).astype(np.int16)
    img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8, copy=False)
    cv2.putText(  # cv2 draws in place; its return value is untyped
        img,
        f"Xueliang demo  t={t:05.1f}s",
        (10, 24),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.6,
        (255, 255, 255),
        1,
    )
    return img


def ensure_demo_camera(services: Services, video: Path) -> str:
    """Register the demo camera once; returns its id."""
    with services.db.session() as session:
        for cam in list_cameras(session):
            if cam.name == DEMO_NAME:
                return cam.id
        url = video.resolve().as_uri()
        now = utcnow()
        cam = Camera(
            id=new_camera_id(),
            name=DEMO_NAME,
            main_url_enc=services.secrets.encrypt(url),
            main_url_shown=url,
            # The timestamp overlay changes every frame: mask it, as a real camera's would be.
            zones=[
                {
                    "name": "clock",
                    "kind": "mask",
                    "polygon": [[0, 0], [0.45, 0], [0.45, 0.1], [0, 0.1]],
                }
            ],
            analytics={"motion": {"enabled": True}},
            recording={"pre_s": 3, "post_s": 3},
            created_at=now,
            updated_at=now,
        )
        session.add(cam)
        return cam.id
