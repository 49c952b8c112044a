"""One true path: RTSP camera → motion incidents → clips verified in SeaweedFS (S3).

vtest.avi (pedestrians on a campus, 10 fps) is served by the real gst-rtsp-server; the
whole service runs (API, ingest, analytics, archive) with SeaweedFS as its object store.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from config.settings import Settings
from tests.conftest import SHARED_DATA, LiveServer, wait_for
from tests.peers.rtsp import RtspServer, file_mount
from tests.peers.seaweedfs import SeaweedS3, unique_bucket

pytestmark = pytest.mark.slow  # make check leaves it to make test

VTEST = SHARED_DATA / "vtest.avi"
TOKEN = "xl_test_admin_token_for_incidents_0001"
PRE_S, POST_S = 2.0, 2.0
FPS = 10


def service_settings(
    make_settings: Callable[..., Settings], s3: SeaweedS3, bucket: str, **extra: Any
) -> Settings:
    return make_settings(
        auth={"bootstrap_token": TOKEN},
        storage={
            "backend": "s3",
            "s3": {
                "endpoint": s3.endpoint,
                "access_key": s3.credentials.access_key,
                "secret_key": s3.credentials.secret_key,
                "bucket": bucket,
            },
        },
        # Pedestrians walk through vtest all the time: short incidents, capped at 8 s.
        incidents={"start_frames": 3, "quiet_s": 2.0, "max_len_s": 8.0},
        ingest={"backoff_initial_s": 0.5, "backoff_max_s": 2.0},
        archive={"retry_initial_s": 0.5, "retry_max_s": 3.0},
        **extra,
    )


@pytest.fixture
def campus_camera(rtsp_server: Callable[..., RtspServer]) -> Iterator[RtspServer]:
    yield rtsp_server({"/campus": file_mount(VTEST, fps=FPS)})


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_format",
            "-show_streams",
            "-count_frames",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def decode_errors(path: Path) -> str:
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stderr.strip()


def test_rtsp_motion_incidents_produce_verified_clips_in_s3(
    make_settings: Callable[..., Settings],
    seaweedfs: SeaweedS3,
    campus_camera: RtspServer,
    tmp_path: Path,
) -> None:
    bucket = unique_bucket()
    settings = service_settings(make_settings, seaweedfs, bucket)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    app = create_app(settings)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:
        created = http.post(
            "/api/v1/cameras",
            json={
                "name": "campus",
                "rtsp_url": campus_camera.url("/campus"),
                "recording": {"pre_s": PRE_S, "post_s": POST_S},
            },
        )
        assert created.status_code == 201, created.text
        cam = created.json()["id"]

        def online_at() -> datetime | None:
            events = http.get("/api/v1/events", params={"type": "camera.online"}).json()
            return next((datetime.fromisoformat(e["at"]) for e in events["items"]), None)

        def archived() -> list[dict[str, Any]]:
            # Incidents that began once the ring held pre_s of video (plus a GOP): their
            # pre-roll can be complete. The first one may start seconds after connecting.
            since = wait_for(online_at, 30, "camera.online") + timedelta(seconds=PRE_S + 2)
            items = http.get("/api/v1/incidents", params={"camera_id": cam}).json()["items"]
            done = [
                i
                for i in items
                if i["clip"]
                and i["clip"]["state"] == "archived"
                and datetime.fromisoformat(i["started_at"]) >= since
            ]
            return done if len(done) >= 2 else []

        incidents = wait_for(archived, 90, "two archived motion incidents")
        status = http.get(f"/api/v1/cameras/{cam}/status").json()
        assert status["state"] == "online"
        events = http.get("/api/v1/events", params={"limit": 1000}).json()["items"]

        for inc in incidents:
            full = http.get(f"/api/v1/incidents/{inc['id']}").json()
            assert full["type"] == "motion" and full["ended_at"] is not None
            assert full["snapshot"] is not None
            clip = full["clip"]
            # The database's SHA-256 is the SHA-256 of the bytes in SeaweedFS.
            obj = seaweedfs.client().get_object(bucket, _key(full))
            data = obj.read()
            obj.close()
            assert hashlib.sha256(data).hexdigest() == clip["sha256"]
            assert len(data) == clip["size"]
            # The API hands out a presigned URL that serves those same bytes.
            redirect = http.get(f"/api/v1/incidents/{inc['id']}/clip", follow_redirects=False)
            assert redirect.status_code == 307
            assert httpx.get(redirect.headers["location"]).content == data
            path = tmp_path / f"{inc['id']}.mp4"
            path.write_bytes(data)
            _check_clip(path, full)
            snap = http.get(f"/api/v1/incidents/{inc['id']}/snapshot", follow_redirects=True)
            assert snap.content[:2] == b"\xff\xd8"

        types = [e["type"] for e in events]
        assert "camera.online" in types
        for inc in incidents:
            mine = [e["type"] for e in events if e["data"].get("id") == inc["id"]]
            assert mine[0] == "incident.created"
            assert mine.count("incident.clip_archived") == 1
        audit = http.get("/api/v1/audit", params={"resource": "clip"}).json()
        assert {a["resource_id"] for a in audit} >= {i["id"] for i in incidents}


def _key(incident: dict[str, Any]) -> str:
    started = incident["started_at"][:10].replace("-", "/")
    return f"clips/{incident['camera_id']}/{started}/{incident['id']}.mp4"


def _check_clip(path: Path, incident: dict[str, Any]) -> None:
    probe = ffprobe(path)
    assert probe["format"]["format_name"].startswith("mov,mp4")
    (video,) = [s for s in probe["streams"] if s["codec_type"] == "video"]
    assert video["codec_name"] == "h264"
    # Decodes from the very first frame without a single error (starts at a keyframe).
    assert decode_errors(path) == ""
    started = datetime.fromisoformat(incident["started_at"])
    ended = datetime.fromisoformat(incident["ended_at"])
    wanted = (ended - started).total_seconds() + PRE_S + POST_S
    duration = float(probe["format"]["duration"])
    frames = int(video["nb_read_frames"])
    # From ≥ pre_s before the start (back to a keyframe) to ≥ post_s after the end.
    assert duration >= wanted - 1.0 / FPS, (duration, wanted)
    assert duration <= wanted + 4.0, (duration, wanted)  # at most a GOP + slack more
    assert abs(frames - duration * FPS) <= 2, (frames, duration)
    # faststart: the index comes before the media data, so browsers play while downloading.
    head = path.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (
        head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat")
    )
    assert incident["clip"]["duration_s"] == pytest.approx(duration, abs=0.25)
