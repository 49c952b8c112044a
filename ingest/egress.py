"""The egress policy: which addresses the service connects to on an API user's behalf.

Integrators choose camera URLs and ONVIF hosts, grid platforms choose webhook URLs; the
service then connects to them from inside the network. Without a policy a token holder
could make it fetch a cloud provider's instance metadata (credentials) or poke services
on the host itself. Refused by default:

- for every destination: cloud metadata addresses (AWS, GCP, Azure, Alibaba, Oracle,
  Tencent…) and link-local addresses (169.254.0.0/16, fe80::/10), where metadata services
  and unconfigured devices live;
- for webhooks also: loopback (127.0.0.0/8, ::1) and unspecified addresses (0.0.0.0, ::,
  which reach this host). Cameras may be on loopback: a local RTSP relay is common.

``egress.allow`` (``XUELIANG_EGRESS__ALLOW``, CIDRs) lets chosen ranges through. A host
name is checked by what it resolves to, when the destination is created (the API's 422)
and again before every connection (DNS may change): a camera's reader thread and the
webhook sender call :meth:`EgressPolicy.check` before they connect. A name that does not
resolve passes — the connection then fails the usual way. IPv4-mapped (``::ffff:a.b.c.d``)
and NAT64 (``64:ff9b::a.b.c.d``) addresses are judged as the IPv4 address they carry.

DNS rebinding (a name answering an allowed address when checked and a refused one a
moment later, when the connecting library resolves it again): webhooks connect to the
very addresses the policy judged (delivery/pinned.py), and a camera's reader opens its URL
with the host replaced by a judged address (ingest/sources.py): neither resolves the name
again. ONVIF service addresses named by a device are judged too (ingest/onvif.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from config.errors import XueliangError
from config.settings import Settings

__all__ = ["EgressPolicy", "EgressRefused", "IPAddress", "Purpose", "host_of"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Instance metadata services (each also in a refused range, except Alibaba's and Oracle's).
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Huawei, Oracle
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd20:ce::254",  # GCP over IPv6
    )
)
#: Names of metadata services, refused whatever they resolve to here (the API node may
#: resolve them differently from the worker that connects, or not at all).
_METADATA_NAMES = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata.tencentyun.com", "instance-data"}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_RESOLVERS = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="egress-dns")


class Purpose(StrEnum):
    """What the connection is for: webhooks are held to more than cameras."""

    CAMERA = "camera"
    WEBHOOK = "webhook"


class EgressRefused(XueliangError, PermissionError):
    """A destination the policy refuses; ``str(err)`` names the field, the address, why,
    and the setting that would let it through. Never carries credentials (hosts only)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class EgressPolicy:
    """The policy of one process (``egress`` settings)."""

    allow: tuple[IPNetwork, ...] = ()
    resolve_timeout_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        allow = tuple(ipaddress.ip_network(c, strict=False) for c in settings.egress.allow)
        return cls(allow, settings.egress.resolve_timeout_s)

    def refusal(self, address: IPAddress, purpose: Purpose) -> str | None:
        """Why ``address`` is refused for ``purpose`` ("a cloud metadata address"), or None."""
        address = _embedded_ipv4(address)
        if any(address in net for net in self.allow):
            return None
        if address in _METADATA:
            return "a cloud metadata address"
        if address.is_link_local:
            return "a link-local address"
        if purpose is Purpose.WEBHOOK and address.is_loopback:
            return "a loopback address (this host)"
        if purpose is Purpose.WEBHOOK and address.is_unspecified:
            return "an unspecified address (this host)"
        return None

    def check(self, field: str, host: str, purpose: Purpose) -> None:
        """Raise :class:`EgressRefused` when ``host`` is, or resolves to, a refused address.

        Blocking for at most ``resolve_timeout_s`` (a DNS lookup): call it from a thread.
        """
        self.addresses_checked(field, host, purpose)

    def addresses_checked(self, field: str, host: str, purpose: Purpose) -> list[IPAddress]:
        """What ``host`` resolves to, judged: the addresses to connect to, so that the check
        and the connection use one lookup (a camera's reader). Empty when the name does not
        resolve in time. Blocking, like :meth:`check`."""
        addresses = self.resolve_all([host]).get(host, [])
        self.judge(field, host, purpose, addresses)
        return addresses

    async def check_async(self, field: str, host: str, purpose: Purpose) -> None:
        """:meth:`check` for the event loop: the lookup runs on a thread."""
        await self.resolve_checked(field, host, purpose)

    async def resolve_checked(self, field: str, host: str, purpose: Purpose) -> list[IPAddress]:
        """What ``host`` resolves to, judged (:class:`EgressRefused` when refused): the
        addresses to connect to, so that the check and the connection use one lookup
        (delivery/pinned.py). Empty when the name does not resolve in time."""
        addresses = _literals(host)
        if addresses is None:
            lookup = asyncio.wrap_future(_RESOLVERS.submit(_getaddrinfo, host))
            try:
                addresses = await asyncio.wait_for(lookup, self.resolve_timeout_s)
            except (TimeoutError, OSError, UnicodeError):
                addresses = []
        self.judge(field, host, purpose, addresses)
        return addresses

    def check_url(self, field: str, url: str | None, purpose: Purpose) -> None:
        """:meth:`check` of a URL's host; a URL without one has nothing to check."""
        host = host_of(url)
        if host is not None:
            self.check(field, host, purpose)

    async def check_url_async(self, field: str, url: str | None, purpose: Purpose) -> None:
        host = host_of(url)
        if host is not None:
            await self.check_async(field, host, purpose)

    def judge(
        self, field: str, host: str, purpose: Purpose, addresses: Iterable[IPAddress]
    ) -> None:
        """Raise :class:`EgressRefused` when ``host`` or one of its ``addresses`` is refused."""
        name = host.strip("[]").rstrip(".").lower()
        if name in _METADATA_NAMES:
            raise EgressRefused(field, f"host {name} is a cloud metadata service")
        for address in addresses:
            why = self.refusal(address, purpose)
            if why is not None:
                raise EgressRefused(field, _explained(name, address, why))

    def resolve_all(self, hosts: Iterable[str]) -> dict[str, list[IPAddress]]:
        """What each host names, looked up at once (a camera import has thousands) within
        one ``resolve_timeout_s``; a name not answered by then names nothing. Blocking."""
        found: dict[str, list[IPAddress]] = {}
        lookups: dict[concurrent.futures.Future[list[IPAddress]], str] = {}
        for host in set(hosts):
            literal = _literals(host)
            if literal is not None:
                found[host] = literal
            else:
                lookups[_RESOLVERS.submit(_getaddrinfo, host)] = host
        done, late = concurrent.futures.wait(lookups, timeout=self.resolve_timeout_s)
        for lookup in late:
            lookup.cancel()  # not started yet: never will
        for lookup in done:
            with contextlib.suppress(OSError, UnicodeError):
                found[lookups[lookup]] = lookup.result()
        return found


def _getaddrinfo(host: str) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    # An IPv6 scope ("fe80::1%eth0") is not part of the address.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _literals(host: str) -> list[IPAddress] | None:
    """``[address]`` for an IP address literal, None for a name."""
    try:
        return [ipaddress.ip_address(host.strip("[]").split("%")[0])]
    except ValueError:
        return None


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped or NAT64 IPv6 address reaches."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def host_of(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _explained(host: str, address: IPAddress, why: str) -> str:
    reached = _embedded_ipv4(address)
    cidr = f"{reached}/{reached.max_prefixlen}"
    return f"host {host} resolves to {address}, {why}; allow it with XUELIANG_EGRESS__ALLOW={cidr}"
