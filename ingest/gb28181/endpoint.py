"""The platform's GB/T 28181 SIP endpoint: where devices, NVRs and district platforms register.

One :class:`SipEndpoint` listens on one address over UDP and TCP. Devices send it
REGISTER (MD5 digest, :mod:`ingest.gb28181.digest`), MESSAGE keepalives, catalog pages,
device information and alarms; it sends them catalog / device-info queries, and INVITE /
ACK / BYE for live media (:meth:`SipEndpoint.invite`). Messages go through the transaction
layer (:mod:`ingest.gb28181.transactions`): UDP retransmissions are absorbed there, so a
keepalive or an alarm is handled once.

Device state lives in the database, behind the :class:`DeviceRegistry` the composition
root hands in (blocking calls, run in threads): any process can answer for a device, and a
restart loses nothing. The endpoint keeps in memory only what routing needs (the address a
device last spoke from, over which transport) and what bounds abuse (rate limits).

Hostile or broken input never stops it: a malformed datagram, an oversized one, an unknown
method, a flood from one address, a wrong password — each is counted
(:class:`EndpointStats`, exported as metrics), logged at most once per interval per kind,
and the endpoint keeps serving. Passwords are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from ingest.errors import CameraUnreachableError, IngestError
from ingest.gb28181 import GB28181Error, ManscdpError, SipParseError
from ingest.gb28181.digest import Authenticator, AuthResult, NonceSource, parse_authorization
from ingest.gb28181.manscdp import (
    Alarm,
    CatalogAssembler,
    CatalogItem,
    CatalogResponse,
    DeviceInfo,
    Keepalive,
    alarm_reply,
    parse_body,
    query_catalog,
    query_device_info,
)
from ingest.gb28181.sdp import SdpAnswer, invite_sdp, invite_subject, make_ssrc, parse_answer
from ingest.gb28181.sip import (
    MAX_MESSAGE_SIZE,
    SipRequest,
    SipResponse,
    SipStreamParser,
    build_ack,
    build_request,
    is_gb_id,
    parse_message,
    reply_address,
    response_to,
)
from ingest.gb28181.transactions import Address, TransactionLayer

__all__ = [
    "Call",
    "DevicePeer",
    "DevicePolicy",
    "DeviceRegistry",
    "EndpointConfig",
    "EndpointStats",
    "SipEndpoint",
]

log = logging.getLogger(__name__)

Transport = Literal["UDP", "TCP"]
MANSCDP = "Application/MANSCDP+xml"
#: Methods we know but do not serve (405 with Allow); anything else is 501.
_KNOWN_UNSERVED = frozenset({"INVITE", "SUBSCRIBE", "NOTIFY", "INFO", "UPDATE", "PRACK", "REFER"})
_ALLOW = "REGISTER, MESSAGE, BYE, ACK, OPTIONS, CANCEL"
_LOG_EVERY_S = 60.0
_CATALOG_WAIT_S = 30.0


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """What the endpoint needs of the ``gb28181`` settings."""

    sip_id: str
    domain: str
    host: str
    port: int
    #: The installation-wide device password; None: devices register without digest
    #: unless they have their own.
    password: str | None
    keepalive_s: float
    keepalive_misses: int
    allow_unknown: bool
    invite_timeout_s: float
    #: Shared by every process of an installation: nonces any of them can check.
    nonce_secret: bytes
    qop: bool = True
    #: Requests per second one source address may send (bursts of twice that).
    per_address_rate: float = 20.0
    #: Failed digests one device may make from one address per minute before its
    #: REGISTERs are refused without checking (a password-guessing device or attacker).
    auth_failures_per_min: int = 5

    @property
    def uri(self) -> str:
        return f"sip:{self.sip_id}@{self.domain}"


@dataclass(frozen=True, slots=True)
class DevicePolicy:
    """What the registry says about a device that knocks."""

    known: bool
    enabled: bool
    #: Its own password, when it has one (else the installation-wide one applies).
    password: str | None


@dataclass(frozen=True, slots=True)
class DevicePeer:
    """Where a device is reached: the address it last spoke from, over which transport."""

    host: str
    port: int
    transport: Transport

    @property
    def address(self) -> Address:
        return self.host, self.port


class DeviceRegistry(Protocol):
    """The durable side of the endpoint (database repositories). Blocking: every call runs
    in a worker thread. Implemented in ``runtime.gb28181``."""

    def policy(self, device_id: str) -> DevicePolicy: ...

    def register(self, device_id: str, peer: DevicePeer, contact: str, expires_s: int) -> bool:
        """Record a registration; True when the device just came online (query it)."""
        ...

    def unregister(self, device_id: str) -> None: ...

    def keepalive(self, device_id: str, peer: DevicePeer | None) -> bool:
        """False for a device that is not registered (it must register again). ``peer``:
        where it is reached, when this process knows."""
        ...

    def catalog(self, device_id: str, items: Sequence[CatalogItem]) -> None: ...

    def device_info(self, info: DeviceInfo) -> None: ...

    def alarm(self, device_id: str, alarm: Alarm) -> None: ...

    def expire(self, deadline_s: float) -> list[str]: ...

    def peer(self, device_id: str) -> DevicePeer | None:
        """Where the device registered from, for a device this process has not heard."""
        ...


@dataclass(slots=True)
class EndpointStats:
    """Counters of what the endpoint saw; read by the metrics collector."""

    received: int = 0
    malformed: int = 0
    oversized: int = 0
    unknown_method: int = 0
    rate_limited: int = 0
    auth_failures: int = 0
    auth_refused: int = 0
    registrations: int = 0
    keepalives: int = 0
    alarms: int = 0
    invites: int = 0
    invite_failures: int = 0
    byes_sent: int = 0
    #: TCP connections closed after sending nothing for keepalive_s × keepalive_misses.
    idle_closed: int = 0


@dataclass(frozen=True, slots=True)
class Call:
    """A live-media dialog the platform opened with :meth:`SipEndpoint.invite`."""

    device_id: str
    channel_id: str
    invite: SipRequest
    response: SipResponse
    answer: SdpAnswer
    #: The SSRC we offered (``y=``); the answer's, when it differs, is what the device sends.
    ssrc: str
    peer: DevicePeer

    @property
    def media_ssrc(self) -> int | None:
        """The SSRC RTP packets of this call carry: the answer's ``y=`` (devices such as
        Hikvision platforms answer with their own); None when the answer has none (some
        devices, Dahua's among them, then stream with SSRC 0): the first one seen counts."""
        return self.answer.ssrc_value


class _Bucket:
    """A token bucket: ``rate`` per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class _Throttled:
    """One warning line per kind per interval, with how many were suppressed."""

    def __init__(self, every_s: float = _LOG_EVERY_S) -> None:
        self._every_s = every_s
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, kind: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(kind, (-1e18, 0))
        if now - last < self._every_s:
            self._last[kind] = (last, suppressed + 1)
            return
        self._last[kind] = (now, 0)
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        log.warning(msg + more, *args)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.endpoint.received(data, (addr[0], addr[1]), "UDP")

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable of a gone device
        log.debug("SIP UDP error: %s", exc)


@dataclass
class SipEndpoint:
    """The SIP side of GB/T 28181 for one installation address. Run :meth:`run`."""

    config: EndpointConfig
    registry: DeviceRegistry
    stats: EndpointStats = field(default_factory=EndpointStats)
    _tx: TransactionLayer = field(init=False)
    _auth: Authenticator = field(init=False)
    _udp: asyncio.DatagramTransport | None = field(default=None, init=False)
    _tcp_server: asyncio.Server | None = field(default=None, init=False)
    _tcp: dict[Address, asyncio.StreamWriter] = field(default_factory=dict, init=False)
    _peers: dict[str, DevicePeer] = field(default_factory=dict, init=False)
    _buckets: dict[str, _Bucket] = field(default_factory=dict, init=False)
    _failures: dict[tuple[str, str], list[float]] = field(default_factory=dict, init=False)
    _catalogs: CatalogAssembler = field(default_factory=CatalogAssembler, init=False)
    #: Catalogs arriving in several MESSAGEs: the timer that gives up on each.
    _waiting: dict[tuple[str, int], asyncio.TimerHandle] = field(default_factory=dict, init=False)
    _calls: dict[str, Call] = field(default_factory=dict, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _sn: int = field(default=0, init=False)
    _cseq: int = field(default=0, init=False)
    _ssrc_seq: int = field(default=0, init=False)
    _warn: _Throttled = field(default_factory=_Throttled, init=False)
    _started: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def __post_init__(self) -> None:
        self._tx = TransactionLayer(self._send)
        nonces = NonceSource(self.config.nonce_secret)
        self._auth = Authenticator(self.config.domain, nonces, qop=self.config.qop)

    # --- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind UDP and TCP on ``host:port``; raises OSError when the port is taken."""
        loop = asyncio.get_running_loop()
        addr = (self.config.host, self.config.port)
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=addr)
        self._tcp_server = await asyncio.start_server(self._serve_tcp, *addr)
        self._started.set()
        log.info("GB/T 28181 SIP endpoint %s on %s:%d (UDP, TCP)", self.config.sip_id, *addr)

    async def run(self) -> None:
        """Serve until cancelled; marks devices offline whose keepalives stopped."""
        await self.start()
        try:
            await self._expire_loop()
        finally:
            await self.close()

    async def wait_started(self) -> None:
        await self._started.wait()

    async def close(self) -> None:
        self._tx.close()
        for task in list(self._tasks):
            task.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
        for writer in list(self._tcp.values()):
            writer.close()
        self._tcp.clear()

    async def _expire_loop(self) -> None:
        deadline = self.config.keepalive_s * self.config.keepalive_misses
        every = min(5.0, max(0.5, self.config.keepalive_s / 4))
        while True:
            await asyncio.sleep(every)
            try:
                gone = await asyncio.to_thread(self.registry.expire, deadline)
            except Exception as err:  # the database is down: try again next round
                self._warn.warning("expire", "GB/T 28181: cannot check keepalives: %s", err)
                continue
            for device_id in gone:
                log.info("GB/T 28181 device %s is offline (no keepalive)", device_id)

    # --- transport -------------------------------------------------------------------------
    def _send(self, data: bytes, addr: Address) -> None:
        writer = self._tcp.get(addr)
        if writer is not None:
            writer.write(data)
        elif self._udp is not None:
            self._udp.sendto(data, addr)
        else:
            raise OSError("the SIP endpoint is not running")

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr: Address = (str(peer[0]), int(peer[1]))
        self._tcp[addr] = writer
        parser = SipStreamParser()
        # A device on TCP sends a keepalive every keepalive_s; one silent for as long as a
        # device takes to be marked offline is gone, or never was one (a port scanner, a
        # slow-loris holding file descriptors): its connection is closed.
        idle_s = self.config.keepalive_s * self.config.keepalive_misses
        try:
            while True:
                try:
                    async with asyncio.timeout(idle_s):
                        data = await reader.read(65536)
                except TimeoutError:
                    self.stats.idle_closed += 1
                    log.info("GB/T 28181: closing TCP from %s: silent for %.0f s", addr[0], idle_s)
                    break
                if not data:
                    break
                for message in parser.feed(data):
                    self._dispatch(message, addr, "TCP")
        except SipParseError as err:
            self.stats.malformed += 1
            self._warn.warning("tcp", "GB/T 28181: closing TCP from %s: %s", addr[0], err)
        except (ConnectionError, OSError):
            pass
        finally:
            if self._tcp.get(addr) is writer:
                del self._tcp[addr]
            writer.close()

    def received(self, data: bytes, addr: Address, transport: Transport) -> None:
        """One datagram (UDP), parsed and dispatched."""
        if len(data) > MAX_MESSAGE_SIZE:
            self.stats.oversized += 1
            self._warn.warning(
                "size", "GB/T 28181: %d-byte datagram from %s dropped", len(data), addr[0]
            )
            return
        if not data.strip():
            return  # CRLF keepalive
        try:
            message = parse_message(data)
        except SipParseError as err:
            self.stats.malformed += 1
            self._warn.warning("parse", "GB/T 28181: malformed SIP from %s: %s", addr[0], err)
            return
        self._dispatch(message, addr, transport)

    def _dispatch(
        self, message: SipRequest | SipResponse, addr: Address, transport: Transport
    ) -> None:
        self.stats.received += 1
        if not self._admit(addr):
            return
        routed = self._tx.receive(message, addr)
        if isinstance(routed, SipRequest):
            self._spawn(self._on_request(routed, addr, transport))
        elif isinstance(routed, SipResponse):
            self._on_stray_response(routed, addr)

    def _admit(self, addr: Address) -> bool:
        now = time.monotonic()
        bucket = self._buckets.get(addr[0])
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()  # bounded under a spoofed-source flood
            rate = self.config.per_address_rate
            bucket = self._buckets[addr[0]] = _Bucket(rate, 2 * rate, now)
        if bucket.take(now):
            return True
        self.stats.rate_limited += 1
        self._warn.warning("flood", "GB/T 28181: %s sends too fast; requests dropped", addr[0])
        return False

    def _spawn(self, work: Coroutine[object, object, object]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("GB/T 28181 request handling failed", exc_info=task.exception())

    def _respond(self, request: SipRequest, addr: Address, status: int, **kw: object) -> None:
        response = response_to(request, status, source=addr, **kw)  # type: ignore[arg-type]
        self._tx.respond(request, response, reply_address(request, addr))

    # --- requests from devices ---------------------------------------------------------------
    async def _on_request(self, request: SipRequest, addr: Address, transport: Transport) -> None:
        """Handle one request; a header parsed only now (a From URI, a Contact, Expires) that
        turns out malformed is the device's error: 400, counted, never a crash."""
        try:
            await self._handle_request(request, addr, transport)
        except SipParseError as err:
            self.stats.malformed += 1
            self._warn.warning(
                "parse", "GB/T 28181: malformed %s from %s: %s", request.method, addr[0], err
            )
            # The reason phrase is one line of printable ASCII (it quotes the device's input).
            reason = "".join(c if " " <= c <= "~" else "?" for c in f"Bad Request: {err}")[:100]
            with contextlib.suppress(GB28181Error, OSError):
                self._respond(request, addr, 400, reason=reason)

    async def _handle_request(
        self, request: SipRequest, addr: Address, transport: Transport
    ) -> None:
        method = request.method
        if method == "REGISTER":
            await self._on_register(request, addr, transport)
        elif method == "MESSAGE":
            await self._on_message(request, addr, transport)
        elif method in ("BYE", "OPTIONS", "CANCEL"):
            self._respond(request, addr, 200)
            if method == "BYE":
                call = self._calls.pop(request.call_id, None)
                if call is not None:
                    log.info(
                        "GB/T 28181: device %s ended the stream of %s",
                        call.device_id,
                        call.channel_id,
                    )
        elif method == "ACK":
            return
        elif method in _KNOWN_UNSERVED:
            self.stats.unknown_method += 1
            self._respond(request, addr, 405, headers=[("Allow", _ALLOW)])
        else:
            self.stats.unknown_method += 1
            self._warn.warning(
                "method", "GB/T 28181: unknown method %.20r from %s", method, addr[0]
            )
            self._respond(request, addr, 501, headers=[("Allow", _ALLOW)])

    def _device_id(self, request: SipRequest) -> str | None:
        user = request.from_.parsed_uri().user
        return user if is_gb_id(user) else None

    async def _on_register(self, request: SipRequest, addr: Address, transport: Transport) -> None:
        device_id = self._device_id(request)
        if device_id is None:
            self._respond(
                request, addr, 400, reason="Bad Request: From is not a 20-digit device ID"
            )
            return
        key = (device_id, addr[0])
        if self._locked_out(key):
            self.stats.auth_refused += 1
            self._respond(request, addr, 403, reason="Forbidden: too many wrong passwords")
            return
        policy = await asyncio.to_thread(self.registry.policy, device_id)
        refusal = self._refusal(policy)
        if refusal is not None:
            self._warn.warning(
                "refused",
                "GB/T 28181: REGISTER of %s from %s refused: %s",
                device_id,
                addr[0],
                refusal,
            )
            self._respond(request, addr, 403, reason=f"Forbidden: {refusal}")
            return
        password = policy.password or self.config.password
        if password is not None and not self._authorised(request, addr, device_id, password):
            return
        await self._registered(request, addr, transport, device_id)

    def _refusal(self, policy: DevicePolicy) -> str | None:
        if not policy.known and not self.config.allow_unknown:
            return "device not registered with this platform"
        if policy.known and not policy.enabled:
            return "device disabled"
        return None

    def _authorised(
        self, request: SipRequest, addr: Address, device_id: str, password: str
    ) -> bool:
        """Checks the digest; answers 401/403 itself and returns False when it fails."""
        header = request.header("authorization")
        if header is None:
            self._respond(
                request, addr, 401, headers=[("WWW-Authenticate", self._auth.challenge())]
            )
            return False
        try:
            result = self._auth.check(header, password=password, method="REGISTER")
            username = parse_authorization(header).username
        except GB28181Error:
            result, username = AuthResult.FAILED, ""
        if result is AuthResult.STALE:
            challenge = self._auth.challenge(stale=True)
            self._respond(request, addr, 401, headers=[("WWW-Authenticate", challenge)])
            return False
        if result is AuthResult.OK and username == device_id:
            return True
        self.stats.auth_failures += 1
        self._note_failure((device_id, addr[0]))
        # Never the password; the device and the address are what an operator needs.
        log.warning("GB/T 28181: device %s at %s:%d: wrong password (403)", device_id, *addr)
        self._respond(request, addr, 403, reason="Forbidden: wrong password")
        return False

    def _note_failure(self, key: tuple[str, str]) -> None:
        now = time.monotonic()
        recent = [t for t in self._failures.get(key, []) if now - t < 60.0]
        recent.append(now)
        if len(self._failures) > 10_000:
            self._failures.clear()
        self._failures[key] = recent

    def _locked_out(self, key: tuple[str, str]) -> bool:
        now = time.monotonic()
        recent = [t for t in self._failures.get(key, []) if now - t < 60.0]
        return len(recent) >= self.config.auth_failures_per_min

    async def _registered(
        self, request: SipRequest, addr: Address, transport: Transport, device_id: str
    ) -> None:
        expires = request.expires
        expires_s = 3600 if expires is None else max(0, min(expires, 86_400))
        peer = _reachable_at(request, addr, transport)
        contact = request.contact
        if expires_s == 0:
            await asyncio.to_thread(self.registry.unregister, device_id)
            self._peers.pop(device_id, None)
            self._respond(request, addr, 200, headers=[("Date", _gb_date()), ("Expires", "0")])
            log.info("GB/T 28181 device %s un-registered", device_id)
            return
        came_online = await asyncio.to_thread(
            self.registry.register, device_id, peer, str(contact.uri) if contact else "", expires_s
        )
        self._peers[device_id] = peer
        self.stats.registrations += 1
        headers = [("Date", _gb_date()), ("Expires", str(expires_s))]
        if contact is not None:
            headers.append(("Contact", f"<{contact.uri}>;expires={expires_s}"))
        self._respond(request, addr, 200, headers=headers)
        if came_online:
            log.info("GB/T 28181 device %s registered from %s:%d (%s)", device_id, *addr, transport)
            self._spawn(self._after_registration(device_id))

    async def _after_registration(self, device_id: str) -> None:
        await asyncio.sleep(0.2)  # let the device process our 200 first
        for query in (self.query_device_info, self.query_catalog):
            try:
                await query(device_id)
            except (GB28181Error, IngestError, OSError) as err:
                log.warning("GB/T 28181 device %s: query failed: %s", device_id, err)

    async def _on_message(self, request: SipRequest, addr: Address, transport: Transport) -> None:
        device_id = self._device_id(request)
        try:
            body = parse_body(request.body)
        except (ManscdpError, GB28181Error) as err:
            self.stats.malformed += 1
            self._warn.warning("xml", "GB/T 28181: bad MANSCDP body from %s: %s", addr[0], err)
            self._respond(request, addr, 400)
            return
        if device_id is None:
            self._respond(
                request, addr, 400, reason="Bad Request: From is not a 20-digit device ID"
            )
            return
        if isinstance(body, Keepalive):
            await self._on_keepalive(request, addr, transport, device_id)
            return
        self._respond(request, addr, 200)
        if isinstance(body, CatalogResponse):
            self._on_catalog_page(device_id, body)
        elif isinstance(body, DeviceInfo):
            await asyncio.to_thread(self.registry.device_info, body)
        elif isinstance(body, Alarm):
            self.stats.alarms += 1
            await asyncio.to_thread(self.registry.alarm, device_id, body)
            await self._notify(device_id, alarm_reply(body.sn, body.device_id))

    async def _on_keepalive(
        self, request: SipRequest, addr: Address, transport: Transport, device_id: str
    ) -> None:
        # Where to reach it stays what its REGISTER said: a keepalive may leave from
        # another port than the one the device listens on.
        peer = self._peers.get(device_id)
        known = await asyncio.to_thread(self.registry.keepalive, device_id, peer)
        if not known:
            # Not registered (expired, disabled, unknown): the device registers again.
            self._respond(request, addr, 403, reason="Forbidden: register first")
            return
        self.stats.keepalives += 1
        self._respond(request, addr, 200)

    def _on_catalog_page(self, device_id: str, page: CatalogResponse) -> None:
        key = (page.device_id, page.sn)
        items = self._catalogs.add(page)
        if items is None:
            if key not in self._waiting:
                loop = asyncio.get_running_loop()
                self._waiting[key] = loop.call_later(_CATALOG_WAIT_S, self._catalog_incomplete, key)
            return
        timer = self._waiting.pop(key, None)
        if timer is not None:
            timer.cancel()
        log.info("GB/T 28181 device %s: catalog of %d channel(s)", device_id, len(items))
        self._spawn(asyncio.to_thread(self.registry.catalog, device_id, items))

    def _catalog_incomplete(self, key: tuple[str, int]) -> None:
        self._waiting.pop(key, None)
        got = len(self._catalogs.pop(*key))
        # A partial catalog would delete the channels that did not arrive: keep the last.
        log.warning(
            "GB/T 28181 device %s: catalog SN %d incomplete after %.0f s (%d items); "
            "kept the previous one",
            key[0],
            key[1],
            _CATALOG_WAIT_S,
            got,
        )

    def _on_stray_response(self, response: SipResponse, addr: Address) -> None:
        """A 2xx to an INVITE retransmitted (our ACK was lost): ACK it again."""
        call = self._calls.get(response.call_id)
        if call is not None and response.cseq.method == "INVITE" and 200 <= response.status < 300:
            self._tx.send_stateless(build_ack(call.invite, response), addr)

    # --- requests to devices -----------------------------------------------------------------
    def _next_sn(self) -> int:
        self._sn = (self._sn % 999_999) + 1
        return self._sn

    async def _peer(self, device_id: str) -> DevicePeer:
        peer = self._peers.get(device_id)
        if peer is None:
            peer = await asyncio.to_thread(self.registry.peer, device_id)
        if peer is None:
            raise CameraUnreachableError(f"GB/T 28181 device {device_id} is not registered")
        return peer

    def _request(
        self,
        method: str,
        peer: DevicePeer,
        to_id: str,
        body: bytes,
        content_type: str,
        headers: Sequence[tuple[str, str]] = (),
        contact: str | None = None,
    ) -> SipRequest:
        self._cseq += 1
        return build_request(
            method,
            f"sip:{to_id}@{peer.host}:{peer.port}",
            from_uri=self.config.uri,
            to_uri=f"sip:{to_id}@{self.config.domain}",
            via_host=self.config.host,
            via_port=self.config.port,
            transport=peer.transport,
            cseq=self._cseq,
            body=body,
            content_type=content_type,
            headers=headers,
            contact=contact,
        )

    async def _notify(self, device_id: str, body: bytes) -> SipResponse:
        peer = await self._peer(device_id)
        request = self._request("MESSAGE", peer, device_id, body, MANSCDP)
        return await self._tx.request(request, peer.address, reliable=peer.transport == "TCP")

    async def query_catalog(self, device_id: str) -> None:
        """Ask a device for its channels (answered in one or more MESSAGEs later)."""
        await self._expect_ok(
            await self._notify(device_id, query_catalog(self._next_sn(), device_id))
        )

    async def query_device_info(self, device_id: str) -> None:
        """Ask a device for its name, maker, model and firmware."""
        body = query_device_info(self._next_sn(), device_id)
        await self._expect_ok(await self._notify(device_id, body))

    @staticmethod
    async def _expect_ok(response: SipResponse) -> None:
        if not 200 <= response.status < 300:
            raise CameraUnreachableError(f"the device answered {response.status} {response.reason}")

    def new_ssrc(self) -> str:
        """A fresh real-time SSRC for this installation's domain (GB/T 28181 §9.2.1)."""
        self._ssrc_seq = (self._ssrc_seq % 9999) + 1
        return make_ssrc(self.config.domain, self._ssrc_seq)

    async def invite(
        self,
        device_id: str,
        channel_id: str,
        media_host: str,
        media_port: int,
        *,
        tcp: bool,
        ssrc: str | None = None,
    ) -> Call:
        """Ask ``channel_id`` of ``device_id`` to stream to ``media_host:media_port``.

        Returns the established call (ACK sent). Raises
        :class:`~ingest.errors.CameraUnreachableError` when the device is not registered,
        refuses, or does not answer within ``invite_timeout_s``.
        """
        peer = await self._peer(device_id)
        ssrc = ssrc or self.new_ssrc()
        sdp = invite_sdp(channel_id, media_host, media_port, ssrc, tcp).encode()
        contact = f"sip:{self.config.sip_id}@{self.config.host}:{self.config.port}"
        subject = invite_subject(channel_id, ssrc, self.config.sip_id)
        request = self._request(
            "INVITE",
            peer,
            channel_id,
            body=sdp,
            content_type="APPLICATION/SDP",
            contact=contact,
            headers=[("Subject", subject)],
        )
        self.stats.invites += 1
        try:
            async with asyncio.timeout(self.config.invite_timeout_s):
                response = await self._tx.request(
                    request, peer.address, reliable=peer.transport == "TCP"
                )
        except (TimeoutError, GB28181Error) as err:
            self.stats.invite_failures += 1
            raise CameraUnreachableError(
                f"INVITE of {channel_id} got no answer: {err or 'timeout'}"
            ) from err
        if not 200 <= response.status < 300:
            self.stats.invite_failures += 1
            raise CameraUnreachableError(
                f"INVITE of {channel_id} refused: {response.status} {response.reason}"
            )
        self._tx.send_stateless(build_ack(request, response), peer.address)
        try:
            answer = parse_answer(response.body)
        except GB28181Error as err:
            call = Call(device_id, channel_id, request, response, _empty_answer(), ssrc, peer)
            await self.bye(call)
            raise CameraUnreachableError(
                f"INVITE of {channel_id}: unusable SDP answer: {err}"
            ) from err
        call = Call(device_id, channel_id, request, response, answer, ssrc, peer)
        self._calls[request.call_id] = call
        return call

    async def bye(self, call: Call) -> None:
        """End a call (best effort: a gone device cannot answer)."""
        self._calls.pop(call.invite.call_id, None)
        self._cseq += 1
        contact = call.response.contact
        request = build_request(
            "BYE",
            str(contact.uri) if contact is not None else call.invite.uri,
            from_uri=self.config.uri,
            to_uri=str(call.invite.to.uri),
            via_host=self.config.host,
            via_port=self.config.port,
            transport=call.peer.transport,
            call_id=call.invite.call_id,
            cseq=self._cseq,
            from_tag=call.invite.from_.tag,
            to_tag=call.response.to.tag,
        )
        self.stats.byes_sent += 1
        with contextlib.suppress(GB28181Error, OSError, TimeoutError):
            async with asyncio.timeout(self.config.invite_timeout_s):
                await self._tx.request(
                    request, call.peer.address, reliable=call.peer.transport == "TCP"
                )


def _reachable_at(request: SipRequest, addr: Address, transport: Transport) -> DevicePeer:
    """Where a registering device takes requests: its Contact when that names the host the
    REGISTER came from (a device with separate sending and listening ports), else the
    source address (behind NAT the Contact holds a private address; the source is the
    mapping that reaches it)."""
    contact = request.contact
    if transport == "UDP" and contact is not None:
        with contextlib.suppress(GB28181Error):
            uri = contact.parsed_uri()
            if uri.host == addr[0] and uri.port:
                return DevicePeer(uri.host, uri.port, transport)
    return DevicePeer(addr[0], addr[1], transport)


def _empty_answer() -> SdpAnswer:
    return SdpAnswer(ip="0.0.0.0", port=0, ssrc=None, tcp=False, setup=None, payload_types=())


def _gb_date() -> str:
    """``Date:`` as GB/T 28181 devices parse it to set their clocks (local time, ms)."""
    return datetime.now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
