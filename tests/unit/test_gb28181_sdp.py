"""INVITE SDP: the offer devices accept, the answers they give, GB SSRCs."""

from __future__ import annotations

import pytest

from ingest.gb28181 import SdpError
from ingest.gb28181.sdp import (
    MAX_SDP_SIZE,
    SdpAnswer,
    invite_sdp,
    invite_subject,
    make_ssrc,
    parse_answer,
    ssrc_int,
)

CHANNEL = "34020000001310000001"


def test_udp_offer_is_the_gb28181_play_offer() -> None:
    assert invite_sdp(CHANNEL, "198.51.100.10", 30000, "0200000001", tcp=False) == (
        "v=0\r\n"
        f"o={CHANNEL} 0 0 IN IP4 198.51.100.10\r\n"
        "s=Play\r\n"
        "c=IN IP4 198.51.100.10\r\n"
        "t=0 0\r\n"
        "m=video 30000 RTP/AVP 96 97 98\r\n"
        "a=recvonly\r\n"
        "a=rtpmap:96 PS/90000\r\n"
        "a=rtpmap:97 MPEG4/90000\r\n"
        "a=rtpmap:98 H264/90000\r\n"
        "y=0200000001\r\n"
    )


def test_tcp_offer_listens_passively_and_ends_with_y() -> None:
    sdp = invite_sdp(CHANNEL, "198.51.100.10", 30002, "0200000002", tcp=True)
    lines = sdp.splitlines()
    assert "m=video 30002 TCP/RTP/AVP 96 97 98" in lines
    assert "a=setup:passive" in lines and "a=connection:new" in lines
    # Hikvision answers 415 to a TCP offer whose y= is not the last line.
    assert lines[-1] == "y=0200000002"


def test_playback_offer() -> None:
    sdp = invite_sdp(
        CHANNEL, "198.51.100.10", 30004, "1200000003", tcp=False, playback=(1714550400, 1714554000)
    )
    lines = sdp.splitlines()
    assert (
        "s=Playback" in lines and f"u={CHANNEL}:0" in lines and "t=1714550400 1714554000" in lines
    )


def test_ipv6_media_address() -> None:
    assert "c=IN IP6 2001:db8::10\r\n" in invite_sdp(
        CHANNEL, "2001:db8::10", 30000, "0200000001", tcp=False
    )


@pytest.mark.parametrize(
    ("ip", "port", "ssrc"),
    [
        ("media.example", 30000, "0200000001"),
        ("198.51.100.10", 0, "0200000001"),
        ("198.51.100.10", 70000, "1"),
        ("198.51.100.10", 30000, "x"),
    ],
)
def test_offer_validates_its_inputs(ip: str, port: int, ssrc: str) -> None:
    with pytest.raises(SdpError):
        invite_sdp(CHANNEL, ip, port, ssrc, tcp=False)


@pytest.mark.parametrize("channel", ["", "3402\r\na=sendonly", "x" * 65, "通道1"])
def test_offer_refuses_a_channel_id_that_is_not_a_token(channel: str) -> None:
    with pytest.raises(SdpError, match="channel ID"):
        invite_sdp(channel, "198.51.100.10", 30000, "0200000001", tcp=False)


def test_invite_subject() -> None:
    assert (
        invite_subject(CHANNEL, "0200000001", "34020000002000000001")
        == f"{CHANNEL}:0200000001,34020000002000000001:0"
    )


# --- answers ---------------------------------------------------------------------------------

HIKVISION_UDP = (
    "v=0\r\no=34020000001310000001 0 0 IN IP4 192.0.2.64\r\ns=Play\r\nc=IN IP4 192.0.2.64\r\n"
    "t=0 0\r\nm=video 15060 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\n"
    "a=filesize:-1\r\ny=0200000001\r\nf=\r\n"
)
# A Hikvision platform (NCG) answering with its own SSRC (GB/T 28181-2022 Annex G).
NCG_OWN_SSRC = HIKVISION_UDP.replace("y=0200000001", "y=0703001718")
DAHUA_TCP_ACTIVE = (
    "v=0\no=34020000001320000002 0 0 IN IP4 192.0.2.108\ns=Play\nc=IN IP4 192.0.2.108\nt=0 0\n"
    "m=video 9 TCP/RTP/AVP 96\na=sendonly\na=rtpmap:96 PS/90000\na=setup:active\n"
    "a=connection:new\ny=0000000000\nf=v/2/4///a///\n"
)
MEDIA_LEVEL_C = (
    "v=0\r\no=- 0 0 IN IP4 203.0.113.1\r\ns=Play\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\n"
    "m=audio 16000 RTP/AVP 8\r\nc=IN IP4 203.0.113.2\r\na=rtpmap:8 PCMA/8000\r\n"
    "m=video 16002 RTP/AVP 96 98\r\nc=IN IP4 203.0.113.3/127\r\na=rtpmap:96 PS/90000\r\n"
    "a=rtpmap:98 H264/90000\r\n"
)


@pytest.mark.parametrize(
    ("sdp", "expected"),
    [
        (
            HIKVISION_UDP,
            SdpAnswer("192.0.2.64", 15060, "0200000001", False, None, (96,), ((96, "PS/90000"),)),
        ),
        (
            NCG_OWN_SSRC,
            SdpAnswer("192.0.2.64", 15060, "0703001718", False, None, (96,), ((96, "PS/90000"),)),
        ),
        (
            DAHUA_TCP_ACTIVE,
            SdpAnswer("192.0.2.108", 9, "0000000000", True, "active", (96,), ((96, "PS/90000"),)),
        ),
        (
            MEDIA_LEVEL_C,
            SdpAnswer(
                "203.0.113.3",
                16002,
                None,
                False,
                None,
                (96, 98),
                ((96, "PS/90000"), (98, "H264/90000")),
            ),
        ),
    ],
)
def test_device_answers(sdp: str, expected: SdpAnswer) -> None:
    assert parse_answer(sdp) == expected
    assert parse_answer(sdp.encode()) == expected


def test_an_audio_section_does_not_lend_its_address_to_the_video() -> None:
    sdp = MEDIA_LEVEL_C.replace("c=IN IP4 203.0.113.3/127\r\n", "")
    assert parse_answer(sdp).ip == "203.0.113.1"


def test_answer_ssrc_value() -> None:
    assert parse_answer(HIKVISION_UDP).ssrc_value == 200000001
    assert parse_answer(MEDIA_LEVEL_C).ssrc_value is None
    assert parse_answer(HIKVISION_UDP.replace("y=0200000001", "y=junk")).ssrc_value is None


def test_refused_stream_has_port_zero() -> None:
    assert parse_answer(HIKVISION_UDP.replace("m=video 15060", "m=video 0")).port == 0


def test_our_offer_parses_as_an_answer() -> None:
    answer = parse_answer(invite_sdp(CHANNEL, "198.51.100.10", 30002, "0200000002", tcp=True))
    assert (answer.ip, answer.port, answer.tcp, answer.setup, answer.payload_types) == (
        "198.51.100.10",
        30002,
        True,
        "passive",
        (96, 97, 98),
    )


@pytest.mark.parametrize(
    ("sdp", "reason"),
    [
        ("", "video"),
        ("v=0\r\nm=audio 8000 RTP/AVP 8\r\nc=IN IP4 192.0.2.1\r\n", "video"),
        ("v=0\r\nm=video 8000 RTP/AVP 96\r\n", "c= address"),
        ("v=0\r\nc=IN IP4 192.0.2.1\r\nm=video x RTP/AVP 96\r\n", "m= line"),
        ("v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 99999 RTP/AVP 96\r\n", "m= line"),
        ("v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 8000\r\n", "m= line"),
        ("v=0\r\nc=\r\nm=video 8000 RTP/AVP 96\r\n", "c= address"),
        ("a=x\r\n" * MAX_SDP_SIZE, "larger"),
    ],
)
def test_unusable_answers_raise(sdp: str, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        parse_answer(sdp)


# --- SSRCs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "seq", "realtime", "ssrc"),
    [
        ("3402000000", 1, True, "0200000001"),
        ("3402000000", 9999, False, "1200009999"),
        ("4401060000", 42, True, "0106000042"),
        ("3402000000", 10_001, True, "0200000001"),  # the sequence wraps
    ],
)
def test_make_ssrc(domain: str, seq: int, realtime: bool, ssrc: str) -> None:
    assert make_ssrc(domain, seq, realtime=realtime) == ssrc


@pytest.mark.parametrize(
    ("domain", "seq"),
    [("34020", 1), ("34020000ab", 1), ("３４０２０００００", 1), ("3402000000", -1)],
)
def test_make_ssrc_rejects(domain: str, seq: int) -> None:
    with pytest.raises(SdpError):
        make_ssrc(domain, seq)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0200000001", 200000001),
        ("0000000000", 0),
        ("0100000010", 100000010),
        ("010", 10),
        (" 1999999999 ", 1999999999),
        ("4294967295", 2**32 - 1),
    ],
)
def test_ssrc_int_is_decimal_never_octal(text: str, value: int) -> None:
    assert ssrc_int(text) == value


@pytest.mark.parametrize(
    "text", ["", "abc", "0x10", "-1", "+1", "4294967296", "12345678901", "１２", "1 2"]
)
def test_ssrc_int_rejects(text: str) -> None:
    with pytest.raises(SdpError):
        ssrc_int(text)
