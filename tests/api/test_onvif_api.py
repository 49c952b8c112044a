"""The ONVIF parts of the API that need no camera: validation, 404s, errors, no password echo.

Real devices are in tests/integration/test_onvif.py (inside a private network namespace).
Here nothing is sent beyond loopback: the one probe goes to a closed loopback port, and the
discovery request is refused before any socket sends.
"""

from __future__ import annotations

import pytest

from tests.api.conftest import Api
from tests.conftest import free_port

SECRET = "Onv1f-Pass-Word"


def _channel(**extra: object) -> dict[str, object]:
    return {"device_id": "34020000001320000001", "channel_id": "34020000001310000001", **extra}


def _onvif(**extra: object) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": 1, "username": "admin", "password": SECRET, **extra}


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"name": "x"}, "rtsp_url", "one of rtsp_url, onvif or gb28181 is required"),
        (
            {"name": "x", "rtsp_url": "rtsp://h/x", "onvif": _onvif()},
            "rtsp_url",
            "not onvif and rtsp_url",
        ),
        (
            {"name": "x", "rtsp_url": "rtsp://h/x", "gb28181": _channel()},
            "rtsp_url",
            "not gb28181 and rtsp_url",
        ),
        (
            {"name": "x", "substream_url": "rtsp://h/y", "gb28181": _channel()},
            "substream_url",
            "one stream",
        ),
        ({"name": "x", "gb28181": _channel(channel_id="123")}, "channel_id", "pattern"),
        (
            {"name": "x", "substream_url": "rtsp://h/x", "onvif": _onvif()},
            "substream_url",
            "onvif.sub_profile_token",
        ),
        ({"name": "x", "onvif": _onvif(host="http://h/")}, "host", "match pattern"),
        ({"name": "x", "onvif": _onvif(port=70000)}, "port", "less than or equal"),
        ({"name": "x", "onvif": _onvif(colour=1)}, "colour", "Extra inputs"),
    ],
)
def test_camera_needs_either_urls_or_onvif(
    api: Api, body: dict[str, object], field: str, says: str
) -> None:
    r = api.client.post("/api/v1/cameras", json=body, headers=api.as_role("integrator"))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(field in [str(p) for p in d["loc"]] and says in d["msg"] for d in detail), detail
    assert SECRET not in r.text


def test_an_unreachable_device_is_a_422_and_no_camera(api: Api) -> None:
    h = api.as_role("integrator")
    body = {"name": "gate", "onvif": _onvif(port=free_port())}
    r = api.client.post("/api/v1/cameras", json=body, headers=h)
    assert r.status_code == 422, r.text
    assert "connection refused" in r.json()["detail"]
    assert SECRET not in r.text
    assert api.client.get("/api/v1/cameras", headers=h).json()["items"] == []


def test_onvif_routes_of_cameras_without_onvif(api: Api) -> None:
    h = api.as_role("integrator")
    cam = api.client.post(
        "/api/v1/cameras", json={"name": "plain", "rtsp_url": "rtsp://127.0.0.1:1/x"}, headers=h
    ).json()
    for path in (f"/api/v1/cameras/{cam['id']}/onvif", "/api/v1/cameras/cam_nope/onvif"):
        r = api.client.get(path, headers=h)
        assert r.status_code == 404, r.text
    r = api.client.post(f"/api/v1/cameras/{cam['id']}/onvif/refresh", headers=h)
    assert r.status_code == 404 and "not registered through ONVIF" in r.json()["detail"]
    r = api.client.post(
        f"/api/v1/cameras/{cam['id']}/ptz",
        json={"action": "stop"},
        headers=api.as_role("operator"),
    )
    assert r.status_code == 404, r.text


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"action": "preset"}, "preset_token is required"),
        ({"action": "move"}, "non-zero"),
        ({"action": "move", "pan": 2}, "less than or equal"),
        ({"action": "move", "pan": 0.5, "duration_s": 60}, "less than or equal"),
        ({"action": "spin"}, "'move', 'stop' or 'preset'"),
    ],
)
def test_ptz_requests_are_checked(api: Api, body: dict[str, object], says: str) -> None:
    r = api.client.post("/api/v1/cameras/cam_x/ptz", json=body, headers=api.as_role("operator"))
    assert r.status_code == 422 and says in r.text, r.text


def test_discovery_needs_an_interface_of_this_server(api: Api) -> None:
    h = api.as_role("integrator")
    r = api.client.post("/api/v1/onvif/discover", json={}, headers=h)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "interface"
    # 192.0.2.1 (documentation range) is no address of this machine: bind fails, nothing sent.
    r = api.client.post("/api/v1/onvif/discover", json={"interface": "192.0.2.1"}, headers=h)
    assert r.status_code == 422, r.text
    assert "cannot send a WS-Discovery probe from 192.0.2.1" in r.json()["detail"]
