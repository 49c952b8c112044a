"""MANSCDP bodies: what Hikvision, Dahua and cheaper devices send, encodings that lie,
hostile XML, paged catalogs, and the queries the platform sends.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ingest.gb28181 import ManscdpError
from ingest.gb28181.manscdp import (
    MAX_BODY_SIZE,
    Alarm,
    CatalogAssembler,
    CatalogItem,
    CatalogResponse,
    DeviceInfo,
    Keepalive,
    OtherMessage,
    alarm_reply,
    decode_xml,
    normalise_status,
    parse_body,
    query_catalog,
    query_device_info,
    query_device_status,
)

NVR = "34020000001110000001"
CAMERA = "34020000001320000001"


def xml(body: str, *, encoding: str = "gb2312", declared: str | None = "GB2312") -> bytes:
    declaration = f'<?xml version="1.0" encoding="{declared}"?>\r\n' if declared else ""
    return (declaration + body).encode(encoding)


HIK_KEEPALIVE = xml(
    "<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>43</SN>\r\n"
    f"<DeviceID>{CAMERA}</DeviceID>\r\n<Status>OK</Status>\r\n<Info>\r\n</Info>\r\n</Notify>\r\n"
)

# A Hikvision NVR catalog page: GB2312, Chinese names, two of three channels.
HIK_CATALOG_PAGE_1 = xml(
    f"""<Response>
<CmdType>Catalog</CmdType>
<SN>17430</SN>
<DeviceID>{NVR}</DeviceID>
<SumNum>3</SumNum>
<DeviceList Num="2">
<Item>
<DeviceID>34020000001310000001</DeviceID>
<Name>东门入口</Name>
<Manufacturer>Hikvision</Manufacturer>
<Model>DS-2CD3T46WD</Model>
<Owner>Owner</Owner>
<CivilCode>3402000000</CivilCode>
<Address>园区东门</Address>
<Parental>0</Parental>
<ParentID>{NVR}</ParentID>
<SafetyWay>0</SafetyWay>
<RegisterWay>1</RegisterWay>
<Secrecy>0</Secrecy>
<IPAddress>192.0.2.64</IPAddress>
<Port>8000</Port>
<Status>ON</Status>
<Longitude>120.1551</Longitude>
<Latitude>30.2741</Latitude>
</Item>
<Item>
<DeviceID>34020000001310000002</DeviceID>
<Name>停车场</Name>
<Manufacturer>Hikvision</Manufacturer>
<Status>OFF</Status>
<Longitude>0.0</Longitude>
<Latitude>0.0</Latitude>
</Item>
</DeviceList>
</Response>
"""
)

HIK_CATALOG_PAGE_2 = xml(
    f"""<Response><CmdType>Catalog</CmdType><SN>17430</SN><DeviceID>{NVR}</DeviceID>
<SumNum>3</SumNum><DeviceList Num="1"><Item><DeviceID>34020000001310000003</DeviceID>
<Name>仓库北侧</Name><Status>ON</Status></Item></DeviceList></Response>"""
)

# Dahua: the body is UTF-8 although the declaration says GB2312, lower-case "On".
DAHUA_CATALOG = xml(
    f"""<Response>
  <CmdType>Catalog</CmdType>
  <SN> 9 </SN>
  <DeviceID>{NVR}</DeviceID>
  <SumNum>1</SumNum>
  <DeviceList Num="1">
    <Item>
      <DeviceID>34020000001310000009</DeviceID>
      <Name>大华 通道9 — 前台</Name>
      <Status>On</Status>
      <Longitude>181.5</Longitude>
      <Latitude>30.0</Latitude>
    </Item>
  </DeviceList>
</Response>""",
    encoding="utf-8",
)

DEVICE_INFO = xml(
    f"""<Response><CmdType>DeviceInfo</CmdType><SN>2</SN><DeviceID>{CAMERA}</DeviceID>
<Result>OK</Result><DeviceName>IP CAMERA</DeviceName><Manufacturer>Hikvision</Manufacturer>
<Model>DS-2DE4425IW-DE</Model><Firmware>V5.6.15</Firmware><Channel>1</Channel></Response>"""
)

ALARM = xml(
    f"""<Notify><CmdType>Alarm</CmdType><SN>311</SN><DeviceID>{CAMERA}</DeviceID>
<AlarmPriority>1</AlarmPriority><AlarmMethod>5</AlarmMethod>
<AlarmTime>2024-05-01T10:15:30</AlarmTime><AlarmDescription>区域入侵</AlarmDescription>
<Longitude>116.397</Longitude><Latitude>39.909</Latitude>
<Info><AlarmType>2</AlarmType><AlarmTypeParam><EventType>1</EventType></AlarmTypeParam></Info>
</Notify>"""
)


# --- messages ---------------------------------------------------------------------------------


def test_hikvision_keepalive() -> None:
    assert parse_body(HIK_KEEPALIVE) == Keepalive(CAMERA, 43, "OK")


def test_keepalive_with_odd_case_whitespace_and_no_sn() -> None:
    body = xml(
        "<notify><cmdtype> keepalive </cmdtype>"
        f"<deviceID>\n{CAMERA}\n</deviceID><status>ok</status></notify>",
        declared=None,
    )
    assert parse_body(body) == Keepalive(CAMERA, 0, "OK")


def test_hikvision_catalog_page() -> None:
    page = parse_body(HIK_CATALOG_PAGE_1)
    assert isinstance(page, CatalogResponse)
    assert (page.device_id, page.sn, page.sum_num, len(page.items)) == (NVR, 17430, 3, 2)
    first, second = page.items
    assert first == CatalogItem(
        channel_id="34020000001310000001",
        name="东门入口",
        manufacturer="Hikvision",
        model="DS-2CD3T46WD",
        owner="Owner",
        civil_code="3402000000",
        parent_id=NVR,
        parental=0,
        status="ON",
        longitude=120.1551,
        latitude=30.2741,
        address="园区东门",
        register_way=1,
        secrecy=0,
        ip_address="192.0.2.64",
        port=8000,
    )
    assert (second.name, second.status, second.longitude, second.latitude) == (
        "停车场",
        "OFF",
        None,
        None,
    )


def test_dahua_utf8_body_declared_gb2312() -> None:
    page = parse_body(DAHUA_CATALOG)
    assert isinstance(page, CatalogResponse)
    item = page.items[0]
    assert (page.sn, item.name, item.status) == (9, "大华 通道9 — 前台", "ON")
    assert (item.longitude, item.latitude) == (None, None)  # 181.5 is not a longitude


def test_gbk_body_declared_utf8() -> None:
    body = xml(
        f"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>{CAMERA}</DeviceID><Status>OK</Status><Info>设备正常</Info></Notify>",
        encoding="gbk",
        declared="UTF-8",
    )
    assert parse_body(body) == Keepalive(CAMERA, 1, "OK")
    assert "设备正常" in decode_xml(body)


@pytest.mark.parametrize(
    ("text", "encoding", "declared"),
    [
        ("大门口摄像机", "gb2312", "GB2312"),
        ("大门口摄像机", "utf-8", "GB2312"),
        ("大门口摄像机", "utf-8", "UTF-8"),
        ("大门口摄像机", "gb2312", "UTF-8"),
        ("伟业", "gb2312", "GB2312"),  # GB2312 bytes that are also valid UTF-8 ("һ...")
        ("一", "gbk", "GBK"),
        ("𠀀 镕", "gb18030", "GB2312"),  # outside GB2312: devices write GB18030 anyway
        ("镕", "gbk", "gb2312"),  # GBK-only character in a "GB2312" body
        ("Camera 1", "ascii", None),
        ("大门口", "utf-8", None),
    ],
)
def test_decode_xml_trusts_the_bytes_over_the_declaration(
    text: str, encoding: str, declared: str | None
) -> None:
    assert text in decode_xml(xml(f"<a>{text}</a>", encoding=encoding, declared=declared))


def test_decode_xml_strips_a_bom_and_survives_undecodable_bytes() -> None:
    assert decode_xml(b"\xef\xbb\xbf<a/>") == "<a/>"
    assert decode_xml(b"<a>\xff\xfe\x80</a>").startswith("<a>")


def test_device_info() -> None:
    assert parse_body(DEVICE_INFO) == DeviceInfo(
        CAMERA, 2, "IP CAMERA", "Hikvision", "DS-2DE4425IW-DE", "V5.6.15", 1
    )


def test_alarm_with_type_under_info() -> None:
    assert parse_body(ALARM) == Alarm(
        device_id=CAMERA,
        sn=311,
        priority=1,
        method="5",
        type="2",
        time="2024-05-01T10:15:30",
        description="区域入侵",
        longitude=116.397,
        latitude=39.909,
    )


def test_alarm_with_type_at_the_top_level_and_nothing_else() -> None:
    body = xml(
        f"<Notify><CmdType>Alarm</CmdType><SN>5</SN><DeviceID>{CAMERA}</DeviceID><AlarmType>1</AlarmType></Notify>"
    )
    alarm = parse_body(body)
    assert isinstance(alarm, Alarm)
    assert (alarm.type, alarm.priority, alarm.method, alarm.longitude) == ("1", None, None, None)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            f"<Response><CmdType>RecordInfo</CmdType><SN>3</SN><DeviceID>{CAMERA}</DeviceID><SumNum>0</SumNum></Response>",
            OtherMessage("RecordInfo", "Response", CAMERA, 3),
        ),
        (
            f"<Notify><CmdType>MediaStatus</CmdType><SN>4</SN><DeviceID>{CAMERA}</DeviceID><NotifyType>121</NotifyType></Notify>",
            OtherMessage("MediaStatus", "Notify", CAMERA, 4),
        ),
        (
            f"<Query><CmdType>Catalog</CmdType><SN>5</SN><DeviceID>{CAMERA}</DeviceID></Query>",
            OtherMessage("Catalog", "Query", CAMERA, 5),
        ),
        (
            f"<Control><CmdType>DeviceControl</CmdType><SN>6</SN><DeviceID>{CAMERA}</DeviceID><PTZCmd>A50F01</PTZCmd></Control>",
            OtherMessage("DeviceControl", "Control", CAMERA, 6),
        ),
        (
            f"<Notify><CmdType>Catalog</CmdType><SN>7</SN><DeviceID>{NVR}</DeviceID></Notify>",
            OtherMessage("Catalog", "Notify", NVR, 7),
        ),
    ],
)
def test_other_messages_are_identified(body: str, expected: OtherMessage) -> None:
    assert parse_body(xml(body)) == expected


# --- sloppy bodies that must still parse ---------------------------------------------------------


def test_bare_ampersand_nul_padding_and_control_characters_are_repaired() -> None:
    body = (
        xml(
            f"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>{NVR}</DeviceID><SumNum>1</SumNum>"
            "<DeviceList><Item><DeviceID>34020000001310000001</DeviceID><Name>A&B 出入口\x01</Name>"
            "<Address>&amp; &#20013; &lt;x&gt;</Address></Item></DeviceList></Response>"
        )
        + b"\x00\x00\x00"
    )
    page = parse_body(body)
    assert isinstance(page, CatalogResponse)
    assert page.items[0].name == "A&B 出入口"
    assert page.items[0].address == "& 中 <x>"


def test_catalog_items_without_an_id_are_skipped_and_missing_sumnum_counts_the_page() -> None:
    body = xml(
        f"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>{NVR}</DeviceID>"
        "<DeviceList><Item><Name>no id</Name></Item><Item><DeviceID>x1</DeviceID></Item>"
        "</DeviceList></Response>"
    )
    page = parse_body(body)
    assert isinstance(page, CatalogResponse)
    assert [i.channel_id for i in page.items] == ["x1"] and page.sum_num == 1


@pytest.mark.parametrize(
    ("field", "value", "attribute", "expected"),
    [
        ("Parental", "1", "parental", 1),
        ("Parental", "yes", "parental", None),
        ("Port", "70000", "port", None),
        ("Port", "-1", "port", None),
        ("Port", "+554", "port", 554),
        ("Secrecy", "99999999999999999999999", "secrecy", None),
        ("RegisterWay", "", "register_way", None),
    ],
)
def test_numeric_fields_are_lenient(
    field: str, value: str, attribute: str, expected: int | None
) -> None:
    body = xml(
        f"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>{NVR}</DeviceID><SumNum>1</SumNum>"
        f"<DeviceList><Item><DeviceID>c</DeviceID><{field}>{value}</{field}></Item></DeviceList></Response>"
    )
    page = parse_body(body)
    assert isinstance(page, CatalogResponse)
    assert getattr(page.items[0], attribute) == expected


@pytest.mark.parametrize(
    ("longitude", "latitude", "expected"),
    [
        ("120.5", "30.25", (120.5, 30.25)),
        ("0", "0", (None, None)),
        ("0.000000", "0.000000", (None, None)),
        ("-180", "-90", (-180.0, -90.0)),
        ("180.0001", "30", (None, None)),
        ("120", "91", (None, None)),
        ("nan", "30", (None, None)),
        ("inf", "30", (None, None)),
        ("东经120", "30", (None, None)),
        ("120", "", (None, None)),
        ("1" * 400, "30", (None, None)),
    ],
)
def test_coordinates(
    longitude: str, latitude: str, expected: tuple[float | None, float | None]
) -> None:
    body = xml(
        f"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>{NVR}</DeviceID><SumNum>1</SumNum>"
        f"<DeviceList><Item><DeviceID>c</DeviceID><Longitude>{longitude}</Longitude>"
        f"<Latitude>{latitude}</Latitude></Item></DeviceList></Response>"
    )
    page = parse_body(body)
    assert isinstance(page, CatalogResponse)
    assert (page.items[0].longitude, page.items[0].latitude) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ON", "ON"),
        ("On", "ON"),
        (" online ", "ON"),
        ("OK", "ON"),
        ("1", "ON"),
        ("OFF", "OFF"),
        ("Offline", "OFF"),
        ("0", "OFF"),
        ("", "OFF"),
        (None, "OFF"),
        ("DEFECT", "OFF"),
    ],
)
def test_status_normalisation(value: str | None, expected: str) -> None:
    assert normalise_status(value) == expected


# --- hostile and broken bodies -------------------------------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<Notify><CmdType>Keepalive</CmdType><DeviceID>&lol3;</DeviceID></Notify>"
)
EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE n [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<Notify><CmdType>Keepalive</CmdType><DeviceID>&x;</DeviceID></Notify>"
)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (BILLION_LAUGHS, "refused|malformed"),
        (EXTERNAL_ENTITY, "refused|malformed"),
        (b"<!DOCTYPE Notify><Notify/>", "refused|malformed"),
        (b"", "malformed"),
        (b"not xml at all", "malformed"),
        (HIK_KEEPALIVE[:-20], "malformed"),
        (b"<Notify><CmdType>Keepalive</CmdType></Notify>", "not a MANSCDP"),
        (f"<Notify><DeviceID>{CAMERA}</DeviceID></Notify>".encode(), "not a MANSCDP"),
        (
            f"<Event><CmdType>Keepalive</CmdType><DeviceID>{CAMERA}</DeviceID></Event>".encode(),
            "not a MANSCDP",
        ),
        (b"<a>" + b"x" * MAX_BODY_SIZE + b"</a>", "larger"),
        (b"<a>" * 5000 + b"</a>" * 5000, "not a MANSCDP"),
    ],
)
def test_unusable_bodies_raise_manscdp_error(body: bytes, reason: str) -> None:
    with pytest.raises(ManscdpError, match=reason):
        parse_body(body)


# --- paged catalogs ------------------------------------------------------------------------------


def page(sn: int, sum_num: int, *ids: str, device: str = NVR) -> CatalogResponse:
    return CatalogResponse(device, sn, sum_num, tuple(CatalogItem(i, name=i) for i in ids))


def test_assembler_completes_across_pages() -> None:
    assembler = CatalogAssembler()
    first = parse_body(HIK_CATALOG_PAGE_1)
    second = parse_body(HIK_CATALOG_PAGE_2)
    assert isinstance(first, CatalogResponse) and isinstance(second, CatalogResponse)
    assert assembler.add(first) is None
    assert assembler.expected(NVR, 17430) == 3
    assert [i.name for i in assembler.partial(NVR, 17430)] == ["东门入口", "停车场"]
    complete = assembler.add(second)
    assert complete is not None and [i.name for i in complete] == ["东门入口", "停车场", "仓库北侧"]
    assert len(assembler) == 0 and assembler.expected(NVR, 17430) is None


def test_assembler_deduplicates_resent_pages() -> None:
    assembler = CatalogAssembler()
    assert assembler.add(page(1, 3, "a", "b")) is None
    assert assembler.add(page(1, 3, "a", "b")) is None  # our 200 OK was lost: resent
    complete = assembler.add(page(1, 3, "c"))
    assert complete is not None and [i.channel_id for i in complete] == ["a", "b", "c"]


def test_assembler_keeps_catalogs_with_other_sns_apart() -> None:
    # An unsolicited one-item catalog (a channel came online) must not replace our sync.
    assembler = CatalogAssembler()
    assert assembler.add(page(1, 3, "a", "b")) is None
    assert assembler.add(page(99, 1, "z")) == (CatalogItem("z", name="z"),)
    complete = assembler.add(page(1, 3, "c"))
    assert complete is not None and len(complete) == 3


def test_assembler_timeout_takes_the_partial_list() -> None:
    assembler = CatalogAssembler()
    assembler.add(page(1, 5, "a", "b"))  # a Dahua NVR announcing channels it never sends
    assert [i.channel_id for i in assembler.pop(NVR, 1)] == ["a", "b"]
    assert assembler.partial(NVR, 1) == () and len(assembler) == 0


def test_assembler_empty_catalog_completes_at_once() -> None:
    assert CatalogAssembler().add(page(1, 0)) == ()


def test_assembler_is_bounded() -> None:
    assembler = CatalogAssembler(max_pending=2, max_items=3)
    assembler.add(page(1, 10, "a", device="d1"))
    assembler.add(page(1, 10, "a", device="d2"))
    assembler.add(page(1, 10, "a", device="d3"))
    assert len(assembler) == 2 and assembler.partial("d1", 1) == ()
    # sum_num above max_items: complete at max_items, extra channels dropped.
    complete = assembler.add(page(1, 10, "b", "c", "d", "e", device="d3"))
    assert complete is not None and [i.channel_id for i in complete] == ["a", "b", "c"]
    with pytest.raises(ManscdpError):
        CatalogAssembler(max_pending=0)


# --- what the platform sends ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builder", "cmd_type"),
    [
        (query_catalog, "Catalog"),
        (query_device_info, "DeviceInfo"),
        (query_device_status, "DeviceStatus"),
    ],
)
def test_queries(builder: object, cmd_type: str) -> None:
    assert callable(builder)
    body = builder(17430, CAMERA)
    assert body.startswith(b'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n')
    root = ET.fromstring(body.decode("gb2312").split("\n", 1)[1])
    assert [(child.tag, child.text) for child in root] == [
        ("CmdType", cmd_type),
        ("SN", "17430"),
        ("DeviceID", CAMERA),
    ]
    assert parse_body(body) == OtherMessage(cmd_type, "Query", CAMERA, 17430)


def test_alarm_reply() -> None:
    body = alarm_reply(311, CAMERA)
    root = ET.fromstring(body.decode("gb2312").split("\n", 1)[1])
    assert (
        root.tag == "Response"
        and root.findtext("Result") == "OK"
        and root.findtext("CmdType") == "Alarm"
    )
    assert b"<Result>ERROR</Result>" in alarm_reply(1, CAMERA, ok=False)


def test_builders_escape_and_validate() -> None:
    assert b"<DeviceID>a&amp;b&lt;</DeviceID>" in query_catalog(1, "a&b<")
    with pytest.raises(ManscdpError):
        query_catalog(-1, CAMERA)
    with pytest.raises(ManscdpError):
        query_catalog(1, "")
