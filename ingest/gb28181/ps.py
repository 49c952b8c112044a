"""A small MPEG-PS (ISO/IEC 13818-1 program stream) inspector, not a demuxer.

GB/T 28181 video arrives as MPEG-PS inside RTP; FFmpeg demuxes it. Two things are worth
knowing before FFmpeg does, and cheaply:

- whether the bytes are PS at all (:func:`looks_like_ps`): a misconfigured device sends raw
  H.264, or garbage reaches a media port;
- which codecs the Program Stream Map announces (:func:`find_psm`), and when the video one
  changes (:class:`CodecWatch`): an operator switching a camera from H.264 to H.265 changes
  the stream type mid-stream, and FFmpeg, which probed the start, then decodes nonsense
  until the stream is reopened.

The PSM (start code ``00 00 01 BC``) is sent by most devices before every keyframe. Its
CRC is not checked: several firmwares write a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.gb28181 import PsError

__all__ = [
    "PACK_START",
    "PSM_START",
    "STREAM_TYPES",
    "CodecChange",
    "CodecWatch",
    "ElementaryStream",
    "ProgramStreamMap",
    "find_psm",
    "looks_like_ps",
    "parse_psm",
]

PACK_START = b"\x00\x00\x01\xba"
PSM_START = b"\x00\x00\x01\xbc"
#: Stream types seen in GB/T 28181 PSMs, by FFmpeg codec name.
STREAM_TYPES: dict[int, str] = {
    0x01: "mpeg1video",
    0x02: "mpeg2video",
    0x03: "mp3",
    0x04: "mp2",
    0x0F: "aac",
    0x10: "mpeg4",
    0x1B: "h264",
    0x24: "hevc",
    0x80: "svac",  # GB/T 25724 SVAC video (GB/T 28181-2016 Annex C)
    0x90: "pcm_alaw",  # G.711 A-law
    0x91: "pcm_mulaw",  # G.711 µ-law
    0x92: "g722",
    0x93: "g723_1",
    0x99: "g729",
    0x9B: "svac_audio",
}
_VIDEO_TYPES = frozenset({0x01, 0x02, 0x10, 0x1B, 0x24, 0x80})
_MAX_PSM_LENGTH = 1018  # ISO/IEC 13818-1 §2.5.4.2


@dataclass(frozen=True, slots=True)
class ElementaryStream:
    """One entry of a Program Stream Map."""

    stream_id: int  # 0xE0-0xEF video, 0xC0-0xDF audio
    stream_type: int

    @property
    def codec(self) -> str:
        """FFmpeg's name for the codec, or ``"unknown(0x..)"``."""
        return STREAM_TYPES.get(self.stream_type, f"unknown(0x{self.stream_type:02x})")

    @property
    def is_video(self) -> bool:
        """A video stream, by stream type or, for unknown types, by stream id."""
        return self.stream_type in _VIDEO_TYPES or 0xE0 <= self.stream_id <= 0xEF


@dataclass(frozen=True, slots=True)
class ProgramStreamMap:
    """The elementary streams a PSM announces, in its order."""

    version: int
    streams: tuple[ElementaryStream, ...]

    @property
    def video(self) -> ElementaryStream | None:
        """The first video stream, or None (an audio-only map)."""
        return next((s for s in self.streams if s.is_video), None)

    def types_by_id(self) -> dict[int, int]:
        """``{stream_id: stream_type}``."""
        return {s.stream_id: s.stream_type for s in self.streams}


def looks_like_ps(data: bytes) -> bool:
    """Whether ``data`` starts with an MPEG-2 pack header (``00 00 01 BA``, '01' marker bits).

    Call it on the first payload of a frame (an RTP packet with a new timestamp): the
    following packets of the frame continue a PES and start with anything.
    """
    if len(data) < 14 or not data.startswith(PACK_START):
        return False
    # '01' then the SCR's marker bits (ISO/IEC 13818-1 Table 2-33); MPEG-1 packs ('0010')
    # are not what GB/T 28181 specifies and fail here.
    markers = ((6, 0x04), (8, 0x04), (9, 0x01))
    return data[4] & 0xC4 == 0x44 and all(data[i] & bit for i, bit in markers)


def _u16(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "big")


def _entries(data: bytes, start: int, end: int) -> tuple[ElementaryStream, ...]:
    streams, pos = [], start
    while pos < end:
        if pos + 4 > end:
            raise PsError("PSM elementary stream entry truncated")
        streams.append(ElementaryStream(stream_id=data[pos + 1], stream_type=data[pos]))
        pos += 4 + _u16(data, pos + 2)
    if pos != end:
        raise PsError("PSM elementary stream info runs past the map")
    return tuple(streams)


def parse_psm(data: bytes, offset: int = 0) -> ProgramStreamMap:
    """Parse the PSM starting at ``data[offset]``; raise :class:`~ingest.gb28181.PsError`
    if it is truncated or its lengths disagree.
    """
    if data[offset : offset + 4] != PSM_START or len(data) < offset + 16:
        raise PsError("no complete Program Stream Map here")
    length = _u16(data, offset + 4)
    if not 10 <= length <= _MAX_PSM_LENGTH or len(data) < offset + 6 + length:
        raise PsError(f"PSM length {length} impossible or past the data")
    info_end = offset + 10 + _u16(data, offset + 8)
    map_start = info_end + 2
    map_end = map_start + _u16(data, info_end) if map_start <= offset + 6 + length else -1
    if map_end < 0 or map_end + 4 > offset + 6 + length:  # the map, then a 4-byte CRC
        raise PsError("PSM descriptors or stream map run past the map")
    return ProgramStreamMap(data[offset + 6] & 0x1F, _entries(data, map_start, map_end))


def find_psm(data: bytes) -> ProgramStreamMap | None:
    """The first well-formed PSM in ``data``, or None (none, or only truncated/bogus ones).

    Every ``00 00 01 BC`` is tried: the bytes can also occur inside audio samples.
    """
    pos = data.find(PSM_START)
    while pos >= 0:
        try:
            return parse_psm(data, pos)
        except PsError:
            pos = data.find(PSM_START, pos + 1)
    return None


@dataclass(frozen=True, slots=True)
class CodecChange:
    """The video stream type changed (``previous`` is None at the first PSM)."""

    previous: int | None
    current: int

    @property
    def codec(self) -> str:
        """FFmpeg's name for the new codec."""
        return STREAM_TYPES.get(self.current, f"unknown(0x{self.current:02x})")


class CodecWatch:
    """Reports the video codec of a PS stream, and each time it changes.

    Feed it each frame's bytes (or each RTP payload: the PSM sits near the start of a
    keyframe's first packet). Bytes without a well-formed PSM are ignored.
    """

    def __init__(self) -> None:
        self.video_type: int | None = None

    def feed(self, data: bytes) -> CodecChange | None:
        """A :class:`CodecChange` if ``data`` holds a PSM with a new video stream type."""
        psm = find_psm(data)
        video = psm.video if psm is not None else None
        if video is None or video.stream_type == self.video_type:
            return None
        change = CodecChange(self.video_type, video.stream_type)
        self.video_type = video.stream_type
        return change
