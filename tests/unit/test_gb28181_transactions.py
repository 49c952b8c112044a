"""SIP transactions: retransmission schedules, timeouts, matching, the server-side cache.

Timers are scaled down (T1 = 5 ms, so Timer F = 320 ms) instead of patched: the schedule
is the real one, only faster. Assertions on counts leave room for a loaded machine
(a late timer can only delay, never add, a retransmission).
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from ingest.gb28181 import GB28181Error, SipTimeoutError, TransactionClosedError
from ingest.gb28181.sip import (
    SipRequest,
    SipResponse,
    build_ack,
    build_request,
    parse_message,
    response_to,
)
from ingest.gb28181.transactions import SipTimers, TransactionLayer

TIMERS = SipTimers().scaled(0.01)  # T1 5 ms, T2 40 ms, T4 50 ms, timeout 320 ms
DEVICE_ADDR = ("192.0.2.64", 5060)
PLATFORM = "34020000002000000001"
DEVICE = "34020000001320000001"


class Network:
    """The injected ``send``: records what was sent and when (loop time)."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes, tuple[str, int]]] = []
        self.fail = False

    def __call__(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.fail:
            raise OSError("network unreachable")
        self.sent.append((asyncio.get_running_loop().time(), data, addr))

    def messages(self) -> list[SipRequest | SipResponse]:
        return [parse_message(data) for _, data, _ in self.sent]

    def times(self) -> list[float]:
        return [t for t, _, _ in self.sent]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def request(method: str = "MESSAGE", *, cseq: int = 1) -> SipRequest:
    return build_request(
        method,
        f"sip:{DEVICE}@192.0.2.64:5060",
        from_uri=f"sip:{PLATFORM}@3402000000",
        to_uri=f"sip:{DEVICE}@3402000000",
        via_host="198.51.100.10",
        via_port=5060,
        cseq=cseq,
        contact=f"sip:{PLATFORM}@198.51.100.10:5060" if method == "INVITE" else None,
    )


def device_request(
    *, branch: str = "z9hG4bK1601626286", cseq: int = 20, method: str = "MESSAGE"
) -> SipRequest:
    data = (
        f"{method} sip:{PLATFORM}@3402000000 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.64:5060;rport;branch={branch}\r\n"
        f"From: <sip:{DEVICE}@3402000000>;tag=1459367520\r\n"
        f"To: <sip:{PLATFORM}@3402000000>\r\n"
        "Call-ID: 1262387549\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    parsed = parse_message(data)
    assert isinstance(parsed, SipRequest)
    return parsed


def intervals(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# --- client transactions ------------------------------------------------------------------------


async def test_non_invite_over_udp_retransmits_doubling_to_t2_then_times_out() -> None:
    network = Network()
    layer = TransactionLayer(network, timers=TIMERS)
    started = asyncio.get_running_loop().time()
    with pytest.raises(SipTimeoutError, match="MESSAGE"):
        await layer.request(request(), DEVICE_ADDR)
    elapsed = asyncio.get_running_loop().time() - started
    assert elapsed == pytest.approx(TIMERS.timeout, abs=0.1)
    # Sent at 0, 5, 15, 35, 75, 115, ..., 315 ms: 1 + 10 retransmissions when on time.
    assert 7 <= len(network.sent) <= 11
    assert layer.counters.retransmissions == len(network.sent) - 1
    assert layer.counters.timeouts == 1 and layer.pending == 0
    gaps = intervals(network.times())
    expected = [0.005, 0.010, 0.020, 0.040, 0.040, 0.040]
    for gap, want in zip(gaps, expected, strict=False):
        assert gap >= want * 0.8  # timers fire late under load, never early
    assert all(data == network.sent[0][1] for _, data, _ in network.sent)  # identical copies


async def test_invite_retransmits_doubling_without_the_t2_cap() -> None:
    network = Network()
    layer = TransactionLayer(network, timers=TIMERS)
    with pytest.raises(SipTimeoutError):
        await layer.request(request("INVITE"), DEVICE_ADDR)
    # Timer A: 0, 5, 15, 35, 75, 155, 315 ms: 1 + 6 retransmissions.
    assert 5 <= len(network.sent) <= 7
    gaps = intervals(network.times())
    assert gaps[-1] >= 0.060  # past T2 (40 ms): INVITE intervals are not capped


async def test_reliable_transport_sends_once_and_still_times_out() -> None:
    network = Network()
    layer = TransactionLayer(network, timers=TIMERS)
    with pytest.raises(SipTimeoutError):
        await layer.request(request(), DEVICE_ADDR, reliable=True)
    assert len(network.sent) == 1 and layer.counters.retransmissions == 0


async def test_final_response_returns_and_stops_retransmissions() -> None:
    network = Network()
    layer = TransactionLayer(network, timers=TIMERS)
    req = request()
    task = asyncio.create_task(layer.request(req, DEVICE_ADDR))
    await asyncio.sleep(0.03)  # a few retransmissions go out
    ok = parse_message(response_to(req, 200).to_bytes())
    assert layer.receive(ok, DEVICE_ADDR) is None
    assert await task == ok
    count = len(network.sent)
    assert count >= 2
    await asyncio.sleep(0.1)
    assert len(network.sent) == count and layer.pending == 0


async def test_retransmitted_final_response_is_absorbed() -> None:
    layer = TransactionLayer(Network(), timers=TIMERS)
    req = request()
    task = asyncio.create_task(layer.request(req, DEVICE_ADDR))
    await asyncio.sleep(0)
    ok = response_to(req, 200)
    layer.receive(ok, DEVICE_ADDR)
    await task
    assert layer.receive(ok, DEVICE_ADDR) is None  # within Timer K
    assert layer.counters.absorbed == 1
    await asyncio.sleep(TIMERS.t4 + 0.03)
    assert layer.receive(ok, DEVICE_ADDR) == ok  # Timer K over: a stray now


async def test_provisional_stops_invite_retransmissions_but_not_the_deadline() -> None:
    network = Network()
    layer = TransactionLayer(network, timers=TIMERS)
    invite = request("INVITE")
    seen: list[int] = []
    task = asyncio.create_task(
        layer.request(invite, DEVICE_ADDR, on_provisional=lambda r: seen.append(r.status))
    )
    await asyncio.sleep(0)
    layer.receive(response_to(invite, 100), DEVICE_ADDR)
    await asyncio.sleep(0.05)
    assert len(network.sent) == 1 and seen == [100]
    with pytest.raises(SipTimeoutError):  # a device that sends 100 and nothing else
        await task


async def test_provisional_slows_non_invite_retransmissions_to_t2() -> None:
    network = Network()
    layer = TransactionLayer(network, timers=TIMERS)
    req = request()
    task = asyncio.create_task(layer.request(req, DEVICE_ADDR))
    await asyncio.sleep(0)
    layer.receive(response_to(req, 100), DEVICE_ADDR)
    await asyncio.sleep(0.2)
    gaps = intervals(network.times())
    assert all(gap >= TIMERS.t2 * 0.8 for gap in gaps[1:])
    layer.receive(response_to(req, 200), DEVICE_ADDR)
    assert (await task).status == 200


async def test_invite_error_is_acked_with_the_invite_branch_and_reacked() -> None:
    network = Network()
    layer = TransactionLayer(network, timers=TIMERS)
    invite = request("INVITE")
    task = asyncio.create_task(layer.request(invite, DEVICE_ADDR))
    await asyncio.sleep(0)
    busy = response_to(invite, 486, to_tag="99")
    layer.receive(busy, DEVICE_ADDR)
    assert (await task).status == 486
    acks = [m for m in network.messages() if isinstance(m, SipRequest) and m.method == "ACK"]
    assert len(acks) == 1
    assert acks[0].top_via.branch == invite.top_via.branch and acks[0].to.tag == "99"
    assert layer.receive(busy, DEVICE_ADDR) is None  # the device did not get our ACK
    acks = [m for m in network.messages() if isinstance(m, SipRequest) and m.method == "ACK"]
    assert len(acks) == 2


async def test_invite_2xx_is_left_to_the_tu_and_its_retransmissions_reach_it() -> None:
    network = Network()
    layer = TransactionLayer(network, timers=TIMERS)
    invite = request("INVITE")
    task = asyncio.create_task(layer.request(invite, DEVICE_ADDR))
    await asyncio.sleep(0)
    ok = response_to(invite, 200, to_tag="7")
    layer.receive(ok, DEVICE_ADDR)
    assert (await task).status == 200
    assert not any(isinstance(m, SipRequest) and m.method == "ACK" for m in network.messages())
    assert layer.receive(ok, DEVICE_ADDR) == ok  # the TU re-ACKs this one
    layer.send_stateless(build_ack(invite, ok), DEVICE_ADDR)
    assert network.messages()[-1].cseq.method == "ACK"


async def test_responses_match_on_branch_and_cseq_method() -> None:
    layer = TransactionLayer(Network(), timers=TIMERS)
    req = request()
    task = asyncio.create_task(layer.request(req, DEVICE_ADDR))
    await asyncio.sleep(0)
    wrong_method = response_to(req, 200)
    wrong_method = SipResponse(
        200,
        "OK",
        tuple((k, "1 INFO" if k == "CSeq" else v) for k, v in wrong_method.headers),
    )
    assert layer.receive(wrong_method, DEVICE_ADDR) == wrong_method
    other_branch = response_to(request(), 200)
    assert layer.receive(other_branch, DEVICE_ADDR) == other_branch
    assert not task.done()
    layer.receive(response_to(req, 200), DEVICE_ADDR)
    assert (await task).status == 200


async def test_request_misuse_is_refused() -> None:
    layer = TransactionLayer(Network(), timers=TIMERS)
    req = request()
    task = asyncio.create_task(layer.request(req, DEVICE_ADDR))
    await asyncio.sleep(0)
    with pytest.raises(GB28181Error, match="unique Via branch"):
        await layer.request(req, DEVICE_ADDR)
    with pytest.raises(GB28181Error, match="ACK"):
        await layer.request(request("ACK"), DEVICE_ADDR)
    layer.receive(response_to(req, 200), DEVICE_ADDR)
    await task


async def test_retransmission_send_errors_are_counted_and_the_timeout_reports() -> None:
    network = Network()
    layer = TransactionLayer(network, timers=TIMERS)
    task = asyncio.create_task(layer.request(request(), DEVICE_ADDR))
    await asyncio.sleep(0)
    network.fail = True
    with pytest.raises(SipTimeoutError):
        await task
    assert layer.counters.send_errors >= 5


async def test_first_send_error_propagates() -> None:
    network = Network()
    network.fail = True
    layer = TransactionLayer(network, timers=TIMERS)
    with pytest.raises(OSError, match="unreachable"):
        await layer.request(request(), DEVICE_ADDR)
    assert layer.pending == 0


async def test_cancelling_the_caller_cleans_up() -> None:
    network = Network()
    layer = TransactionLayer(network, timers=TIMERS)
    task = asyncio.create_task(layer.request(request(), DEVICE_ADDR))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(network.sent)
    await asyncio.sleep(0.05)
    assert layer.pending == 0 and len(network.sent) == count


async def test_close_fails_pending_requests() -> None:
    layer = TransactionLayer(Network(), timers=TIMERS)
    task = asyncio.create_task(layer.request(request(), DEVICE_ADDR))
    await asyncio.sleep(0)
    layer.close()
    with pytest.raises(TransactionClosedError):
        await task
    with pytest.raises(TransactionClosedError):
        await layer.request(request(), DEVICE_ADDR)
    assert layer.receive(device_request(), DEVICE_ADDR) is None


# --- server transactions ------------------------------------------------------------------------


async def test_retransmitted_request_gets_the_same_response_and_reaches_the_tu_once() -> None:
    network = Network()
    clock = Clock()
    layer = TransactionLayer(network, timers=TIMERS, clock=clock)
    keepalive = device_request()
    handled = [m for m in (layer.receive(keepalive, DEVICE_ADDR),) if m is not None]
    assert handled == [keepalive]
    # Retransmitted while the TU is still busy (a slow database): absorbed, nothing sent.
    assert layer.receive(keepalive, DEVICE_ADDR) is None and network.sent == []
    layer.respond(keepalive, response_to(keepalive, 200, to_tag="5"), DEVICE_ADDR)
    for _ in range(3):
        assert layer.receive(keepalive, DEVICE_ADDR) is None
    assert len(network.sent) == 4
    assert len({data for _, data, _ in network.sent}) == 1  # byte-identical responses
    assert layer.counters.absorbed == 4


async def test_server_cache_expires_after_64_t1() -> None:
    clock = Clock()
    layer = TransactionLayer(Network(), timers=TIMERS, clock=clock)
    keepalive = device_request()
    layer.receive(keepalive, DEVICE_ADDR)
    layer.respond(keepalive, response_to(keepalive, 200), DEVICE_ADDR)
    clock.now += TIMERS.timeout - 0.001
    assert layer.receive(keepalive, DEVICE_ADDR) is None
    clock.now += 0.002
    assert layer.receive(keepalive, DEVICE_ADDR) == keepalive


async def test_a_device_reusing_its_branch_still_gets_each_request_handled() -> None:
    layer = TransactionLayer(Network(), timers=TIMERS, clock=Clock())
    first, second = device_request(cseq=20), device_request(cseq=21)
    assert layer.receive(first, DEVICE_ADDR) == first
    assert layer.receive(second, DEVICE_ADDR) == second


async def test_ack_of_an_error_is_absorbed_ack_of_a_2xx_reaches_the_tu() -> None:
    layer = TransactionLayer(Network(), timers=TIMERS, clock=Clock())
    invite = device_request(method="INVITE", cseq=1)
    layer.receive(invite, DEVICE_ADDR)
    layer.respond(invite, response_to(invite, 488), DEVICE_ADDR)
    ack = device_request(method="ACK", cseq=1)
    assert layer.receive(ack, DEVICE_ADDR) is None
    invite2 = device_request(method="INVITE", cseq=2, branch="z9hG4bK2")
    layer.receive(invite2, DEVICE_ADDR)
    layer.respond(invite2, response_to(invite2, 200), DEVICE_ADDR)
    ack2 = device_request(method="ACK", cseq=2, branch="z9hG4bK3")
    assert layer.receive(ack2, DEVICE_ADDR) == ack2


async def test_server_cache_is_bounded() -> None:
    layer = TransactionLayer(Network(), timers=TIMERS, clock=Clock(), max_served=10)
    requests = [device_request(branch=f"z9hG4bK{i}") for i in range(25)]
    for req in requests:
        assert layer.receive(req, DEVICE_ADDR) == req
    assert layer.receive(requests[-1], DEVICE_ADDR) is None  # recent: remembered
    assert layer.receive(requests[0], DEVICE_ADDR) == requests[0]  # evicted: a new one


async def test_timers_scale() -> None:
    assert SipTimers().timeout == 32.0
    assert SipTimers().scaled(0.5) == SipTimers(0.25, 2.0, 2.5)
