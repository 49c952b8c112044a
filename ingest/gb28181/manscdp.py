"""MANSCDP bodies (``Application/MANSCDP+xml``): what devices report, what we ask them.

GB/T 28181 devices speak XML inside SIP MESSAGEs: ``<Notify>`` (keepalive, alarm),
``<Response>`` (to our catalog / device-info queries), and receive ``<Query>`` and
``<Control>``. :func:`parse_body` turns a body into one of the frozen dataclasses below;
the builders (:func:`query_catalog`…) produce bodies as devices expect them: GB2312 with
that declaration.

What real bodies get wrong, and what this module does about it:

- The declared encoding lies. ``encoding="GB2312"`` with UTF-8 inside (many firmwares,
  most software platforms), or UTF-8 declared with GBK inside. :func:`decode_xml` decides
  from the bytes (see there); GB2312/GBK are decoded as GB18030, their superset, because
  device names use characters outside GB2312.
- Bare ``&`` in names (``A&B 出入口``), NUL padding, control characters: repaired.
- Tag and value case and whitespace vary (``<Status>On</Status>``, ``<deviceID>``):
  lookups ignore case, values are stripped, statuses normalised.
- Untrusted XML: parsed with ``defusedxml`` (no DTD, no entity expansion, no external
  fetches) and at most :data:`MAX_BODY_SIZE` bytes.

A catalog larger than one UDP datagram arrives as several ``Response`` MESSAGEs with the
same SN; :class:`CatalogAssembler` puts the pages together.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import escape

import defusedxml
import defusedxml.ElementTree as SafeET

from ingest.gb28181 import ManscdpError

__all__ = [
    "MANSCDP_CONTENT_TYPE",
    "MAX_BODY_SIZE",
    "Alarm",
    "CatalogAssembler",
    "CatalogItem",
    "CatalogResponse",
    "Category",
    "DeviceInfo",
    "Keepalive",
    "ManscdpMessage",
    "OtherMessage",
    "alarm_reply",
    "decode_xml",
    "normalise_status",
    "parse_body",
    "query_catalog",
    "query_device_info",
    "query_device_status",
]

MANSCDP_CONTENT_TYPE = "Application/MANSCDP+xml"
#: Largest body parsed: a SIP message is at most 64 KiB (see :data:`sip.MAX_MESSAGE_SIZE`).
MAX_BODY_SIZE = 64 * 1024
#: Channels kept per catalog (an NVR has 4-256; a lower platform a few thousand).
MAX_CATALOG_ITEMS = 20_000

Category = Literal["Notify", "Response", "Query", "Control"]
_CATEGORIES: dict[str, Category] = {
    "notify": "Notify",
    "response": "Response",
    "query": "Query",
    "control": "Control",
}
_DECLARED = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]{1,40})["']""")
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_BARE_AMP = re.compile(r"&(?!(?:[A-Za-z][A-Za-z0-9]{0,31}|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});)")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_GB_FAMILY = frozenset({"gb2312", "gbk", "gb18030", "cp936", "euc-cn", "gb_2312-80"})
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_ONLINE = frozenset({"ON", "ONLINE", "OK", "1", "TRUE", "YES"})

# --- decoding -------------------------------------------------------------------------------


def _declared_encoding(data: bytes) -> str | None:
    match = _DECLARED.match(data[:200])
    return match.group(1).decode("ascii").lower() if match else None


def _looks_like_misread_gbk(text: str) -> bool:
    """UTF-8-valid text whose non-ASCII characters are all 2-byte sequences (U+0080-07FF).

    Chinese in UTF-8 is 3 bytes a character (U+4E00-9FFF); GBK bytes that happen to be
    valid UTF-8 mostly pair a C2-DF lead with an A1-BF trail, i.e. Latin-1/Greek/Cyrillic
    code points. Seeing only those in a body declared GB2312 means it was GBK after all.
    """
    wide = [c for c in text if ord(c) > 0x7F]
    return bool(wide) and all(ord(c) < 0x800 for c in wide)


def decode_xml(data: bytes) -> str:
    """Decode a MANSCDP body to text, trusting the bytes more than the declaration.

    Valid UTF-8 is read as UTF-8 (a GBK body is almost never valid UTF-8), unless the body
    declares a GB encoding and its UTF-8 reading looks like misread GBK; everything else is
    GB18030 (a superset of GB2312 and GBK), with replacement characters as a last resort.
    Other declared encodings are not trusted: GB/T 28181 devices only use these two.
    """
    if len(data) > MAX_BODY_SIZE:
        raise ManscdpError(f"MANSCDP body larger than {MAX_BODY_SIZE} bytes")
    data = data.removeprefix(b"\xef\xbb\xbf")
    utf8, gb = _try_decode(data, "utf-8"), _try_decode(data, "gb18030")
    if utf8 is not None and gb is not None and _declared_encoding(data) in _GB_FAMILY:
        return gb if _looks_like_misread_gbk(utf8) else utf8
    return utf8 or gb or data.decode("gb18030", errors="replace")


def _try_decode(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        return None


def _repair(text: str) -> str:
    text = _DECLARATION.sub("", text, count=1)  # already decoded: the declaration would lie
    text = _CONTROL.sub("", text)
    return _BARE_AMP.sub("&amp;", text).strip()


def _parse_xml(data: bytes) -> ET.Element:
    text = _repair(decode_xml(data))
    try:
        return SafeET.fromstring(text, forbid_dtd=True)
    except ET.ParseError as err:
        raise ManscdpError(f"malformed MANSCDP XML: {err}") from err
    except (defusedxml.DefusedXmlException, ValueError) as err:
        raise ManscdpError(f"refused MANSCDP XML: {type(err).__name__}") from err


# --- element access -------------------------------------------------------------------------


def _tag(element: ET.Element) -> str:
    return str(element.tag).rpartition("}")[2].lower()


def _child(element: ET.Element | None, name: str) -> ET.Element | None:
    if element is None:
        return None
    wanted = name.lower()
    return next((c for c in element if _tag(c) == wanted), None)


def _text(element: ET.Element | None, *path: str) -> str | None:
    for name in path:
        element = _child(element, name)
    text = element.text if element is not None else None
    return text.strip() if text is not None and text.strip() else None


def _int(value: str | None, low: int = 0, high: int = 2**63 - 1) -> int | None:
    if value is None or not _INTEGER.fullmatch(value):
        return None
    number = int(value)
    return number if low <= number <= high else None


def _coordinate(value: str | None, limit: float) -> float | None:
    try:
        number = float(value) if value is not None and len(value) < 40 else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) and -limit <= number <= limit else None


def _position(element: ET.Element) -> tuple[float | None, float | None]:
    """(longitude, latitude); 0,0 ("not configured", the factory default) and junk → None."""
    longitude = _coordinate(_text(element, "Longitude"), 180.0)
    latitude = _coordinate(_text(element, "Latitude"), 90.0)
    if longitude is None or latitude is None or (longitude == 0 and latitude == 0):
        return None, None
    return longitude, latitude


def normalise_status(value: str | None) -> Literal["ON", "OFF"]:
    """A catalog item's Status as ``"ON"``/``"OFF"``: ON, On, ONLINE, OK, 1 are online.

    Anything else, missing included, is offline (WVP-GB28181-pro reads it the same way).
    """
    return "ON" if value is not None and value.strip().upper() in _ONLINE else "OFF"


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keepalive:
    """``Notify/Keepalive``: the device is alive (``status`` is ``"OK"`` or ``"ERROR"``)."""

    device_id: str
    sn: int
    status: str


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One channel (camera, alarm input, organisation node) of a catalog response."""

    channel_id: str
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    owner: str | None = None
    civil_code: str | None = None
    parent_id: str | None = None
    parental: int | None = None
    status: Literal["ON", "OFF"] = "OFF"
    longitude: float | None = None
    latitude: float | None = None
    address: str | None = None
    register_way: int | None = None
    secrecy: int | None = None
    ip_address: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class CatalogResponse:
    """One page of ``Response/Catalog``: ``sum_num`` channels in all, ``items`` in this page."""

    device_id: str
    sn: int
    sum_num: int
    items: tuple[CatalogItem, ...]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """``Response/DeviceInfo``."""

    device_id: str
    sn: int
    name: str | None
    manufacturer: str | None
    model: str | None
    firmware: str | None
    channels: int | None


@dataclass(frozen=True, slots=True)
class Alarm:
    """``Notify/Alarm`` (GB/T 28181-2016 A.2.5.5); the platform must answer :func:`alarm_reply`.

    ``method``: 1 phone, 2 device, 3 SMS, 4 GPS, 5 video analysis, 6 device fault, 7 other.
    ``type`` depends on the method (device alarms: 1 video loss, 2 tamper, 5 motion…).
    """

    device_id: str
    sn: int
    priority: int | None
    method: str | None
    type: str | None
    time: str | None
    description: str | None
    longitude: float | None
    latitude: float | None


@dataclass(frozen=True, slots=True)
class OtherMessage:
    """Any other MANSCDP message, identified only (RecordInfo, MediaStatus, DeviceStatus…)."""

    cmd_type: str
    category: Category
    device_id: str
    sn: int


ManscdpMessage = Keepalive | CatalogResponse | DeviceInfo | Alarm | OtherMessage


def _catalog_item(element: ET.Element) -> CatalogItem | None:
    channel_id = _text(element, "DeviceID")
    if channel_id is None:
        return None  # an item without an ID cannot be stored or played: skip it
    longitude, latitude = _position(element)
    return CatalogItem(
        channel_id=channel_id,
        name=_text(element, "Name"),
        manufacturer=_text(element, "Manufacturer"),
        model=_text(element, "Model"),
        owner=_text(element, "Owner"),
        civil_code=_text(element, "CivilCode"),
        parent_id=_text(element, "ParentID"),
        parental=_int(_text(element, "Parental")),
        status=normalise_status(_text(element, "Status")),
        longitude=longitude,
        latitude=latitude,
        address=_text(element, "Address"),
        register_way=_int(_text(element, "RegisterWay")),
        secrecy=_int(_text(element, "Secrecy")),
        ip_address=_text(element, "IPAddress"),
        port=_int(_text(element, "Port"), 0, 65535),
    )


def _catalog(root: ET.Element, device_id: str, sn: int) -> CatalogResponse:
    device_list = _child(root, "DeviceList")
    elements = [c for c in device_list if _tag(c) == "item"] if device_list is not None else []
    items = tuple(item for item in map(_catalog_item, elements) if item is not None)
    # SumNum missing or junk: this page is all there is.
    sum_num = _int(_text(root, "SumNum"), 0, MAX_CATALOG_ITEMS * 10)
    return CatalogResponse(device_id, sn, len(items) if sum_num is None else sum_num, items)


def _device_info(root: ET.Element, device_id: str, sn: int) -> DeviceInfo:
    return DeviceInfo(
        device_id=device_id,
        sn=sn,
        name=_text(root, "DeviceName"),
        manufacturer=_text(root, "Manufacturer"),
        model=_text(root, "Model"),
        firmware=_text(root, "Firmware"),
        channels=_int(_text(root, "Channel")),
    )


def _alarm(root: ET.Element, device_id: str, sn: int) -> Alarm:
    longitude, latitude = _position(root)
    return Alarm(
        device_id=device_id,
        sn=sn,
        priority=_int(_text(root, "AlarmPriority")),
        method=_text(root, "AlarmMethod"),
        # 2016 puts AlarmType under Info; some devices put it at the top level.
        type=_text(root, "Info", "AlarmType") or _text(root, "AlarmType"),
        time=_text(root, "AlarmTime"),
        description=_text(root, "AlarmDescription"),
        longitude=longitude,
        latitude=latitude,
    )


def parse_body(data: bytes) -> ManscdpMessage:
    """Parse a MANSCDP body; raise :class:`~ingest.gb28181.ManscdpError` if unusable.

    ``CmdType`` and ``DeviceID`` are required. A missing or non-numeric ``SN`` reads as 0
    (cheap devices omit it in keepalives, and a keepalive must not fail over it).
    """
    root = _parse_xml(data)
    category = _CATEGORIES.get(_tag(root))
    cmd_type, device_id = _text(root, "CmdType"), _text(root, "DeviceID")
    if category is None or cmd_type is None or device_id is None:
        raise ManscdpError(f"not a MANSCDP message (root <{_tag(root)[:30]}>, no CmdType/DeviceID)")
    sn = _int(_text(root, "SN")) or 0
    kind = (category, cmd_type.lower())
    if kind == ("Notify", "keepalive"):
        return Keepalive(device_id, sn, (_text(root, "Status") or "OK").upper())
    if kind == ("Response", "catalog"):
        return _catalog(root, device_id, sn)
    if kind == ("Response", "deviceinfo"):
        return _device_info(root, device_id, sn)
    if kind == ("Notify", "alarm"):
        return _alarm(root, device_id, sn)
    return OtherMessage(cmd_type, category, device_id, sn)


# --- catalog pages --------------------------------------------------------------------------


class CatalogAssembler:
    """Collects the pages of catalog responses until each holds ``sum_num`` channels.

    Keyed by (device ID, SN); channels deduplicated by ID (devices resend a page when our
    200 OK is lost). Some devices never reach ``sum_num`` (Dahua NVRs count channels they
    then do not send): the caller runs a timer and takes :meth:`partial`. At most
    ``max_pending`` catalogs are in progress (the oldest is dropped) and each keeps at
    most ``max_items`` channels, so a device cannot grow this without bound.
    """

    def __init__(self, *, max_pending: int = 256, max_items: int = MAX_CATALOG_ITEMS) -> None:
        if max_pending < 1 or max_items < 1:
            raise ManscdpError("CatalogAssembler needs max_pending >= 1 and max_items >= 1")
        self._max_pending, self._max_items = max_pending, max_items
        self._pending: OrderedDict[tuple[str, int], dict[str, CatalogItem]] = OrderedDict()
        self._expected: dict[tuple[str, int], int] = {}

    def add(self, page: CatalogResponse) -> tuple[CatalogItem, ...] | None:
        """Add a page; return every channel once the catalog is complete (and forget it)."""
        key = (page.device_id, page.sn)
        items = self._pending.setdefault(key, {})
        self._pending.move_to_end(key)
        self._expected[key] = min(max(page.sum_num, self._expected.get(key, 0)), self._max_items)
        for item in page.items:
            if len(items) < self._max_items or item.channel_id in items:
                items[item.channel_id] = item  # a resent channel replaces the older copy
        self._evict()
        if len(items) >= self._expected[key]:
            return self.pop(*key)
        return None

    def _evict(self) -> None:
        while len(self._pending) > self._max_pending:
            key, _ = self._pending.popitem(last=False)
            del self._expected[key]

    def partial(self, device_id: str, sn: int) -> tuple[CatalogItem, ...]:
        """The channels received so far for (device_id, sn), without forgetting them."""
        return tuple(self._pending.get((device_id, sn), {}).values())

    def expected(self, device_id: str, sn: int) -> int | None:
        """The ``sum_num`` announced for (device_id, sn), None if nothing is pending."""
        return self._expected.get((device_id, sn))

    def pop(self, device_id: str, sn: int) -> tuple[CatalogItem, ...]:
        """Forget (device_id, sn) and return what it held (at a timeout: the partial list)."""
        self._expected.pop((device_id, sn), None)
        return tuple(self._pending.pop((device_id, sn), {}).values())

    def __len__(self) -> int:
        return len(self._pending)


# --- builders -------------------------------------------------------------------------------


def _body(root: str, cmd_type: str, sn: int, device_id: str, extra: str = "") -> bytes:
    if not 0 <= sn < 2**31:
        raise ManscdpError(f"SN out of range: {sn}")
    if not device_id or len(device_id) > 64:
        raise ManscdpError("device ID missing or too long")
    lines = [
        '<?xml version="1.0" encoding="GB2312"?>',
        f"<{root}>",
        f"<CmdType>{cmd_type}</CmdType>",
        f"<SN>{sn}</SN>",
        f"<DeviceID>{escape(device_id)}</DeviceID>",
        *([extra] if extra else []),
        f"</{root}>",
        "",
    ]
    # Characters outside GB2312 (none in IDs, but be safe) become character references.
    return "\r\n".join(lines).encode("gb2312", errors="xmlcharrefreplace")


def query_catalog(sn: int, device_id: str) -> bytes:
    """``Query/Catalog``: ask a device (or a lower platform) for its channels."""
    return _body("Query", "Catalog", sn, device_id)


def query_device_info(sn: int, device_id: str) -> bytes:
    """``Query/DeviceInfo``: manufacturer, model, firmware, channel count."""
    return _body("Query", "DeviceInfo", sn, device_id)


def query_device_status(sn: int, device_id: str) -> bytes:
    """``Query/DeviceStatus``: online, recording, alarm inputs (answered as OtherMessage)."""
    return _body("Query", "DeviceStatus", sn, device_id)


def alarm_reply(sn: int, device_id: str, *, ok: bool = True) -> bytes:
    """``Response/Alarm``: the acknowledgement a platform sends after a ``Notify/Alarm``.

    GB/T 28181-2016 §9.4.2: besides the SIP 200 OK, the platform answers an alarm with this
    MESSAGE (same SN); without it some devices keep resending the alarm.
    """
    return _body("Response", "Alarm", sn, device_id, f"<Result>{'OK' if ok else 'ERROR'}</Result>")
