"""ONVIF against real virtual cameras: two ipycam instances in a private network namespace.

Everything that talks to the cameras runs inside the namespace (see tests/peers/onvif.py):
the probes and discovery of ``ingest`` on the namespace's thread, and the whole service,
``xueliang serve``, as a process in it, driven over HTTP from that thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from ingest.discovery import MULTICAST_GROUP, DiscoveredDevice, discover
from ingest.egress import EgressPolicy, EgressRefused
from ingest.onvif import (
    NotOnvif,
    OnvifAuthError,
    OnvifDevice,
    OnvifError,
    OnvifNoMedia,
    OnvifTimeout,
    OnvifUnreachable,
    choose_profiles,
    choose_streams,
    probe,
    warm_up,
)
from tests.conftest import wait_for
from tests.peers.onvif import HOST, REPO, IpyCam, NetNamespace, NsHttp, kill_group

# Fixtures onvif_netns and ipycams (also fine once tests/conftest.py lists the plugin).
pytestmark = pytest.mark.slow

TOKEN = "xl_test_onvif_bootstrap_token_000001"
CLOSED_PORT = 18099
WEB_PORT = 18090  # a plain HTTP server: not an ONVIF device
SILENT_PORT = 18091  # accepts connections, never answers
NO_MEDIA_PORT = 18092  # an ONVIF device service without a media service
ELSEWHERE_PORT = 18093  # a device service that names its media service at another host
SERVE_PORT = 8000


# --- peers that are not cameras ------------------------------------------------------------


@pytest.fixture(scope="module")
def web_server(onvif_netns: NetNamespace) -> Iterator[None]:
    """``python -m http.server`` in the namespace: HTTP, but no ONVIF."""
    proc = onvif_netns.popen(
        [sys.executable, "-m", "http.server", str(WEB_PORT), "--bind", HOST],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        onvif_netns.call(_wait_port, WEB_PORT)
        yield
    finally:
        kill_group(proc)


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?><s:Envelope '
    'xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
    'xmlns:tt="http://www.onvif.org/ver10/schema"><s:Body>{}</s:Body></s:Envelope>'
)
# Answers of a device service that has no media service (a door controller, an NVR's
# management port), in the shape ipycam and the ONVIF Core spec give them.
_NO_MEDIA_ANSWERS = {
    "GetSystemDateAndTime": "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
    "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
    "<tt:UTCDateTime><tt:Time><tt:Hour>{h}</tt:Hour><tt:Minute>{m}</tt:Minute>"
    "<tt:Second>{s}</tt:Second></tt:Time><tt:Date><tt:Year>{Y}</tt:Year>"
    "<tt:Month>{M}</tt:Month><tt:Day>{D}</tt:Day></tt:Date></tt:UTCDateTime>"
    "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>",
    "GetServices": "<tds:GetServicesResponse><tds:Service>"
    "<tds:Namespace>http://www.onvif.org/ver10/device/wsdl</tds:Namespace>"
    f"<tds:XAddr>http://{HOST}:{NO_MEDIA_PORT}/onvif/device_service</tds:XAddr>"
    "<tds:Version><tt:Major>2</tt:Major><tt:Minor>5</tt:Minor></tds:Version>"
    "</tds:Service></tds:GetServicesResponse>",
    "GetDeviceInformation": "<tds:GetDeviceInformationResponse>"
    "<tds:Manufacturer>Acme</tds:Manufacturer><tds:Model>DoorCtl-2</tds:Model>"
    "<tds:FirmwareVersion>3.1</tds:FirmwareVersion><tds:SerialNumber>AC-77</tds:SerialNumber>"
    "<tds:HardwareId>1</tds:HardwareId></tds:GetDeviceInformationResponse>",
}


# The same device, naming a media service at the cloud metadata address.
_ELSEWHERE_ANSWERS = {
    **_NO_MEDIA_ANSWERS,
    "GetServices": _NO_MEDIA_ANSWERS["GetServices"].replace(
        "</tds:GetServicesResponse>",
        "<tds:Service><tds:Namespace>http://www.onvif.org/ver10/media/wsdl</tds:Namespace>"
        "<tds:XAddr>http://169.254.169.254/latest/meta-data/</tds:XAddr>"
        "<tds:Version><tt:Major>2</tt:Major><tt:Minor>5</tt:Minor></tds:Version>"
        "</tds:Service></tds:GetServicesResponse>",
    ),
}


async def _no_media_answer(request: web.Request) -> web.Response:
    return _answer(_NO_MEDIA_ANSWERS, await request.text())


async def _elsewhere_answer(request: web.Request) -> web.Response:
    return _answer(_ELSEWHERE_ANSWERS, await request.text())


def _answer(answers: dict[str, str], body: str) -> web.Response:
    now = datetime.now(UTC)
    for action, answer in answers.items():
        if action in body:
            filled = answer.format(
                h=now.hour, m=now.minute, s=now.second, Y=now.year, M=now.month, D=now.day
            )
            return web.Response(text=_ENVELOPE.format(filled), content_type="application/soap+xml")
    return web.Response(status=400, text="unsupported")


# --- probing ------------------------------------------------------------------------------


def test_probe_finds_identity_profiles_and_maps_main_and_sub(
    onvif_netns: NetNamespace, ipycams: list[IpyCam]
) -> None:
    cam = ipycams[0]

    async def warm_then_probe() -> tuple[OnvifDevice, float, float]:
        started = time.monotonic()
        await warm_up()  # what the first probe of a process would otherwise pay
        warm = time.monotonic() - started
        started = time.monotonic()
        device = await probe(HOST, cam.onvif_port, cam.username, cam.password, 10)
        return device, warm, time.monotonic() - started

    device, warm_s, probe_s = onvif_netns.call(asyncio.run, warm_then_probe())
    print(f"WSDL warm-up {warm_s:.2f} s, then probe {probe_s:.2f} s")
    assert (device.manufacturer, device.model, device.serial) == (
        "PythonCam",
        "VirtualCam-1",
        "PY-000001",
    )
    assert device.firmware and device.ptz
    by_token = {p.token: p for p in device.profiles}
    assert (by_token["Profile_Main"].width, by_token["Profile_Main"].height) == (640, 360)
    assert (by_token["Profile_Sub"].width, by_token["Profile_Sub"].height) == (320, 180)
    assert {p.encoding for p in device.profiles} == {"H264"}
    assert device.snapshot_uri == f"http://{HOST}:{cam.onvif_port}/snapshot.jpg"
    main, sub = choose_profiles(device)
    assert (main.token, sub and sub.token) == ("Profile_Main", "Profile_Sub")
    assert choose_streams(device) == (
        f"rtsp://{HOST}:{cam.rtsp_port}/video_main",
        f"rtsp://{HOST}:{cam.rtsp_port}/video_sub",
    )
    assert probe_s < 3.0


def test_each_failure_gets_its_own_clear_error(
    onvif_netns: NetNamespace, ipycams: list[IpyCam], web_server: None
) -> None:
    cam = ipycams[0]

    async def attempt(port: int, password: str, timeout: float = 5.0) -> OnvifError:
        with pytest.raises(OnvifError) as caught:
            await probe(HOST, port, cam.username, password, timeout)
        return caught.value

    async def all_failures() -> dict[str, tuple[OnvifError, float]]:
        silent = socket.create_server((HOST, SILENT_PORT))  # listens, never answers
        runner = web.AppRunner(web.Application())
        runner.app.router.add_post("/onvif/device_service", _no_media_answer)
        await runner.setup()
        await web.TCPSite(runner, HOST, NO_MEDIA_PORT).start()
        cases = {
            "wrong password": (cam.onvif_port, "not-the-password", 5.0),
            "closed port": (CLOSED_PORT, cam.password, 5.0),
            "not onvif": (WEB_PORT, cam.password, 5.0),
            "timeout": (SILENT_PORT, cam.password, 1.0),
            "no media": (NO_MEDIA_PORT, cam.password, 5.0),
        }
        found = {}
        try:
            for what, (port, password, timeout) in cases.items():
                started = time.monotonic()
                err = await attempt(port, password, timeout)
                found[what] = (err, time.monotonic() - started)
        finally:
            silent.close()
            await runner.cleanup()
        return found

    found = onvif_netns.call(asyncio.run, all_failures())
    expected = {
        "wrong password": (OnvifAuthError, "rejected the username or password"),
        "closed port": (OnvifUnreachable, "connection refused"),
        "not onvif": (NotOnvif, "not an ONVIF device"),
        "timeout": (OnvifTimeout, "did not answer within 1 s"),
        "no media": (OnvifNoMedia, "has no media service"),
    }
    for what, (kind, words) in expected.items():
        err, took = found[what]
        assert type(err) is kind, (what, err)
        assert words in str(err), (what, str(err))
        assert cam.password not in str(err) and "not-the-password" not in str(err)
        assert took < 6.0, (what, took)
    assert found["timeout"][1] == pytest.approx(1.0, abs=0.5)
    assert len({str(err) for err, _ in found.values()}) == len(found)


def test_service_addresses_the_device_names_are_judged_by_the_egress_policy(
    onvif_netns: NetNamespace,
) -> None:
    """A device (or whatever answers at its address) names where its services are: a media
    service at the metadata address is refused before any request goes there."""

    async def both() -> tuple[BaseException, BaseException]:
        runner = web.AppRunner(web.Application())
        runner.app.router.add_post("/onvif/device_service", _elsewhere_answer)
        await runner.setup()
        await web.TCPSite(runner, HOST, ELSEWHERE_PORT).start()
        try:
            with pytest.raises(EgressRefused) as refused:
                await probe(HOST, ELSEWHERE_PORT, "admin", "pw", 5.0, egress=EgressPolicy())
            # Without a policy the probe goes there, and fails the way the network says.
            with pytest.raises(OnvifError) as followed:
                await probe(HOST, ELSEWHERE_PORT, "admin", "pw", 3.0)
        finally:
            await runner.cleanup()
        return refused.value, followed.value

    refused, followed = onvif_netns.call(asyncio.run, both())
    assert refused.field == "onvif.xaddrs.media", refused
    assert "169.254.169.254" in str(refused) and "cloud metadata" in str(refused)
    assert "XUELIANG_EGRESS__ALLOW" in str(refused)
    print(f"refused: {refused}\nwithout a policy: {followed!r}")
    assert isinstance(followed, OnvifUnreachable | OnvifTimeout), repr(followed)


# --- discovery ----------------------------------------------------------------------------

_WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
_MATCH = (
    '<?xml version="1.0" encoding="UTF-8"?><s:Envelope '
    'xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="' + _WSA + '" '
    'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
    'xmlns:dn="http://www.onvif.org/ver10/network/wsdl" '
    'xmlns:wsdp="http://schemas.xmlsoap.org/ws/2006/02/devprof" '
    'xmlns:pri="http://schemas.microsoft.com/windows/2006/08/wdp/print">'
    "<s:Header><a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/{action}</a:Action>"
    "<a:MessageID>urn:uuid:0e0c5c7e-5a1e-4c39-9d8e-{n:012d}</a:MessageID>"
    "<a:RelatesTo>{relates}</a:RelatesTo></s:Header>"
    "<s:Body><d:ProbeMatches><d:ProbeMatch><a:EndpointReference><a:Address>{endpoint}"
    "</a:Address></a:EndpointReference><d:Types>{types}</d:Types><d:Scopes>{scopes}"
    "</d:Scopes><d:XAddrs>{xaddrs}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion>"
    "</d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>"
)


def _noise(probe_id: str, probe_datagram: bytes) -> list[bytes]:
    """What else arrives on a busy segment: none of it is an ONVIF camera answering us."""
    camera = {
        "types": "dn:NetworkVideoTransmitter",
        "scopes": "onvif://www.onvif.org/name/Elsewhere",
        "xaddrs": "http://127.0.0.9/onvif/device_service",
    }
    printer = {
        "types": "wsdp:Device pri:PrintDeviceType",
        "scopes": "",
        "xaddrs": "http://127.0.0.8:5357/printer",
    }
    return [
        b"\x00\xffgarbage, not XML",
        probe_datagram,  # our own probe, looped back
        _MATCH.format(action="Hello", relates="", n=1, endpoint="urn:uuid:hello", **camera)
        .replace("<a:RelatesTo></a:RelatesTo>", "")
        .encode(),
        _MATCH.format(  # an answer to another client's probe
            action="ProbeMatches", relates="urn:uuid:other", n=2, endpoint="urn:uuid:x", **camera
        ).encode(),
        _MATCH.format(  # a printer answering our probe (WSD printers answer everything)
            action="ProbeMatches", relates=probe_id, n=3, endpoint="urn:uuid:prn", **printer
        ).encode(),
        _MATCH.format(  # an ONVIF answer without a service address
            action="ProbeMatches", relates=probe_id, n=4, endpoint="urn:uuid:y", **camera
        )
        .replace("http://127.0.0.9/onvif/device_service", "")
        .encode(),
    ]


class _NoisyNeighbour(asyncio.DatagramProtocol):
    """Listens on the WS-Discovery group like a device and answers each probe with noise."""

    def __init__(self) -> None:
        self.sent = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        found = re.search(rb"MessageID>([^<]+)<", data)
        if self.transport is None or b"discovery/Probe<" not in data or found is None:
            return
        for datagram in _noise(found.group(1).decode(), data):
            self.transport.sendto(datagram, addr)
            self.sent += 1


async def _neighbour() -> tuple[asyncio.DatagramTransport, _NoisyNeighbour]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # shares 3702 with ipycam
    sock.bind(("", MULTICAST_GROUP[1]))
    group = struct.pack("4s4s", socket.inet_aton(MULTICAST_GROUP[0]), socket.inet_aton(HOST))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_NoisyNeighbour, sock=sock)
    return transport, protocol


def test_discovery_finds_both_cameras_and_not_the_noise(
    onvif_netns: NetNamespace, ipycams: list[IpyCam]
) -> None:
    async def discover_with_noise() -> tuple[list[DiscoveredDevice], int, float]:
        transport, neighbour = await _neighbour()
        try:
            started = time.monotonic()
            found = await discover(HOST, timeout=1.5)
            return found, neighbour.sent, time.monotonic() - started
        finally:
            transport.close()

    found, noise_sent, took = onvif_netns.call(asyncio.run, discover_with_noise())
    print(f"discovery: {len(found)} devices in {took:.2f} s, {noise_sent} noise datagrams")
    assert noise_sent >= 6  # the neighbour did hear the probe and answered
    assert sorted((d.host, d.port, d.name) for d in found) == [
        (HOST, ipycams[0].onvif_port, "Gate-North"),
        (HOST, ipycams[1].onvif_port, "Yard-South"),
    ]
    assert len({d.endpoint for d in found}) == 2
    assert all(d.address.endswith("/onvif/device_service") for d in found)
    assert took == pytest.approx(1.5, abs=0.3)


# --- the whole service --------------------------------------------------------------------


@pytest.fixture
def service(onvif_netns: NetNamespace, tmp_path: Path) -> Iterator[tuple[NsHttp, Path]]:
    """``xueliang serve`` (SQLite, local objects) in the namespace, and a client for it."""
    log_path = tmp_path / "serve.log"
    env = {
        **os.environ,
        "XUELIANG_DATA_DIR": str(tmp_path / "data"),
        "XUELIANG_AUTH__BOOTSTRAP_TOKEN": TOKEN,
        "XUELIANG_INGEST__BACKOFF_INITIAL_S": "0.5",
    }
    argv = [sys.executable, "-m", "cli.main", "serve", "--host", HOST, "--port", str(SERVE_PORT)]
    with log_path.open("wb") as out:
        proc = onvif_netns.popen(argv, stdout=out, stderr=out, env=env, cwd=REPO)
    http = onvif_netns.http(
        f"http://{HOST}:{SERVE_PORT}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    try:
        onvif_netns.call(_wait_port, SERVE_PORT, 30.0)
        yield http, log_path
    finally:
        http.close()
        kill_group(proc)


def test_registered_by_address_and_password_alone_streams_and_is_steered(
    service: tuple[NsHttp, Path], ipycams: list[IpyCam], web_server: None
) -> None:
    http, log_path = service
    gate, yard = ipycams
    onvif = {"host": HOST, "port": gate.onvif_port, "username": "admin", "password": gate.password}
    responses: list[str] = []

    started = time.monotonic()
    created = http.post("/api/v1/cameras", json={"name": "gate", "onvif": onvif})
    print(f"POST /cameras with onvif: {time.monotonic() - started:.2f} s")
    responses.append(created.text)
    assert created.status_code == 201, created.text
    cam = created.json()
    assert cam["rtsp_url"] == f"rtsp://admin:***@{HOST}:{gate.rtsp_port}/video_main"
    assert cam["substream_url"] == f"rtsp://admin:***@{HOST}:{gate.rtsp_port}/video_sub"

    shown = http.get(f"/api/v1/cameras/{cam['id']}/onvif")
    responses.append(shown.text)
    info = shown.json()
    assert (info["manufacturer"], info["model"], info["serial"]) == (
        "PythonCam",
        "VirtualCam-1",
        "PY-000001",
    )
    assert (info["main_profile"], info["sub_profile"]) == ("Profile_Main", "Profile_Sub")
    assert info["password"] == "***" and info["ptz"] is True
    assert {p["token"]: p["width"] for p in info["profiles"]} == {
        "Profile_Main": 640,
        "Profile_Sub": 320,
    }

    def status() -> dict[str, Any]:
        st: dict[str, Any] = http.get(f"/api/v1/cameras/{cam['id']}/status").json()
        return st

    online = wait_for(lambda: (s := status())["state"] == "online" and s, 30, "online")
    print(f"online {time.monotonic() - started:.1f} s after POST, fps {online['fps']}")

    _refuse_unusable_devices(http, gate, responses)
    _discover_marks_the_registered_one(http, gate, yard, cam["id"])
    _steer_and_snapshot(http, gate, cam["id"])

    again = http.post(f"/api/v1/cameras/{cam['id']}/onvif/refresh")
    responses.append(again.text)
    assert again.status_code == 200, again.text
    assert again.json()["probed_at"] > info["probed_at"]
    assert again.json()["main_profile"] == "Profile_Main"
    assert status()["state"] == "online"  # same URIs: the stream was not restarted

    _firmware_update_moves_the_streams(http, gate, cam["id"], status)

    assert all(gate.password not in text for text in responses)
    assert gate.password not in log_path.read_text(errors="replace")
    stored = [f for f in (log_path.parent / "data").rglob("*") if f.is_file()]
    assert stored and not [f for f in stored if gate.password.encode() in f.read_bytes()]


def _firmware_update_moves_the_streams(
    http: NsHttp, gate: IpyCam, camera_id: str, status: Callable[[], dict[str, Any]]
) -> None:
    """After the camera moved its RTSP port, a refresh follows it and the stream comes back."""
    gate.restart(rtsp_port=gate.rtsp_port + 1)
    r = http.post(f"/api/v1/cameras/{camera_id}/onvif/refresh")
    assert r.status_code == 200, r.text
    moved = http.get(f"/api/v1/cameras/{camera_id}").json()
    assert moved["rtsp_url"] == f"rtsp://admin:***@{HOST}:{gate.rtsp_port}/video_main"
    assert moved["substream_url"] == f"rtsp://admin:***@{HOST}:{gate.rtsp_port}/video_sub"
    wait_for(lambda: status()["state"] == "online", 30, "online after the refresh")


def _refuse_unusable_devices(http: NsHttp, gate: IpyCam, responses: list[str]) -> None:
    """Wrong password, closed port, a web server: a 422 each, with its own words."""
    bodies = {
        "rejected the username or password": {"port": gate.onvif_port, "password": "nope-nope"},
        "connection refused": {"port": CLOSED_PORT, "password": gate.password},
        "not an ONVIF device": {"port": WEB_PORT, "password": gate.password},
    }
    for words, changes in bodies.items():
        onvif = {"host": HOST, "username": "admin", **changes}
        r = http.post("/api/v1/cameras", json={"name": "bad", "onvif": onvif})
        responses.append(r.text)
        assert r.status_code == 422, r.text
        assert words in r.json()["detail"], r.text
    names = [c["name"] for c in http.get("/api/v1/cameras").json()["items"]]
    assert names == ["gate"]  # nothing created half-way


def _discover_marks_the_registered_one(
    http: NsHttp, gate: IpyCam, yard: IpyCam, camera_id: str
) -> None:
    r = http.post("/api/v1/onvif/discover", json={"interface": HOST, "timeout_s": 1.0})
    assert r.status_code == 200, r.text
    items = {i["port"]: i for i in r.json()["items"]}
    assert set(items) == {gate.onvif_port, yard.onvif_port}
    assert (items[gate.onvif_port]["registered"], items[gate.onvif_port]["camera_ids"]) == (
        True,
        [camera_id],
    )
    assert (items[yard.onvif_port]["registered"], items[yard.onvif_port]["name"]) == (
        False,
        "Yard-South",
    )


def _steer_and_snapshot(http: NsHttp, gate: IpyCam, camera_id: str) -> None:
    ptz = f"/api/v1/cameras/{camera_id}/ptz"
    moved = http.post(ptz, json={"action": "move", "pan": 0.5, "duration_s": 1.0})
    assert moved.status_code == 200, moved.text
    assert moved.json()["stops_after_s"] == 1.0
    # ipycam ignores the ONVIF move timeout: only the service's own stop ends the move
    # (unstopped, pan would run on to its end stop, 1.0).
    stopped = wait_for(lambda: not (s := gate.ptz_status())["moving"] and s, 5, "PTZ stop")
    assert 0.2 < stopped["pan"] < 0.9  # right at 0.5/s for about 1 s
    r = http.post(ptz, json={"action": "preset", "preset_token": "door"})
    assert r.status_code == 200, r.text
    at = gate.ptz_status()
    assert (at["pan"], at["tilt"]) == (0.5, -0.25)
    assert http.post(ptz, json={"action": "stop"}).status_code == 200
    jpeg = http.get(f"/api/v1/cameras/{camera_id}/onvif/snapshot.jpg")
    assert jpeg.status_code == 200 and jpeg.content[:2] == b"\xff\xd8"
