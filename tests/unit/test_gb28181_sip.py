"""SIP messages: parsing what real GB/T 28181 devices send, building what the platform sends.

The messages are written after captures of Hikvision, Dahua, Uniview and no-name cameras
(IDs from the GB/T 28181 examples, addresses from the documentation ranges 192.0.2.0/24
and 198.51.100.0/24).
"""

from __future__ import annotations

import re
import time

import pytest

from ingest.gb28181 import GB28181Error, SipParseError
from ingest.gb28181.sip import (
    MAX_MESSAGE_SIZE,
    REASON_PHRASES,
    NameAddr,
    SipRequest,
    SipResponse,
    SipStreamParser,
    SipUri,
    build_ack,
    build_cancel,
    build_request,
    canonical_name,
    is_gb_id,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    reply_address,
    response_to,
)

DEVICE = "34020000001320000001"
PLATFORM = "34020000002000000001"
DOMAIN = "3402000000"


def message(*lines: str, body: bytes = b"", length: bool = True, eol: str = "\r\n") -> bytes:
    """A wire message from header lines; Content-Length computed unless ``length=False``."""
    head = list(lines) + ([f"Content-Length: {len(body)}"] if length else [])
    return (eol.join(head) + eol + eol).encode() + body


HIKVISION_REGISTER = message(
    f"REGISTER sip:{PLATFORM}@{DOMAIN} SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.64:5060;rport;branch=z9hG4bK1371463273",
    f"From: <sip:{DEVICE}@{DOMAIN}>;tag=2043466181",
    f"To: <sip:{DEVICE}@{DOMAIN}>",
    "Call-ID: 1011047669",
    "CSeq: 1 REGISTER",
    f"Contact: <sip:{DEVICE}@192.0.2.64:5060>",
    "Max-Forwards: 70",
    "User-Agent: IP Camera",
    "Expires: 3600",
)

HIKVISION_REGISTER_AUTH = message(
    f"REGISTER sip:{PLATFORM}@{DOMAIN} SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.64:5060;rport;branch=z9hG4bK1943221502",
    f"From: <sip:{DEVICE}@{DOMAIN}>;tag=2043466181",
    f"To: <sip:{DEVICE}@{DOMAIN}>",
    "Call-ID: 1011047669",
    "CSeq: 2 REGISTER",
    f"Contact: <sip:{DEVICE}@192.0.2.64:5060>",
    f'Authorization: Digest username="{DEVICE}", realm="{DOMAIN}", '
    'nonce="6553f1a0a91f3bd6f0c1f1c2d4e5f607", '
    f'uri="sip:{PLATFORM}@{DOMAIN}", response="4dbd2d3a2b5f0b8a7c0f1e9d2c3b4a59", '
    "algorithm=MD5",
    "Max-Forwards: 70",
    "User-Agent: IP Camera",
    "Expires: 3600",
)

# Dahua: Call-ID with @host, 32-hex tags, Route, headers in another order, UDP via NAT.
DAHUA_REGISTER = message(
    f"REGISTER sip:{PLATFORM}@198.51.100.10:5060 SIP/2.0",
    "Call-ID: b954e1e87c6d580eaec2c2755aba3e54@192.0.2.108",
    "Contact: <sip:34020000001180000001@192.0.2.108:5060>",
    "CSeq: 1 REGISTER",
    "Expires: 3600",
    "From: <sip:34020000001180000001@192.0.2.108:5060>;tag=d28d156d2c72dcfb6a49ceb55f9627e8",
    "Max-Forwards: 70",
    f"Route: <sip:{PLATFORM}@198.51.100.10:5060;lr>",
    "To: <sip:34020000001180000001@192.0.2.108:5060>",
    "User-Agent: SIP UAS V3.0.0.1208500",
    "Via: SIP/2.0/UDP 192.0.2.108:5060;rport;branch=z9hG4bK9ffcac0c7c50cdbc062009c67a39ecfb",
)

KEEPALIVE_BODY = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
    f"<SN>43</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
).encode("gb2312")

HIKVISION_KEEPALIVE = message(
    f"MESSAGE sip:{PLATFORM}@{DOMAIN} SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.64:5060;rport;branch=z9hG4bK1601626286",
    f"From: <sip:{DEVICE}@{DOMAIN}>;tag=1459367520",
    f"To: <sip:{PLATFORM}@{DOMAIN}>",
    "Call-ID: 1262387549",
    "CSeq: 20 MESSAGE",
    "Content-Type: Application/MANSCDP+xml",
    "Max-Forwards: 70",
    "User-Agent: IP Camera",
    body=KEEPALIVE_BODY,
)

CATALOG_BODY = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n'
    "<SN>17430</SN>\r\n<DeviceID>34020000001110000001</DeviceID>\r\n<SumNum>1</SumNum>\r\n"
    '<DeviceList Num="1">\r\n<Item>\r\n<DeviceID>34020000001310000001</DeviceID>\r\n'
    "<Name>东门入口</Name>\r\n<Manufacturer>Hikvision</Manufacturer>\r\n<Status>ON</Status>\r\n"
    "</Item>\r\n</DeviceList>\r\n</Response>\r\n"
).encode("gb2312")

# A no-name NVR: compact header forms, LF line ends, a GBK User-Agent, a folded header.
COMPACT_CATALOG = (
    (
        "\r\n".join(
            [
                f"MESSAGE sip:{PLATFORM}@{DOMAIN} SIP/2.0",
                "v: SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bK-3a7e",
                "f: <sip:34020000001110000001@3402000000>;tag=77",
                f"t: <sip:{PLATFORM}@{DOMAIN}>",
                "i: 4bd8e2@192.0.2.30",
                "CSeq: 7 MESSAGE",
                "c: Application/MANSCDP+xml",
                "Subject: catalog,",
                " folded",
                f"l: {len(CATALOG_BODY)}",
            ]
        ).replace("\r\n", "\n")
    ).encode()
    + b"\nUser-Agent: "
    + "网络硬盘录像机".encode("gbk")
    + b"\n\n"
    + CATALOG_BODY
)

INVITE_OK = message(
    "SIP/2.0 200 OK",
    "Via: SIP/2.0/UDP 198.51.100.10:5060;rport=5060;branch=z9hG4bK5c3a91e2d4f60718",
    f"From: <sip:{PLATFORM}@{DOMAIN}>;tag=493022011",
    f"To: <sip:34020000001310000001@{DOMAIN}>;tag=1846237290",
    "Call-ID: 6f1e0b5d7c2a4e3f9b8d1c0a2e4f6b8d",
    "CSeq: 1 INVITE",
    "Contact: <sip:34020000001310000001@192.0.2.64:5060>",
    "Content-Type: application/sdp",
    "User-Agent: IP Camera",
    body=(
        b"v=0\r\no=34020000001310000001 0 0 IN IP4 192.0.2.64\r\ns=Play\r\n"
        b"c=IN IP4 192.0.2.64\r\nt=0 0\r\nm=video 15060 RTP/AVP 96\r\n"
        b"a=sendonly\r\na=rtpmap:96 PS/90000\r\ny=0200000001\r\nf=\r\n"
    ),
)

UNIVIEW_UNREGISTER = message(
    f"REGISTER sip:{PLATFORM}@{DOMAIN} SIP/2.0",
    "Via: SIP/2.0/TCP 192.0.2.77:5060;branch=z9hG4bK-uv-0001",
    f'From: "IPC" <sip:34020000001320000077@{DOMAIN}>;tag=88',
    f"To: <sip:34020000001320000077@{DOMAIN}>",
    "Call-ID: uv-77",
    "CSeq: 9 REGISTER",
    "Contact: *",
    "Expires: 0",
)


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "method", "device", "expires", "transport"),
    [
        (HIKVISION_REGISTER, "REGISTER", DEVICE, 3600, "UDP"),
        (HIKVISION_REGISTER_AUTH, "REGISTER", DEVICE, 3600, "UDP"),
        (DAHUA_REGISTER, "REGISTER", "34020000001180000001", 3600, "UDP"),
        (HIKVISION_KEEPALIVE, "MESSAGE", DEVICE, None, "UDP"),
        (COMPACT_CATALOG, "MESSAGE", "34020000001110000001", None, "UDP"),
        (UNIVIEW_UNREGISTER, "REGISTER", "34020000001320000077", 0, "TCP"),
    ],
)
def test_device_requests_parse(
    data: bytes, method: str, device: str, expires: int | None, transport: str
) -> None:
    request = parse_message(data)
    assert isinstance(request, SipRequest)
    assert request.method == method
    assert request.from_.parsed_uri().user == device
    assert is_gb_id(request.from_.parsed_uri().user)
    assert request.expires == expires
    assert request.top_via.transport == transport
    assert request.top_via.branch and request.from_.tag
    assert request.to.tag is None
    assert request.cseq.method == method


def test_register_fields() -> None:
    request = parse_message(HIKVISION_REGISTER)
    assert isinstance(request, SipRequest)
    assert request.request_uri == SipUri("sip", PLATFORM, DOMAIN)
    assert request.call_id == "1011047669"
    assert (request.cseq.number, request.cseq.method) == (1, "REGISTER")
    via = request.top_via
    assert (via.host, via.port, via.branch, via.wants_rport, via.rport) == (
        "192.0.2.64",
        5060,
        "z9hG4bK1371463273",
        True,
        None,
    )
    contact = request.contact
    assert contact is not None and contact.parsed_uri() == SipUri("sip", DEVICE, "192.0.2.64", 5060)
    assert request.header("user-agent") == "IP Camera"
    assert request.body == b""


def test_authorization_header_is_one_value_despite_its_commas() -> None:
    request = parse_message(HIKVISION_REGISTER_AUTH)
    assert request.header_values("Authorization") == [request.header("authorization")]
    assert 'response="4dbd2d3a2b5f0b8a7c0f1e9d2c3b4a59"' in (request.header("Authorization") or "")


def test_compact_forms_folding_lf_and_gbk_header() -> None:
    request = parse_message(COMPACT_CATALOG)
    assert request.call_id == "4bd8e2@192.0.2.30"
    assert request.header("Subject") == "catalog, folded"
    assert request.content_type == "application/manscdp+xml"
    assert request.header("user-agent") == "网络硬盘录像机"
    assert request.body == CATALOG_BODY
    assert "东门入口".encode("gb2312") in request.body


def test_response_with_sdp_body() -> None:
    response = parse_message(INVITE_OK)
    assert isinstance(response, SipResponse)
    assert (response.status, response.reason, response.is_final) == (200, "OK", True)
    assert response.top_via.rport == 5060
    assert response.to.tag == "1846237290"
    assert response.body.startswith(b"v=0\r\n") and response.body.endswith(b"f=\r\n")


def test_unregister_all_contact_wildcard() -> None:
    request = parse_message(UNIVIEW_UNREGISTER)
    assert request.contact == NameAddr("", "*")
    assert request.from_.display == "IPC"


def test_contact_expires_parameter_wins_over_the_header() -> None:
    data = HIKVISION_REGISTER.replace(b":5060>\r\n", b":5060>;expires=600\r\n", 1)
    assert parse_message(data).expires == 600


def test_via_list_in_one_header_and_in_several() -> None:
    two = HIKVISION_REGISTER.replace(
        b"branch=z9hG4bK1371463273\r\n",
        b"branch=z9hG4bK1371463273, SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp\r\n"
        b"Via: SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKq\r\n",
    )
    vias = parse_message(two).vias
    assert [(v.host, v.port, v.transport) for v in vias] == [
        ("192.0.2.64", 5060, "UDP"),
        ("192.0.2.1", None, "UDP"),
        ("2001:db8::1", 5061, "TCP"),
    ]


def test_udp_message_without_content_length_takes_the_rest_as_body() -> None:
    data = message(
        f"MESSAGE sip:{PLATFORM}@{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKx",
        f"From: <sip:{DEVICE}@{DOMAIN}>;tag=1",
        f"To: <sip:{PLATFORM}@{DOMAIN}>",
        "Call-ID: a",
        "CSeq: 1 MESSAGE",
        body=KEEPALIVE_BODY,
        length=False,
    )
    assert parse_message(data).body == KEEPALIVE_BODY


def test_extra_bytes_after_the_content_length_are_dropped() -> None:
    assert parse_message(HIKVISION_KEEPALIVE + b"\x00\x00junk").body == KEEPALIVE_BODY


def test_leading_crlfs_are_ignored() -> None:
    assert parse_message(b"\r\n\r\n" + HIKVISION_REGISTER).method == "REGISTER"  # type: ignore[union-attr]


def _without(data: bytes, header: bytes) -> bytes:
    return b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(header))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "blank line"),
        (b"REGISTER sip:x@y SIP/2.0\r\n", "blank line"),
        (HIKVISION_REGISTER.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), "request line"),
        (HIKVISION_REGISTER.replace(b"REGISTER sip:", b"REGISTERsip:", 1), "request line"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "request line"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "request line"),
        (HIKVISION_REGISTER.replace(b"sip:" + PLATFORM.encode(), b"nocolon", 1), "request line"),
        (_without(HIKVISION_REGISTER, b"Via"), "missing header(s): via"),
        (_without(HIKVISION_REGISTER, b"CSeq"), "missing header(s): cseq"),
        (_without(HIKVISION_REGISTER, b"Call-ID"), "missing header(s): call-id"),
        (_without(HIKVISION_REGISTER, b"From"), "missing header(s): from"),
        (HIKVISION_REGISTER.replace(b"Call-ID: 1011047669", b"Call-ID: "), "empty Call-ID"),
        (HIKVISION_REGISTER.replace(b"1 REGISTER", b"1 MESSAGE"), "differs"),
        (HIKVISION_REGISTER.replace(b"CSeq: 1 ", b"CSeq: x "), "CSeq"),
        (HIKVISION_REGISTER.replace(b"CSeq: 1 ", b"CSeq: 99999999999 "), "CSeq"),
        (HIKVISION_KEEPALIVE[:-10], "shorter than Content-Length"),
        (HIKVISION_REGISTER.replace(b"Length: 0", b"Length: -1"), "Content-Length"),
        (HIKVISION_REGISTER.replace(b"Length: 0", b"Length: 0\r\nl: 5"), "conflicting"),
        (HIKVISION_REGISTER.replace(b"User-Agent: IP", b"User-Agent\x00: IP"), "NUL"),
        (HIKVISION_REGISTER.replace(b"User-Agent: IP", b"User Agent IP"), "header line"),
        (HIKVISION_REGISTER.replace(b"User-Agent:", b"User@Agent:"), "header line"),
        (
            HIKVISION_REGISTER.replace(b"SIP/2.0\r\n", b"SIP/2.0\r\n continued\r\n", 1),
            "continuation",
        ),
        (HIKVISION_REGISTER.replace(b"Via: SIP/2.0/UDP", b"Via: SIP/2.0"), "Via"),
        (HIKVISION_REGISTER.replace(b"64:5060;rport", b"64:70000;rport"), "port"),
        (HIKVISION_REGISTER.replace(b"64:5060;rport", b"64:;rport"), "port"),
        (HIKVISION_REGISTER.replace(b"From: <sip:", b"From: <sips"), "URI"),
        (HIKVISION_REGISTER.replace(b"From: <", b'From: "open <'), "quoted"),
        (HIKVISION_REGISTER.replace(b">\r\nCall-ID", b"\r\nCall-ID"), "unclosed"),
        (INVITE_OK.replace(b"SIP/2.0 200 OK", b"SIP/2.0 20 OK"), "status line"),
        (INVITE_OK.replace(b"SIP/2.0 200 OK", b"SIP/2.0 700 OK"), "status line"),
        (b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", "missing"),
        (b"x" * (MAX_MESSAGE_SIZE + 1), "larger"),
        (b"REGISTER sip:a@b SIP/2.0\r\n" + b"X-A: 1\r\n" * 200 + b"\r\n", "more than"),
    ],
)
def test_malformed_messages_raise_sip_parse_error(data: bytes, reason: str) -> None:
    with pytest.raises(SipParseError, match=re.escape(reason)):
        parse_message(data)


def test_parse_error_is_a_gb28181_and_ingest_error() -> None:
    from ingest.errors import IngestError

    with pytest.raises(IngestError):
        parse_message(b"garbage\r\n\r\n")


def test_response_reason_may_be_missing_or_have_spaces() -> None:
    base = INVITE_OK.replace(b"200 OK", b"486 Busy Here", 1)
    assert parse_message(base).reason == "Busy Here"  # type: ignore[union-attr]
    assert parse_message(INVITE_OK.replace(b"200 OK", b"200", 1)).reason == ""  # type: ignore[union-attr]


# --- header values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"sip:{DEVICE}@{DOMAIN}", SipUri("sip", DEVICE, DOMAIN)),
        (f"sip:{DEVICE}@192.0.2.64:5060", SipUri("sip", DEVICE, "192.0.2.64", 5060)),
        (
            f"sip:{DEVICE}@{DOMAIN};transport=udp",
            SipUri("sip", DEVICE, DOMAIN, None, (("transport", "udp"),)),
        ),
        (f"SIP:{DEVICE}@[2001:db8::5]:5060", SipUri("sip", DEVICE, "2001:db8::5", 5060)),
        ("sip:192.0.2.1;lr", SipUri("sip", None, "192.0.2.1", None, (("lr", None),))),
        (f"sip:{DEVICE}:secret@{DOMAIN}", SipUri("sip", DEVICE, DOMAIN)),
        (f"sip:{DEVICE}@{DOMAIN}?Subject=x", SipUri("sip", DEVICE, DOMAIN)),
    ],
)
def test_parse_uri(text: str, expected: SipUri) -> None:
    assert parse_uri(text) == expected


@pytest.mark.parametrize(
    "text", ["", "tel:+8612345", "sip:", "sip:a@", "sip:a@b:0", "sip:a@[::1", "sip:a@b c", "x"]
)
def test_parse_uri_rejects(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_uri_str_round_trip() -> None:
    for text in (f"sip:{DEVICE}@192.0.2.64:5060;transport=tcp", "sip:[2001:db8::1]:5060;lr"):
        assert str(parse_uri(text)) == text


@pytest.mark.parametrize(
    ("text", "display", "uri", "tag"),
    [
        (f"<sip:{DEVICE}@{DOMAIN}>;tag=12", "", f"sip:{DEVICE}@{DOMAIN}", "12"),
        (
            f'"摄像机 \\"1\\"" <sip:{DEVICE}@{DOMAIN}>;tag=a',
            '摄像机 "1"',
            f"sip:{DEVICE}@{DOMAIN}",
            "a",
        ),
        (f"IPC <sip:{DEVICE}@{DOMAIN}>", "IPC", f"sip:{DEVICE}@{DOMAIN}", None),
        (f"sip:{DEVICE}@{DOMAIN};tag=99", "", f"sip:{DEVICE}@{DOMAIN}", "99"),
        (f'"a<b" <sip:{DEVICE}@{DOMAIN}>', "a<b", f"sip:{DEVICE}@{DOMAIN}", None),
    ],
)
def test_parse_name_addr(text: str, display: str, uri: str, tag: str | None) -> None:
    value = parse_name_addr(text)
    assert (value.display, value.uri, value.tag) == (display, uri, tag)


def test_name_addr_str_round_trip() -> None:
    text = f'"IPC" <sip:{DEVICE}@{DOMAIN}>;tag=5;expires=60'
    assert str(parse_name_addr(text)) == text


def test_via_with_received_and_rport_values() -> None:
    via = parse_via("SIP/2.0/udp 10.1.1.2:5060;received=203.0.113.9;rport=40001;branch=z9hG4bKa")
    assert (via.transport, via.received, via.rport, via.branch) == (
        "UDP",
        "203.0.113.9",
        40001,
        "z9hG4bKa",
    )


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("i", "call-id"), ("CALL-ID", "call-id"), ("V", "via"), ("m", "contact"), ("X-Foo", "x-foo")],
)
def test_canonical_names(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (DEVICE, True),
        ("3402000000132000000", False),
        ("3402000000132000000a", False),
        ("３４" * 10, False),
        (None, False),
    ],
)
def test_is_gb_id(value: str | None, ok: bool) -> None:
    assert is_gb_id(value) is ok


# --- responses --------------------------------------------------------------------------------


def test_response_to_copies_the_dialog_headers_and_adds_a_to_tag() -> None:
    request = parse_message(HIKVISION_REGISTER)
    assert isinstance(request, SipRequest)
    response = response_to(request, 200, headers=[("Date", "2024-05-01T10:00:00.000")])
    assert response.reason == "OK"
    for name in ("via", "from", "call-id", "cseq"):
        assert response.header(name) == request.header(name)
    assert response.to.uri == request.to.uri and response.to.tag and response.to.tag.isdigit()
    parsed = parse_message(response.to_bytes())
    assert parsed == response.with_header("Content-Length", "0")


def test_response_to_keeps_an_existing_to_tag_and_adds_none_to_100() -> None:
    request = parse_message(HIKVISION_REGISTER)
    assert isinstance(request, SipRequest)
    assert response_to(request, 100).to.tag is None
    assert response_to(request, 401, to_tag="abc").to.tag == "abc"
    tagged = parse_message(
        HIKVISION_REGISTER.replace(
            f"To: <sip:{DEVICE}@{DOMAIN}>".encode(), f"To: <sip:{DEVICE}@{DOMAIN}>;tag=x".encode()
        )
    )
    assert isinstance(tagged, SipRequest)
    assert response_to(tagged, 200, to_tag="y").to.tag == "x"


def test_response_to_stamps_the_nat_source_on_the_top_via() -> None:
    request = parse_message(HIKVISION_REGISTER)
    assert isinstance(request, SipRequest)
    via = response_to(request, 200, source=("203.0.113.7", 40123)).top_via
    assert (via.received, via.rport, via.branch) == ("203.0.113.7", 40123, "z9hG4bK1371463273")
    assert reply_address(request, ("203.0.113.7", 40123)) == ("203.0.113.7", 40123)


def test_reply_address_without_rport_uses_the_via_port() -> None:
    request = parse_message(HIKVISION_REGISTER.replace(b";rport;", b";"))
    assert isinstance(request, SipRequest)
    assert reply_address(request, ("192.0.2.64", 5060)) == ("192.0.2.64", 5060)
    assert reply_address(request, ("192.0.2.64", 1024)) == ("192.0.2.64", 5060)


def test_response_body_sets_content_type_and_length() -> None:
    request = parse_message(HIKVISION_KEEPALIVE)
    assert isinstance(request, SipRequest)
    response = response_to(request, 488, body=b"v=0\r\n", content_type="application/sdp")
    wire = response.to_bytes()
    assert wire.startswith(b"SIP/2.0 488 Not Acceptable Here\r\n")
    assert b"Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n" in wire


def test_reason_phrases_cover_what_gb28181_uses() -> None:
    for status in (100, 200, 400, 401, 403, 404, 408, 481, 486, 488, 500, 503):
        assert REASON_PHRASES[status]
    request = parse_message(HIKVISION_REGISTER)
    assert isinstance(request, SipRequest)
    assert response_to(request, 299).reason == "Unknown"


def test_to_bytes_refuses_header_injection() -> None:
    request = SipRequest("MESSAGE", "sip:a@b", (("X", "a\r\nVia: evil"),))
    with pytest.raises(GB28181Error, match="line break"):
        request.to_bytes()


# --- platform requests ------------------------------------------------------------------------


def test_build_message_request_round_trips() -> None:
    body = b'<?xml version="1.0" encoding="GB2312"?>\r\n<Query/>\r\n'
    request = build_request(
        "MESSAGE",
        f"sip:{DEVICE}@192.0.2.64:5060",
        from_uri=f"sip:{PLATFORM}@{DOMAIN}",
        to_uri=f"sip:{DEVICE}@{DOMAIN}",
        via_host="198.51.100.10",
        via_port=5060,
        cseq=7,
        body=body,
        content_type="Application/MANSCDP+xml",
    )
    parsed = parse_message(request.to_bytes())
    assert isinstance(parsed, SipRequest)
    assert (parsed.method, parsed.cseq.number, parsed.body) == ("MESSAGE", 7, body)
    assert parsed.top_via.branch and parsed.top_via.branch.startswith("z9hG4bK")
    assert parsed.top_via.wants_rport
    assert parsed.from_.tag and parsed.to.tag is None  # no To tag: some devices reject one
    assert parsed.header("Max-Forwards") == "70"
    assert parsed.content_type == "application/manscdp+xml"


def _invite(transport: str = "UDP") -> SipRequest:
    return build_request(
        "INVITE",
        "sip:34020000001310000001@192.0.2.64:5060",
        from_uri=f"sip:{PLATFORM}@{DOMAIN}",
        to_uri=f"sip:34020000001310000001@{DOMAIN}",
        via_host="2001:db8::10" if transport == "TCP" else "198.51.100.10",
        via_port=5060,
        transport="TCP" if transport == "TCP" else "UDP",
        call_id="6f1e0b5d7c2a4e3f9b8d1c0a2e4f6b8d",
        from_tag="493022011",
        branch="z9hG4bK5c3a91e2d4f60718",
        contact=f"sip:{PLATFORM}@198.51.100.10:5060",
        headers=[("Subject", "34020000001310000001:0200000001,34020000002000000001:0")],
        body=b"v=0\r\n",
        content_type="APPLICATION/SDP",
    )


def test_build_invite_with_contact_subject_and_ipv6_via() -> None:
    invite = parse_message(_invite("TCP").to_bytes())
    assert isinstance(invite, SipRequest)
    assert invite.top_via.host == "2001:db8::10" and invite.top_via.transport == "TCP"
    assert b"Via: SIP/2.0/TCP [2001:db8::10]:5060;rport;branch=" in invite.to_bytes()
    assert invite.contact is not None and invite.contact.uri == f"sip:{PLATFORM}@198.51.100.10:5060"
    assert invite.header("subject") == "34020000001310000001:0200000001,34020000002000000001:0"


def test_ack_for_an_error_reuses_the_invite_branch() -> None:
    invite = _invite()
    error = parse_message(INVITE_OK.replace(b"200 OK", b"486 Busy Here", 1))
    assert isinstance(error, SipResponse)
    ack = build_ack(invite, error)
    assert ack.uri == invite.uri
    assert ack.top_via.branch == invite.top_via.branch
    assert (ack.cseq.number, ack.cseq.method) == (1, "ACK")
    assert ack.to.tag == "1846237290" and ack.call_id == invite.call_id


def test_ack_for_a_2xx_is_a_new_transaction_to_the_contact() -> None:
    invite = _invite()
    ok = parse_message(INVITE_OK)
    assert isinstance(ok, SipResponse)
    ack = build_ack(invite, ok)
    assert ack.uri == "sip:34020000001310000001@192.0.2.64:5060"
    assert ack.top_via.branch != invite.top_via.branch
    assert parse_message(ack.to_bytes()).method == "ACK"  # type: ignore[union-attr]


def test_cancel_matches_the_invite() -> None:
    invite = _invite()
    cancel = build_cancel(invite)
    assert (cancel.uri, cancel.top_via.branch, cancel.call_id) == (
        invite.uri,
        invite.top_via.branch,
        invite.call_id,
    )
    assert cancel.cseq.method == "CANCEL" and cancel.to.tag is None


def test_bye_in_dialog_carries_both_tags() -> None:
    bye = build_request(
        "BYE",
        "sip:34020000001310000001@192.0.2.64:5060",
        from_uri=f"sip:{PLATFORM}@{DOMAIN}",
        to_uri=f"sip:34020000001310000001@{DOMAIN}",
        via_host="198.51.100.10",
        via_port=5060,
        call_id="c1",
        cseq=2,
        from_tag="493022011",
        to_tag="1846237290",
    )
    assert (bye.from_.tag, bye.to.tag, bye.cseq.method) == ("493022011", "1846237290", "BYE")


def test_generated_identifiers_are_unique_and_well_formed() -> None:
    branches = {new_branch() for _ in range(200)}
    tags = {new_tag() for _ in range(200)}
    call_ids = {new_call_id() for _ in range(200)}
    assert len(branches) == len(tags) == len(call_ids) == 200
    assert all(b.startswith("z9hG4bK") for b in branches)
    assert all(t.isdigit() and len(t) == 9 for t in tags)
    assert all(len(c) == 32 and "@" not in c for c in call_ids)


# --- TCP framing ------------------------------------------------------------------------------


def test_stream_parser_cuts_messages_and_skips_crlf_keepalives() -> None:
    stream = b"\r\n\r\n" + HIKVISION_REGISTER + HIKVISION_KEEPALIVE + b"\r\n\r\n" + INVITE_OK
    parser = SipStreamParser()
    messages = parser.feed(stream)
    assert [type(m).__name__ for m in messages] == ["SipRequest", "SipRequest", "SipResponse"]
    assert messages[1].body == KEEPALIVE_BODY


@pytest.mark.parametrize("chunk", [1, 2, 7, 100, 1000])
def test_stream_parser_handles_any_split(chunk: int) -> None:
    parser = SipStreamParser()
    stream = HIKVISION_REGISTER + b"\r\n" + HIKVISION_KEEPALIVE + INVITE_OK
    messages = [m for i in range(0, len(stream), chunk) for m in parser.feed(stream[i : i + chunk])]
    assert [m.cseq.method for m in messages] == ["REGISTER", "MESSAGE", "INVITE"]
    assert messages[1].body == KEEPALIVE_BODY


def test_stream_parser_without_content_length_reads_no_body() -> None:
    data = message(
        f"MESSAGE sip:{PLATFORM}@{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/TCP 192.0.2.9:5060;branch=z9hG4bKx",
        f"From: <sip:{DEVICE}@{DOMAIN}>;tag=1",
        f"To: <sip:{PLATFORM}@{DOMAIN}>",
        "Call-ID: a",
        "CSeq: 1 MESSAGE",
        length=False,
    )
    messages = SipStreamParser().feed(data + HIKVISION_REGISTER)
    assert [m.body for m in messages] == [b"", b""]


@pytest.mark.parametrize(
    "stream",
    [
        b"x" * (MAX_MESSAGE_SIZE + 10),  # no end of headers in sight
        HIKVISION_REGISTER.replace(b"Length: 0", b"Length: 999999"),  # body past the limit
        HIKVISION_REGISTER.replace(b"Length: 0", b"Length: zero"),
        b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
    ],
)
def test_stream_parser_raises_when_the_stream_cannot_be_framed(stream: bytes) -> None:
    with pytest.raises(SipParseError):
        SipStreamParser().feed(stream)


def test_stream_parser_trickled_bytes_cost_linear_time() -> None:
    parser = SipStreamParser()
    line = f"{DOMAIN} SIP/2.0\r\n".encode()
    big = HIKVISION_KEEPALIVE.replace(line, line + b"X-Pad: " + b"p" * 30_000 + b"\r\n", 1)
    assert len(big) > 30_000
    started = time.perf_counter()
    messages = [m for i in range(len(big)) for m in parser.feed(big[i : i + 1])]
    assert time.perf_counter() - started < 2.0
    assert len(messages) == 1 and messages[0].body == KEEPALIVE_BODY
