"""Pure ONVIF logic on recorded data: discovery answers, event messages, stream choice.

The XML in data/onvif/ is written after the ONVIF Core spec examples and what Hikvision,
Axis, a WSD printer and ipycam send (addresses from the documentation ranges).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.discovery import build_probe, parse_probe_matches
from ingest.onvif import (
    OnvifDevice,
    OnvifError,
    OnvifNoMedia,
    Profile,
    choose_profiles,
    choose_streams,
    strip_userinfo,
    with_credentials,
)
from ingest.onvif_events import MotionAlarm, parse_motion_alarms

DATA = Path(__file__).parent / "data" / "onvif"
PROBE_ID = "urn:uuid:7f4e0b2a-1111-4c3b-9d55-0123456789ab"


def recorded(name: str) -> bytes:
    return (DATA / name).read_bytes()


# --- discovery ----------------------------------------------------------------------------


def test_the_probe_asks_for_network_video_transmitters_with_its_message_id() -> None:
    root = ET.fromstring(build_probe(PROBE_ID))
    wsa = "{http://schemas.xmlsoap.org/ws/2004/08/addressing}"
    wsd = "{http://schemas.xmlsoap.org/ws/2005/04/discovery}"
    assert root.findtext(f".//{wsa}MessageID") == PROBE_ID
    assert root.findtext(f".//{wsa}Action") == wsd[1:-1] + "/Probe"
    assert root.findtext(f".//{wsd}Probe/{wsd}Types") == "dn:NetworkVideoTransmitter"


@pytest.mark.parametrize(
    ("name", "endpoint", "address", "host", "port", "cam_name", "hardware", "location"),
    [
        (
            "probe_matches_hikvision.xml",
            "urn:uuid:3c2e4b6a-2f1d-11b2-8090-c056e3a1f0d2",
            "http://192.0.2.64/onvif/device_service",
            "192.0.2.64",
            80,
            "HIKVISION DS-2CD2143G2-I",
            "DS-2CD2143G2-I",
            "city/hangzhou",
        ),
        (
            "probe_matches_axis.xml",
            "urn:uuid:5bbf8d1e-7c11-4a58-8d7a-accc8e123456",
            "http://192.0.2.81:8080/onvif/device_service",
            "192.0.2.81",
            8080,
            "AXIS P3245-LV",
            "P3245-LV",
            "country/china, city/ningbo",
        ),
        (  # ipycam answers with a bare ProbeMatch (no ProbeMatches around it)
            "probe_match_ipycam.xml",
            "urn:uuid:9d2b4c61-8a6f-4d43-9d61-0f4d2a7c3e11",
            "http://127.0.0.1:18080/onvif/device_service",
            "127.0.0.1",
            18080,
            "Gate-North",
            None,
            None,
        ),
    ],
)
def test_probe_matches_of_cameras(
    name: str,
    endpoint: str,
    address: str,
    host: str,
    port: int,
    cam_name: str,
    hardware: str | None,
    location: str | None,
) -> None:
    (device,) = parse_probe_matches(recorded(name), PROBE_ID)
    assert (device.endpoint, device.address, device.host, device.port) == (
        endpoint,
        address,
        host,
        port,
    )
    assert (device.name, device.hardware, device.location) == (cam_name, hardware, location)
    assert "onvif://www.onvif.org/type/video_encoder" in device.scopes


def test_all_addresses_of_a_camera_are_kept() -> None:
    (device,) = parse_probe_matches(recorded("probe_matches_hikvision.xml"), PROBE_ID)
    assert device.xaddrs == (
        "http://192.0.2.64/onvif/device_service",
        "http://[2001:db8::64]/onvif/device_service",
    )


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (recorded("probe_matches_hikvision.xml"), "answers another client's probe"),
        (recorded("hello_hikvision.xml"), "a Hello announcement, no RelatesTo"),
        (recorded("probe_matches_printer.xml"), "a printer, not an ONVIF device"),
        (build_probe(PROBE_ID), "our own probe, looped back"),
        (b"\x00\xff not xml", "garbage"),
        (b"", "empty"),
        (
            recorded("probe_match_ipycam.xml").replace(
                b"http://127.0.0.1:18080/onvif/device_service", b""
            ),
            "no service address",
        ),
    ],
)
def test_noise_is_not_a_camera(data: bytes, why: str) -> None:
    probe_id = "urn:uuid:another" if "another" in why else PROBE_ID
    assert parse_probe_matches(data, probe_id) == [], why


def test_the_printer_answer_is_a_real_answer_to_the_probe() -> None:
    # It is dropped for what it is, not for a wrong RelatesTo: the filter on types matters.
    text = recorded("probe_matches_printer.xml").replace(
        b"wsdp:Device pri:PrintDeviceType", b"dn:NetworkVideoTransmitter"
    )
    assert len(parse_probe_matches(text, PROBE_ID)) == 1


# --- events -------------------------------------------------------------------------------


def test_cell_motion_detector_from_a_pull_point() -> None:
    alarms = parse_motion_alarms(recorded("pull_messages_cell_motion.xml"))
    topic = "tns1:RuleEngine/CellMotionDetector/Motion"
    assert alarms == [
        MotionAlarm(
            topic,
            "VideoSourceToken",
            False,
            datetime(2024, 5, 24, 8, 14, tzinfo=UTC),
            "MyMotionDetectorRule",
        ),
        MotionAlarm(
            topic,
            "VideoSourceToken",
            True,
            datetime(2024, 5, 24, 8, 15, 1, 250000, tzinfo=UTC),
            "MyMotionDetectorRule",
        ),
    ]


def test_only_motion_topics_count_whatever_the_prefix() -> None:
    alarms = parse_motion_alarms(recorded("pull_messages_mixed_topics.xml"))
    assert [(a.topic, a.source, a.state, a.rule) for a in alarms] == [
        ("tns1:VideoSource/MotionAlarm", "VideoSource_1", True, None),
        ("tns1:RuleEngine/MotionRegionDetector/Motion", "VSC_1", False, "Region-Door"),
    ]
    # No zone: the camera means UTC. With a zone: converted to UTC.
    assert alarms[0].at == datetime(2024, 5, 24, 10, 0, 8, tzinfo=UTC)
    assert alarms[1].at == datetime(2024, 5, 24, 2, 0, 9, 500000, tzinfo=UTC)


def test_axis_motion_detection_through_notify() -> None:
    (alarm,) = parse_motion_alarms(recorded("notify_axis_motion.xml").decode())
    assert alarm.topic == "tns1:VideoAnalytics/tnsaxis:MotionDetection"
    assert (alarm.source, alarm.state) == ("0", True)
    assert alarm.at == datetime(2024, 5, 24, 11, 20, 30, 123456, tzinfo=UTC)


def test_no_messages_is_an_empty_list() -> None:
    assert parse_motion_alarms(recorded("pull_messages_empty.xml")) == []


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (recorded("pull_messages_fault.xml"), "subscription has expired"),
        (b"<not-closed", "not XML"),
    ],
)
def test_faults_and_garbage_raise_with_words(data: bytes, says: str) -> None:
    with pytest.raises(OnvifError, match=says):
        parse_motion_alarms(data)


def test_message_without_a_time_takes_the_response_time() -> None:
    text = recorded("pull_messages_cell_motion.xml").replace(
        b'UtcTime="2024-05-24T08:15:01.250Z" ', b""
    )
    assert parse_motion_alarms(text)[1].at == datetime(2024, 5, 24, 8, 15, 2, tzinfo=UTC)


# --- choosing streams ---------------------------------------------------------------------


def _profile(
    token: str, encoding: str, width: int, height: int, uri: str | None = "auto"
) -> Profile:
    stream = f"rtsp://192.0.2.64:554/{token}" if uri == "auto" else uri
    return Profile(token, token, encoding, width, height, 25.0, stream, None)


def _device(*profiles: Profile) -> OnvifDevice:
    return OnvifDevice("Acme", "X1", "1.0", "S1", tuple(profiles), ptz=False)


MAIN_4K_H265 = _profile("main265", "H265", 3840, 2160)
MAIN_1080 = _profile("main", "H264", 1920, 1080)
SUB_D1 = _profile("sub", "H264", 704, 576)
THIRD_MJPEG = _profile("third", "JPEG", 640, 360)
TINY_NO_STREAM = _profile("tiny", "H264", 320, 180, uri=None)


@pytest.mark.parametrize(
    ("profiles", "token", "main", "sub"),
    [
        ((MAIN_1080, SUB_D1), None, "main", "sub"),
        ((SUB_D1, MAIN_1080), None, "main", "sub"),  # order does not matter
        ((MAIN_4K_H265, MAIN_1080, SUB_D1), None, "main", "sub"),  # H.264 before resolution
        ((MAIN_1080, SUB_D1, THIRD_MJPEG), None, "main", "sub"),  # H.264 sub before MJPEG
        ((MAIN_1080, THIRD_MJPEG), None, "main", "third"),  # any smaller stream beats none
        ((MAIN_1080, TINY_NO_STREAM), None, "main", None),  # a profile without a stream
        ((MAIN_1080,), None, "main", None),
        ((MAIN_4K_H265, SUB_D1), None, "sub", None),  # nothing smaller than the H.264 one
        ((THIRD_MJPEG,), None, "third", None),  # no H.264 at all
        ((MAIN_4K_H265, MAIN_1080, SUB_D1), "main265", "main265", "sub"),  # told otherwise
    ],
)
def test_main_is_the_largest_h264_and_sub_the_smallest_other(
    profiles: tuple[Profile, ...], token: str | None, main: str, sub: str | None
) -> None:
    chosen_main, chosen_sub = choose_profiles(_device(*profiles), token)
    assert (chosen_main.token, chosen_sub.token if chosen_sub else None) == (main, sub)


def test_choose_streams_gives_the_uris() -> None:
    assert choose_streams(_device(SUB_D1, MAIN_1080)) == (
        "rtsp://192.0.2.64:554/main",
        "rtsp://192.0.2.64:554/sub",
    )


def test_sub_profile_can_be_named_too() -> None:
    main, sub = choose_profiles(_device(MAIN_1080, SUB_D1, THIRD_MJPEG), None, "third")
    assert (main.token, sub and sub.token) == ("main", "third")


def test_an_unknown_profile_token_names_the_ones_there_are() -> None:
    with pytest.raises(OnvifError, match=r"no profile 'nope'.*main, sub"):
        choose_profiles(_device(MAIN_1080, SUB_D1), "nope")


def test_a_device_without_streams_is_no_media() -> None:
    with pytest.raises(OnvifNoMedia):
        choose_profiles(_device(TINY_NO_STREAM))


@pytest.mark.parametrize(
    ("uri", "user", "password", "expected"),
    [
        ("rtsp://192.0.2.64:554/s1", "admin", "pw", "rtsp://admin:pw@192.0.2.64:554/s1"),
        ("rtsp://192.0.2.64/s1", "ad min", "p@ss:/w%rd", "rtsp://ad%20min:p%40ss%3A%2Fw%25rd@192.0.2.64/s1"),
        ("rtsp://old:secret@192.0.2.64/s1?x=1", "admin", "new", "rtsp://admin:new@192.0.2.64/s1?x=1"),
        ("rtsp://old:secret@192.0.2.64/s1", "", "", "rtsp://192.0.2.64/s1"),
        ("rtsp://[2001:db8::64]:554/s1", "a", "b", "rtsp://a:b@[2001:db8::64]:554/s1"),
    ],
)  # fmt: skip
def test_credentials_go_into_the_rtsp_uri(
    uri: str, user: str, password: str, expected: str
) -> None:
    assert with_credentials(uri, user, password) == expected


def test_stored_device_has_no_credentials_and_round_trips() -> None:
    leaky = Profile(
        "p", "p", "H264", 1280, 720, None, "rtsp://admin:pw@192.0.2.9/p", "http://u:pw@192.0.2.9/s"
    )
    device = _device(leaky)
    stored = device.to_dict()
    assert "pw" not in str(stored)
    restored = OnvifDevice.from_dict(stored)
    assert restored.profiles[0].stream_uri == "rtsp://192.0.2.9/p"
    assert restored.snapshot_uri == "http://192.0.2.9/s"
    assert restored.manufacturer == device.manufacturer
    assert strip_userinfo("http://192.0.2.9/s") == "http://192.0.2.9/s"
