"""GB/T 28181 protocol layer: pure parsers, builders and state machines, no sockets.

GB/T 28181 devices (cameras, NVRs, lower platforms) register to this service over SIP,
send keepalives and MANSCDP XML, and, when INVITEd, push MPEG-PS over RTP. This package
holds everything about that protocol that can be written without I/O, so that the network
endpoint, the database layer and the device simulator share one tested implementation:

- :mod:`.sip`: SIP messages (parse, build, the TCP stream framer, header helpers);
- :mod:`.digest`: HTTP digest challenges and checks with stateless (HMAC) nonces;
- :mod:`.transactions`: asyncio client/server transactions over an injected ``send``;
- :mod:`.manscdp`: MANSCDP XML bodies (keepalive, catalog, device info, alarm) and queries;
- :mod:`.sdp`: the INVITE offer, the device's answer, GB SSRCs;
- :mod:`.rtp`: RTP packets, a reorder buffer, RFC 4571 framing for RTP over TCP;
- :mod:`.ps`: a small MPEG-PS inspector (the stream types in the Program Stream Map).

Every message comes from a device that may be broken or hostile: each parser bounds its
input and raises a :class:`GB28181Error` subclass on bad data, never an ``IndexError``,
``UnicodeError`` or ``ValueError`` of its own. This module defines that hierarchy and
imports none of the submodules, so they can all import it.
"""

from __future__ import annotations

from ingest.errors import IngestError

__all__ = [
    "DigestError",
    "GB28181Error",
    "ManscdpError",
    "PsError",
    "RtpError",
    "SdpError",
    "SipParseError",
    "SipTimeoutError",
    "TransactionClosedError",
]


class GB28181Error(IngestError):
    """Something a GB/T 28181 peer sent (or we were asked to build) is not acceptable."""


class SipParseError(GB28181Error):
    """Bytes that are not a SIP message we accept (syntax, size, missing headers)."""


class SipTimeoutError(GB28181Error, TimeoutError):
    """No final response to a request within Timer B/F (64*T1)."""


class TransactionClosedError(GB28181Error):
    """The transaction layer was closed while a request was waiting for its response."""


class DigestError(GB28181Error):
    """An ``Authorization``/``WWW-Authenticate`` header that cannot be parsed or used."""


class ManscdpError(GB28181Error):
    """A MANSCDP XML body that cannot be decoded or parsed, or misses a required element."""


class SdpError(GB28181Error):
    """An SDP that cannot be parsed or misses what a GB/T 28181 answer must hold."""


class RtpError(GB28181Error):
    """Bytes that are not an RTP packet, or an RTP-over-TCP stream that lost its framing."""


class PsError(GB28181Error):
    """An MPEG-PS structure (pack header, Program Stream Map) with inconsistent lengths."""
