"""Live view through an ``api`` node when the camera's worker cannot take the offer.

The happy path (the offer forwarded to the worker, Chromium decoding its media, the view
back after the worker dies) is ``tests/e2e/test_live_any_node.py``. Here: each way the
forwarding can fail says what happened and whether retrying helps — 503 with
``Retry-After`` while no live worker can answer, 502 when the worker refuses the
installation's token — and the internal route refuses callers without the token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from api.app import create_app
from config.settings import Settings
from runtime.live import LIVE_PATH
from runtime.services import Services
from storage.models import CameraLease, Worker, utcnow
from storage.tokens import create_token
from tests.api.conftest import BOOTSTRAP
from tests.conftest import LiveServer, free_port

# What the route needs to forward: an SDP body (the worker parses it, not the api node).
OFFER = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\n"


class Node:
    def __init__(self, client: TestClient, services: Services, operator: str) -> None:
        self.client, self.services = client, services
        self.headers = {"Authorization": f"Bearer {operator}"}

    def camera(self) -> str:
        created = self.client.post(
            "/api/v1/cameras",
            json={"name": "cam", "rtsp_url": "rtsp://192.0.2.1/stream"},
            headers={"Authorization": f"Bearer {BOOTSTRAP}"},
        )
        assert created.status_code == 201, created.text
        camera_id: str = created.json()["id"]
        return camera_id

    def lease(self, camera_id: str, url: str | None) -> None:
        """The camera leased to a (pretend) live worker reached at ``url``."""
        now = utcnow()
        with self.services.tx() as session:
            session.add(
                Worker(
                    id="w1:4242:abcdef", host="w1", pid=4242, role="worker",
                    started_at=now, last_seen=now, url=url,
                )
            )  # fmt: skip
            session.add(
                CameraLease(
                    camera_id=camera_id,
                    worker_id="w1:4242:abcdef",
                    expires_at=now + timedelta(seconds=60),
                    acquired_at=now,
                )
            )

    def offer(self, camera_id: str) -> tuple[int, str, str | None]:
        r = self.client.post(
            f"/api/v1/cameras/{camera_id}/webrtc",
            content=OFFER,
            headers={**self.headers, "Content-Type": "application/sdp"},
        )
        return r.status_code, r.json().get("detail", ""), r.headers.get("Retry-After")


@pytest.fixture
def api_node(api_settings: Settings) -> Iterator[Node]:
    app = create_app(api_settings, role="api")
    with TestClient(app) as client:
        services: Services = app.state.services
        with services.db.session() as session:
            operator, _ = create_token(session, "operator", "operator-forwarding")
        yield Node(client, services, operator)


def test_no_worker_runs_the_camera_503_retry(api_node: Node) -> None:
    camera_id = api_node.camera()
    status, detail, retry = api_node.offer(camera_id)
    assert (status, retry) == (503, "2"), detail
    assert "not run by any worker" in detail


def test_a_dead_workers_lease_503_until_taken_over(api_node: Node) -> None:
    camera_id = api_node.camera()
    api_node.lease(camera_id, f"http://127.0.0.1:{free_port()}")  # nothing listens
    status, detail, retry = api_node.offer(camera_id)
    assert (status, retry) == (503, "2"), detail
    assert "did not answer" in detail and "lease_s" in detail


def test_a_worker_without_a_recorded_url_503_says_upgrade(api_node: Node) -> None:
    camera_id = api_node.camera()
    api_node.lease(camera_id, None)
    status, detail, _ = api_node.offer(camera_id)
    assert status == 503 and "upgrade" in detail, detail


def test_a_worker_of_another_key_refuses_502_naming_the_key(
    api_node: Node, make_settings: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = make_settings(
        data_dir=tmp_path_factory.mktemp("other"),
        auth={"bootstrap_token": BOOTSTRAP},
        secrets={"camera_key": Fernet.generate_key().decode()},
    )
    with LiveServer(create_app(other, role="api")) as worker:
        camera_id = api_node.camera()
        api_node.lease(camera_id, worker.url)
        status, detail, _ = api_node.offer(camera_id)
    assert status == 502, detail
    assert "401" in detail and "secrets.camera_key" in detail


def test_delete_of_a_session_nobody_has_404(api_node: Node) -> None:
    camera_id = api_node.camera()
    r = api_node.client.delete(
        f"/api/v1/cameras/{camera_id}/webrtc/{'0' * 32}", headers=api_node.headers
    )
    assert r.status_code == 404


def test_the_internal_live_route_refuses_callers_without_the_token(api_node: Node) -> None:
    camera_id = api_node.camera()
    for headers in ({}, {"X-Xueliang-Internal": "0" * 64}):
        r = api_node.client.post(
            f"{LIVE_PATH}/{camera_id}", json={"offer": OFFER, "viewer": "x"}, headers=headers
        )
        assert r.status_code == 401, r.text
