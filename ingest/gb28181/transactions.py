"""SIP transactions (RFC 3261 §17) on asyncio, over an injected ``send(data, addr)``.

The endpoint owns the sockets; it hands every parsed message to
:meth:`TransactionLayer.receive` and gets back what its transaction user (TU: the
REGISTER/MESSAGE/INVITE logic) must see, or None when the message was a retransmission or
a response the layer consumed. Everything runs on the event loop's thread: no locks.

**Client side** (requests the platform sends: MESSAGE queries, INVITE, BYE):
:meth:`TransactionLayer.request` sends, retransmits over UDP (Timer E/A: T1 doubling, capped
at T2 for non-INVITE; none over TCP), and returns the final response, or raises
:class:`~ingest.gb28181.SipTimeoutError` after Timer B/F (64*T1, over TCP too). A 1xx stops
INVITE retransmissions and slows non-INVITE ones to T2, but does **not** extend the
deadline: RFC 3261 would wait forever after a 100 Trying to an INVITE, and a device that
sends 100 and then nothing must not hold a media port forever. Responses are matched by
the top Via branch and the CSeq method. A non-2xx final response to an INVITE is ACKed
here (same branch) and re-ACKed if the device retransmits it (Timer D); a 2xx is the TU's
to ACK (:func:`~ingest.gb28181.sip.build_ack`), and its retransmissions go to the TU.

**Server side** (requests devices send: REGISTER, MESSAGE keepalives, catalog pages): the
first copy of a request goes to the TU; retransmissions, while the TU is still working or
for 64*T1 after it answered with :meth:`TransactionLayer.respond`, get the last response
again (or nothing yet) and never reach the TU, so a keepalive or an alarm is handled once.
Requests are keyed by (branch, method, Call-ID, CSeq number, From tag), not the branch
alone: cheap devices reuse one branch for every request, and RFC 2543 ones send none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ingest.gb28181 import GB28181Error, SipTimeoutError, TransactionClosedError
from ingest.gb28181.sip import SipRequest, SipResponse, build_ack

__all__ = ["Address", "SendFn", "SipTimers", "TransactionCounters", "TransactionLayer"]

log = logging.getLogger(__name__)

Address = tuple[str, int]
SendFn = Callable[[bytes, Address], None]
ClientKey = tuple[str, str]
ServerKey = tuple[str, str, str, int, str]


@dataclass(frozen=True, slots=True)
class SipTimers:
    """RFC 3261 timer values (seconds). Tests scale them down instead of sleeping 32 s."""

    t1: float = 0.5  # RTT estimate: first retransmission interval
    t2: float = 4.0  # cap of the non-INVITE retransmission interval
    t4: float = 5.0  # how long the network may hold a message (Timer K)

    @property
    def timeout(self) -> float:
        """Timer B/F/J: 64*T1, how long a transaction lives."""
        return 64 * self.t1

    def scaled(self, factor: float) -> SipTimers:
        """All timers multiplied by ``factor`` (0.01 makes Timer F 0.32 s)."""
        return SipTimers(self.t1 * factor, self.t2 * factor, self.t4 * factor)


@dataclass(slots=True)
class TransactionCounters:
    """What the layer did, for metrics. Written on the event loop only."""

    retransmissions: int = 0  # requests we sent again (UDP)
    timeouts: int = 0  # client transactions that got no final response
    absorbed: int = 0  # retransmitted requests and responses kept from the TU
    send_errors: int = 0  # retransmissions the socket refused (the timeout reports it)


@dataclass(slots=True, eq=False)
class _Client:
    request: SipRequest
    data: bytes
    addr: Address
    reliable: bool
    future: asyncio.Future[SipResponse]
    on_provisional: Callable[[SipResponse], None] | None
    proceeding: bool = False
    handles: list[asyncio.TimerHandle] = field(default_factory=list)

    def cancel_timers(self) -> None:
        for handle in self.handles:
            handle.cancel()
        self.handles.clear()


@dataclass(slots=True)
class _Served:
    response: bytes | None  # the last response sent, None while the TU works on it
    status: int
    expires_at: float


def _client_key(message: SipRequest | SipResponse) -> ClientKey | None:
    branch = message.top_via.branch
    return (branch, message.cseq.method) if branch else None


def _server_key(request: SipRequest) -> ServerKey:
    method = "INVITE" if request.method == "ACK" else request.method
    branch = request.top_via.branch or ""
    return (branch, method, request.call_id, request.cseq.number, request.from_.tag or "")


class TransactionLayer:
    """Client and server transactions of one SIP endpoint (UDP and TCP alike).

    ``send`` is called with the bytes and the peer address; over TCP the endpoint maps the
    address to its connection. ``clock`` (monotonic seconds) ages the server-side cache;
    ``timers`` sets the retransmission schedule. At most ``max_served`` server transactions
    are remembered (oldest dropped first), bounding memory under a request flood.
    """

    def __init__(
        self,
        send: SendFn,
        *,
        timers: SipTimers = SipTimers(),
        clock: Callable[[], float] = time.monotonic,
        max_served: int = 10_000,
    ) -> None:
        self.timers = timers
        self.counters = TransactionCounters()
        self._send, self._clock, self._max_served = send, clock, max_served
        self._clients: dict[ClientKey, _Client] = {}
        self._completed: dict[ClientKey, tuple[bytes | None, Address]] = {}
        self._served: dict[ServerKey, _Served] = {}
        self._closed = False

    # --- client side -----------------------------------------------------------------------

    async def request(
        self,
        request: SipRequest,
        addr: Address,
        *,
        reliable: bool = False,
        on_provisional: Callable[[SipResponse], None] | None = None,
    ) -> SipResponse:
        """Send ``request`` and return its final response (any status >= 200).

        ``reliable`` (TCP) turns retransmissions off. ``on_provisional`` sees 1xx
        responses; it runs inside :meth:`receive`, so it must be quick and not raise.

        Raises :class:`~ingest.gb28181.SipTimeoutError` after 64*T1,
        :class:`~ingest.gb28181.TransactionClosedError` if :meth:`close` is called, and
        whatever ``send`` raises on the first transmission.
        """
        key = self._check_new(request)
        loop = asyncio.get_running_loop()
        client = _Client(
            request, request.to_bytes(), addr, reliable, loop.create_future(), on_provisional
        )
        self._clients[key] = client
        try:
            self._send(client.data, addr)
            client.handles.append(loop.call_later(self.timers.timeout, self._time_out, client))
            if not reliable:
                self._schedule_retransmit(client, self.timers.t1)
            return await client.future
        finally:
            client.cancel_timers()
            if self._clients.get(key) is client:
                del self._clients[key]

    def _check_new(self, request: SipRequest) -> ClientKey:
        if self._closed:
            raise TransactionClosedError("the SIP transaction layer is closed")
        if request.method == "ACK":
            raise GB28181Error("an ACK has no response: send it with send_stateless()")
        key = _client_key(request)
        if key is None or key in self._clients:
            raise GB28181Error(f"request needs a unique Via branch, got {key!r}")
        return key

    def _schedule_retransmit(self, client: _Client, delay: float) -> None:
        handle = asyncio.get_running_loop().call_later(delay, self._retransmit, client, delay)
        client.handles.append(handle)

    def _retransmit(self, client: _Client, interval: float) -> None:
        invite = client.request.method == "INVITE"
        if client.future.done() or (invite and client.proceeding):
            return
        self._send_quietly(client.data, client.addr)
        self.counters.retransmissions += 1
        if invite:  # Timer A doubles without a cap (RFC 3261 §17.1.1.2)
            self._schedule_retransmit(client, interval * 2)
        else:  # Timer E: doubles up to T2; T2 once a 1xx came (§17.1.2.2)
            self._schedule_retransmit(
                client, self.timers.t2 if client.proceeding else min(interval * 2, self.timers.t2)
            )

    def _time_out(self, client: _Client) -> None:
        if not client.future.done():
            self.counters.timeouts += 1
            method = client.request.method
            client.future.set_exception(
                SipTimeoutError(f"no final response to {method} within {self.timers.timeout:g} s")
            )

    def _on_response(self, response: SipResponse, addr: Address) -> SipResponse | None:
        key = _client_key(response)
        client = self._clients.get(key) if key is not None else None
        if key is None or client is None:
            return self._absorb_completed(key, response)
        if response.status < 200:
            client.proceeding = True
            if client.on_provisional is not None:
                client.on_provisional(response)
            return None
        del self._clients[key]
        client.cancel_timers()
        self._complete(key, client, response)
        if not client.future.done():
            client.future.set_result(response)
        return None

    def _complete(self, key: ClientKey, client: _Client, response: SipResponse) -> None:
        """ACK an INVITE's error; remember the transaction to absorb retransmitted responses."""
        invite = client.request.method == "INVITE"
        if invite and response.status < 300:
            return  # a 2xx to INVITE: the TU ACKs it, and each retransmission of it
        ack = build_ack(client.request, response).to_bytes() if invite else None
        if ack is not None:
            self._send_quietly(ack, client.addr)
        if client.reliable:
            return  # over TCP nothing is retransmitted: Timers D and K are 0
        # Timer D (32 s at the default T1) re-ACKs; Timer K (T4) swallows duplicates.
        linger = self.timers.timeout / 2 if invite else self.timers.t4
        self._completed[key] = (ack, client.addr)
        asyncio.get_running_loop().call_later(linger, self._completed.pop, key, None)

    def _absorb_completed(self, key: ClientKey | None, response: SipResponse) -> SipResponse | None:
        done = self._completed.get(key) if key is not None else None
        if done is None:
            return response  # e.g. a retransmitted 2xx to an INVITE: the TU re-ACKs it
        self.counters.absorbed += 1
        ack, addr = done
        if ack is not None:
            self._send_quietly(ack, addr)
        return None

    # --- server side -----------------------------------------------------------------------

    def _on_request(self, request: SipRequest, addr: Address) -> SipRequest | None:
        self._purge()
        key = _server_key(request)
        served = self._served.get(key)
        if request.method == "ACK":
            if served is not None and served.status >= 300:  # ACK of our error: ours
                self.counters.absorbed += 1
                return None
            return request  # ACK of a 2xx: the TU's (a dialog was confirmed)
        if served is None:
            self._remember(key, _Served(None, 0, self._clock() + self.timers.timeout))
            return request
        self.counters.absorbed += 1
        if served.response is not None:
            self._send_quietly(served.response, addr)
        return None

    def respond(self, request: SipRequest, response: SipResponse, addr: Address) -> None:
        """Send ``response`` to ``request`` and remember it for retransmissions (Timer J)."""
        data = response.to_bytes()
        self._send(data, addr)
        key = _server_key(request)
        self._served.pop(key, None)  # re-inserted last: the dict stays ordered by expiry
        self._remember(key, _Served(data, response.status, self._clock() + self.timers.timeout))

    def _remember(self, key: ServerKey, served: _Served) -> None:
        self._served[key] = served
        while len(self._served) > self._max_served:
            del self._served[next(iter(self._served))]

    def _purge(self) -> None:
        now = self._clock()
        while self._served:
            key = next(iter(self._served))
            if self._served[key].expires_at > now:
                return
            del self._served[key]

    # --- both ------------------------------------------------------------------------------

    def receive(
        self, message: SipRequest | SipResponse, addr: Address
    ) -> SipRequest | SipResponse | None:
        """Route a parsed message; return it if the TU must handle it, else None."""
        if self._closed:
            return None
        if isinstance(message, SipResponse):
            return self._on_response(message, addr)
        return self._on_request(message, addr)

    def send_stateless(self, message: SipRequest | SipResponse, addr: Address) -> None:
        """Send outside any transaction: the ACK of a 2xx, a response to a stray request."""
        self._send(message.to_bytes(), addr)

    def _send_quietly(self, data: bytes, addr: Address) -> None:
        try:
            self._send(data, addr)
        except OSError as err:  # a retransmission: the timeout will report the failure
            self.counters.send_errors += 1
            log.debug("SIP retransmission to %s:%s failed: %s", addr[0], addr[1], err)

    @property
    def pending(self) -> int:
        """Client transactions waiting for a final response."""
        return len(self._clients)

    def close(self) -> None:
        """Fail every pending request with :class:`TransactionClosedError`; forget the rest."""
        self._closed = True
        for client in self._clients.values():
            client.cancel_timers()
            if not client.future.done():
                client.future.set_exception(
                    TransactionClosedError("the SIP transaction layer closed")
                )
        self._clients.clear()
        self._completed.clear()
        self._served.clear()
