"""The clip journal: an open clip's packets on disk as they are recorded.

A clip is muxed into its faststart MP4 only when it is complete, but a process that dies
before then (SIGKILL, OOM, power cut) must not lose what it had already seen. So every
clip job appends its packets — the pre-roll at once, then each live packet — to a journal
file in the spool, fsynced at a bounded interval (:class:`ClipJournal`). The finished clip
is muxed from the journal; after a crash, :func:`read_journal` gives back every complete
record and the MP4 is made from those (``runtime/recovery.py``).

Why a journal of packets rather than a fragmented MP4: the records are independent and
self-checking (length + CRC-32 each), so a torn write loses at most the record being
written, and recovery is the same remux (:func:`storage.clips.write_mp4`, timestamp repair
included) as a clip that ended normally — one code path produces every archived clip.

Format: ``XLJ1`` then a length-prefixed JSON header (camera, incident, clip name, the
stream's time base and rate, and its codec parameters as a one-frame NUT file — the form
FFmpeg itself reads them back from), then records: ``<I`` payload length, ``<I`` CRC-32 of the rest,
``<qqqdB`` pts, dts, duration (``NONE`` for missing), wallclock, flags (1: keyframe, 2:
discontinuity), the payload.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from storage.clips import ClipError, CodecParams, EncodedPacket
from storage.durable import fsync_dir

__all__ = ["JOURNAL_SUFFIX", "ClipJournal", "Journal", "JournalHeader", "read_journal"]

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".journal"
MAGIC = b"XLJ1"
NONE = -(2**63)  # a missing timestamp
_LEN = struct.Struct("<I")
_HEAD = struct.Struct("<II")  # payload length, CRC-32 of meta + payload
_META = struct.Struct("<qqqdB")  # pts, dts, duration, wallclock, flags
_KEY, _DISCONTINUITY = 1, 2
MAX_HEADER = 32 << 20  # the init MP4 holds one keyframe
MAX_PAYLOAD = 64 << 20  # no video packet is this large: a length above it is garbage


@dataclass(frozen=True, slots=True)
class JournalHeader:
    """Whose clip a journal holds, and how to mux its packets."""

    camera_id: str
    incident_id: str | None
    clip_name: str
    requested_start: float
    params: CodecParams


@dataclass(frozen=True, slots=True)
class Journal:
    """What :func:`read_journal` found: the header and every complete record."""

    header: JournalHeader
    packets: list[EncodedPacket]
    torn_bytes: int  # bytes after the last complete record (a write the crash cut short)


class ClipJournal:
    """Appends one clip's packets to ``path``; fsyncs at most every ``sync_interval_s``.

    Not thread-safe: one writer (the recorder's writing thread) calls it.
    """

    def __init__(
        self,
        path: Path,
        header: JournalHeader,
        first: EncodedPacket,
        sync_interval_s: float = 1.0,
    ) -> None:
        """Create the journal; ``first`` is the clip's first packet (a keyframe), which
        the header needs to carry the codec parameters (and is not yet appended)."""
        self.path = path
        self._sync_interval_s = sync_interval_s
        head = MAGIC + _encode_header(header, first)
        # Unbuffered: each append reaches the OS at once, so a killed process (SIGKILL,
        # OOM) loses nothing it appended; only a power cut can lose the unsynced second.
        self._file = path.open("xb", buffering=0)
        self._file.write(head)
        self._synced_at = 0.0
        self.records = 0
        self.bytes = self._file.tell()
        self.syncs = 0
        self._sync(force=True)
        fsync_dir(path.parent)  # the journal's name survives a crash too

    def append(self, packets: Sequence[EncodedPacket]) -> None:
        """Write ``packets`` as records; fsync when the interval has passed."""
        out = bytearray()
        for packet in packets:
            out += _encode_record(packet)
        self._file.write(out)
        self.records += len(packets)
        self.bytes += len(out)
        self._sync()

    def close(self) -> None:
        """Flush and close (the file stays; :meth:`remove` deletes it)."""
        if not self._file.closed:
            self._sync(force=True)
            self._file.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def _sync(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._synced_at >= self._sync_interval_s:
            os.fsync(self._file.fileno())
            self._synced_at = now
            self.syncs += 1


def read_journal(path: Path) -> Journal:
    """Every complete record of ``path``; raises :class:`ClipError` when even the header is
    unusable (then the file holds nothing to recover)."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise ClipError(f"{path.name} is not a clip journal")
    header, offset = _decode_header(data, len(MAGIC), path)
    packets = list(_records(data, offset))
    end = offset + sum(_HEAD.size + _META.size + p.size for p in packets)
    return Journal(header, packets, len(data) - end)


def _records(data: bytes, offset: int) -> Iterator[EncodedPacket]:
    view = memoryview(data)
    while offset + _HEAD.size + _META.size <= len(data):
        length, crc = _HEAD.unpack_from(data, offset)
        body = offset + _HEAD.size
        end = body + _META.size + length
        if length > MAX_PAYLOAD or end > len(data) or zlib.crc32(view[body:end]) != crc:
            return  # torn: the crash cut this record short
        pts, dts, duration, wallclock, flags = _META.unpack_from(data, body)
        yield EncodedPacket(
            payload=bytes(view[body + _META.size : end]),
            pts=None if pts == NONE else pts,
            dts=None if dts == NONE else dts,
            duration=None if duration == NONE else duration,
            is_keyframe=bool(flags & _KEY),
            wallclock=wallclock,
            size=length,
            discontinuity=bool(flags & _DISCONTINUITY),
        )
        offset = end


def _encode_record(packet: EncodedPacket) -> bytes:
    payload = bytes(packet.payload)
    flags = (_KEY if packet.is_keyframe else 0) | (_DISCONTINUITY if packet.discontinuity else 0)
    meta = _META.pack(
        NONE if packet.pts is None else packet.pts,
        NONE if packet.dts is None else packet.dts,
        NONE if packet.duration is None else packet.duration,
        packet.wallclock,
        flags,
    )
    return _HEAD.pack(len(payload), zlib.crc32(payload, zlib.crc32(meta))) + meta + payload


# -- The header: who, and the codec parameters to mux with --------------------------------


def _encode_header(header: JournalHeader, first: EncodedPacket) -> bytes:
    p = header.params
    doc: dict[str, Any] = {
        "camera_id": header.camera_id,
        "incident_id": header.incident_id,
        "clip_name": header.clip_name,
        "requested_start": header.requested_start,
        "time_base": [p.time_base.numerator, p.time_base.denominator],
        "average_rate": (
            [p.average_rate.numerator, p.average_rate.denominator] if p.average_rate else None
        ),
        "init": base64.b64encode(_init_stream(p, first)).decode(),
    }
    raw = json.dumps(doc).encode()
    return _LEN.pack(len(raw)) + raw


def _init_stream(params: CodecParams, first: EncodedPacket) -> bytes:
    """The codec parameters as FFmpeg itself stores them: a one-frame NUT file of the
    stream, read back with :meth:`CodecParams.from_stream` (the path every live stream
    takes). NUT keeps the extradata byte for byte — Annex B from RTSP, ``avcC`` from MP4
    — where MP4 would convert it and no longer match the packets' framing."""
    if params.template is None:
        raise ClipError(f"codec parameters of {params.codec_name!r} carry no stream template")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="nut") as out:
        stream = out.add_stream_from_template(params.template)
        packet: av.Packet[Any] = av.Packet(bytes(first.payload))
        packet.stream, packet.time_base = stream, params.time_base
        packet.pts = packet.dts = 0
        packet.duration, packet.is_keyframe = 1, True
        out.mux_one(packet)
    return buf.getvalue()


def _decode_header(data: bytes, offset: int, path: Path) -> tuple[JournalHeader, int]:
    try:
        (length,) = _LEN.unpack_from(data, offset)
        if length > MAX_HEADER:
            raise ValueError(f"header of {length} bytes")
        start = offset + _LEN.size
        doc = json.loads(data[start : start + length])
        with av.open(io.BytesIO(base64.b64decode(doc["init"]))) as init:
            stream = init.streams.video[0]
            params = CodecParams.from_stream(stream)
        rate = doc.get("average_rate")
        params = replace(
            params,
            time_base=Fraction(*doc["time_base"]),
            average_rate=Fraction(*rate) if rate else None,
        )
        header = JournalHeader(
            camera_id=str(doc["camera_id"]),
            incident_id=doc["incident_id"],
            clip_name=str(doc["clip_name"]),
            requested_start=float(doc["requested_start"]),
            params=params,
        )
    except (struct.error, ValueError, KeyError, TypeError, IndexError, av.FFmpegError) as err:
        raise ClipError(f"{path.name}: unusable journal header: {err}") from err
    return header, start + length
