"""The SDP of a GB/T 28181 INVITE: our offer, the device's answer, and the SSRC.

To get video the platform INVITEs a channel with an offer saying where to send RTP
(``c=``/``m=``), over UDP or TCP, and which SSRC to use (``y=``, a GB/T 28181 extension).
The device answers with its own SDP and sends MPEG-PS (payload type 96) over RTP.

Over TCP the platform listens (``a=setup:passive``) and the device connects
(``a=setup:active`` in its answer): devices behind NAT cannot be connected to. The SSRC is
a 10-digit decimal string (GB/T 28181-2016 Annex F):

``[0 realtime | 1 playback][domain digits 4-8][4-digit sequence]`` e.g. ``0200000001``

which is the RTP header's SSRC *in decimal* (``int("0200000001") == 200000001``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ingest.gb28181 import SdpError

__all__ = [
    "MAX_SDP_SIZE",
    "SDP_CONTENT_TYPE",
    "SdpAnswer",
    "invite_sdp",
    "invite_subject",
    "make_ssrc",
    "parse_answer",
    "ssrc_int",
]

SDP_CONTENT_TYPE = "APPLICATION/SDP"
MAX_SDP_SIZE = 8 * 1024
_SSRC = re.compile(r"[0-9]{1,10}")
_ID = re.compile(r"[0-9A-Za-z._-]{1,64}")
_MAX_SSRC = 2**32 - 1


def make_ssrc(domain: str, seq: int, *, realtime: bool = True) -> str:
    """The 10-digit SSRC for a stream: ``realtime`` (0) or playback (1), the 4th-8th
    digits of the 10-digit SIP ``domain``, then ``seq`` modulo 10000 (a wrapping counter).
    """
    if not (len(domain) >= 8 and domain.isascii() and domain.isdigit()):
        raise SdpError(f"the SIP domain must be digits (GB: 10 of them), got {domain[:20]!r}")
    if seq < 0:
        raise SdpError(f"SSRC sequence must be >= 0, got {seq}")
    return f"{0 if realtime else 1}{domain[3:8]}{seq % 10_000:04d}"


def ssrc_int(ssrc: str) -> int:
    """The RTP SSRC of a ``y=`` value: decimal, leading zeros are not octal."""
    text = ssrc.strip()
    if not _SSRC.fullmatch(text) or int(text, 10) > _MAX_SSRC:
        raise SdpError(f"not a decimal 32-bit SSRC: {ssrc[:20]!r}")
    return int(text, 10)


def _address_type(ip: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(ip).version == 6 else "IP4"
    except ValueError as err:
        raise SdpError(f"media address must be an IP address, got {ip[:40]!r}") from err


def invite_sdp(
    channel_id: str,
    media_ip: str,
    media_port: int,
    ssrc: str,
    tcp: bool,
    *,
    playback: tuple[int, int] | None = None,
) -> str:
    """The offer of an INVITE for ``channel_id`` (live ``s=Play``, or ``s=Playback`` with
    ``playback=(start, end)`` in Unix seconds and ``u=channel:0``).

    Lists PS (96), MPEG-4 (97) and H.264 (98) as devices expect; they send PS.
    """
    ssrc_int(ssrc)  # validate
    if not _ID.fullmatch(channel_id):  # it is written into the SDP: no line breaks
        raise SdpError(f"bad channel ID {channel_id[:40]!r}")
    if not 0 < media_port < 65536:
        raise SdpError(f"bad media port {media_port}")
    addr = f"IN {_address_type(media_ip)} {media_ip}"
    lines = ["v=0", f"o={channel_id} 0 0 {addr}", f"s={'Playback' if playback else 'Play'}"]
    if playback is not None:
        lines.append(f"u={channel_id}:0")
    lines += [f"c={addr}", f"t={playback[0]} {playback[1]}" if playback else "t=0 0"]
    lines.append(f"m=video {media_port} {'TCP/RTP/AVP' if tcp else 'RTP/AVP'} 96 97 98")
    lines += ["a=recvonly", "a=rtpmap:96 PS/90000", "a=rtpmap:97 MPEG4/90000"]
    lines.append("a=rtpmap:98 H264/90000")
    if tcp:
        lines += ["a=setup:passive", "a=connection:new"]
    lines.append(f"y={ssrc}")
    return "\r\n".join(lines) + "\r\n"


def invite_subject(channel_id: str, ssrc: str, receiver_id: str) -> str:
    """The ``Subject`` header GB/T 28181 requires on an INVITE: sender and receiver."""
    return f"{channel_id}:{ssrc},{receiver_id}:0"


@dataclass(frozen=True, slots=True)
class SdpAnswer:
    """What a device's answer tells: where its media comes from and how."""

    ip: str
    port: int
    ssrc: str | None
    tcp: bool
    setup: str | None
    payload_types: tuple[int, ...]
    rtpmap: tuple[tuple[int, str], ...] = ()

    @property
    def ssrc_value(self) -> int | None:
        """The RTP SSRC the answer announces, None without a usable ``y=``."""
        try:
            return ssrc_int(self.ssrc) if self.ssrc is not None else None
        except SdpError:
            return None


@dataclass(slots=True)
class _Scan:
    session_ip: str | None = None
    media_ip: str | None = None
    media: str | None = None  # the first m=video line
    in_media: bool = False  # past the first m= line: no more session-level lines
    in_video: bool = False
    ssrc: str | None = None
    setup: str | None = None
    rtpmap: list[tuple[int, str]] | None = None


def _scan_line(scan: _Scan, key: str, value: str) -> None:
    if key == "m":
        scan.in_media = True
        scan.in_video = value.startswith("video ") and scan.media is None
        if scan.in_video:
            scan.media = value
    elif key == "c" and (scan.in_video or not scan.in_media):
        ip = value.split()[-1].partition("/")[0] if value.split() else ""
        if scan.in_video:
            scan.media_ip = ip
        else:
            scan.session_ip = ip
    elif key == "y":
        scan.ssrc = value.strip()
    elif key == "a" and (scan.in_video or not scan.in_media):
        _scan_attribute(scan, value)


def _scan_attribute(scan: _Scan, value: str) -> None:
    name, _, rest = value.partition(":")
    if name.lower() == "setup":
        scan.setup = rest.strip().lower()
    elif name.lower() == "rtpmap":
        pt, _, encoding = rest.strip().partition(" ")
        if pt.isascii() and pt.isdigit() and int(pt) < 128:
            scan.rtpmap = [*(scan.rtpmap or []), (int(pt), encoding.strip())]


def _media(line: str) -> tuple[int, bool, tuple[int, ...]]:
    """``video 15060 RTP/AVP 96`` → (port, tcp, payload types)."""
    parts = line.split()
    port_text = parts[1].partition("/")[0] if len(parts) >= 3 else ""
    if not (port_text.isascii() and port_text.isdigit() and int(port_text) < 65536):
        raise SdpError(f"bad m= line {line[:60]!r}")
    pts = tuple(int(p) for p in parts[3:] if p.isascii() and p.isdigit() and int(p) < 128)
    return int(port_text), "TCP" in parts[2].upper(), pts


def parse_answer(sdp: str | bytes) -> SdpAnswer:
    """Parse a device's SDP answer; raise :class:`~ingest.gb28181.SdpError` if unusable.

    Tolerates LF line ends, a media-level ``c=`` overriding the session one, ``y=``
    anywhere, and extra lines (``f=``, ``a=downloadspeed``…). Requires a video ``m=``
    line and an address. Port 0 (stream refused, RFC 3264) is returned as is.
    """
    if len(sdp) > MAX_SDP_SIZE:
        raise SdpError(f"SDP larger than {MAX_SDP_SIZE} bytes")
    text = sdp.decode("utf-8", errors="replace") if isinstance(sdp, bytes) else sdp
    scan = _Scan()
    for line in text.splitlines():
        key, eq, value = line.strip().partition("=")
        if eq and len(key) == 1:
            _scan_line(scan, key.lower(), value.strip())
    if scan.media is None:
        raise SdpError("SDP without a video m= line")
    ip = scan.media_ip or scan.session_ip
    if not ip:
        raise SdpError("SDP without a c= address")
    port, tcp, pts = _media(scan.media)
    return SdpAnswer(ip, port, scan.ssrc or None, tcp, scan.setup, pts, tuple(scan.rtpmap or ()))
