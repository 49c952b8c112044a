"""WS-Discovery: find ONVIF cameras on the local network segment.

One multicast ``Probe`` for ``dn:NetworkVideoTransmitter`` to 239.255.255.250:3702 from the
chosen interface (sent twice: UDP is lossy, and WS-Discovery repeats multicast messages
once), then every unicast ``ProbeMatches`` that arrives before the timeout. Only answers to
*this* probe count (``RelatesTo`` is its ``MessageID``) and only ONVIF devices (type
``NetworkVideoTransmitter`` or an ``onvif://`` scope): Hello/Bye announcements, other
clients' probes, printers and other WS-Discovery devices, and garbage are ignored.

:func:`parse_probe_matches` and :func:`build_probe` are pure; :func:`discover` does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ingest.errors import IngestError

__all__ = [
    "MULTICAST_GROUP",
    "DiscoveredDevice",
    "DiscoveryError",
    "build_probe",
    "discover",
    "parse_probe_matches",
]

log = logging.getLogger(__name__)

MULTICAST_GROUP = ("239.255.255.250", 3702)
_WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
_WSA = (
    "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "http://www.w3.org/2005/08/addressing",
)
_ONVIF_SCOPE = "onvif://www.onvif.org/"
_MAX_DEVICES = 1024  # a bound on what one probe collects, whatever answers


class DiscoveryError(IngestError):
    """The probe could not be sent (e.g. the interface address is not on this server)."""


@dataclass(frozen=True)
class DiscoveredDevice:
    """One ONVIF device that answered a probe."""

    endpoint: str  # its WS-Addressing endpoint reference, usually urn:uuid:…
    xaddrs: tuple[str, ...]  # device service URLs
    scopes: tuple[str, ...]
    types: tuple[str, ...]

    @property
    def address(self) -> str:
        """The first device service URL (``http://host:port/onvif/device_service``)."""
        return self.xaddrs[0]

    @property
    def host(self) -> str:
        return urlsplit(self.address).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.address)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def name(self) -> str | None:
        return _scope_value(self.scopes, "name")

    @property
    def hardware(self) -> str | None:
        return _scope_value(self.scopes, "hardware")

    @property
    def location(self) -> str | None:
        return _scope_value(self.scopes, "location")


def build_probe(message_id: str) -> bytes:
    """A WS-Discovery Probe for ONVIF network video transmitters (ONVIF Core 7.3)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        f'xmlns:a="{_WSA[0]}" xmlns:d="{_WSD}" '
        'xmlns:dn="http://www.onvif.org/ver10/network/wsdl">'
        "<s:Header>"
        f"<a:Action>{_WSD}/Probe</a:Action>"
        f"<a:MessageID>{message_id}</a:MessageID>"
        "<a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>"
        "</s:Header>"
        "<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body>"
        "</s:Envelope>"
    ).encode()


def parse_probe_matches(data: bytes, message_id: str) -> list[DiscoveredDevice]:
    """The ONVIF devices in a datagram answering the probe ``message_id``; [] for anything else."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return []
    relates = [e.text for ns in _WSA for e in root.iter(f"{{{ns}}}RelatesTo")]
    if [r.strip() for r in relates if r] != [message_id]:
        return []
    devices = [_device(m) for m in root.iter(f"{{{_WSD}}}ProbeMatch")]
    return [d for d in devices if d is not None and _is_onvif(d)]


def _device(match: ET.Element) -> DiscoveredDevice | None:
    endpoint = next((e.text for ns in _WSA for e in match.iter(f"{{{ns}}}Address")), None)
    xaddrs = tuple(x for x in _words(match, "XAddrs") if urlsplit(x).scheme in ("http", "https"))
    if not endpoint or not xaddrs:
        return None
    return DiscoveredDevice(
        endpoint=endpoint.strip(),
        xaddrs=xaddrs,
        scopes=_words(match, "Scopes"),
        types=_words(match, "Types"),
    )


def _words(match: ET.Element, tag: str) -> tuple[str, ...]:
    element = match.find(f"{{{_WSD}}}{tag}")
    return tuple((element.text or "").split()) if element is not None else ()


def _is_onvif(device: DiscoveredDevice) -> bool:
    # Prefixes of the QNames are not resolved: the local name NetworkVideoTransmitter is
    # ONVIF's alone, and NVRs that announce only tds:Device carry onvif:// scopes.
    kinds = {t.rpartition(":")[2] for t in device.types}
    return "NetworkVideoTransmitter" in kinds or any(
        s.startswith(_ONVIF_SCOPE) for s in device.scopes
    )


def _scope_value(scopes: tuple[str, ...], key: str) -> str | None:
    """``onvif://www.onvif.org/name/Gate%20North`` → ``Gate North`` (several: ", "-joined)."""
    prefix = f"{_ONVIF_SCOPE}{key}/"
    values = [unquote(s[len(prefix) :]) for s in scopes if s.startswith(prefix)]
    return ", ".join(v for v in values if v) or None


class _Collector(asyncio.DatagramProtocol):
    """Keeps the devices of the answers to one probe, in arrival order, once each."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.devices: dict[str, DiscoveredDevice] = {}
        self.ignored = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        found = parse_probe_matches(data, self.message_id)
        if not found:
            self.ignored += 1
        for device in found:
            if len(self.devices) < _MAX_DEVICES:
                self.devices.setdefault(device.endpoint, device)

    def error_received(self, exc: Exception) -> None:
        log.debug("WS-Discovery socket error: %s", exc)


async def discover(interface: str, timeout: float = 2.0) -> list[DiscoveredDevice]:
    """Probe the segment of the interface with address ``interface`` for ``timeout`` seconds.

    Multicast leaves through that interface only (``IP_MULTICAST_IF``) with TTL 1, so the
    probe stays on the local segment; answers come back to the same socket.
    """
    loop = asyncio.get_running_loop()
    message_id = f"urn:uuid:{uuid.uuid4()}"
    probe = build_probe(message_id)
    collector = _Collector(message_id)
    started = time.monotonic()
    sock = _probe_socket(interface, probe)
    transport, _ = await loop.create_datagram_endpoint(lambda: collector, sock=sock)
    try:
        await asyncio.sleep(min(0.1, timeout / 10))
        transport.sendto(probe, MULTICAST_GROUP)  # WS-Discovery's one repeat
        await asyncio.sleep(max(0.0, timeout - (time.monotonic() - started)))
    finally:
        transport.close()
    log.info(
        "WS-Discovery from %s: %d ONVIF devices, %d other datagrams ignored (%.2f s)",
        interface,
        len(collector.devices),
        collector.ignored,
        time.monotonic() - started,
    )
    return list(collector.devices.values())


def _probe_socket(interface: str, probe: bytes) -> socket.socket:
    """A UDP socket bound to ``interface`` that has sent the first probe.

    The first send is synchronous so that an unusable interface raises here, with words.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((interface, 0))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setblocking(False)
        sock.sendto(probe, MULTICAST_GROUP)
    except OSError as err:
        sock.close()
        raise DiscoveryError(
            f"cannot send a WS-Discovery probe from {interface}: {err.strerror or err}; give "
            "the address of one of this server's interfaces that allows multicast"
        ) from err
    return sock
