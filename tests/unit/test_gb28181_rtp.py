"""RTP packets, reordering with 16-bit wrap and loss, RFC 4571 framing, the PS inspector."""

from __future__ import annotations

import struct

import pytest

from ingest.gb28181 import PsError, RtpError
from ingest.gb28181.ps import (
    CodecChange,
    CodecWatch,
    ElementaryStream,
    ProgramStreamMap,
    find_psm,
    looks_like_ps,
    parse_psm,
)
from ingest.gb28181.rtp import ReorderBuffer, Rfc4571Framer, RtpPacket, is_rtcp, parse_rtp


def rtp(
    seq: int,
    payload: bytes = b"",
    *,
    pt: int = 96,
    marker: bool = False,
    ts: int = 3600,
    ssrc: int = 200000001,
    csrcs: tuple[int, ...] = (),
    extension: bytes | None = None,
    padding: int = 0,
) -> bytes:
    first = 0x80 | len(csrcs) | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    data = struct.pack("!BBHII", first, pt | (0x80 if marker else 0), seq & 0xFFFF, ts, ssrc)
    data += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension is not None:
        data += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    data += payload
    if padding:
        data += b"\x00" * (padding - 1) + bytes([padding])
    return data


def packet(seq: int) -> RtpPacket:
    return RtpPacket(2, 96, False, seq % 65536, 0, 1, f"p{seq % 65536}".encode())


def payloads(*seqs: int) -> list[bytes]:
    return [f"p{s % 65536}".encode() for s in seqs]


# --- parse_rtp ----------------------------------------------------------------------------------


def test_parse_a_ps_packet() -> None:
    data = rtp(65535, b"\x00\x00\x01\xba" + b"x" * 20, marker=True, ts=0xFFFFFFFF, ssrc=0)
    assert parse_rtp(data) == RtpPacket(
        2, 96, True, 65535, 0xFFFFFFFF, 0, b"\x00\x00\x01\xba" + b"x" * 20
    )


def test_csrcs_extension_and_padding_are_removed_from_the_payload() -> None:
    data = rtp(7, b"payload", csrcs=(1, 2, 3), extension=b"\x10\x00\x00\x00" * 2, padding=4)
    got = parse_rtp(data)
    assert (got.seq, got.payload) == (7, b"payload")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter"),
        (rtp(1)[:11], "shorter"),
        (bytes([0x40]) + rtp(1)[1:], "version 1"),
        (bytes([0x00]) + rtp(1)[1:], "version 0"),
        (bytes([0xC0]) + rtp(1)[1:], "version 3"),
        (bytes([0x8F]) + rtp(1)[1:], "exceed"),  # 15 CSRCs announced, none there
        (bytes([0x90]) + rtp(1)[1:], "extension truncated"),
        (rtp(1, extension=b"")[:-2] + b"\xff\xff", "exceed"),  # extension length past the end
        (bytes([0xA0]) + rtp(1, b"ab")[1:-1] + b"\x00", "padding count of zero"),
        (bytes([0xA0]) + rtp(1, b"ab")[1:-1] + b"\xff", "exceed"),
    ],
)
def test_malformed_rtp_raises(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError, match=reason):
        parse_rtp(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x80\xc8\x00\x06", True),
        (b"\x81\xc9", True),
        (rtp(1), False),
        (b"\x00\xc8", False),
        (b"\x80", False),
    ],
)
def test_is_rtcp(data: bytes, expected: bool) -> None:
    assert is_rtcp(data) is expected


# --- ReorderBuffer ------------------------------------------------------------------------------


def push_all(buffer: ReorderBuffer, seqs: list[int]) -> list[bytes]:
    return [p for s in seqs for p in buffer.push(packet(s))]


def test_in_order_packets_pass_straight_through() -> None:
    buffer = ReorderBuffer(depth=8)
    assert push_all(buffer, list(range(100, 110))) == payloads(*range(100, 110))
    assert (buffer.lost, buffer.duplicates, buffer.late, buffer.waiting) == (0, 0, 0, False)


def test_out_of_order_packets_come_out_in_order() -> None:
    buffer = ReorderBuffer(depth=8)
    assert buffer.push(packet(10)) == payloads(10)
    assert buffer.push(packet(12)) == [] and buffer.waiting
    assert buffer.push(packet(13)) == []
    assert buffer.push(packet(11)) == payloads(11, 12, 13)
    assert not buffer.waiting


@pytest.mark.parametrize("start", [65530, 65535, 0])
def test_reordering_across_the_16_bit_wrap(start: int) -> None:
    seqs = [start + i for i in range(12)]
    shuffled = [
        seqs[0],
        seqs[2],
        seqs[1],
        seqs[5],
        seqs[3],
        seqs[4],
        seqs[6],
        seqs[9],
        seqs[7],
        seqs[8],
        seqs[11],
        seqs[10],
    ]
    buffer = ReorderBuffer(depth=8)
    assert push_all(buffer, shuffled) == payloads(*seqs)
    assert buffer.lost == 0


def test_duplicates_are_counted_and_dropped() -> None:
    buffer = ReorderBuffer(depth=8)
    out = push_all(buffer, [1, 3, 3, 2, 2, 4])
    assert out == payloads(1, 2, 3, 4)
    assert buffer.duplicates == 1  # 3 twice while held
    assert buffer.late == 1  # 2 again after it was delivered


def test_a_gap_is_skipped_after_depth_packets_and_counted_lost() -> None:
    buffer = ReorderBuffer(depth=4)
    out = push_all(buffer, [65534, 0, 1, 2])  # 65535 missing, across the wrap
    assert out == payloads(65534)
    assert buffer.push(packet(3)) == payloads(0, 1, 2, 3)
    assert buffer.lost == 1
    assert buffer.push(packet(65535)) == [] and buffer.late == 1  # too late now


def test_a_burst_loss_larger_than_depth() -> None:
    buffer = ReorderBuffer(depth=4)
    assert push_all(buffer, [1, 2, 100, 101]) == payloads(1, 2)
    assert buffer.waiting and buffer.lost == 95  # 3-97 are out of reach; 98, 99 may come
    assert push_all(buffer, [102, 103]) == payloads(100, 101, 102, 103)
    assert buffer.lost == 97


def test_the_caller_can_give_up_on_a_gap_by_time() -> None:
    buffer = ReorderBuffer(depth=64)
    push_all(buffer, [1, 3, 4, 7])
    assert buffer.waiting
    assert buffer.skip_gap() == payloads(3, 4)
    assert buffer.skip_gap() == payloads(7)
    assert buffer.skip_gap() == [] and buffer.lost == 3


def test_flush_delivers_everything_held() -> None:
    buffer = ReorderBuffer(depth=64)
    push_all(buffer, [65535, 2, 5, 3])
    assert buffer.flush() == payloads(2, 3, 5)
    assert not buffer.waiting and buffer.lost == 3  # 0, 1 and 4


def test_a_sender_restart_resets_the_sequence() -> None:
    buffer = ReorderBuffer(depth=8, reset_jump=1000)
    push_all(buffer, [100, 101, 103])
    assert buffer.push(packet(40000)) == []  # a stray, or a restart? wait for the next one
    assert buffer.push(packet(40001)) == payloads(101 + 2, 40000, 40001)
    assert buffer.resets == 1
    assert buffer.push(packet(40002)) == payloads(40002)


def test_a_single_stray_packet_does_not_reset() -> None:
    buffer = ReorderBuffer(depth=8, reset_jump=1000)
    push_all(buffer, [100, 101])
    assert buffer.push(packet(30000)) == []
    assert buffer.push(packet(102)) == payloads(102)
    assert (buffer.resets, buffer.late) == (0, 1)


def test_reorder_buffer_validates_its_parameters() -> None:
    with pytest.raises(RtpError):
        ReorderBuffer(depth=0)
    with pytest.raises(RtpError):
        ReorderBuffer(depth=100, reset_jump=50)


def test_buffer_memory_is_bounded_by_depth() -> None:
    buffer = ReorderBuffer(depth=16)
    buffer.push(packet(0))
    for seq in range(2, 2000, 1):
        buffer.push(packet(seq))
        assert len(buffer._held) <= 16


# --- RFC 4571 framing ---------------------------------------------------------------------------


def framed(*packets: bytes) -> bytes:
    return b"".join(len(p).to_bytes(2, "big") + p for p in packets)


def test_framer_cuts_packets_in_one_chunk_and_any_split() -> None:
    packets = [rtp(i, bytes([i]) * (i * 37 % 1400)) for i in range(20)]
    stream = framed(*packets)
    assert Rfc4571Framer().feed(stream) == packets
    for chunk in (1, 3, 1000):
        framer = Rfc4571Framer()
        got = [f for i in range(0, len(stream), chunk) for f in framer.feed(stream[i : i + chunk])]
        assert got == packets


@pytest.mark.parametrize(
    "stream",
    [
        b"\x00\x00",  # zero-length frame
        b"\x00\x05hello",  # shorter than an RTP header
        framed(b"\x00" * 12),  # version 0
        b"$\x00\x00\x20" + rtp(1, b"x" * 16),  # RTSP interleaved framing, not RFC 4571
    ],
)
def test_framer_raises_when_framing_is_lost(stream: bytes) -> None:
    with pytest.raises(RtpError, match="framing lost"):
        Rfc4571Framer().feed(stream)


def test_framer_holds_at_most_one_incomplete_frame() -> None:
    framer = Rfc4571Framer()
    assert framer.feed(b"\xff\xff" + rtp(1)) == []
    assert len(framer._buffer) < 65537
    assert framer.feed(b"\x00" * (65535 - 12)) == [rtp(1) + b"\x00" * (65535 - 12)]
    assert len(framer._buffer) == 0


# --- MPEG-PS ------------------------------------------------------------------------------------

PACK = bytes.fromhex("000001ba440004000401" + "0189c3f8")


def psm(*streams: tuple[int, int], version: int = 0, descriptors: bytes = b"") -> bytes:
    entries = b"".join(
        bytes([stream_type, stream_id]) + b"\x00\x00" for stream_id, stream_type in streams
    )
    body = bytes([0x80 | version, 0x01]) + len(descriptors).to_bytes(2, "big") + descriptors
    body += len(entries).to_bytes(2, "big") + entries + b"\x00\x00\x00\x00"  # CRC, unchecked
    return b"\x00\x00\x01\xbc" + len(body).to_bytes(2, "big") + body


def pes(stream_id: int, payload: bytes) -> bytes:
    header = b"\x80\x80\x05\x21\x00\x01\x00\x01"
    return (
        b"\x00\x00\x01"
        + bytes([stream_id])
        + (len(header) + len(payload)).to_bytes(2, "big")
        + header
        + payload
    )


H264_KEYFRAME = PACK + psm((0xE0, 0x1B), (0xC0, 0x90)) + pes(0xE0, b"\x00\x00\x00\x01\x67\x42")
H265_KEYFRAME = (
    PACK + psm((0xE0, 0x24), (0xC0, 0x90), version=1) + pes(0xE0, b"\x00\x00\x00\x01\x40\x01")
)


def test_looks_like_ps() -> None:
    assert looks_like_ps(H264_KEYFRAME)
    assert not looks_like_ps(b"\x00\x00\x00\x01\x67\x42\x00\x1f" * 4)  # raw H.264 instead of PS
    assert not looks_like_ps(PACK[:13])
    assert not looks_like_ps(b"\x00\x00\x01\xba\x21" + b"\x00" * 9)  # an MPEG-1 pack
    assert not looks_like_ps(b"\x00\x00\x01\xba" + b"\x00" * 10)  # marker bits missing


def test_find_psm_reads_the_stream_types() -> None:
    found = find_psm(H264_KEYFRAME)
    assert found == ProgramStreamMap(
        0, (ElementaryStream(0xE0, 0x1B), ElementaryStream(0xC0, 0x90))
    )
    assert found.types_by_id() == {0xE0: 0x1B, 0xC0: 0x90}
    assert found.video is not None and found.video.codec == "h264"
    assert [s.codec for s in found.streams] == ["h264", "pcm_alaw"]


def test_find_psm_with_descriptors_and_unknown_types() -> None:
    data = PACK + psm((0xE0, 0x42), descriptors=b"\x05\x04HDMV")
    found = find_psm(data)
    assert found is not None and found.video == ElementaryStream(0xE0, 0x42)
    assert found.video.codec == "unknown(0x42)"


def test_find_psm_skips_a_false_start_code_in_audio() -> None:
    audio = pes(0xC0, b"\x00\x00\x01\xbc\xff\xff\x13\x37")  # G.711 bytes that look like a PSM
    assert find_psm(PACK + audio + psm((0xE0, 0x24))) == ProgramStreamMap(
        0, (ElementaryStream(0xE0, 0x24),)
    )


def test_find_psm_none_when_absent_or_truncated() -> None:
    assert find_psm(PACK + pes(0xE0, b"\x00" * 50)) is None
    assert find_psm(H264_KEYFRAME[:20]) is None
    assert find_psm(b"") is None


def test_audio_only_map_has_no_video() -> None:
    found = find_psm(psm((0xC0, 0x0F)))
    assert found is not None and found.video is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no complete"),
        (PACK, "no complete"),
        (b"\x00\x00\x01\xbc\x00\x02" + b"\x00" * 10, "impossible"),
        (b"\x00\x00\x01\xbc\x04\x00" + b"\x00" * 10, "impossible"),
        (psm((0xE0, 0x1B))[:-3], "past the data"),
        (
            psm((0xE0, 0x1B), descriptors=b"\x00" * 4).replace(b"\x00\x04", b"\x00\xff", 1),
            "run past",
        ),
        (psm((0xE0, 0x1B)).replace(b"\xe0\x00\x00", b"\xe0\x00\x09"), "runs past"),
        (psm((0xE0, 0x1B)).replace(b"\x00\x04\x1b", b"\x00\x03\x1b"), "truncated"),
    ],
)
def test_parse_psm_raises_on_inconsistent_lengths(data: bytes, reason: str) -> None:
    with pytest.raises(PsError, match=reason):
        parse_psm(data)


def test_codec_watch_reports_the_first_codec_and_each_switch() -> None:
    watch = CodecWatch()
    assert watch.feed(H264_KEYFRAME) == CodecChange(None, 0x1B)
    assert watch.feed(H264_KEYFRAME) is None
    assert watch.feed(pes(0xE0, b"\x00" * 100)) is None  # a P-frame: no map
    change = watch.feed(H265_KEYFRAME)
    assert change == CodecChange(0x1B, 0x24) and change.codec == "hevc"
    assert watch.video_type == 0x24
    assert watch.feed(b"garbage \x00\x00\x01\xbc\xff") is None
