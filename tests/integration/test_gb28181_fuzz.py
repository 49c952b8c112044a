"""The GB/T 28181 SIP listener fuzzed over the network: malformed and truncated SIP, huge
Content-Length values, garbage and hostile XML bodies, over UDP and TCP, to the whole
service. Afterwards it still serves a well-formed REGISTER (SIPp's, over UDP and TCP),
raised no unhandled error, and holds no TCP connection of the fuzzing open.

The messages are ``XL_FUZZ_EXAMPLES`` × 10 mutations (100 by default) of the requests a
device sends, each from its own loopback address (127.0.x.y) so that the per-address rate
limit lets them all through to the parsers and handlers. The parsers alone are fuzzed in
tests/unit/test_gb28181_fuzz.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import wait_for
from tests.integration.test_gb28181 import DEVICE, PASSWORD, Platform, platform_factory
from tests.peers.gb28181.device import GbDevice, gb_device

__all__ = ["gb_device", "platform_factory"]  # fixtures, used by name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = int(os.environ.get("XL_FUZZ_EXAMPLES", "10")) * 10
PLATFORM = "34020000002000000001"
KEEPALIVE = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
    f"<SN>7</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
)
CATALOG = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Response><CmdType>Catalog</CmdType><SN>1</SN>'
    f'<DeviceID>{DEVICE}</DeviceID><SumNum>2</SumNum><DeviceList Num="1"><Item>'
    "<DeviceID>34020000001310000001</DeviceID><Name>gate</Name><Status>ON</Status>"
    "<Longitude>116.1</Longitude><Latitude>39.1</Latitude></Item></DeviceList></Response>"
)
XML_GARBAGE = (
    "<",
    "<Notify>",
    "<Notify><CmdType>Keepalive</CmdType>",  # truncated
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
    "<Notify><CmdType>&b;</CmdType></Notify>",  # entity expansion
    '<?xml version="1.0"?><!DOCTYPE x SYSTEM "file:///etc/passwd"><Notify/>',
    "<Notify>" + "<a>" * 5000 + "</a>" * 5000 + "</Notify>",  # deep nesting
    "<Response><CmdType>Catalog</CmdType><SumNum>999999999999</SumNum></Response>",
    "<Response><CmdType>Catalog</CmdType><SumNum>-1</SumNum><DeviceList Num='x'/></Response>",
    "<Notify><CmdType>Alarm</CmdType><AlarmPriority>99</AlarmPriority><AlarmTime>x</AlarmTime>"
    "</Notify>",
    "\xef\xbb\xbf<Notify><CmdType>Keepalive</CmdType><DeviceID>中文</DeviceID></Notify>",
    "<?xml version='1.0' encoding='no-such-codec'?><Notify/>",
)
HEADER_GARBAGE = (
    "Content-Length: 99999999999999999999",
    "Content-Length: 65536",
    "Content-Length: -1",
    "Content-Length: 1e9",
    "Content-Length: ",
    "l: 4294967296",
    "Via: SIP/2.0/UDP [::1",
    "Via: SIP/2.0/UDP 127.0.0.1:99999;rport=abc;branch=",
    "Via: ",
    "From: <sip:@>;tag=",
    "To: garbage",
    "CSeq: 99999999999999 REGISTER",
    "CSeq: 1",
    "Call-ID:",
    "Contact: <sip:" + "9" * 3000 + "@127.0.0.1>",
    "Expires: -5",
    "Expires: 99999999999999999999",
    'Content-Type: Application/MANSCDP+xml; charset="\\',
    'Authorization: Digest username="x", realm=, nonce="", response="\\"',
    " folded continuation",
    "X-Long: " + "a" * 9000,
    "\x00",
)


def _request(method: str, port: int, body: str, *, transport: str = "UDP") -> list[str]:
    return [
        f"{method} sip:{PLATFORM}@3402000000 SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};rport;branch=z9hG4bK{time.time_ns()}",
        f"From: <sip:{DEVICE}@3402000000>;tag=1",
        f"To: <sip:{PLATFORM}@3402000000>",
        f"Call-ID: {time.time_ns()}@127.0.0.1",
        f"CSeq: 20 {method}",
        f"Contact: <sip:{DEVICE}@127.0.0.1:{port}>",
        "Max-Forwards: 70",
        "Expires: 3600",
        "Content-Type: Application/MANSCDP+xml",
        f"Content-Length: {len(body.encode())}",
    ]


@st.composite
def sip_messages(draw: st.DrawFn) -> bytes:
    """A device's request with its head and body broken in a few ways."""
    method = draw(st.sampled_from(["REGISTER", "MESSAGE", "MESSAGE", "OPTIONS", "BYE", "INFO"]))
    body = draw(st.sampled_from(["", KEEPALIVE, CATALOG, *XML_GARBAGE]))
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    lines = _request(method, 5060, body)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(lines)))
        op = draw(st.sampled_from(["drop", "replace", "insert", "text"]))
        if op == "drop" and 0 < at < len(lines):
            del lines[at]
        elif op == "replace" and at < len(lines):
            lines[at] = draw(st.sampled_from(HEADER_GARBAGE))
        elif op == "insert":
            lines.insert(at, draw(st.sampled_from(HEADER_GARBAGE)))
        else:
            lines.insert(at, draw(st.text(max_size=60)))
    message = ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:  # truncated anywhere, headers included
        message = message[: draw(st.integers(0, len(message)))]
    return message


def _sources() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"127.0.{n // 250 % 250}.{n % 250 + 2}"


def _established(port: int) -> int:
    """Established TCP connections of this machine with local port ``port``."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    count += 1
    return count


def _send_udp(source: str, target: tuple[str, int], message: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        with contextlib.suppress(OSError):  # "message too long": the kernel refuses it
            sock.sendto(message, target)


def _send_tcp(source: str, target: tuple[str, int], message: bytes) -> None:
    # The endpoint may close the connection on a broken frame (OSError here).
    with (
        socket.create_connection(target, timeout=5, source_address=(source, 0)) as sock,
        contextlib.suppress(OSError),
    ):
        sock.sendall(message)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(2)
        while sock.recv(65536):
            pass


def test_fuzzed_sip_over_udp_and_tcp_leaves_the_listener_serving(
    platform_factory: Callable[..., Platform],
    gb_device: Callable[..., GbDevice],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    platform = platform_factory()
    target = ("127.0.0.1", platform.sip_port)
    sources = _sources()
    sent = {"udp": 0, "tcp": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(sip_messages(), st.sampled_from(["udp", "tcp"]))
    def fuzz(message: bytes, transport: str) -> None:
        send = _send_udp if transport == "udp" else _send_tcp
        send(next(sources), target, message)
        sent[transport] += 1

    # Found by this fuzzing: a From URI without a host was parsed only while handling the
    # REGISTER, and its error ended the handler unanswered (logged as a crash).
    bad_from = _request("REGISTER", 5060, "")
    bad_from[2] = "From: <sip:@>;tag=1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((next(sources), 0))
        sock.settimeout(5)
        sock.sendto(("\r\n".join(bad_from) + "\r\n\r\n").encode(), target)
        assert sock.recv(65536).startswith(b"SIP/2.0 400 Bad Request: bad host")

    fuzz()
    # Huge declared bodies that never come, and a head that never ends, over TCP.
    for head in (
        "\r\n".join(_request("MESSAGE", 5060, "")[:-1]) + "\r\nContent-Length: 60000\r\n\r\n<",
        "\r\n".join(_request("MESSAGE", 5060, "")[:-1]) + "\r\nContent-Length: 9999999999\r\n\r\n",
        "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1",
    ):
        _send_tcp(next(sources), target, head.encode())
    print(f"\nsent {sent['udp']} fuzzed messages over UDP, {sent['tcp']} over TCP")

    assert platform.metric("xueliang_gb28181_sip_malformed_total") >= 1
    unhandled = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not unhandled, [logging.Formatter().format(r) for r in unhandled]
    wait_for(lambda: _established(platform.sip_port) == 0, 10, "the fuzzers' TCP closed")

    # A well-formed REGISTER is still served, over both transports.
    for transport in ("udp", "tcp"):
        device = gb_device(DEVICE, PASSWORD, platform_port=platform.sip_port, transport=transport)
        assert device.register().ok, transport
        assert platform.device(DEVICE) is not None
