"""Removing a camera while it has an incident open: the incident ends, its clip is archived.

Regression for two bugs the soak test found (tests/soak): the clean-up that ends a removed
camera's incidents could be cancelled half-way (incident open for ever, clip pending for
ever), and the stream stopped before the pipeline, so the last clip waited 30 s for a
post-roll that never came while the reconcile loop was blocked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.app import create_app
from config.settings import Settings
from tests.conftest import LiveServer, wait_for
from tests.integration.test_motion_incidents import VTEST
from tests.peers.rtsp import RtspServer, file_mount

pytestmark = pytest.mark.slow  # make check leaves it to make test

TOKEN = "xl_test_admin_token_for_removal_0001"


def test_removing_a_camera_ends_its_open_incident_and_archives_the_clip(
    make_settings: Callable[..., Settings], rtsp_server: Callable[..., RtspServer]
) -> None:
    server = rtsp_server({"/campus": file_mount(VTEST, fps=10)})
    settings = make_settings(
        auth={"bootstrap_token": TOKEN},
        # vtest has pedestrians all the time: an incident opens and stays open (max 60 s).
        incidents={"start_frames": 3, "quiet_s": 5.0, "max_len_s": 60.0},
        ingest={"backoff_initial_s": 0.5, "backoff_max_s": 2.0},
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with (
        LiveServer(create_app(settings)) as live,
        httpx.Client(base_url=live.url, headers=auth, timeout=30) as http,
    ):
        ids = []
        for name in ("removed", "kept"):
            created = http.post(
                "/api/v1/cameras",
                json={
                    "name": name,
                    "rtsp_url": server.url("/campus"),
                    "recording": {"pre_s": 1, "post_s": 2},
                },
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        removed, kept = ids

        def incidents(camera: str) -> list[dict[str, Any]]:
            got = http.get("/api/v1/incidents", params={"camera_id": camera, "limit": 100})
            items: list[dict[str, Any]] = got.json()["items"]
            return items

        def open_incident(camera: str) -> dict[str, Any] | None:
            return next((i for i in incidents(camera) if i["ended_at"] is None), None)

        victim = wait_for(lambda: open_incident(removed), 60, "an open incident")
        wait_for(lambda: open_incident(kept), 30, "an open incident on the kept camera")

        assert http.delete(f"/api/v1/cameras/{removed}").status_code == 204
        deleted_at = datetime.now(UTC)

        def finished() -> dict[str, Any] | None:
            full: dict[str, Any] = http.get(f"/api/v1/incidents/{victim['id']}").json()
            clip = full.get("clip") or {}
            return full if full["ended_at"] and clip.get("state") == "archived" else None

        # post_s is 2 s: well under the 30 s the old order stalled for.
        done = wait_for(finished, 20, "the removed camera's incident to end with its clip")
        assert datetime.fromisoformat(done["ended_at"]) <= deadline_after(deleted_at, 10)
        assert done["clip"]["size"] > 0

        # The removed camera makes no new incidents; the kept one goes on analysing.
        def kept_frame_at() -> datetime | None:
            at = http.get(f"/api/v1/cameras/{kept}/status").json().get("last_frame_at")
            return datetime.fromisoformat(at) if at else None

        wait_for(
            lambda: (kept_frame_at() or deleted_at) > deadline_after(deleted_at, 3),
            30,
            "the kept camera to go on receiving frames",
        )
        late = [
            i
            for i in incidents(removed)
            if datetime.fromisoformat(i["started_at"]) > deadline_after(deleted_at, 2)
        ]
        assert late == [], "the removed camera went on making incidents"
        assert open_incident(kept) is not None or incidents(kept)


def deadline_after(at: datetime, seconds: float) -> datetime:
    return at + timedelta(seconds=seconds)
