"""GB/T 28181 scale-out (issue #16): one SIP address, channel cameras on several workers.

Two camera workers (``serve --role worker``) and an API node share one PostgreSQL
database; both workers have ``gb28181.enabled`` with the same SIP port and their own media
port ranges. Exactly one holds the endpoint's lease and binds the port; a device played by
SIPp registers to it. Of the device's two channel cameras each worker runs one, and both
stream at the device's rate: the one on the other worker through an INVITE that worker
asked of the holder over HTTP, with its own media port in the SDP. Alarms reach the
holder: the incident of its own camera gets a clip, the other worker's is recorded without
one. The holder is then killed: the other worker takes the lease and binds the SIP port
within the lease time, the device registers to it again, and the killed worker's camera
comes back there.

Also here: two contenders racing for one lease on PostgreSQL never hold it together.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.gb28181 import BYE_PATH, INVITE_PATH, SERVICE
from runtime.internal import INTERNAL_HEADER
from storage.db import Database
from storage.models import utcnow
from storage.service_leases import LeaseHolder, claim, current_holder
from tests.conftest import free_port, wait_for
from tests.installation import Installation, Node, pid_of
from tests.peers.gb28181.device import ChannelSpec, GbDevice, gb_device, make_channels
from tests.peers.gb28181.media import make_ps_file

__all__ = ["gb_device"]  # the fixture, used by name

pytestmark = pytest.mark.slow

TOKEN = "xl_test_admin_token_gb28181_scale_out"
DEVICE = "34020000001320000001"
PASSWORD = "12345678"
LEASE_S = 6.0
FPS = 10


def _gb_env(sip_port: int, media: tuple[int, int]) -> dict[str, str]:
    """A camera worker with GB/T 28181: the same SIP port (only the holder binds it), its
    own media ports."""
    return {
        "XUELIANG_GB28181__ENABLED": "true",
        "XUELIANG_GB28181__PORT": str(sip_port),
        "XUELIANG_GB28181__PASSWORD": PASSWORD,
        "XUELIANG_GB28181__KEEPALIVE_S": "2",
        "XUELIANG_GB28181__KEEPALIVE_MISSES": "5",
        "XUELIANG_GB28181__MEDIA_PORTS": f"{media[0]}-{media[1]}",
    }


def _lease(db: Database) -> LeaseHolder | None:
    with db.session() as session:
        return current_holder(session, SERVICE, utcnow())


@pytest.mark.timeout(90)
def test_two_workers_read_channels_through_one_endpoint_and_a_standby_takes_over(
    shared_db: str, tmp_path: Path, gb_device: Callable[..., GbDevice]
) -> None:
    started = time.monotonic()
    db = Database(shared_db)
    db.migrate()
    sip_port = free_port()
    low = 40000 + (sip_port % 100) * 40
    ranges = [(low, low + 19), (low + 20, low + 39)]
    site = Installation(shared_db, tmp_path, TOKEN, LEASE_S)
    failed = True
    try:
        workers = [
            site.start(f"w{n}", "worker", _gb_env(sip_port, media), media)
            for n, media in enumerate(ranges)
        ]
        api_node = site.start("api", "api")
        wait_for(lambda: all(n.ready() for n in site.nodes), 60, "three processes serving")
        holder = wait_for(lambda: _lease(db), 10, "one worker holding the SIP endpoint")
        by_pid = {n.process.pid: n for n in workers}
        active = by_pid[pid_of(holder.holder) or 0]
        standby = next(n for n in workers if n is not active)
        assert holder.url == active.url  # where the others ask it (server.advertise_url)
        _internal_routes_refuse_strangers(active, api_node)

        http = httpx.Client(
            base_url=api_node.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        ps = make_ps_file(seconds=4, fps=FPS, width=320, height=240, motion="static")
        channels = make_channels(DEVICE, 2, ps)
        device = gb_device(
            DEVICE, PASSWORD, platform_port=sip_port, channels=channels, keepalive_s=2.0
        )
        assert device.register().ok
        wait_for(lambda: len(_channels(http)) == 2, 20, "the catalog of 2 channels")
        # Only the holder serves SIP: the standby has not bound the port, nothing reached it.
        assert _sip_received(active) > 0 and _sip_received(standby) == 0
        cameras = [_camera(http, c.channel_id, f"ch{n}") for n, c in enumerate(channels)]

        def spread() -> dict[int, str] | None:
            statuses = {c: _status(http, c) for c in cameras}
            pids = {pid_of(s.get("worker_id")) or 0: c for c, s in statuses.items()}
            online = all(s["state"] == "online" for s in statuses.values())
            return pids if online and set(pids) == set(by_pid) else None

        placed = wait_for(spread, 40, "each worker running one channel camera, online")
        remote_camera = placed[standby.process.pid]
        moved_camera = placed[active.process.pid]
        _assert_rate(http, cameras)
        # The standby's camera streams to the standby's own media port: its INVITE, sent by
        # the holder, named the standby's port in the SDP.
        ports = {int(e.fields["port"]) for e in device.events("INVITE")}
        assert _in_range(ports, standby) and _in_range(ports, active), ports

        _alarms_are_recorded(http, device, channels, placed, active, standby)

        active.process.send_signal(signal.SIGKILL)
        active.process.wait(timeout=10)
        killed = time.monotonic()

        def taken_over() -> LeaseHolder | None:
            lease = _lease(db)
            return (
                lease if lease is not None and pid_of(lease.holder) == standby.process.pid else None
            )

        wait_for(taken_over, LEASE_S + 15, "the standby to take the endpoint's lease")
        leased_after = time.monotonic() - killed
        # A device re-registers within its registration refresh; this one does it now.
        wait_for(lambda: device.register().ok, 20, "the device registered to the new holder")
        registered_after = time.monotonic() - killed

        def back() -> bool:
            statuses = [_status(http, c) for c in (moved_camera, remote_camera)]
            return all(
                s["state"] == "online" and pid_of(s.get("worker_id")) == standby.process.pid
                for s in statuses
            )

        wait_for(back, 40, "the killed worker's camera back on the survivor")
        back_after = time.monotonic() - killed
        print(
            f"\nSIGKILL of the holder -> lease taken {leased_after:.1f} s, device registered "
            f"{registered_after:.1f} s, its camera online on the survivor {back_after:.1f} s "
            f"(lease {LEASE_S:g} s); whole test {time.monotonic() - started:.0f} s"
        )
        assert leased_after <= LEASE_S + 10
        _assert_rate(http, [moved_camera, remote_camera])
        failed = False
    finally:
        site.close(failed)
        db.dispose()


def _alarms_are_recorded(
    http: httpx.Client,
    device: GbDevice,
    channels: list[ChannelSpec],
    placed: dict[int, str],
    active: Node,
    standby: Node,
) -> None:
    """Alarms reach the holder: its own camera's incident gets a clip; the other worker's
    camera's incident is recorded without one (docs/deployment.md)."""
    cameras = {c.channel_id: _camera_of(http, c.channel_id) for c in channels}
    for node, with_clip in ((active, True), (standby, False)):
        camera_id = placed[node.process.pid]
        channel = next(ch for ch, cam in cameras.items() if cam == camera_id)
        assert device.send_alarm(channel) == "200"

        def incident(camera_id: str = camera_id) -> list[dict[str, Any]]:
            got = http.get("/api/v1/incidents", params={"camera_id": camera_id})
            return [i for i in got.json()["items"] if i["type"] == "device_alarm"]

        found = wait_for(incident, 15, f"the alarm's incident on {node.name}'s camera")
        assert (found[0]["clip"] is not None) is with_clip, found[0]


def _camera_of(http: httpx.Client, channel_id: str) -> str:
    items = http.get("/api/v1/cameras", params={"limit": 100}).json()["items"]
    return next(str(c["id"]) for c in items if (c["gb28181"] or {}).get("channel_id") == channel_id)


def _in_range(ports: set[int], node: Node) -> bool:
    assert node.media is not None
    low, high = node.media
    return any(low <= port <= high for port in ports)


def _internal_routes_refuse_strangers(holder: Node, api_node: Node) -> None:
    """No token, a wrong one: 401 everywhere; and nothing internal in the public document."""
    body = {"device_id": DEVICE, "channel_id": DEVICE, "media_host": "127.0.0.1"}
    for node in (holder, api_node):
        for path in (INVITE_PATH, BYE_PATH):
            for headers in ({}, {INTERNAL_HEADER: "0" * 64}):
                got = httpx.post(node.url + path, json=body | {"media_port": 1}, headers=headers)
                assert got.status_code == 401, (node.name, path, got.text)
    schema = httpx.get(f"{api_node.url}/openapi.json", timeout=10).json()
    assert not [p for p in schema["paths"] if p.startswith("/internal")]


def _sip_received(node: Node) -> float:
    for line in httpx.get(f"{node.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("xueliang_gb28181_sip_received_total "):
            return float(line.split()[1])
    raise AssertionError(f"{node.name}: no SIP counters in /metrics")


def _channels(http: httpx.Client) -> list[dict[str, Any]]:
    got = http.get(f"/api/v1/gb28181/devices/{DEVICE}")
    return list(got.json().get("channels", [])) if got.status_code == 200 else []


def _camera(http: httpx.Client, channel_id: str, name: str) -> str:
    created = http.post(
        "/api/v1/cameras",
        json={
            "name": name,
            "gb28181": {"device_id": DEVICE, "channel_id": channel_id},
            "analytics": {"motion": {"enabled": False}},
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _status(http: httpx.Client, camera_id: str) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"/api/v1/cameras/{camera_id}/status").json()
    return body


def _assert_rate(http: httpx.Client, cameras: list[str]) -> None:
    """Each camera at the device's frame rate (±10 %), once the rate is measured."""

    def rates() -> list[float] | None:
        got = [_status(http, c)["fps"] or 0.0 for c in cameras]
        return got if all(r == pytest.approx(FPS, rel=0.1) for r in got) else None

    wait_for(rates, 15, f"{len(cameras)} camera(s) at {FPS} fps")


def test_two_contenders_never_hold_one_lease_together(shared_db: str) -> None:
    """Two processes' claims racing on PostgreSQL: each time one of them holds the lease,
    the other's tenure has run out (no overlap), and both get their turn."""
    db = Database(shared_db, pool_size=4)
    db.migrate()
    lease_s, rounds = 0.2, 40
    tenures: list[tuple[str, datetime, datetime]] = []
    lock = threading.Lock()
    gate = threading.Barrier(2)

    def contend(holder: str) -> None:
        gate.wait()
        for n in range(rounds):
            now = utcnow()
            with db.session() as session:
                won = claim(session, "race", holder, f"http://{holder}", now, lease_s)
            if won:
                with lock:
                    tenures.append((holder, now, now + timedelta(seconds=lease_s)))
            # Each lets the lease lapse now and then (at rounds of its own): the other takes it.
            lapse = n % 7 == (3 if holder == "b" else 0)
            time.sleep(lease_s * (1.5 if lapse else 0.3))

    threads = [threading.Thread(target=contend, args=(h,)) for h in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    db.dispose()
    assert {h for h, _, _ in tenures} == {"a", "b"}, "both contenders held it in turn"
    tenures.sort(key=lambda t: t[1])
    last_end: dict[str, datetime] = {}
    for holder, start, end in tenures:
        for other, other_end in last_end.items():
            if other != holder:
                assert start >= other_end, f"{holder} took the lease while {other} held it"
        last_end[holder] = max(end, last_end.get(holder, end))
