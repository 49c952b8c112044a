"""Self-check of the GB/T 28181 device peer (tests/peers/gb28181), not of the platform.

The platform side here is a throwaway SIP responder of a few dozen lines written for this
file alone (``_TinyPlatform``): it challenges REGISTER with a fixed nonce, checks the
digest with hashlib, answers 200, and sends the queries, INVITE, ACK and BYE a platform
would. It shares no code with the service; it only shows that the peer behaves.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import queue
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.conftest import wait_for
from tests.peers.gb28181.device import GbDevice, RegisterResult, make_channels
from tests.peers.gb28181.media import make_ps_file, read_ps_frames

pytestmark = pytest.mark.slow  # the peer's own self-check: make test

HOST = "127.0.0.1"
DEVICE_ID = "34020000001110000001"  # 111: DVR/NVR
PLATFORM_ID = "34020000002000000001"
DOMAIN = "3402000000"
PASSWORD = "s3cret-pw"
SSRC_TEXT = "0100000001"  # decimal, read as 100000001 (never octal)
FPS = 10
SECONDS = 3


# -- the media file and the sender --


@pytest.fixture(scope="module")
def ps_file() -> Path:
    return make_ps_file(seconds=SECONDS, fps=FPS, width=320, height=240, motion="ball")


def _psm_stream_types(data: bytes) -> list[int]:
    """Stream types listed by the first program stream map (ISO 13818-1, 2.5.4)."""
    at = data.index(b"\x00\x00\x01\xbc")
    info_length = int.from_bytes(data[at + 8 : at + 10], "big")
    pos = at + 10 + info_length
    end = pos + 2 + int.from_bytes(data[pos : pos + 2], "big")
    types, pos = [], pos + 2
    while pos < end:
        types.append(data[pos])
        pos += 4 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return types


def _gray_frames(source: Path | io.BytesIO) -> list[np.ndarray]:
    with av.open(source, mode="r", format="mpeg") as container:
        return [f.to_ndarray(format="gray").astype(np.int16) for f in container.decode(video=0)]


def test_ps_file_decodes_with_psm_h264_and_motion_only_in_the_moving_variant(
    ps_file: Path,
) -> None:
    static = make_ps_file(seconds=SECONDS, fps=FPS, width=320, height=240, motion="static")
    data = ps_file.read_bytes()
    assert _psm_stream_types(data) == [0x1B]
    moving_frames, static_frames = _gray_frames(ps_file), _gray_frames(static)
    for frames in (moving_frames, static_frames):
        assert abs(len(frames) - SECONDS * FPS) <= 1
    changed = [int((np.abs(b - a) > 25).sum()) for a, b in itertools.pairwise(moving_frames)]
    assert min(changed) > 50  # the ball moves in every frame...
    ys, xs = np.nonzero(np.abs(moving_frames[5] - moving_frames[4]) > 25)
    assert xs.min() >= 320 // 2 and ys.min() >= 240 // 2  # ...in the lower right quarter
    still = [int((np.abs(b - a) > 25).sum()) for a, b in itertools.pairwise(static_frames)]
    assert max(still) == 0
    bursts = _gray_frames(make_ps_file(seconds=SECONDS, fps=FPS, moving_s=1.0))
    moves = [bool((np.abs(b - a) > 25).sum()) for a, b in itertools.pairwise(bursts)]
    assert moves == [True] * (FPS - 1) + [False] * (SECONDS * FPS - FPS)  # 1 s, then still
    assert make_ps_file(seconds=SECONDS, fps=FPS, motion="ball") == ps_file  # cached


def test_frames_larger_than_one_pes_stay_one_access_unit() -> None:
    heavy = make_ps_file(seconds=1, fps=5, width=640, height=360, motion="snow", bitrate_kbps=20000)
    frames = read_ps_frames(heavy.read_bytes())
    assert max(len(f.data) for f in frames) > 65_535  # split over several PES by mpegpsmux
    assert len(frames) == len(_gray_frames(heavy)) == 5
    assert [f.pts for f in frames] == sorted({f.pts for f in frames})


def test_h265_is_refused_because_mpegpsmux_cannot_mux_it() -> None:
    with pytest.raises(ValueError, match=r"H\.265"):
        make_ps_file(codec="h265")


@dataclass(frozen=True)
class _Rtp:
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes

    @classmethod
    def parse(cls, packet: bytes) -> _Rtp:
        first, second, seq, ts, ssrc = struct.unpack("!BBHII", packet[:12])
        assert first == 0x80  # version 2, no padding, extension or CSRC
        return cls(bool(second & 0x80), second & 0x7F, seq, ts, ssrc, packet[12:])


def _check_rtp(packets: list[_Rtp], ssrc: int, fps: int) -> bytes:
    """Check the RTP stream of one PS file; return the PS bytes it carried."""
    assert {p.ssrc for p in packets} == {ssrc}
    assert {p.payload_type for p in packets} == {96}
    assert max(len(p.payload) for p in packets) <= 1400
    for a, b in itertools.pairwise(packets):
        assert b.sequence == (a.sequence + 1) & 0xFFFF
    frames = [p for p in packets if p.marker]
    assert abs(len(frames) - SECONDS * fps) <= 1  # one marker per frame
    steps = {b.timestamp - a.timestamp for a, b in itertools.pairwise(frames)}
    assert steps == {90_000 // fps}
    for a, b in itertools.pairwise(packets):
        if not a.marker:
            assert b.timestamp == a.timestamp  # a frame's packets share its timestamp
    return b"".join(p.payload for p in packets)


def _assert_decodes(payload: bytes, fps: int) -> None:
    decoded = len(_gray_frames(io.BytesIO(payload)))
    assert decoded >= 0.9 * SECONDS * fps


def _receive_udp(sock: socket.socket, quiet_s: float) -> list[tuple[float, bytes]]:
    sock.settimeout(quiet_s)
    packets = []
    with pytest.raises(TimeoutError):
        while True:
            packets.append((time.monotonic(), sock.recv(65536)))
    return packets


def _receive_tcp(conn: socket.socket, quiet_s: float) -> list[tuple[float, bytes]]:
    conn.settimeout(quiet_s)
    stream, packets = b"", []
    try:
        while chunk := conn.recv(65536):
            stream += chunk
            while len(stream) >= 2 and len(stream) >= 2 + int.from_bytes(stream[:2], "big"):
                size = int.from_bytes(stream[:2], "big")
                packets.append((time.monotonic(), stream[2 : 2 + size]))
                stream = stream[2 + size :]
    except TimeoutError:
        pass
    assert stream == b""  # nothing left half-framed
    return packets


def _sender(ps_file: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.peers.gb28181.media", "send", "--file", str(ps_file)]
    command += ["--host", HOST, "--port", str(port), "--ssrc", SSRC_TEXT, *extra]
    return subprocess.Popen(command)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sender_packetizes_and_paces_in_real_time(ps_file: Path, transport: str) -> None:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        if transport == "udp":
            sender = _sender(ps_file, port)
            received = _receive_udp(sock, quiet_s=1.5)
        else:
            sock.listen(1)
            sender = _sender(ps_file, port, "--tcp")
            sock.settimeout(5)
            conn, _ = sock.accept()
            with conn:
                received = _receive_tcp(conn, quiet_s=1.5)
    assert sender.wait(5) == 0
    packets = [_Rtp.parse(data) for _, data in received]
    payload = _check_rtp(packets, int(SSRC_TEXT, 10), FPS)
    duration = received[-1][0] - received[0][0]
    assert (SECONDS - 1 / FPS) * 0.9 < duration < SECONDS + 0.5  # paced, not a burst
    _assert_decodes(payload, FPS)


def test_sender_stops_on_sigterm_while_looping(ps_file: Path, tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sender = _sender(ps_file, sock.getsockname()[1], "--loop", "--stats-file", str(stats))
        sock.settimeout(5)
        sock.recv(65536)
        time.sleep(0.5)
        sender.terminate()
        assert sender.wait(5) == 0
    assert '"ended": "stopped: SIGTERM"' in stats.read_text()


# -- a throwaway platform --


@dataclass
class _Sip:
    start: str
    headers: dict[str, str]  # lower-case names, first value
    body: bytes
    source: tuple[str, int]
    at: float

    @classmethod
    def parse(cls, data: bytes, source: tuple[str, int]) -> _Sip:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        return cls(lines[0], headers, body, source, time.monotonic())

    @property
    def method(self) -> str:
        return self.start.split()[0]

    @property
    def status(self) -> int:
        return int(self.start.split()[1]) if self.start.startswith("SIP/2.0") else 0


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class _TinyPlatform:
    """Just enough SIP to exercise the device: REGISTER digest (fixed nonce), 200 to every
    MESSAGE, and requests sent by the test. Everything received lands in ``inbox``."""

    NONCE = "0123456789abcdef"

    def __init__(self, *, challenge: bool = True, qop: bool = True) -> None:
        self.challenge, self.qop = challenge, qop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port: int = self.sock.getsockname()[1]
        self.inbox: queue.Queue[_Sip] = queue.Queue()
        self.seen: list[_Sip] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self.sock.close()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self._closed.is_set():
            try:
                data, source = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            message = _Sip.parse(data, source)
            if message.method == "REGISTER":
                self._on_register(message)
            elif message.method == "MESSAGE":
                self.reply(message, "200 OK")
            self.inbox.put(message)

    def _on_register(self, request: _Sip) -> None:
        auth = request.headers.get("authorization")
        if auth is None and self.challenge:
            qop = ', qop="auth"' if self.qop else ""
            challenge = f'Digest realm="{DOMAIN}", nonce="{self.NONCE}"{qop}, algorithm=MD5'
            self.reply(request, "401 Unauthorized", f"WWW-Authenticate: {challenge}\r\n")
        elif auth is None or self._digest_ok(auth):
            self.reply(request, "200 OK", f"Expires: {request.headers['expires']}\r\n")
        else:
            self.reply(request, "403 Forbidden")

    def _digest_ok(self, header: str) -> bool:
        pairs = re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', header)
        fields: dict[str, str] = {key: quoted or bare for key, quoted, bare in pairs}
        ha1 = _md5(f"{DEVICE_ID}:{DOMAIN}:{PASSWORD}")
        ha2 = _md5(f"REGISTER:{fields['uri']}")
        if self.qop:
            parts = [ha1, self.NONCE, fields["nc"], fields["cnonce"], fields["qop"], ha2]
        else:
            parts = [ha1, self.NONCE, ha2]
        return fields["uri"] == f"sip:{PLATFORM_ID}@{DOMAIN}" and fields["response"] == _md5(
            ":".join(parts)
        )

    def reply(self, request: _Sip, status: str, extra: str = "") -> None:
        to = request.headers["to"]
        if "tag=" not in to:
            to += ";tag=platform"
        head = "".join(
            f"{name}: {request.headers[name.lower()]}\r\n"
            for name in ("Via", "From", "Call-ID", "CSeq")
        )
        text = f"SIP/2.0 {status}\r\n{head}To: {to}\r\n{extra}Content-Length: 0\r\n\r\n"
        self.sock.sendto(text.encode(), request.source)

    def send(self, port: int, start: str, headers: dict[str, str], body: bytes = b"") -> None:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        via = f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK{time.monotonic_ns()}\r\n"
        text = f"{start}\r\n{via}{head}Max-Forwards: 70\r\nContent-Length: {len(body)}\r\n\r\n"
        self.sock.sendto(text.encode() + body, (HOST, port))

    def drain(self, method: str) -> list[_Sip]:
        """The queued requests of ``method`` (the queue is emptied)."""
        found = []
        while not self.inbox.empty():
            message = self.inbox.get_nowait()
            self.seen.append(message)
            if message.method == method:
                found.append(message)
        return found

    def expect(self, match: Callable[[_Sip], bool], timeout: float = 5.0) -> _Sip:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"nothing matching arrived in {timeout} s") from None
            self.seen.append(message)
            if match(message):
                return message


@pytest.fixture
def platform() -> Iterator[_TinyPlatform]:
    tiny = _TinyPlatform()
    yield tiny
    tiny.close()


def _device(platform: _TinyPlatform, tmp_path: Path, **kwargs: Any) -> GbDevice:
    kwargs.setdefault("password", PASSWORD)
    return GbDevice(
        DEVICE_ID,
        platform_port=platform.port,
        platform_id=PLATFORM_ID,
        domain=DOMAIN,
        workdir=tmp_path / "device",
        **kwargs,
    )


def _is(method: str) -> Callable[[_Sip], bool]:
    return lambda message: message.method == method


def _manscdp(message: _Sip) -> ET.Element:
    """The XML of a MANSCDP body, decoded from GB2312 (expat cannot)."""
    text = message.body.decode("gb2312")
    return ET.fromstring(re.sub(r"^<\\?xml[^>]*\\?>", "", text.strip()))


# -- REGISTER, Keepalive, un-REGISTER, Alarm --


@pytest.mark.parametrize("qop", [True, False], ids=["qop-auth", "no-qop"])
def test_registers_with_digest_then_keeps_alive_at_the_set_rate(
    platform: _TinyPlatform, tmp_path: Path, qop: bool
) -> None:
    platform.qop = qop
    with _device(platform, tmp_path, keepalive_s=0.5) as device:
        assert device.register() == RegisterResult(200, True, "auth" if qop else "")
        first = platform.expect(_is("REGISTER"))
        assert first.headers["contact"] == f"<sip:{DEVICE_ID}@{HOST}:{device.uas_port}>"
        assert first.headers["expires"] == "3600"
        assert first.source[1] == device.uac_port
        assert "response=" in platform.expect(_is("REGISTER")).headers["authorization"]
        keepalives = [platform.expect(_is("MESSAGE")) for _ in range(5)]
        device.stop_keepalives()
        gaps = [b.at - a.at for a, b in itertools.pairwise(keepalives)]
        assert 0.4 < sum(gaps) / len(gaps) < 0.6, gaps
        notes = [_manscdp(m) for m in keepalives]
        assert {n.findtext("CmdType") for n in notes} == {"Keepalive"}
        assert {n.findtext("DeviceID") for n in notes} == {DEVICE_ID}
        assert {n.findtext("Status") for n in notes} == {"OK"}
        sns = [int(n.findtext("SN") or 0) for n in notes]
        assert sns == sorted(set(sns))
        assert len({m.headers["call-id"] for m in keepalives}) == 5  # one Call-ID each
        assert keepalives[0].headers["content-type"].lower() == "application/manscdp+xml"
        time.sleep(1.2)
        assert len(platform.drain("MESSAGE")) <= 1  # at most the one in flight at the stop
        assert {code for _, code in device.keepalives()} == {"200"}

        assert device.unregister().ok
        gone = platform.expect(lambda m: m.method == "REGISTER" and m.headers["expires"] == "0")
        assert gone.headers["call-id"] == first.headers["call-id"]  # the device's Call-ID
        assert int(gone.headers["cseq"].split()[0]) > int(first.headers["cseq"].split()[0])


def test_wrong_password_ends_with_403_and_no_keepalive(
    platform: _TinyPlatform, tmp_path: Path
) -> None:
    with _device(platform, tmp_path, password="wrong", keepalive_s=0.3) as device:
        assert device.register() == RegisterResult(403, True, "auth")
        time.sleep(0.6)
    assert platform.drain("MESSAGE") == []


def test_platform_without_challenge_and_an_alarm(platform: _TinyPlatform, tmp_path: Path) -> None:
    platform.challenge = False
    channels = make_channels(DEVICE_ID, 2)
    with _device(platform, tmp_path, keepalive_s=0, channels=channels) as device:
        assert device.register() == RegisterResult(200, False, "")
        target = channels[1]
        assert device.send_alarm(target.channel_id, description="区域入侵", alarm_type=5) == "200"
    alarm = _manscdp(platform.expect(_is("MESSAGE")))
    assert alarm.findtext("CmdType") == "Alarm"
    assert alarm.findtext("DeviceID") == target.channel_id
    assert alarm.findtext("AlarmDescription") == "区域入侵"
    assert alarm.findtext("AlarmPriority") == "1" and alarm.findtext("AlarmMethod") == "2"
    assert alarm.findtext("AlarmTime") == "2026-12-02T10:00:00"
    assert float(alarm.findtext("Longitude") or 0) == pytest.approx(target.longitude)
    assert alarm.findtext("Info/AlarmType") == "5"


# -- the UAS: queries and INVITE --


def _query(platform: _TinyPlatform, device: GbDevice, cmd: str, sn: int) -> None:
    body = (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>{cmd}</CmdType>\r\n'
        f"<SN>{sn}</SN>\r\n<DeviceID>{DEVICE_ID}</DeviceID>\r\n</Query>\r\n"
    ).encode()
    headers = {
        "From": f"<sip:{PLATFORM_ID}@{DOMAIN}>;tag=q{sn}",
        "To": f"<sip:{DEVICE_ID}@{DOMAIN}>",
        "Call-ID": f"query-{sn}@{HOST}",
        "CSeq": "1 MESSAGE",
        "Content-Type": "Application/MANSCDP+xml",
    }
    platform.send(device.uas_port, f"MESSAGE sip:{DEVICE_ID}@{DOMAIN} SIP/2.0", headers, body)


def test_catalog_comes_in_two_gb2312_messages_and_device_info_in_one(
    platform: _TinyPlatform, tmp_path: Path
) -> None:
    channels = make_channels(DEVICE_ID, 5, name="东门摄像头")
    with _device(platform, tmp_path, channels=channels) as device:
        _query(platform, device, "Catalog", 17)
        assert platform.expect(lambda m: m.status != 0).status == 200
        parts = [_manscdp(platform.expect(_is("MESSAGE"))) for _ in range(2)]
        _query(platform, device, "DeviceInfo", 18)
        info = _manscdp(platform.expect(_is("MESSAGE")))
        assert [e.fields["cmd"] for e in device.events("MESSAGE")] == ["Catalog", "DeviceInfo"]
        time.sleep(0.3)
        assert platform.drain("MESSAGE") == []  # sent once each, never retransmitted
        # the platform's 200s to the three Response MESSAGEs reached the device
        assert len(device.events("ANSWER")) == 3
    assert {p.findtext("SN") for p in parts} == {"17"}
    assert {p.findtext("SumNum") for p in parts} == {"5"}
    items = [item for p in parts for item in p.iterfind("DeviceList/Item")]
    assert [p.find("DeviceList").get("Num") for p in parts] == ["3", "2"]  # type: ignore[union-attr]
    assert [i.findtext("DeviceID") for i in items] == [c.channel_id for c in channels]
    assert [i.findtext("Name") for i in items] == [f"东门摄像头{n}" for n in range(1, 6)]
    assert all(i.findtext("DeviceID", "")[10:13] == "131" for i in items)
    for tag in (
        "Manufacturer",
        "Model",
        "Owner",
        "CivilCode",
        "Address",
        "Parental",
        "ParentID",
        "RegisterWay",
        "Secrecy",
        "Longitude",
        "Latitude",
    ):
        assert all(i.findtext(tag) for i in items), tag
    assert {i.findtext("Status") for i in items} == {"ON"}
    assert info.findtext("CmdType") == "DeviceInfo" and info.findtext("SN") == "18"
    assert info.findtext("DeviceName") == "测试设备" and info.findtext("Channel") == "5"


def _invite(
    platform: _TinyPlatform,
    device: GbDevice,
    channel_id: str,
    media_port: int,
    tcp: bool,
    ssrc: str = SSRC_TEXT,
) -> dict[str, str]:
    proto = "TCP/RTP/AVP" if tcp else "RTP/AVP"
    setup = "a=setup:passive\r\na=connection:new\r\n" if tcp else ""
    sdp = (
        f"v=0\r\no={PLATFORM_ID} 0 0 IN IP4 {HOST}\r\ns=Play\r\nc=IN IP4 {HOST}\r\n"
        f"t=0 0\r\nm=video {media_port} {proto} 96\r\na=recvonly\r\n"
        f"a=rtpmap:96 PS/90000\r\n{setup}y={ssrc}\r\n"
    ).encode()
    dialog = {
        "From": f"<sip:{PLATFORM_ID}@{DOMAIN}>;tag=inv1",
        "To": f"<sip:{channel_id}@{DOMAIN}>",
        "Call-ID": f"invite-{time.monotonic_ns()}@{HOST}",
    }
    headers = {
        **dialog,
        "CSeq": "1 INVITE",
        "Contact": f"<sip:{PLATFORM_ID}@{HOST}:{platform.port}>",
        "Subject": f"{channel_id}:{ssrc},{PLATFORM_ID}:0",
        "Content-Type": "APPLICATION/SDP",
    }
    platform.send(device.uas_port, f"INVITE sip:{channel_id}@{DOMAIN} SIP/2.0", headers, sdp)
    return dialog


def _in_dialog(
    platform: _TinyPlatform, device: GbDevice, method: str, dialog: dict[str, str], cseq: int
) -> None:
    channel_id = dialog["To"].split("@")[0].removeprefix("<sip:")
    start = f"{method} sip:{channel_id}@{DOMAIN} SIP/2.0"
    platform.send(device.uas_port, start, {**dialog, "CSeq": f"{cseq} {method}"})


def _receiver(media: socket.socket, tcp: bool, quiet_s: float) -> list[tuple[float, bytes]]:
    """Everything that arrives on ``media`` until it has been quiet for ``quiet_s``."""
    if not tcp:
        return _receive_udp(media, quiet_s)
    media.settimeout(5)
    conn, _ = media.accept()
    with conn:
        return _receive_tcp(conn, quiet_s)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_invite_streams_the_channel_until_bye(
    platform: _TinyPlatform, tmp_path: Path, ps_file: Path, transport: str
) -> None:
    tcp = transport == "tcp"
    channels = make_channels(DEVICE_ID, 2, ps_file)
    channel_id = channels[1].channel_id
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with (
        _device(platform, tmp_path, channels=channels) as device,
        socket.socket(socket.AF_INET, kind) as media,
        ThreadPoolExecutor(1) as pool,
    ):
        media.bind((HOST, 0))
        if tcp:
            media.listen(1)
        receiving = pool.submit(_receiver, media, tcp, 1.0)
        dialog = _invite(platform, device, channel_id, media.getsockname()[1], tcp)
        assert platform.expect(lambda m: m.status != 0).status == 100
        answer = platform.expect(lambda m: m.status != 0)
        assert answer.status == 200
        sdp = answer.body.decode()
        assert f"y={SSRC_TEXT}" in sdp and "a=sendonly" in sdp
        assert ("m=video 9 TCP/RTP/AVP 96" in sdp) if tcp else (" RTP/AVP 96" in sdp)
        dialog["To"] = answer.headers["to"]
        _in_dialog(platform, device, "ACK", dialog, 1)
        acked = time.monotonic()
        time.sleep(1.5)
        _in_dialog(platform, device, "BYE", dialog, 2)
        bye_sent = time.monotonic()
        assert platform.expect(lambda m: m.status != 0).status == 200
        received = receiving.result(timeout=10)
        (invite,) = device.events("INVITE")
        assert [e.call for e in device.events()] == [invite.call] * 3  # INVITE, ACK, BYE
        # The sender writes its summary as it exits, after the BYE's 200 (late under load).
        summary = wait_for(lambda: device.senders().get(invite.call), 10, "the sender's summary")
        wait_for(lambda: device.running_senders() == [], 5, "no sender left running")
    assert invite.fields["channel"] == channel_id and invite.fields["ssrc"] == SSRC_TEXT
    assert invite.fields["proto"] == ("TCP/RTP/AVP" if tcp else "RTP/AVP")
    assert str(summary["ended"]).startswith("stopped")
    first_after_ack = received[0][0] - acked
    assert first_after_ack < 2.0, first_after_ack  # ≈0.1-0.2 s measured on 2 idle cores
    assert received[-1][0] < bye_sent + 1.0  # the BYE stopped the sender
    packets = [_Rtp.parse(data) for _, data in received]
    assert {p.ssrc for p in packets} == {int(SSRC_TEXT, 10)}
    frames = sum(p.marker for p in packets)
    assert frames >= 10
    assert len(_gray_frames(io.BytesIO(b"".join(p.payload for p in packets)))) >= 0.9 * frames


def test_concurrent_invites_each_bye_stops_only_its_own_stream(
    platform: _TinyPlatform, tmp_path: Path, ps_file: Path
) -> None:
    channels = make_channels(DEVICE_ID, 3, ps_file)
    ssrcs = [f"01000000{n:02d}" for n in range(11, 14)]
    with contextlib.ExitStack() as stack:
        device = stack.enter_context(_device(platform, tmp_path, channels=channels))
        pool = stack.enter_context(ThreadPoolExecutor(3))
        sockets = [stack.enter_context(socket.socket(type=socket.SOCK_DGRAM)) for _ in ssrcs]
        for sock in sockets:
            sock.bind((HOST, 0))
        receiving = [pool.submit(_receive_udp, sock, 1.0) for sock in sockets]
        dialogs = [
            _invite(platform, device, c.channel_id, s.getsockname()[1], False, ssrc)
            for c, s, ssrc in zip(channels, sockets, ssrcs, strict=True)
        ]
        for dialog in dialogs:
            answer = platform.expect(partial(_ok_for, call_id=dialog["Call-ID"]))
            dialog["To"] = answer.headers["to"]
            _in_dialog(platform, device, "ACK", dialog, 1)
        time.sleep(1.0)
        _in_dialog(platform, device, "BYE", dialogs[0], 2)
        bye_sent = time.monotonic()
        platform.expect(lambda m: _ok_for(m, dialogs[0]["Call-ID"]))
        time.sleep(1.5)
        assert len(device.running_senders()) == 2
        for dialog in dialogs[1:]:
            _in_dialog(platform, device, "BYE", dialog, 2)
        streams = [r.result(timeout=10) for r in receiving]
        assert device.count("BYE") == 3
    assert streams[0][-1][0] < bye_sent + 1.0
    assert all(stream[-1][0] > bye_sent + 1.2 for stream in streams[1:])  # kept on
    for stream, ssrc in zip(streams, ssrcs, strict=True):
        assert {_Rtp.parse(data).ssrc for _, data in stream} == {int(ssrc, 10)}


def _ok_for(message: _Sip, call_id: str) -> bool:
    return message.status == 200 and message.headers["call-id"] == call_id


def _play(
    platform: _TinyPlatform, device: GbDevice, channel_id: str, media: socket.socket
) -> dict[str, str]:
    """INVITE ``channel_id`` to ``media`` (UDP) and ACK the 200; returns the dialog."""
    dialog = _invite(platform, device, channel_id, media.getsockname()[1], False)
    dialog["To"] = platform.expect(partial(_ok_for, call_id=dialog["Call-ID"])).headers["to"]
    _in_dialog(platform, device, "ACK", dialog, 1)
    return dialog


def _hang_up(platform: _TinyPlatform, device: GbDevice, dialog: dict[str, str]) -> None:
    _in_dialog(platform, device, "BYE", dialog, 2)
    platform.expect(lambda m: _ok_for(m, dialog["Call-ID"]) and "BYE" in m.headers["cseq"])


def test_mute_device_sends_nothing_and_a_new_invite_after_bye_streams_again(
    platform: _TinyPlatform, tmp_path: Path, ps_file: Path
) -> None:
    channel_id = make_channels(DEVICE_ID, 1)[0].channel_id
    channels = make_channels(DEVICE_ID, 1, ps_file)
    with (
        _device(platform, tmp_path, channels=channels, mute=True) as device,
        socket.socket(type=socket.SOCK_DGRAM) as media,
    ):
        media.bind((HOST, 0))
        media.settimeout(1.5)
        dialog = _play(platform, device, channel_id, media)
        with pytest.raises(TimeoutError):
            media.recv(65536)
        _hang_up(platform, device, dialog)
        assert [e.kind for e in device.events()] == ["INVITE", "ACK", "BYE"]
        assert device.senders() == {}

        device.mute = False
        dialog = _play(platform, device, channel_id, media)
        assert _Rtp.parse(media.recv(65536)).ssrc == int(SSRC_TEXT, 10)
        _hang_up(platform, device, dialog)
        assert device.count("INVITE") == device.count("BYE") == 2
