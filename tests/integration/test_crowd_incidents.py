"""Gathering incidents through the whole service, on real footage (vtest.avi).

The campus scene has groups of three to eight pedestrians: with a low threshold the
service raises crowd incidents with the peak count and a snapshot showing the boxes; with
a threshold above anything in the scene it raises none.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from config.settings import Settings
from tests.conftest import SHARED_DATA, LiveServer, wait_for

pytestmark = pytest.mark.slow  # make check leaves it to make test

TOKEN = "xl_test_admin_token_for_crowds_000001"


def test_people_gathering_raise_crowd_incidents_and_few_people_none(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        auth={"bootstrap_token": TOKEN},
        ingest={"allow_file_sources": True},
        crowd={"fps": 2.0, "quiet_s": 3.0},
    )
    app = create_app(settings)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # vtest.avi is MS-MPEG4, which MP4 cannot carry: cameras send H.264.
    h264 = tmp_path / "vtest.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(SHARED_DATA / "vtest.avi"),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "10",
            "-pix_fmt",
            "yuv420p",
            str(h264),
        ],
        check=True,
    )
    video = h264.as_uri()
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:

        def camera(name: str, threshold: int) -> str:
            r = http.post(
                "/api/v1/cameras",
                json={
                    "name": name,
                    "rtsp_url": video,
                    "analytics": {
                        "motion": {"enabled": False},
                        "crowd": {"enabled": True, "threshold": threshold, "dwell_s": 2},
                    },
                    "recording": {"pre_s": 1, "post_s": 1},
                },
            )
            assert r.status_code == 201, r.text
            cid: str = r.json()["id"]
            return cid

        crowded = camera("square", threshold=3)
        quiet = camera("square, high threshold", threshold=30)

        def crowd_incidents(cid: str) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = http.get(
                "/api/v1/incidents", params={"camera_id": cid}
            ).json()["items"]
            return items

        # There are always three or more people on the square: a gathering starts…
        found = wait_for(lambda: crowd_incidents(crowded), 60, "a crowd incident")
        # …and ends when the threshold is raised above what the scene holds.
        r = http.patch(
            f"/api/v1/cameras/{crowded}",
            json={
                "analytics": {
                    "motion": {"enabled": False},
                    "crowd": {"enabled": True, "threshold": 30, "dwell_s": 2},
                }
            },
        )
        assert r.status_code == 200, r.text

        def archived() -> dict[str, Any] | None:
            got: dict[str, Any] = http.get(f"/api/v1/incidents/{found[-1]['id']}").json()
            return got if got["clip"]["state"] == "archived" else None

        wait_for(archived, 30, "its clip archived")
        incident = http.get(f"/api/v1/incidents/{found[-1]['id']}").json()
        assert incident["type"] == "crowd"
        assert 3 <= incident["peak_persons"] <= 15
        snap = http.get(f"/api/v1/incidents/{incident['id']}/snapshot")
        assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8"
        assert crowd_incidents(quiet) == []
        assert all(i["type"] == "crowd" for i in crowd_incidents(crowded))
