"""H.264 access units as browsers need them: Annex-B, with SPS/PPS before every keyframe.

Sources frame NAL units two ways: RTSP gives Annex-B (start codes), MP4 files give AVCC
(length prefixes, ``avcC`` box in the extradata). aiortc's packetizer splits on start
codes, so everything leaves as Annex-B.

A decoder cannot start at an IDR without the SPS and PPS it refers to, and a browser
joining a stream gets nothing else: the parameter sets must be in-band before every
keyframe. Many cameras send them only at SETUP (the SDP's ``sprop-parameter-sets``,
which FFmpeg puts in the extradata as Annex-B) and files only in ``avcC``;
:class:`ParameterSets` keeps the newest ones (out-of-band first, then any in-band ones,
as cameras may change them without a new SDP or send them only once) and puts the
missing ones in front of each keyframe. MediaMTX and go2rtc repair streams the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Framing", "ParameterSets", "annexb", "nal_type"]

NAL_IDR, NAL_SPS, NAL_PPS, NAL_AUD, NAL_FILLER = 5, 7, 8, 9, 12
_START = b"\x00\x00\x00\x01"
_DROPPED = (NAL_AUD, NAL_FILLER)  # nothing to decode; AUDs only cost RTP bytes


def nal_type(unit: bytes) -> int:
    """The NAL unit type (the low 5 bits of its header byte)."""
    return unit[0] & 0x1F


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B buffer (3- or 4-byte start codes)."""
    units = []
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        start = i + 3
        i = data.find(b"\x00\x00\x01", start)
        end = len(data) if i == -1 else i
        unit = data[start:end].rstrip(b"\x00") if i != -1 else data[start:end]
        if unit:
            units.append(unit)
    return units


def split_avcc(data: bytes, length_size: int) -> list[bytes]:
    """NAL units of a length-prefixed (MP4 ``avc1``) buffer."""
    units, pos = [], 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            break  # truncated: keep what decoded so far rather than fail the packet
        units.append(data[pos : pos + size])
        pos += size
    return units


def parse_avcc_config(extradata: bytes) -> tuple[list[bytes], int]:
    """SPS/PPS and the NAL length size of an ``avcC`` box (ISO/IEC 14496-15 5.3.3.1)."""
    length_size = (extradata[4] & 0x03) + 1
    sets, pos = [], 6
    count = extradata[5] & 0x1F
    for group in range(2):
        if group == 1:
            if pos >= len(extradata):
                break
            count, pos = extradata[pos], pos + 1
        for _ in range(count):
            size = int.from_bytes(extradata[pos : pos + 2], "big")
            sets.append(extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return sets, length_size


@dataclass(frozen=True, slots=True)
class Framing:
    """How a stream's packets are framed, and the parameter sets of its extradata."""

    length_size: int | None  # None: Annex-B
    parameter_sets: tuple[bytes, ...]

    @classmethod
    def of(cls, extradata: bytes) -> Framing:
        """From the extradata: an ``avcC`` box (MP4) or Annex-B SPS/PPS (RTSP's SDP)."""
        if len(extradata) >= 7 and extradata[0] == 1:
            sets, length_size = parse_avcc_config(extradata)
            return cls(length_size, tuple(sets))
        return cls(None, tuple(split_annexb(extradata)))

    def units(self, payload: bytes) -> list[bytes]:
        """The packet's NAL units, without access unit delimiters and filler."""
        if self.length_size is None:
            units = split_annexb(payload)
        else:
            units = split_avcc(payload, self.length_size)
        return [u for u in units if nal_type(u) not in _DROPPED]


class ParameterSets:
    """The newest SPS and PPS of a stream, to put before keyframes that lack them."""

    def __init__(self, out_of_band: Iterable[bytes] = ()) -> None:
        self._sets: dict[int, tuple[bytes, ...]] = {}
        self.remember(out_of_band)

    def remember(self, units: Iterable[bytes]) -> None:
        """Keep the SPS and PPS among ``units``: those of one type replace the older ones."""
        found: dict[int, list[bytes]] = {}
        for unit in units:
            if nal_type(unit) in (NAL_SPS, NAL_PPS):
                found.setdefault(nal_type(unit), []).append(unit)
        self._sets.update((kind, tuple(sets)) for kind, sets in found.items())

    def complete(self, units: Sequence[bytes], keyframe: bool) -> list[bytes]:
        """``units`` after remembering their parameter sets; a keyframe starts with SPS then
        PPS (its own, else the newest known: a PPS is parsed against its SPS)."""
        self.remember(units)
        if not keyframe:
            return list(units)
        rest = [u for u in units if nal_type(u) not in (NAL_SPS, NAL_PPS)]
        return [*self._sets.get(NAL_SPS, ()), *self._sets.get(NAL_PPS, ()), *rest]


def annexb(units: Iterable[bytes]) -> bytes:
    """NAL units joined with 4-byte start codes."""
    return b"".join(_START + u for u in units)
