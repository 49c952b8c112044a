"""Mutation fuzzing of every GB/T 28181 parser with realistic seeds (seeded, reproducible).

A device that is broken or hostile must never crash or hang the endpoint: each parser may
only raise its documented :class:`~ingest.gb28181.GB28181Error` subclass, each call stays
fast, and memory stays flat (tracemalloc: a second batch of inputs may not retain or peak
above the first plus a margin). A failure prints the seed, the index and the input.
"""

from __future__ import annotations

import contextlib
import gc
import random
import re
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from ingest.gb28181 import (
    DigestError,
    GB28181Error,
    ManscdpError,
    PsError,
    RtpError,
    SdpError,
    SipParseError,
)
from ingest.gb28181.digest import parse_authorization
from ingest.gb28181.manscdp import CatalogAssembler, CatalogResponse, parse_body
from ingest.gb28181.ps import CodecWatch, find_psm, looks_like_ps, parse_psm
from ingest.gb28181.rtp import ReorderBuffer, Rfc4571Framer, is_rtcp, parse_rtp
from ingest.gb28181.sdp import parse_answer
from ingest.gb28181.sip import SipStreamParser, parse_message
from tests.unit import test_gb28181_manscdp as manscdp_seeds
from tests.unit import test_gb28181_rtp as rtp_seeds
from tests.unit import test_gb28181_sdp as sdp_seeds
from tests.unit import test_gb28181_sip as sip_seeds

SLOWEST_CALL_S = 0.25  # typical calls take 20-200 µs; this only catches hangs and blowups
RETAINED_MARGIN = 256 * 1024
PEAK_MARGIN = 1024 * 1024

TOKENS = [
    b"\r\n", b"\n", b"\r\n\r\n", b":", b";", b",", b"<", b">", b'"', b"\\", b"\x00", b"\xff",
    b" ", b"\t", b"=", b"@", b"[", b"]", b"SIP/2.0", b"Content-Length: 99999\r\n", b"l: 0\r\n",
    b"Via: SIP/2.0/UDP [::1\r\n", b"<!DOCTYPE x>", b"&", b"&#0;", b"]]>", b"<?xml ", b"</",
    b"\x00\x00\x01\xbc", b"\x00\x00\x01\xba", b"\xef\xbb\xbf", "中文".encode("gbk"),
    "中文".encode(),
]  # fmt: skip
NUMBERS = [
    b"0",
    b"-1",
    b"65535",
    b"65536",
    b"4294967296",
    b"99999999999999999999",
    b"1e9",
    b"",
    b"+1",
    b"0x10",
    b"\xef\xbc\x91",
]


def mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    """1-3 random mutations: bit flips, truncation, duplication, insertions, swaps, splices."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        _mutate_once(rng, out, seeds)
    return bytes(out)


def _mutate_once(rng: random.Random, out: bytearray, seeds: list[bytes]) -> None:
    size = len(out)
    i, j = sorted((rng.randint(0, size), rng.randint(0, size)))
    op = rng.randrange(10)
    if op == 0 and size:
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(size)] ^= 1 << rng.randrange(8)
    elif op == 1:
        del out[i:]
    elif op == 2:
        out[j:j] = out[i:j] * rng.randint(1, 4)
    elif op == 3:
        out[i:i] = rng.randbytes(rng.randint(1, 64))
    elif op == 4:
        out[i:i] = rng.choice(TOKENS)
    elif op == 5:
        lines = bytes(out).split(b"\n")
        a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[a], lines[b] = lines[b], lines[a]
        out[:] = b"\n".join(lines)
    elif op == 6:
        del out[i:j]
    elif op == 7:
        other = rng.choice(seeds)
        out[i:] = other[rng.randint(0, len(other)) :]
    elif op == 8:
        numbers = list(re.finditer(rb"[0-9]+", out))
        if numbers:
            match = rng.choice(numbers)
            out[match.start() : match.end()] = rng.choice(NUMBERS)
    else:
        out[i:j] = bytes(out[i:j]).swapcase()


def mutated(seed: int, seeds: list[bytes], count: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(count):
        yield mutate(rng, rng.choice(seeds), seeds)


def run(
    name: str,
    target: Callable[[bytes], object],
    inputs: Iterator[bytes],
    allowed: type[GB28181Error],
) -> tuple[int, int]:
    """Feed every input; return (calls, allowed errors). Anything else fails the test."""
    calls = errors = 0
    for data in inputs:
        started = time.perf_counter()
        try:
            target(data)
        except allowed:
            errors += 1
        except Exception as err:  # the point of the test: report the input that escaped
            pytest.fail(f"{name}: {type(err).__name__}: {err} on input #{calls} {data[:300]!r}")
        elapsed = time.perf_counter() - started
        assert elapsed < SLOWEST_CALL_S, f"{name}: {elapsed:.3f} s on input #{calls} {data[:300]!r}"
        calls += 1
    return calls, errors


def assert_flat_memory(batch: Callable[[int, int], object], count: int) -> None:
    """Run ``batch(seed, count)`` twice under tracemalloc; the second may not grow past the
    first. Tracing makes allocations ~8x slower, so this runs smaller batches than the
    untraced ones that look for escaping exceptions.
    """
    tracemalloc.start()
    try:
        batch(1, count)
        gc.collect()  # expat parsers and chained exceptions leave cycles: garbage, not leaks
        retained_1, peak_1 = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        batch(2, count)
        gc.collect()
        retained_2, peak_2 = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert retained_2 <= retained_1 + RETAINED_MARGIN, (retained_1, retained_2)
    assert peak_2 <= peak_1 + PEAK_MARGIN, (peak_1, peak_2)


# --- SIP ----------------------------------------------------------------------------------------

SIP_SEEDS = [
    sip_seeds.HIKVISION_REGISTER,
    sip_seeds.HIKVISION_REGISTER_AUTH,
    sip_seeds.DAHUA_REGISTER,
    sip_seeds.HIKVISION_KEEPALIVE,
    sip_seeds.COMPACT_CATALOG,
    sip_seeds.INVITE_OK,
    sip_seeds.UNIVIEW_UNREGISTER,
]


def use_sip(data: bytes) -> None:
    """Parse, then touch everything a caller reads, then round-trip the bytes."""
    message = parse_message(data)
    _ = (message.top_via, message.vias, message.cseq, message.call_id, message.from_, message.to)
    _ = (message.contact, message.content_type, message.from_.tag, message.top_via.rport)
    for value in (message.from_, message.to):
        with contextlib.suppress(SipParseError):  # a header URI may have any scheme
            value.parsed_uri()
    with contextlib.suppress(SipParseError):  # documented: a junk Expires raises on access
        _ = message.expires
    assert parse_message(message.to_bytes()).headers  # what we parsed, we can send again


def feed_stream(rng: random.Random, stream: bytes) -> None:
    parser = SipStreamParser()
    pos = 0
    while pos < len(stream):
        size = rng.choice((1, 7, 100, 1500, 65536))
        parser.feed(stream[pos : pos + size])
        pos += size


def sip_stream(rng: random.Random) -> bytes:
    """Three messages back to back, each mutated or not, as a TCP peer would send them."""
    messages = [rng.choice(SIP_SEEDS) for _ in range(3)]
    return b"".join(mutate(rng, m, SIP_SEEDS) if rng.random() < 0.5 else m for m in messages)


def sip_batch(seed: int, count: int) -> None:
    run("parse_message", use_sip, mutated(seed, SIP_SEEDS, count), SipParseError)
    rng = random.Random(seed + 1000)
    streams = (sip_stream(rng) for _ in range(count // 3))
    run("SipStreamParser", lambda s: feed_stream(rng, s), streams, SipParseError)


def test_sip_parsers_raise_only_sip_parse_error() -> None:
    for seed in (10, 11):
        sip_batch(seed, 5_000)  # 10,000 messages, and 10,000 more in 3,332 streams


def test_sip_parsers_memory_is_flat() -> None:
    assert_flat_memory(sip_batch, 800)


# --- RTP and PS ---------------------------------------------------------------------------------

PS_SEEDS = [
    rtp_seeds.H264_KEYFRAME,
    rtp_seeds.H265_KEYFRAME,
    rtp_seeds.PACK + rtp_seeds.pes(0xE0, b"\x00" * 40),
]
RTP_SEEDS = [rtp_seeds.rtp(65535, payload, marker=True) for payload in PS_SEEDS] + [
    rtp_seeds.rtp(7, b"x" * 30, csrcs=(1, 2), extension=b"\x10\x00\x00\x00", padding=4),
    b"\x80\xc8\x00\x06" + b"\x00" * 24,  # RTCP sender report
]


class MediaSink:
    """One device's media path: framer → parse → reorder → codec watch."""

    def __init__(self) -> None:
        self.framer = Rfc4571Framer()
        self.reorder = ReorderBuffer(depth=32)
        self.watch = CodecWatch()

    def packet(self, data: bytes) -> None:
        if is_rtcp(data):
            return
        for payload in self.reorder.push(parse_rtp(data)):
            looks_like_ps(payload)
            self.watch.feed(payload)
        assert len(self.reorder._held) <= self.reorder.depth

    def stream(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except RtpError:
            self.framer = Rfc4571Framer()  # the endpoint closes the connection
            raise
        for frame in frames:
            with contextlib.suppress(RtpError):
                self.packet(frame)
        assert len(self.framer._buffer) <= 65537


def use_ps(data: bytes) -> None:
    looks_like_ps(data)
    find_psm(data)
    CodecWatch().feed(data)
    position = data.find(b"\x00\x00\x01\xbc")
    parse_psm(data, max(position, 0))


def media_batch(seed: int, count: int) -> None:
    sink = MediaSink()
    run("parse_rtp+ReorderBuffer", sink.packet, mutated(seed, RTP_SEEDS, count // 2), RtpError)
    rng = random.Random(seed + 2000)
    framed = (len(p).to_bytes(2, "big") + p for p in mutated(seed + 1, RTP_SEEDS, count // 4))
    run(
        "Rfc4571Framer",
        sink.stream,
        (mutate(rng, f, RTP_SEEDS) if rng.random() < 0.3 else f for f in framed),
        RtpError,
    )
    run("ps", use_ps, mutated(seed + 3, PS_SEEDS, count // 4), PsError)


def test_media_parsers_raise_only_their_errors() -> None:
    for seed in (10, 11):
        media_batch(seed, 10_000)  # 10,000 packets, 5,000 framed, 5,000 PS chunks


def test_media_parsers_memory_is_flat() -> None:
    assert_flat_memory(media_batch, 2_000)


def test_reorder_buffer_accounts_for_every_packet_of_random_sequences() -> None:
    rng = random.Random(7)
    buffer = ReorderBuffer(depth=16, reset_jump=1000)
    base = rng.randrange(65536)
    delivered = pushed = 0
    for i in range(20_000):
        jitter = rng.choice((0, 0, 0, 0, 0, 0, 1, -1, 3, -5, 20, 30000))
        if rng.random() < 0.001:
            base += rng.randrange(65536)  # the sender restarts
        for _ in range(rng.choice((0, 1, 1, 1, 2))):  # lost, once, or duplicated
            pushed += 1
            delivered += len(buffer.push(rtp_seeds.packet(base + i + jitter)))
            assert len(buffer._held) <= 16
    delivered += len(buffer.flush())
    assert delivered + buffer.late + buffer.duplicates == pushed
    assert delivered > pushed // 3 and buffer.lost > 0 and buffer.resets > 0


# --- MANSCDP, SDP, digest -----------------------------------------------------------------------

XML_SEEDS = [
    manscdp_seeds.HIK_KEEPALIVE,
    manscdp_seeds.HIK_CATALOG_PAGE_1,
    manscdp_seeds.HIK_CATALOG_PAGE_2,
    manscdp_seeds.DAHUA_CATALOG,
    manscdp_seeds.DEVICE_INFO,
    manscdp_seeds.ALARM,
    manscdp_seeds.BILLION_LAUGHS,
]


def xml_batch(seed: int, count: int) -> None:
    assembler = CatalogAssembler(max_pending=8, max_items=64)

    def use(data: bytes) -> None:
        message = parse_body(data)
        if isinstance(message, CatalogResponse):
            assembler.add(message)

    run("parse_body", use, mutated(seed, XML_SEEDS, count), ManscdpError)
    assert len(assembler) <= 8


def test_manscdp_parser_raises_only_manscdp_error() -> None:
    for seed in (10, 11):
        xml_batch(seed, 1_000)  # 2,000 bodies


def test_manscdp_parser_memory_is_flat() -> None:
    assert_flat_memory(xml_batch, 500)


def test_sdp_and_digest_parsers_raise_only_their_errors() -> None:
    sdps = [
        s.encode()
        for s in (sdp_seeds.HIKVISION_UDP, sdp_seeds.DAHUA_TCP_ACTIVE, sdp_seeds.MEDIA_LEVEL_C)
    ]
    run("parse_answer", parse_answer, mutated(11, sdps, 2_000), SdpError)
    headers = [sip_seeds.HIKVISION_REGISTER_AUTH.split(b"Authorization: ")[1].split(b"\r\n")[0]]

    def use_authorization(data: bytes) -> None:
        parse_authorization(data.decode("utf-8", errors="replace"))

    run("parse_authorization", use_authorization, mutated(12, headers, 2_000), DigestError)
