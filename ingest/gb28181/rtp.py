"""RTP as GB/T 28181 devices send it: packets, reordering, and RFC 4571 framing over TCP.

A device streams MPEG-PS in RTP (payload type 96, 90 kHz clock) to the port our INVITE
offered: over UDP one packet a datagram, over TCP each packet behind a 2-byte big-endian
length (RFC 4571, GB/T 28181-2016 §C). :class:`ReorderBuffer` puts UDP packets back in
sequence order before their payloads are concatenated into the PS byte stream FFmpeg reads;
a gap it gives up on becomes a skip in that stream, which FFmpeg resynchronises on at the
next pack header.

Everything here is pure and bounded: a packet is at most 65535 bytes, the reorder buffer
holds at most ``depth`` packets, the framer at most one incomplete frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ingest.gb28181 import RtpError

__all__ = ["ReorderBuffer", "Rfc4571Framer", "RtpPacket", "is_rtcp", "parse_rtp"]

_HEADER = struct.Struct("!BBHII")
_SEQ_MOD = 1 << 16


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1); ``payload`` has CSRCs, extension, padding removed."""

    version: int
    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes


def is_rtcp(data: bytes) -> bool:
    """Whether ``data`` is RTCP (packet types 192-223, RFC 5761 §4) rather than RTP.

    Some devices send their RTCP on the RTP port, or inside the RTP-over-TCP stream.
    """
    return len(data) >= 2 and data[0] >> 6 == 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an RTP packet; raise :class:`~ingest.gb28181.RtpError` on anything malformed."""
    if len(data) < _HEADER.size:
        raise RtpError(f"RTP packet of {len(data)} bytes, shorter than its header")
    first, second, seq, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise RtpError(f"RTP version {first >> 6}, expected 2")
    start = _HEADER.size + 4 * (first & 0x0F)  # CSRC list
    if first & 0x10:  # header extension: 2 bytes profile, 2 bytes length in 32-bit words
        if len(data) < start + 4:
            raise RtpError("RTP header extension truncated")
        start += 4 + 4 * int.from_bytes(data[start + 2 : start + 4], "big")
    end = len(data)
    if first & 0x20:  # padding: the last byte counts the padding bytes, itself included
        end -= data[-1]
        if data[-1] == 0:
            raise RtpError("RTP padding count of zero")
    if start > end:
        raise RtpError("RTP header, extension and padding exceed the packet")
    payload = bytes(data[start:end])
    return RtpPacket(2, second & 0x7F, bool(second & 0x80), seq, timestamp, ssrc, payload)


def _delta(seq: int, reference: int) -> int:
    """``seq - reference`` on the 16-bit circle, in [-32768, 32767]."""
    return (seq - reference + 32768) % _SEQ_MOD - 32768


class ReorderBuffer:
    """Delivers RTP payloads in sequence order from packets that arrive out of order.

    :meth:`push` returns the payloads that became deliverable. A missing packet is waited
    for until a packet ``depth`` sequence numbers later arrives; then it is skipped and
    counted in :attr:`lost`. The caller may also give up on a gap after a time of its
    choosing with :meth:`skip_gap` (it knows when :attr:`waiting` started). A packet that
    arrives after its slot was skipped or delivered counts as :attr:`late` (dropped), one
    already buffered as :attr:`duplicates`.

    A jump of more than ``reset_jump`` sequence numbers is a sender restart (a device
    reconnecting starts a new random sequence) if the packet after it confirms the new
    sequence (RFC 3550 §A.1 probation): the buffer then delivers what it holds and starts
    over, counting :attr:`resets`. A single stray packet is dropped as :attr:`late`.

    Every packet pushed ends up delivered, or counted once in :attr:`late` or
    :attr:`duplicates`, or still held; :attr:`lost` counts sequence numbers never seen.
    """

    def __init__(self, depth: int = 64, *, reset_jump: int = 3000) -> None:
        if not 1 <= depth < reset_jump < 32768:
            raise RtpError("ReorderBuffer needs 1 <= depth < reset_jump < 32768")
        self.depth, self.reset_jump = depth, reset_jump
        self._next: int | None = None  # the sequence number to deliver next
        self._held: dict[int, bytes] = {}
        self._probe: tuple[int, bytes] | None = None  # a far packet awaiting confirmation
        self.lost = self.duplicates = self.late = self.resets = 0

    @property
    def waiting(self) -> bool:
        """Whether payloads are held behind a gap (start the caller's gap timer)."""
        return bool(self._held)

    def push(self, packet: RtpPacket) -> list[bytes]:
        """Add a packet; return the payloads now deliverable, in order."""
        if self._next is None:
            self._next = packet.seq
        delta = _delta(packet.seq, self._next)
        if abs(delta) > self.reset_jump:
            return self._far(packet)
        self._drop_probe()
        if delta < 0:
            self.late += 1
            return []
        if packet.seq in self._held:
            self.duplicates += 1
            return []
        out = self._advance_to(packet.seq - self.depth + 1) if delta >= self.depth else []
        self._held[packet.seq] = packet.payload
        return out + self._drain()

    def _far(self, packet: RtpPacket) -> list[bytes]:
        probe, self._probe = self._probe, None
        if probe is None or (probe[0] + 1) % _SEQ_MOD != packet.seq:
            self.late += probe is not None  # the previous far packet was a stray after all
            self._probe = (packet.seq, packet.payload)  # wait for the next one to confirm
            return []
        out = self.flush()
        self.resets += 1
        self._next = probe[0]
        self._held = {probe[0]: probe[1], packet.seq: packet.payload}
        return out + self._drain()

    def _drop_probe(self) -> None:
        if self._probe is not None:
            self.late += 1
            self._probe = None

    def _drain(self) -> list[bytes]:
        out = []
        while self._next is not None and self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next = (self._next + 1) % _SEQ_MOD
        return out

    def _advance_to(self, seq: int) -> list[bytes]:
        """Skip (counting lost) and deliver everything before ``seq``."""
        out, next_seq = [], self._next
        while next_seq is not None and _delta(seq % _SEQ_MOD, next_seq) > 0:
            payload = self._held.pop(next_seq, None)
            if payload is None:
                self.lost += 1
            else:
                out.append(payload)
            next_seq = (next_seq + 1) % _SEQ_MOD
        self._next = next_seq
        return out

    def skip_gap(self) -> list[bytes]:
        """Give up on the current gap: skip to the first held packet and deliver from there."""
        if not self._held or self._next is None:
            return []
        first = min(self._held, key=lambda seq: _delta(seq, self._next or 0))
        return self._advance_to(first) + self._drain()

    def flush(self) -> list[bytes]:
        """Deliver everything held, skipping every gap (end of stream)."""
        self._drop_probe()
        out = []
        while self._held:
            out += self.skip_gap()
        return out


class Rfc4571Framer:
    """Cuts RTP packets out of a TCP stream framed by 2-byte big-endian lengths (RFC 4571).

    :meth:`feed` raises :class:`~ingest.gb28181.RtpError` when a frame cannot be an RTP
    packet (shorter than a header, not version 2): the stream lost its framing and the
    caller must close the connection. At most one incomplete frame (< 65537 bytes) is held
    between calls.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete frames, in order."""
        self._buffer += data
        frames, pos = [], 0
        while len(self._buffer) - pos >= 2:
            length = int.from_bytes(self._buffer[pos : pos + 2], "big")
            # Check the RTP version as soon as its byte is in, not after 64 KiB of garbage.
            version = self._buffer[pos + 2] >> 6 if len(self._buffer) > pos + 2 else 2
            if length < _HEADER.size or version != 2:
                self._buffer.clear()
                raise RtpError(f"RTP-over-TCP frame of {length} bytes is not RTP: framing lost")
            if len(self._buffer) - pos - 2 < length:
                break
            frames.append(bytes(self._buffer[pos + 2 : pos + 2 + length]))
            pos += 2 + length
        del self._buffer[:pos]
        return frames
