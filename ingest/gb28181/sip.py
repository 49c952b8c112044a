"""SIP messages as GB/T 28181 uses them: the RFC 3261 subset of REGISTER, MESSAGE, INVITE.

:func:`parse_message` turns one datagram (or one frame cut by :class:`SipStreamParser` from
a TCP stream) into a :class:`SipRequest` or :class:`SipResponse`. Parsing is strict where a
mistake would mislead us (start line, ``SIP/2.0``, Content-Length, the headers a
transaction is matched by) and tolerant where real devices are sloppy:

- header folding, compact header names (``v``, ``f``, ``i``…), any header-name case;
- LF-only line ends (some embedded stacks), CRLFs before the start line (RFC 3261 §7.5);
- header bytes that are not UTF-8: Chinese devices put GBK in display names and
  ``User-Agent``, which is decoded as GB18030 instead of rejecting the REGISTER;
- no Content-Length on UDP (the rest of the datagram is the body).

Every essential header (Via, From, To, Call-ID, CSeq) is checked when the message is
parsed, so the accessors (:attr:`~SipRequest.cseq`, :attr:`~SipRequest.top_via`…) of a
parsed message do not raise. Messages are frozen: build a changed copy with
:func:`dataclasses.replace` or :meth:`~SipRequest.with_header`.

Headers are kept as an ordered tuple of ``(name, value)`` pairs as received; lookups are
case-insensitive and know the compact forms. :meth:`~SipRequest.to_bytes` always writes a
Content-Length that matches the body.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Literal, Self

from ingest.gb28181 import GB28181Error, SipParseError

__all__ = [
    "MAX_MESSAGE_SIZE",
    "REASON_PHRASES",
    "CSeq",
    "NameAddr",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "SipStreamParser",
    "SipUri",
    "Via",
    "build_ack",
    "build_cancel",
    "build_request",
    "canonical_name",
    "is_gb_id",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_cseq",
    "parse_message",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "parse_via",
    "reply_address",
    "response_to",
    "split_header_list",
]

#: Largest message accepted, headers and body. GB/T 28181 messages are a few KiB (a catalog
#: page over TCP is the largest); this bounds the memory a peer can make us hold.
MAX_MESSAGE_SIZE = 64 * 1024
#: More header lines than any real device sends (Hikvision REGISTER: 10).
MAX_HEADERS = 128
#: RFC 3261 §8.1.1.7: branches of RFC 3261 stacks start with this.
MAGIC_COOKIE = "z9hG4bK"

Headers = tuple[tuple[str, str], ...]
Params = tuple[tuple[str, str | None], ...]
Transport = Literal["UDP", "TCP"]

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

# RFC 3261 §7.3.3 plus the event-package ones (RFC 6665) some NVRs use in SUBSCRIBE.
_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "u": "allow-events",
}
# Headers whose comma-separated values are separate entries (RFC 3261 §7.3.1). Never
# split the others: Authorization and WWW-Authenticate hold commas inside one value.
_LIST_HEADERS = frozenset({"via", "contact", "route", "record-route"})
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~\-]+")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LEADING_NEWLINES = re.compile(rb"[\r\n]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_VERSION = "SIP/2.0"
_MAX_CSEQ = 2**31 - 1
_MAX_EXPIRES = 2**32 - 1


def canonical_name(name: str) -> str:
    """The lower-case long form of a header name: ``"I"`` and ``"call-ID"`` → ``"call-id"``."""
    lowered = name.strip().lower()
    return _COMPACT.get(lowered, lowered)


def is_gb_id(value: str | None) -> bool:
    """Whether ``value`` is a 20-digit GB/T 28181 ID (device, channel, platform)."""
    return value is not None and len(value) == 20 and value.isascii() and value.isdigit()


# --- structured header values ---------------------------------------------------------------


def _format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def _param(params: Params, name: str) -> str | None:
    lowered = name.lower()
    return next((v or "" for k, v in params if k.lower() == lowered), None)


def _host_port(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


@dataclass(frozen=True, slots=True)
class SipUri:
    """``sip:user@host:port;params``. GB/T 28181 puts the 20-digit ID in ``user``."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: Params = ()

    def param(self, name: str) -> str | None:
        """A URI parameter (``""`` for a flag such as ``;lr``), or None when absent."""
        return _param(self.params, name)

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user is not None else ""
        return (
            f"{self.scheme}:{user}{_host_port(self.host, self.port)}{_format_params(self.params)}"
        )


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact value: optional display name, URI, header parameters (``tag``)."""

    display: str
    uri: str
    params: Params = ()

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (dialog identity), or None."""
        return self.param("tag")

    def param(self, name: str) -> str | None:
        """A header parameter (``""`` for a flag), or None when absent."""
        return _param(self.params, name)

    def parsed_uri(self) -> SipUri:
        """The URI parsed; raises :class:`SipParseError` if it is not a SIP URI."""
        return parse_uri(self.uri)

    def __str__(self) -> str:
        if self.uri == "*":
            return "*"
        display = f'"{self.display}" ' if self.display else ""
        return f"{display}<{self.uri}>{_format_params(self.params)}"


@dataclass(frozen=True, slots=True)
class Via:
    """One Via entry: ``SIP/2.0/UDP host:port;rport;branch=z9hG4bK…``."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    @property
    def branch(self) -> str | None:
        """The transaction id set by the sender, or None (RFC 2543 devices omit it)."""
        return self.param("branch")

    @property
    def received(self) -> str | None:
        """The source address a server stamped on this Via (RFC 3261 §18.2.1)."""
        return self.param("received")

    @property
    def rport(self) -> int | None:
        """The source port stamped by a server (RFC 3581); None if absent or still empty."""
        value = self.param("rport")
        return int(value) if value and value.isdigit() and int(value) <= 65535 else None

    @property
    def wants_rport(self) -> bool:
        """Whether the sender asked for ``rport`` (it is behind NAT: answer to the source)."""
        return self.param("rport") is not None

    def param(self, name: str) -> str | None:
        """A Via parameter (``""`` for a flag), or None when absent."""
        return _param(self.params, name)

    def stamped(self, source: tuple[str, int]) -> Via:
        """This Via with ``received``/``rport`` filled from the packet's source address."""
        host, port = source
        params = [
            (k, str(port) if k.lower() == "rport" else v)
            for k, v in self.params
            if k.lower() != "received"
        ]
        if self.wants_rport or host != self.host:  # RFC 3581 §4: always with rport
            params.append(("received", host))
        return replace(self, params=tuple(params))

    def __str__(self) -> str:
        sent_by = _host_port(self.host, self.port)
        return f"{_VERSION}/{self.transport} {sent_by}{_format_params(self.params)}"


@dataclass(frozen=True, slots=True)
class CSeq:
    """``CSeq: 20 REGISTER``: the request's sequence number and method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def _scan_quoted(text: str, start: int) -> int:
    """The index just past the quoted string opening at ``text[start]`` (a ``"``)."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    raise SipParseError("unterminated quoted string in a header")


def _split_outside(text: str, separator: str) -> list[str]:
    """Split at ``separator`` where it is outside quotes and ``<…>``."""
    parts, start, depth, i = [], 0, 0, 0
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _scan_quoted(text, i)
            continue
        depth += (char == "<") - (char == ">")
        if char == separator and depth <= 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def split_header_list(value: str) -> list[str]:
    """The entries of a comma-separated header value (Via, Contact), quotes respected."""
    return [part.strip() for part in _split_outside(value, ",") if part.strip()]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_params(text: str) -> Params:
    """``;a=1;b;c="x"`` → ``(("a", "1"), ("b", None), ("c", "x"))`` (leading ``;`` optional)."""
    params: list[tuple[str, str | None]] = []
    for part in _split_outside(text, ";"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not name:
            continue
        if not _TOKEN.fullmatch(name):
            raise SipParseError(f"bad parameter name {name[:40]!r}")
        params.append((name, _unquote(value.strip()) if eq else None))
    return tuple(params)


def _parse_port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 0 < int(text) <= 65535):
        raise SipParseError(f"bad port {text[:20]!r}")
    return int(text)


def _split_host_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise SipParseError(f"bad IPv6 host {text[:60]!r}")
        return host, _parse_port(rest[1:]) if rest else None
    host, colon, port = text.partition(":")
    if not host or any(c in host for c in ' \t<>"@[]'):
        raise SipParseError(f"bad host {text[:60]!r}")
    return host, _parse_port(port) if colon else None


def parse_uri(text: str) -> SipUri:
    """Parse ``sip:34020000001320000001@3402000000;transport=udp`` (``sips:`` accepted)."""
    scheme, colon, rest = text.strip().partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        raise SipParseError(f"not a SIP URI: {text[:80]!r}")
    rest = rest.partition("?")[0]  # URI headers are never used by GB/T 28181
    userinfo, at, hostpart = rest.partition("@")
    if not at:
        userinfo, hostpart = "", userinfo
    user = userinfo.partition(":")[0] if at else None  # never keep a password
    hostport, _, params = hostpart.partition(";")
    host, port = _split_host_port(hostport)
    return SipUri(scheme.lower(), user, host, port, parse_params(params))


def parse_name_addr(text: str) -> NameAddr:
    """Parse a From/To/Contact value with or without ``<…>`` and a quoted display name."""
    text = text.strip()
    if text == "*":
        return NameAddr("", "*")
    start = _scan_quoted(text, 0) if text.startswith('"') else 0
    lt = text.find("<", start)
    if lt < 0:  # addr-spec form: the parameters belong to the header (RFC 3261 §20.10)
        uri, _, params = text.partition(";")
        display = ""
    else:
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(f"unclosed '<' in {text[:80]!r}")
        uri, params, display = text[lt + 1 : gt], text[gt + 1 :], _unquote(text[:lt].strip())
    if not uri.strip() or ":" not in uri:
        raise SipParseError(f"no URI in {text[:80]!r}")
    return NameAddr(display, uri.strip(), parse_params(params))


def parse_via(text: str) -> Via:
    """Parse one Via entry (``SIP/2.0/UDP 192.168.1.64:5060;rport;branch=…``)."""
    protocol, _, rest = text.strip().partition(" ")
    parts = [p.strip() for p in protocol.split("/")]
    if len(parts) != 3 or "/".join(parts[:2]).upper() != _VERSION or not parts[2]:
        raise SipParseError(f"bad Via {text[:80]!r}")
    sent_by, _, params = rest.strip().partition(";")
    host, port = _split_host_port(sent_by)
    return Via(parts[2].upper(), host, port, parse_params(params))


def parse_cseq(text: str) -> CSeq:
    """Parse ``20 REGISTER``; the number must fit 31 bits (RFC 3261 §8.1.1.5)."""
    parts = text.split()
    if len(parts) != 2 or not (parts[0].isascii() and parts[0].isdigit()):
        raise SipParseError(f"bad CSeq {text[:40]!r}")
    if int(parts[0]) > _MAX_CSEQ or not _TOKEN.fullmatch(parts[1]):
        raise SipParseError(f"bad CSeq {text[:40]!r}")
    return CSeq(int(parts[0]), parts[1])


# --- messages -------------------------------------------------------------------------------


class SipMessage:
    """Header access shared by :class:`SipRequest` and :class:`SipResponse`."""

    __slots__ = ()
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case, compact forms), or None."""
        return next(self._values(name), None)

    def header_values(self, name: str) -> list[str]:
        """All values of ``name``; list headers (Via, Contact…) split at their commas."""
        values = list(self._values(name))
        if canonical_name(name) in _LIST_HEADERS:
            return [entry for value in values for entry in split_header_list(value)]
        return values

    def _values(self, name: str) -> Iterator[str]:
        wanted = canonical_name(name)
        return (value for key, value in self.headers if canonical_name(key) == wanted)

    def with_header(self, name: str, value: str) -> Self:
        """A copy with one more header (appended)."""
        return replace(self, headers=(*self.headers, (name, value)))  # type: ignore[type-var]

    @property
    def call_id(self) -> str:
        """The Call-ID (empty if absent: parsed messages always have one)."""
        return (self.header("call-id") or "").strip()

    @property
    def cseq(self) -> CSeq:
        """The parsed CSeq."""
        return parse_cseq(self.header("cseq") or "")

    @property
    def vias(self) -> tuple[Via, ...]:
        """Every Via entry, top (the last hop) first."""
        return tuple(parse_via(v) for v in self.header_values("via"))

    @property
    def top_via(self) -> Via:
        """The first Via: its branch identifies the transaction."""
        first = next(iter(self.header_values("via")), None)
        if first is None:
            raise SipParseError("no Via header")
        return parse_via(first)

    @property
    def from_(self) -> NameAddr:
        """The From header (``from`` is a keyword)."""
        return parse_name_addr(self.header("from") or "")

    @property
    def to(self) -> NameAddr:
        """The To header."""
        return parse_name_addr(self.header("to") or "")

    @property
    def contact(self) -> NameAddr | None:
        """The first Contact (``NameAddr("", "*")`` for the unregister-all wildcard)."""
        first = next(iter(self.header_values("contact")), None)
        return parse_name_addr(first) if first is not None else None

    @property
    def expires(self) -> int | None:
        """Registration lifetime: the Contact's ``expires`` parameter, else the Expires header.

        RFC 3261 §10.2.1.1 gives the Contact parameter precedence. Values past 2**32-1 are
        clamped; a non-numeric value raises :class:`SipParseError`.
        """
        contact = self.contact
        value = contact.param("expires") if contact is not None else None
        value = value if value is not None else self.header("expires")
        if value is None:
            return None
        value = value.strip()
        if not (value.isascii() and value.isdigit()):
            raise SipParseError(f"bad Expires {value[:20]!r}")
        return min(int(value), _MAX_EXPIRES)

    @property
    def content_type(self) -> str | None:
        """The Content-Type, lower-cased, without parameters (``application/manscdp+xml``)."""
        value = self.header("content-type")
        return value.partition(";")[0].strip().lower() if value is not None else None

    def _head_lines(self) -> list[str]:
        lines = []
        for name, value in self.headers:
            if canonical_name(name) != "content-length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        if any(c in line for line in lines for c in "\r\n\x00"):
            raise GB28181Error("a SIP header contains a line break or NUL")
        return lines


@dataclass(frozen=True, slots=True)
class SipRequest(SipMessage):
    """A SIP request. ``uri`` is the Request-URI as received."""

    method: str
    uri: str
    headers: Headers = ()
    body: bytes = b""

    @property
    def request_uri(self) -> SipUri:
        """The Request-URI parsed (the target's ID is its ``user``)."""
        return parse_uri(self.uri)

    def to_bytes(self) -> bytes:
        """The wire form, with a Content-Length that matches the body."""
        head = "\r\n".join([f"{self.method} {self.uri} {_VERSION}", *self._head_lines()])
        return head.encode("utf-8") + b"\r\n\r\n" + self.body


@dataclass(frozen=True, slots=True)
class SipResponse(SipMessage):
    """A SIP response."""

    status: int
    reason: str
    headers: Headers = ()
    body: bytes = b""

    @property
    def is_final(self) -> bool:
        """Whether this ends a transaction (status >= 200)."""
        return self.status >= 200

    def to_bytes(self) -> bytes:
        """The wire form, with a Content-Length that matches the body."""
        head = "\r\n".join([f"{_VERSION} {self.status} {self.reason}", *self._head_lines()])
        return head.encode("utf-8") + b"\r\n\r\n" + self.body


# --- parsing --------------------------------------------------------------------------------


def _decode_head(head: bytes) -> str:
    # Control characters other than tab and the line ends have no place in a SIP head; a
    # lone CR would also survive into a header value and break the message when re-sent.
    if _CONTROL.search(head.replace(b"\r\n", b"\n")):
        raise SipParseError("control character (NUL, bare CR…) in SIP headers")
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        # GBK display names / User-Agent from Chinese devices: GB18030 decodes every GBK
        # byte sequence; anything else becomes U+FFFD rather than an unusable message.
        return head.decode("gb18030", errors="replace")


def _unfold(lines: list[str]) -> list[tuple[str, str]]:
    """Header lines → (name, value), joining continuation lines (RFC 3261 §7.3.1)."""
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not headers:
                raise SipParseError("continuation line before the first header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN.fullmatch(name):
            raise SipParseError(f"bad header line {line[:60]!r}")
        headers.append((name, value.strip()))
        if len(headers) > MAX_HEADERS:
            raise SipParseError(f"more than {MAX_HEADERS} headers")
    return headers


def _start_line(line: str, headers: Headers) -> SipRequest | SipResponse:
    if line.upper().startswith(_VERSION + " "):
        _, code, reason = [*line.split(" ", 2), ""][:3]
        if not (code.isascii() and code.isdigit() and len(code) == 3 and code[0] in "123456"):
            raise SipParseError(f"bad status line {line[:60]!r}")
        return SipResponse(int(code), reason.strip(), headers)
    parts = line.split()
    if len(parts) != 3 or parts[2].upper() != _VERSION:
        raise SipParseError(f"bad request line {line[:60]!r}")
    if not _TOKEN.fullmatch(parts[0]) or ":" not in parts[1]:
        raise SipParseError(f"bad request line {line[:60]!r}")
    return SipRequest(parts[0], parts[1], headers)


def _content_length(headers: Headers) -> int | None:
    values = {v.strip() for k, v in headers if canonical_name(k) == "content-length"}
    if not values:
        return None
    value = values.pop()
    # Two different lengths: a smuggling attempt or a broken stack, either way unframeable.
    if values or not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise SipParseError("bad or conflicting Content-Length")
    return int(value)


def _check_required(message: SipRequest | SipResponse) -> None:
    present = {canonical_name(k) for k, _ in message.headers}
    missing = [name for name in _REQUIRED if name not in present]
    if missing:
        raise SipParseError(f"missing header(s): {', '.join(missing)}")
    if not message.call_id:
        raise SipParseError("empty Call-ID")
    cseq = message.cseq
    # Parsed now, so that these accessors never raise on a parsed message.
    _ = (message.top_via, message.vias, message.from_, message.to)
    if isinstance(message, SipRequest) and cseq.method != message.method:
        raise SipParseError(f"CSeq method {cseq.method} differs from {message.method}")


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    match = _HEADER_END.search(data)
    if match is None:
        raise SipParseError("no blank line after the headers")
    return data[: match.start()], data[match.end() :]


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one SIP message; raise :class:`SipParseError` on anything malformed.

    Without Content-Length (allowed on UDP) the rest of ``data`` is the body; with it, the
    body must be at least that long (a shorter one was truncated) and extra bytes are
    dropped (RFC 3261 §18.3).
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError(f"SIP message larger than {MAX_MESSAGE_SIZE} bytes")
    head, rest = _split_head(data.lstrip(b"\r\n"))
    lines = _decode_head(head).split("\n")
    start = lines[0].rstrip("\r")
    headers = tuple(_unfold([line.rstrip("\r") for line in lines[1:]]))
    length = _content_length(headers)
    if length is not None and length > len(rest):
        raise SipParseError(f"body shorter than Content-Length {length}")
    message = _start_line(start, headers)
    message = replace(message, body=bytes(rest if length is None else rest[:length]))
    _check_required(message)
    return message


class SipStreamParser:
    """Cuts SIP messages out of a TCP byte stream by their Content-Length.

    CRLF keepalives between messages (RFC 5626 ``\\r\\n\\r\\n`` pings) are skipped.
    :meth:`feed` raises :class:`SipParseError` when the stream cannot be framed (headers
    past :data:`MAX_MESSAGE_SIZE`, a bad Content-Length, a malformed message): the caller
    must close the connection, since there is no way to find the next message boundary.
    The buffer never holds more than one incomplete message of at most
    :data:`MAX_MESSAGE_SIZE` between calls, and each byte is scanned once, so a peer
    trickling bytes one at a time costs linear time.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already searched for the end of headers
        self._end: int | None = None  # where the current message ends, once its head is in

    def feed(self, data: bytes) -> list[SipRequest | SipResponse]:
        """Add received bytes; return the messages they completed, in order."""
        self._buffer += data
        messages = []
        while (message := self._next()) is not None:
            messages.append(message)
        if len(self._buffer) > MAX_MESSAGE_SIZE:
            raise SipParseError(f"incomplete SIP message over {MAX_MESSAGE_SIZE} bytes")
        return messages

    def _skip_keepalives(self) -> None:
        skipped = _LEADING_NEWLINES.match(self._buffer)
        if skipped is not None:
            del self._buffer[: skipped.end()]
            self._scanned = 0

    def _find_end(self) -> int | None:
        self._skip_keepalives()
        start = max(0, self._scanned - 3)  # a CRLFCRLF may straddle two feeds
        match = _HEADER_END.search(self._buffer, start, MAX_MESSAGE_SIZE + 4)
        if match is None:
            self._scanned = len(self._buffer)
            return None
        end = match.end() + self._framed_length(bytes(self._buffer[: match.start()]))
        if end > MAX_MESSAGE_SIZE:
            raise SipParseError(f"SIP message larger than {MAX_MESSAGE_SIZE} bytes")
        return end

    def _next(self) -> SipRequest | SipResponse | None:
        if self._end is None:
            self._end = self._find_end()
        if self._end is None or len(self._buffer) < self._end:
            return None
        frame = bytes(self._buffer[: self._end])
        del self._buffer[: self._end]
        self._end, self._scanned = None, 0
        return parse_message(frame)

    @staticmethod
    def _framed_length(head: bytes) -> int:
        lines = _decode_head(head).split("\n")[1:]
        # RFC 3261 §18.3: on a stream Content-Length is mandatory; a missing one means 0.
        return _content_length(tuple(_unfold([line.rstrip("\r") for line in lines]))) or 0


# --- building -------------------------------------------------------------------------------


def new_branch() -> str:
    """A fresh Via branch with the RFC 3261 magic cookie."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    """A fresh From/To tag: 9 decimal digits, what GB/T 28181 devices themselves use."""
    return str(secrets.randbelow(900_000_000) + 100_000_000)


def new_call_id() -> str:
    """A fresh Call-ID: 32 hex digits (no ``@host``: some devices choke on it)."""
    return secrets.token_hex(16)


def _stamped_vias(request: SipRequest, source: tuple[str, int] | None) -> list[str]:
    vias = request.header_values("via")
    if source is not None and vias:
        vias[0] = str(parse_via(vias[0]).stamped(source))
    return vias


def response_to(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
    to_tag: str | None = None,
    source: tuple[str, int] | None = None,
) -> SipResponse:
    """The response to ``request`` (RFC 3261 §8.2.6).

    Copies the Vias, From, To, Call-ID and CSeq. A To without a tag gets ``to_tag`` (a new
    one when None) unless the status is 100. ``source``, the address the request came
    from, fills ``received``/``rport`` on the top Via (RFC 3581), which NAT'd devices need.
    """
    to = request.header("to") or ""
    if status > 100 and request.to.tag is None:
        to = f"{to};tag={to_tag or new_tag()}"
    copied = [("Via", via) for via in _stamped_vias(request, source)]
    copied += [("From", request.header("from") or ""), ("To", to)]
    copied += [("Call-ID", request.call_id), ("CSeq", request.header("cseq") or "")]
    copied += list(headers)
    if content_type is not None:
        copied.append(("Content-Type", content_type))
    phrase = reason if reason is not None else REASON_PHRASES.get(status, "Unknown")
    return SipResponse(status, phrase, tuple(copied), body)


def reply_address(request: SipRequest, source: tuple[str, int]) -> tuple[str, int]:
    """Where a UDP response goes: the source address (RFC 3581), else the Via's sent-by.

    GB/T 28181 devices are often behind NAT and write a private address in their Via;
    answering to the packet's source is what works, so this returns ``source`` unless the
    device neither asked for rport nor sent from the port it advertised.
    """
    via = request.top_via
    if via.wants_rport or via.port in (None, source[1]):
        return source
    return source[0], via.port or 5060


def build_request(
    method: str,
    uri: str,
    *,
    from_uri: str,
    to_uri: str,
    via_host: str,
    via_port: int,
    transport: Transport = "UDP",
    call_id: str | None = None,
    cseq: int = 1,
    from_tag: str | None = None,
    to_tag: str | None = None,
    branch: str | None = None,
    contact: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> SipRequest:
    """A platform-originated request (MESSAGE, INVITE, BYE, SUBSCRIBE…).

    Fresh ``call_id``, ``from_tag`` and ``branch`` are generated when None. ``to_tag`` is
    for in-dialog requests (BYE). ``contact`` is a URI (INVITE needs one).
    """
    via = Via(transport, via_host, via_port, (("rport", None), ("branch", branch or new_branch())))
    to = f"<{to_uri}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        ("Via", str(via)),
        ("From", f"<{from_uri}>;tag={from_tag or new_tag()}"),
        ("To", to),
        ("Call-ID", call_id or new_call_id()),
        ("CSeq", str(CSeq(cseq, method))),
        ("Max-Forwards", "70"),
    ]
    if contact is not None:
        lines.append(("Contact", f"<{contact}>"))
    lines += list(headers)
    if content_type is not None:
        lines.append(("Content-Type", content_type))
    return SipRequest(method, uri, tuple(lines), body)


def _dialog_copy(invite: SipRequest, method: str, to: str, branch: str | None) -> Headers:
    via = invite.top_via
    if branch is not None:
        params = tuple((k, branch if k.lower() == "branch" else v) for k, v in via.params)
        via = replace(via, params=params)
    routes = [("Route", route) for route in invite.header_values("route")]
    return (
        ("Via", str(via)),
        ("From", invite.header("from") or ""),
        ("To", to),
        ("Call-ID", invite.call_id),
        ("CSeq", str(CSeq(invite.cseq.number, method))),
        ("Max-Forwards", "70"),
        *routes,
    )


def build_ack(
    invite: SipRequest, response: SipResponse, *, branch: str | None = None
) -> SipRequest:
    """The ACK for ``response`` to ``invite`` (RFC 3261 §17.1.1.3 and §13.2.2.4).

    For a non-2xx response it belongs to the INVITE transaction: same branch, sent to the
    INVITE's Request-URI. For a 2xx it is a new transaction: pass a fresh ``branch`` (one
    is generated) and it goes to the device's Contact.
    """
    uri = invite.uri
    if 200 <= response.status < 300:
        branch = branch or new_branch()
        contact = response.contact
        uri = contact.uri if contact is not None and contact.uri != "*" else uri
    to = response.header("to") or invite.header("to") or ""
    return SipRequest("ACK", uri, _dialog_copy(invite, "ACK", to, branch))


def build_cancel(invite: SipRequest) -> SipRequest:
    """The CANCEL for a pending ``invite`` (RFC 3261 §9.1): same branch, To without tag."""
    return SipRequest(
        "CANCEL", invite.uri, _dialog_copy(invite, "CANCEL", invite.header("to") or "", None)
    )
