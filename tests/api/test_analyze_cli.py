"""``xueliang analyze``: the contract's JSON lines on a real clip, and one-line errors."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analytics.persons import DetectorConfig, PersonDetector
from analytics.tracking import TrackerConfig
from cli.analyze import analyze_file
from tests.conftest import REPO, SHARED_DATA

FRAME_KEYS = {"frame", "pts", "motion", "motion_area", "persons", "boxes"}
SUMMARY_KEYS = {
    "frames",
    "analysed",
    "motion_frames",
    "max_persons",
    "mean_persons",
    "duration_s",
    "model",
    "elapsed_s",
}


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "analyze", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ},
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 3 s of vtest.avi (10 fps, people in every frame) as H.264 MP4."""
    assert shutil.which("ffmpeg"), "ffmpeg is needed to cut the test clip"
    path = tmp_path_factory.mktemp("analyze") / "vtest-3s.mp4"
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-i", str(SHARED_DATA / "vtest.avi"),
            "-t", "3", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            str(path),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path


def test_json_lines_follow_the_contract(clip: Path) -> None:
    result = analyze(str(clip), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    records, summary = lines[:-1], lines[-1]

    # 30 frames at 10 fps analysed at 5 fps: every second decoded frame.
    assert [r["frame"] for r in records] == list(range(0, 30, 2))
    for record in records:
        assert set(record) == FRAME_KEYS
        assert record["pts"] == pytest.approx(record["frame"] / 10, abs=1e-3)
        assert isinstance(record["motion"], bool)
        assert 0.0 <= record["motion_area"] <= 1.0
        assert record["persons"] == len(record["boxes"])
        assert record["persons"] > 0, f"people are in every frame of the clip: {record}"
        for x1, y1, x2, y2, score in record["boxes"]:
            assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576  # pixels of the original frame
            assert 0 < score <= 1
    assert records[0]["motion"] is False  # the first frame only seeds the background
    assert any(r["motion"] for r in records[1:])  # people walk: motion follows

    assert set(summary) == {"summary"}
    s = summary["summary"]
    assert set(s) == SUMMARY_KEYS
    assert (s["frames"], s["analysed"]) == (30, 15)
    assert s["duration_s"] == pytest.approx(3.0)
    assert s["motion_frames"] == sum(r["motion"] for r in records)
    assert s["max_persons"] == max(r["persons"] for r in records)
    mean = sum(r["persons"] for r in records) / 15
    assert s["mean_persons"] == pytest.approx(mean, abs=1e-3)
    assert s["model"].startswith("ssdlite-pedestrian")
    assert s["elapsed_s"] > 0


class _Flickering:
    """A stand-in person model: three people, the middle one missed in every third frame."""

    name = "flickering"
    size = (768, 576)

    def __init__(self) -> None:
        self.calls = 0

    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes = [[100, 300, 140, 400], [300, 300, 340, 400], [500, 300, 540, 400]]
        if self.calls % 3 == 2:
            del boxes[1]
        self.calls += 1
        return np.array(boxes, dtype=np.float32), np.full(len(boxes), 0.9, dtype=np.float32)


@pytest.mark.parametrize(
    ("tracking", "persons"),
    [(TrackerConfig(), [3] * 15), (None, [3, 3, 2] * 5)],  # tracked; one frame's detections
)
def test_persons_are_the_tracked_persons(
    clip: Path, tracking: TrackerConfig | None, persons: list[int]
) -> None:
    out = io.StringIO()
    detector = PersonDetector(DetectorConfig(), _Flickering())
    analyze_file(clip, detector=detector, tracking=tracking, out=out, err=io.StringIO())
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["persons"] for r in records] == persons
    assert all(len(r["boxes"]) == r["persons"] for r in records)


def test_without_json_a_short_summary(clip: Path) -> None:
    result = analyze(str(clip))
    assert result.returncode == 0, result.stderr
    assert "30 frames" in result.stdout and "analysed 15 frames" in result.stdout
    assert "persons: max" in result.stdout
    assert not result.stdout.lstrip().startswith("{")


def test_a_single_image_is_one_frame(tmp_path: Path, clip: Path) -> None:
    image = tmp_path / "still.png"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-frames:v", "1", str(image)],
        check=True,
        timeout=60,
    )
    result = analyze(str(image), "--json")
    assert result.returncode == 0, result.stderr
    record, summary = (json.loads(line) for line in result.stdout.splitlines())
    assert (record["frame"], record["pts"], record["motion"]) == (0, 0.0, False)
    assert record["persons"] > 0
    assert summary["summary"]["frames"] == summary["summary"]["analysed"] == 1


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("missing.mp4", None, "no such file"),
        ("notes.mp4", b"this is not a video\n", "not a video or image file"),
        ("broken.png", b"\x89PNG but not really", "not a readable image"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    tmp_path: Path, name: str, content: bytes | None, says: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = analyze(str(path), "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("xueliang: error: ") and says in lines[0]
    assert str(path) in lines[0]
