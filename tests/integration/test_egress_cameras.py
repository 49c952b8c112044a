"""A camera is checked against the egress policy before every connection, not only when it
was registered: one whose address the policy refuses by the time it connects is not
connected, and its status says why — against the real GStreamer RTSP server.

The camera's address is this machine's own IPv6 link-local address (the only refused kind
a test can listen on without changing the network), forwarded to the RTSP server on
loopback: with ``fe80::/10`` allowed the camera comes online through it; the same
installation restarted with the default policy never opens a connection to it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from config.settings import Settings
from tests.conftest import LiveServer, wait_for
from tests.peers.rtsp import RtspServer, live_pattern

pytestmark = pytest.mark.slow

TOKEN = "xl_test_admin_token_for_egress_0001"


def _link_local() -> tuple[str, str] | None:
    """(address, interface) of a link-local IPv6 address of this machine, if it has one."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            hexaddr, *_, name = line.split()
            if hexaddr.startswith("fe80"):
                groups = [hexaddr[i : i + 4] for i in range(0, 32, 4)]
                return str(socket.inet_ntop(socket.AF_INET6, bytes.fromhex("".join(groups)))), name
    return None


class Forwarder:
    """Accepts TCP on a link-local address and relays each connection to the RTSP server on
    loopback, counting the connections it was asked for."""

    def __init__(self, address: str, interface: str, to_port: int) -> None:
        self.to_port = to_port
        self.connections = 0
        where = socket.getaddrinfo(f"{address}%{interface}", 0, socket.AF_INET6)[0][4]
        self._server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self._server.bind(where)
        self._server.listen()
        self.port: int = self._server.getsockname()[1]
        self.url = f"rtsp://[{address}%{interface}]:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._server.accept()
                self.connections += 1
                upstream = socket.create_connection(("127.0.0.1", self.to_port))
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._server.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def forwarder(rtsp_server: Callable[..., RtspServer]) -> Iterator[tuple[Forwarder, str]]:
    found = _link_local()
    assert found is not None, (
        "this test needs an IPv6 link-local address (fe80::/10) on a network interface to "
        "stand for a refused camera host: enable IPv6 on one (sysctl net.ipv6.conf.all."
        "disable_ipv6=0)"
    )
    address, interface = found
    server = rtsp_server({"/cam": live_pattern(fps=10)})
    fwd = Forwarder(address, interface, server.port)
    yield fwd, f"{fwd.url}/cam"
    fwd.close()


def _service(settings: Settings) -> tuple[LiveServer, httpx.Client]:
    live = LiveServer(create_app(settings)).__enter__()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    return live, httpx.Client(base_url=live.url, headers=auth)


def _status(http: httpx.Client, camera_id: str) -> dict[str, Any]:
    status: dict[str, Any] = http.get(f"/api/v1/cameras/{camera_id}/status").json()
    return status


def test_a_camera_refused_at_connect_time_is_not_connected_and_says_why(
    make_settings: Callable[..., Settings], forwarder: tuple[Forwarder, str]
) -> None:
    fwd, url = forwarder
    base: dict[str, Any] = {
        "auth": {"bootstrap_token": TOKEN},
        "ingest": {"backoff_initial_s": 0.5, "backoff_max_s": 1.0, "auth_retry_s": 60.0},
    }
    live, http = _service(make_settings(**base, egress={"allow": ["fe80::/10"]}))
    try:
        r = http.post("/api/v1/cameras", json={"name": "ll", "rtsp_url": url})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        wait_for(lambda: _status(http, cid)["state"] == "online", 30, "online, forwarded")
    finally:
        http.close()
        live.__exit__(None, None, None)
    assert fwd.connections >= 1
    before = fwd.connections

    # The same installation with the default policy: the camera's address is refused now.
    live, http = _service(make_settings(**base))
    try:
        st = wait_for(lambda: (s := _status(http, cid))["state"] == "offline" and s, 20, "refused")
        assert st["last_error"].startswith("refused by the egress policy: host fe80::")
        assert (
            "a link-local address; allow it with XUELIANG_EGRESS__ALLOW=fe80::" in st["last_error"]
        )
        threading.Event().wait(3)  # backing off (auth_retry_s), not retrying in a loop
        assert _status(http, cid)["state"] == "offline"
        assert fwd.connections == before  # not one packet to the refused address
        again = http.post("/api/v1/cameras", json={"name": "ll2", "rtsp_url": url})
        assert again.status_code == 422 and "link-local" in again.text
    finally:
        http.close()
        live.__exit__(None, None, None)
