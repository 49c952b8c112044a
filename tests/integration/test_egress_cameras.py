"""A camera is checked against the egress policy before every connection, not only when it
was registered: one whose address the policy refuses by the time it connects is not
connected, and its status says why — against the real GStreamer RTSP server.

The camera's address is this machine's own IPv6 link-local address (the only refused kind
a test can listen on without changing the network), forwarded to the RTSP server on
loopback: with ``fe80::/10`` allowed the camera comes online through it; the same
installation restarted with the default policy never opens a connection to it.

And DNS rebinding: the reader connects to the address the policy judged, never resolving
the name again. The policy's lookup is given answers the system resolver (FFmpeg's) does
not give, as a hostile DNS server with a zero TTL would answer one lookup and not the next.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from config.settings import Settings
from ingest import egress
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

    def __init__(self, address: str, interface: str | None, to_port: int) -> None:
        self.to_port = to_port
        self.connections = 0
        if interface is None:  # an IPv4 address
            self._server = socket.create_server((address, 0))
            self.url = f"rtsp://{address}:{self._server.getsockname()[1]}"
        else:
            where = socket.getaddrinfo(f"{address}%{interface}", 0, socket.AF_INET6)[0][4]
            self._server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            self._server.bind(where)
            self._server.listen()
            self.url = f"rtsp://[{address}%{interface}]:{self._server.getsockname()[1]}"
        self.port: int = self._server.getsockname()[1]
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


def _resolving(monkeypatch: pytest.MonkeyPatch, answers: dict[str, str]) -> None:
    """The policy's lookups of ``answers``' names get those addresses; FFmpeg's do not."""
    real = egress._getaddrinfo

    def lookup(host: str) -> list[egress.IPAddress]:
        if host in answers:
            return [ipaddress.ip_address(answers[host])]
        return real(host)

    monkeypatch.setattr(egress, "_getaddrinfo", lookup)


def test_a_camera_is_read_from_the_address_the_policy_judged(
    make_settings: Callable[..., Settings],
    rtsp_server: Callable[..., RtspServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = rtsp_server({"/cam": live_pattern(fps=10)})
    fwd = Forwarder("127.0.0.1", None, server.port)
    # A name only the policy's lookup knows (FFmpeg would find no such host), and
    # "localhost" rebound: the policy is told 192.0.2.10 (TEST-NET-1: routed nowhere), while
    # FFmpeg would resolve it to this host and reach the forwarder.
    _resolving(monkeypatch, {"cam.rebind.test": "127.0.0.1", "localhost": "192.0.2.10"})
    settings = make_settings(
        auth={"bootstrap_token": TOKEN},
        ingest={"backoff_initial_s": 0.5, "backoff_max_s": 1.0, "open_timeout_s": 2.0},
    )
    live, http = _service(settings)
    try:
        named = f"rtsp://cam.rebind.test:{fwd.port}/cam"
        r = http.post("/api/v1/cameras", json={"name": "named", "rtsp_url": named})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        wait_for(lambda: _status(http, cid)["state"] == "online", 30, "online, at 127.0.0.1")
        assert fwd.connections >= 1
        before = fwd.connections

        rebound = f"rtsp://user:pw@localhost:{fwd.port}/cam"
        r = http.post("/api/v1/cameras", json={"name": "rebound", "rtsp_url": rebound})
        assert r.status_code == 201, r.text
        other = r.json()["id"]
        st = wait_for(
            lambda: (s := _status(http, other))["last_error"] is not None and s, 20, "a failure"
        )
        threading.Event().wait(4)  # more attempts, each to 192.0.2.10
        assert _status(http, other)["state"] != "online", st
        assert fwd.connections == before, "a connection reached this host through the name"
        assert ":pw@" not in str(st)  # the password is not shown
        print(f"rebound camera: {st['state']}, {st['last_error']}")
    finally:
        http.close()
        live.__exit__(None, None, None)
        fwd.close()
