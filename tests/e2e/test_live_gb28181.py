"""Live view of a GB/T 28181 channel camera, decoded by Chromium's own WebRTC stack.

The device is SIPp with a High-profile H.264 channel muxed into MPEG-PS by GStreamer
(tests/peers/gb28181); the console opens the camera's page and Chromium must decode it:
the first frame within 2 s, at least 20 frames within 8 s (``getStats`` framesDecoded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aioice.ice
import httpx
import pytest
from playwright.sync_api import BrowserContext

from api.app import create_app
from config.settings import Settings
from storage.tokens import create_token
from tests.conftest import LiveServer, free_port
from tests.e2e.conftest import ADMIN, wait_until
from tests.e2e.test_live_profiles import (
    FIRST_FRAME_S,
    MEASURE,
    MIN_FRAMES,
    RECORD_PEERS,
    WINDOW_S,
)
from tests.peers.gb28181.device import GbDevice, gb_device, make_channels
from tests.peers.gb28181.media import make_ps_file

__all__ = ["gb_device"]  # the fixture, used by name

DEVICE = "34020000001320000001"
PASSWORD = "12345678"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Any, str, int]]:
    sip_port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        auth={"bootstrap_token": ADMIN},
        ingest={"backoff_initial_s": 0.5, "backoff_max_s": 2.0},
        gb28181={
            "enabled": True,
            "port": sip_port,
            "password": PASSWORD,
            "media_ports": "33400-33419",
        },
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aioice.ice, "get_host_addresses", lambda *_a, **_k: ["127.0.0.1"])
        app = create_app(settings)
        with LiveServer(app) as server:
            yield app, server.url, sip_port


def test_chromium_decodes_a_gb28181_channel(
    service: tuple[Any, str, int],
    gb_device: Callable[..., GbDevice],
    context: BrowserContext,
) -> None:
    app, url, sip_port = service
    ps = make_ps_file(seconds=20, fps=15, width=640, height=360, profile="high")
    device = gb_device(
        DEVICE, PASSWORD, platform_port=sip_port, channels=make_channels(DEVICE, 1, ps)
    )
    assert device.register().ok
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
        wait_until(
            lambda: http.get(f"/api/v1/gb28181/devices/{DEVICE}").json().get("channels"),
            20,
            "the catalog",
        )
        channel = device.channels[0].channel_id
        created = http.post(
            "/api/v1/cameras",
            json={
                "name": "gb",
                "gb28181": {"device_id": DEVICE, "channel_id": channel},
                "analytics": {"motion": {"enabled": False}},
            },
        )
        assert created.status_code == 201, created.text
        camera_id = created.json()["id"]

    def has_video() -> bool:
        ring = app.state.process.cameras.ring(camera_id)
        return ring is not None and ring.stats().packets > 15

    wait_until(has_video, 30, "video from the channel")
    params = app.state.process.cameras.ring(camera_id).params
    assert params.template.codec_context.profile == "High"
    with app.state.services.db.session() as session:
        operator, _ = create_token(session, "operator", "operator-gb28181")
    context.add_init_script(f"sessionStorage.setItem('xl.token', {operator!r});")
    context.add_init_script(RECORD_PEERS)
    page = context.new_page()
    page.goto(url + f"/console/#/cameras/{camera_id}")
    result: dict[str, Any] = page.evaluate(MEASURE, {"windowMs": WINDOW_S * 1000, "pollMs": 100})
    print(f"\nGB/T 28181 channel (High): {result}")
    assert "error" not in result, result
    assert result["firstMs"] is not None and result["firstMs"] <= FIRST_FRAME_S * 1000, result
    assert result["framesDecoded"] >= MIN_FRAMES, result
    page.close()
