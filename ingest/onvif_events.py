"""Motion alarms from a camera's own analytics, out of ONVIF event messages (pure).

Cameras report motion through the ONVIF event service (pull-point ``PullMessages`` or
``Notify``) as ``wsnt:NotificationMessage`` elements: a topic, and a ``tt:Message`` with
``Source`` and ``Data`` simple items (ONVIF Core 9.1). Firmwares use different topics and
item names for the same thing:

- ``tns1:VideoSource/MotionAlarm`` — ``Source/VideoSourceToken``, ``Data/State``
- ``tns1:RuleEngine/CellMotionDetector/Motion`` — ``Data/IsMotion`` (Profile S/T cell motion)
- ``tns1:RuleEngine/MotionRegionDetector/Motion`` — ``Data/State`` (Profile T regions)
- vendor topics such as ``tns1:VideoAnalytics/tnsaxis:MotionDetection`` — ``Data/active``

:func:`parse_motion_alarms` turns a response into :class:`MotionAlarm` values, in document
order, and ignores every other topic (tampering, digital inputs, …).
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime

from ingest.onvif import OnvifError

__all__ = ["MotionAlarm", "parse_motion_alarms"]

_WSNT = "http://docs.oasis-open.org/wsn/b-2"
_TT = "http://www.onvif.org/ver10/schema"
_TOPICS_NS = "http://www.onvif.org/ver10/topics"
_SOAP_NS = ("http://www.w3.org/2003/05/soap-envelope", "http://schemas.xmlsoap.org/soap/envelope/")
# Data items that carry the alarm state, compared case-insensitively.
_STATE_ITEMS = ("ismotion", "state", "active", "logicalstate", "motion")
# Preferred order of the Source item naming the video source the alarm is about.
_SOURCE_ITEMS = (
    "VideoSourceConfigurationToken",
    "VideoSourceToken",
    "Source",
    "InputToken",
    "VideoSource",
)
_TRUE = frozenset({"true", "1", "on", "yes"})
_FALSE = frozenset({"false", "0", "off", "no"})


@dataclass(frozen=True)
class MotionAlarm:
    """The camera says motion started (``state=True``) or ended on ``source`` at ``at``."""

    topic: str  # normalised: the ONVIF topic namespace is always written tns1:
    source: str  # the video source (configuration) token; "" when the camera names no source
    state: bool
    at: datetime  # aware, UTC
    rule: str | None = None  # the analytics rule that fired, when the camera names it


def parse_motion_alarms(document: bytes | str) -> list[MotionAlarm]:
    """The motion alarms in a ``PullMessagesResponse`` or ``Notify`` document.

    Raises :class:`~ingest.onvif.OnvifError` for a document that is not XML or holds a
    SOAP fault (e.g. the subscription expired).
    """
    data = document.encode() if isinstance(document, str) else document
    root, prefixes = _parse(data)
    _raise_fault(root)
    current = _current_time(root)
    alarms = []
    for message in root.iter(f"{{{_WSNT}}}NotificationMessage"):
        alarm = _alarm(message, prefixes, current)
        if alarm is not None:
            alarms.append(alarm)
    return alarms


def _parse(data: bytes) -> tuple[ET.Element, dict[str, str]]:
    """The root and the namespace prefixes the document declares (topics use them in text)."""
    prefixes: dict[str, str] = {}
    root: ET.Element | None = None
    try:
        for event, item in ET.iterparse(io.BytesIO(data), events=("start-ns", "start")):
            if event == "start-ns":
                prefix, uri = item
                prefixes.setdefault(prefix, uri)
            elif root is None:
                root = item
    except ET.ParseError as err:
        raise OnvifError(f"the camera sent an event message that is not XML: {err}") from err
    if root is None:
        raise OnvifError("the camera sent an empty event message")
    return root, prefixes


def _raise_fault(root: ET.Element) -> None:
    for ns in _SOAP_NS:
        fault = root.find(f".//{{{ns}}}Fault")
        if fault is not None:
            reason = " ".join(t.strip() for t in fault.itertext() if t.strip())
            raise OnvifError(f"the camera answered the event request with a fault: {reason}")


def _current_time(root: ET.Element) -> datetime | None:
    element = next(root.iter("{http://www.onvif.org/ver10/events/wsdl}CurrentTime"), None)
    return _time(element.text) if element is not None and element.text else None


def _alarm(
    notification: ET.Element, prefixes: dict[str, str], current: datetime | None
) -> MotionAlarm | None:
    topic_element = notification.find(f"{{{_WSNT}}}Topic")
    message = notification.find(f"{{{_WSNT}}}Message/{{{_TT}}}Message")
    if topic_element is None or message is None:
        return None
    topic = _topic(topic_element.text or "", prefixes)
    data = _items(message, "Data")
    state = _state(data)
    if "motion" not in topic.lower() or state is None:
        return None
    source = _items(message, "Source")
    at = _time(message.get("UtcTime", "")) or current or datetime.now(UTC)
    return MotionAlarm(
        topic=topic,
        source=_source(source),
        state=state,
        at=at,
        rule=source.get("Rule"),
    )


def _source(items: dict[str, str]) -> str:
    """The video source the alarm is about; else the first item the camera gives."""
    for name in _SOURCE_ITEMS:
        if name in items:
            return items[name]
    return next(iter(items.values()), "")


def _topic(text: str, prefixes: dict[str, str]) -> str:
    """``ns0:RuleEngine/…`` with ns0 bound to the ONVIF topic namespace → ``tns1:RuleEngine/…``."""
    text = text.strip()
    prefix, colon, rest = text.partition(":")
    if colon and "/" not in prefix and prefixes.get(prefix) == _TOPICS_NS:
        return f"tns1:{rest}"
    return text


def _items(message: ET.Element, part: str) -> dict[str, str]:
    element = message.find(f"{{{_TT}}}{part}")
    if element is None:
        return {}
    return {
        item.get("Name", ""): item.get("Value", "") for item in element.iter(f"{{{_TT}}}SimpleItem")
    }


def _state(data: dict[str, str]) -> bool | None:
    lowered = {name.lower(): value for name, value in data.items()}
    for name in _STATE_ITEMS:
        value = lowered.get(name, "").strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
    return None


def _time(text: str) -> datetime | None:
    """An xs:dateTime as aware UTC; cameras that omit the zone mean UTC (ONVIF: UtcTime)."""
    text = text.strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
