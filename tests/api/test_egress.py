"""The egress policy at the API: webhooks and cameras aimed at this host, link-local or
cloud metadata addresses are refused with a 422 naming the field, unless
``XUELIANG_EGRESS__ALLOW`` lets them through (docs/security.md, "Egress"). SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from config.settings import Settings
from tests.api.conftest import BOOTSTRAP, Api

HOOKS = "/api/v1/subscriptions"
CAMS = "/api/v1/cameras"
SECRET = "whsec-egress-0123"
ALLOW = "allow it with XUELIANG_EGRESS__ALLOW="


@pytest.fixture
def api_settings(make_settings: Callable[..., Settings], db_url: str) -> Settings:
    """The default policy (the shared fixture lets loopback webhooks through)."""
    return make_settings(database={"url": db_url}, auth={"bootstrap_token": BOOTSTRAP})


def _refused(answer: Any, loc: list[str], says: str) -> str:
    assert answer.status_code == 422, answer.text
    (problem,) = answer.json()["detail"]
    assert problem["loc"] == ["body", *loc], problem
    assert says in problem["msg"], problem["msg"]
    msg: str = problem["msg"]
    return msg


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a cloud metadata address"),
        ("http://100.100.100.200/latest/meta-data/", "a cloud metadata address"),
        ("http://[fd00:ec2::254]/latest/", "a cloud metadata address"),
        ("http://169.254.10.1:8080/hook", "a link-local address"),
        ("http://127.0.0.1:9/hook", "127.0.0.1, a loopback address"),
        ("http://localhost:9/hook", "host localhost resolves to 127.0.0.1, a loopback"),
        ("http://[::1]:9/hook", "a loopback address"),
        ("http://0.0.0.0:9/hook", "an unspecified address"),
        ("https://metadata.google.internal/computeMetadata/v1/", "a cloud metadata service"),
    ],
)
def test_webhooks_to_this_host_or_metadata_are_refused(api: Api, url: str, says: str) -> None:
    r = api.client.post(
        HOOKS, json={"url": url, "secret": SECRET}, headers=api.as_role("grid_platform")
    )
    msg = _refused(r, ["url"], says)
    assert msg.startswith("url: ") and (ALLOW in msg or "metadata service" in msg)
    listed = api.client.get(HOOKS, headers=api.as_role("grid_platform")).json()
    assert listed["items"] == []


def test_the_allow_list_lets_a_loopback_webhook_through(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(auth={"bootstrap_token": BOOTSTRAP}, egress={"allow": ["127.0.0.0/8"]})
    auth = {"Authorization": f"Bearer {BOOTSTRAP}"}
    with TestClient(create_app(settings)) as client:
        for url in ("http://127.0.0.1:9/hook", "http://localhost:9/hook"):
            r = client.post(HOOKS, json={"url": url, "secret": SECRET}, headers=auth)
            assert r.status_code == 201, r.text
        r = client.post(
            HOOKS, json={"url": "http://169.254.169.254/", "secret": SECRET}, headers=auth
        )
        _refused(r, ["url"], "a cloud metadata address")  # not in the allow list


def test_cameras_at_link_local_or_metadata_addresses_are_refused(api: Api) -> None:
    h = api.as_role("integrator")
    meta = "rtsp://admin:pw@169.254.169.254:554/live"
    r = api.client.post(CAMS, json={"name": "m", "rtsp_url": meta}, headers=h)
    msg = _refused(r, ["rtsp_url"], "host 169.254.169.254 resolves to 169.254.169.254")
    assert msg == (
        "rtsp_url: host 169.254.169.254 resolves to 169.254.169.254, a cloud metadata "
        "address; allow it with XUELIANG_EGRESS__ALLOW=169.254.169.254/32"
    )
    body = {"name": "s", "rtsp_url": "rtsp://10.0.0.5/main", "substream_url": "rtsp://[fe80::9]/s"}
    _refused(api.client.post(CAMS, json=body, headers=h), ["substream_url"], "link-local")
    # A local RTSP relay is a camera like any other.
    ok = api.client.post(
        CAMS, json={"name": "relay", "rtsp_url": "rtsp://127.0.0.1:8554/a"}, headers=h
    )
    assert ok.status_code == 201, ok.text
    cid = ok.json()["id"]
    patch = {"rtsp_url": "rtsp://100.100.100.200/live"}
    r = api.client.patch(f"{CAMS}/{cid}", json=patch, headers=h)
    _refused(r, ["rtsp_url"], "100.100.100.200, a cloud metadata address")
    got = api.client.get(f"{CAMS}/{cid}", headers=h).json()
    assert got["rtsp_url"] == "rtsp://127.0.0.1:8554/a"
    listed = api.client.get(CAMS, headers=h).json()["items"]
    assert [c["name"] for c in listed] == ["relay"]


def test_an_onvif_host_is_checked_before_the_probe(api: Api) -> None:
    onvif = {"host": "169.254.169.254", "port": 80, "username": "admin", "password": "pw"}
    r = api.client.post(CAMS, json={"name": "o", "onvif": onvif}, headers=api.as_role("integrator"))
    _refused(r, ["onvif", "host"], "a cloud metadata address")


def test_an_import_names_every_refused_row_and_creates_none(api: Api) -> None:
    h = api.as_role("integrator")
    rows = [
        {"name": "ok", "rtsp_url": "rtsp://192.0.2.7/main"},
        {"name": "meta", "rtsp_url": "rtsp://u:pw@169.254.169.254/main"},
        {
            "name": "ll",
            "rtsp_url": "rtsp://192.0.2.8/main",
            "substream_url": "rtsp://169.254.3.3/s",
        },
    ]
    r = api.client.post(f"{CAMS}/import", json=rows, headers=h)
    assert r.status_code == 422, r.text
    problems = [(p["line"], p["field"]) for p in r.json()["detail"]]
    assert problems == [(2, "rtsp_url"), (3, "substream_url")]
    assert "pw" not in r.text and "cloud metadata address" in r.text
    csv = "name,rtsp_url\nok,rtsp://192.0.2.7/main\nbad,rtsp://[fe80::1]/main\n"
    r = api.client.post(f"{CAMS}/import", content=csv, headers={**h, "Content-Type": "text/csv"})
    assert r.status_code == 422, r.text
    assert [(p["line"], p["field"]) for p in r.json()["detail"]] == [(3, "rtsp_url")]
    assert api.client.get(CAMS, headers=h).json()["items"] == []
