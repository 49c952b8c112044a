"""GB/T 28181 live media: a camera source that INVITEs a channel and reads its PS over RTP.

:class:`Gb28181Source` is a :class:`~ingest.sources.Source` like the RTSP one: its blocking
``run_once`` runs on the camera's reader thread. One attempt binds a media port from the
configured range, asks the SIP side to INVITE the channel to it (:class:`Signalling`: the
endpoint in this process, or the one another process of the installation runs), receives
RTP (UDP, or TCP passive with RFC 4571 framing), drops packets of a foreign SSRC (streams
crossing between cameras are a known failure of other platforms: counted, never mixed in),
puts packets back in order, and hands the PS byte stream to FFmpeg's MPEG-PS
demuxer through PyAV. From there the packets take the same path as RTSP's
(:func:`ingest.sources.deliver`): recording, pre-roll ring, analysis, live view.

An attempt ends — and the supervisor retries with backoff — when the device refuses or does
not answer the INVITE, sends nothing within ``open_timeout_s`` (a device that answers and
stays mute), stops sending for ``read_timeout_s``, or switches codec mid-stream (the
demuxer is reopened for the new one). Every end sends BYE, so the device stops streaming.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import av

from ingest.errors import (
    CameraUnreachableError,
    IngestError,
    StreamEndedError,
    StreamStalledError,
)
from ingest.gb28181 import GB28181Error
from ingest.gb28181.ps import CodecWatch
from ingest.gb28181.rtp import ReorderBuffer, Rfc4571Framer, RtpPacket, is_rtcp, parse_rtp
from ingest.sources import SourceOptions, StreamHandler, deliver, translate_error

__all__ = [
    "SCHEME",
    "Gb28181Source",
    "MediaCall",
    "MediaConfig",
    "MediaStats",
    "PortPool",
    "Signalling",
    "channel_url",
    "parse_channel_url",
]

log = logging.getLogger(__name__)

#: Cameras fed by a GB/T 28181 channel carry ``gb28181://DEVICE_ID/CHANNEL_ID`` as their URL.
SCHEME = "gb28181"
_POLL_S = 0.25  # how often a blocked receive looks at the stop event
_RECV = 65536
# FFmpeg reads this much of the PS stream to find its codec parameters (a keyframe with
# SPS/PPS comes within the first second of a GB/T 28181 stream, which starts on one).
_PROBE_BYTES = 512 * 1024


def channel_url(device_id: str, channel_id: str) -> str:
    """The camera URL of a channel."""
    return f"{SCHEME}://{device_id}/{channel_id}"


def parse_channel_url(url: str) -> tuple[str, str] | None:
    """``(device_id, channel_id)`` of a ``gb28181://`` URL, None for any other URL."""
    prefix = f"{SCHEME}://"
    if not url.startswith(prefix):
        return None
    parts = url[len(prefix) :].split("/")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 20 for p in parts):
        return None
    return parts[0], parts[1]


@dataclass(frozen=True, slots=True)
class MediaCall:
    """An established call as the media side needs it: what to end it by, and the SSRC its
    RTP carries (None: the answer named none, the first stream seen counts).

    Not the SIP dialog itself: that stays with the endpoint, which may run in another
    process; ``call_id`` (the dialog's Call-ID) is how it is named there.
    """

    call_id: str
    media_ssrc: int | None


class Signalling(Protocol):
    """The SIP side, as a reader thread sees it (blocking, thread-safe)."""

    def invite(
        self,
        device_id: str,
        channel_id: str,
        media_host: str,
        media_port: int,
        *,
        tcp: bool,
        stop: threading.Event,
    ) -> MediaCall:
        """INVITE and wait for the call; gives up (StreamEndedError) as soon as ``stop``."""
        ...

    def bye(self, call: MediaCall) -> None:
        """End the call (best effort: the device, or the endpoint, may be gone)."""
        ...


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """Where media is received: the bind address, the address written into the SDP, the
    port range, and the transport asked of devices."""

    bind_host: str
    advertised_host: str
    ports: tuple[int, int]
    tcp: bool = False
    #: How long a gap in the RTP sequence is waited for before it is skipped.
    gap_s: float = 0.2


@dataclass(slots=True)
class MediaStats:
    """Counters over every GB/T 28181 stream of this process (exported as metrics).

    Written by reader threads without a lock: each ``+=`` may rarely lose an increment
    under contention, which a counter of anomalies can afford.
    """

    packets: int = 0
    foreign_ssrc: int = 0
    malformed: int = 0
    lost: int = 0
    late: int = 0
    codec_changes: int = 0
    no_media: int = 0


class PortPool:
    """Media ports of the configured range, handed out round-robin (thread-safe)."""

    def __init__(self, low: int, high: int) -> None:
        self._low, self._high = low, high
        self._next = low
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def bind(self, host: str, *, tcp: bool) -> socket.socket:
        """A socket bound to a free port of the range (listening, for TCP)."""
        for _ in range(self._high - self._low + 1):
            port = self._take()
            if port is None:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
                if tcp:
                    sock.listen(1)
                else:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                return sock
            except OSError:
                sock.close()
                self.release(port)
        raise CameraUnreachableError(
            f"no free media port in {self._low}-{self._high}: widen gb28181.media_ports"
        )

    def _take(self) -> int | None:
        with self._lock:
            for _ in range(self._high - self._low + 1):
                port, self._next = self._next, self._next + 1
                if self._next > self._high:
                    self._next = self._low
                if port not in self._used:
                    self._used.add(port)
                    return port
        return None

    def release(self, port: int) -> None:
        with self._lock:
            self._used.discard(port)


class Gb28181Source:
    """One channel of a GB/T 28181 device, read live."""

    def __init__(
        self,
        device_id: str,
        channel_id: str,
        signalling: Signalling,
        config: MediaConfig,
        ports: PortPool,
        options: SourceOptions,
        stats: MediaStats,
    ) -> None:
        self.device_id, self.channel_id = device_id, channel_id
        self._signalling, self._config, self._ports = signalling, config, ports
        self._options, self._stats = options, stats

    @property
    def display_url(self) -> str:
        return channel_url(self.device_id, self.channel_id)

    def run_once(self, stop: threading.Event, handler: StreamHandler) -> None:
        """INVITE, receive and deliver until ``stop`` or failure; BYE in every case."""
        sock = self._ports.bind(self._config.bind_host, tcp=self._config.tcp)
        port = sock.getsockname()[1]
        try:
            call = self._signalling.invite(
                self.device_id,
                self.channel_id,
                self._config.advertised_host,
                port,
                tcp=self._config.tcp,
                stop=stop,
            )
            try:
                self._receive(sock, call, stop, handler)
            finally:
                self._signalling.bye(call)
        finally:
            sock.close()
            self._ports.release(port)

    def _receive(
        self, sock: socket.socket, call: MediaCall, stop: threading.Event, handler: StreamHandler
    ) -> None:
        stream = _RtpStream(sock, call.media_ssrc, self._config, self._options, stop, self._stats)
        options = {
            "probesize": str(_PROBE_BYTES),
            "analyzeduration": str(self._options.analyzeduration_us),
        }
        try:
            with stream, av.open(stream, "r", format="mpeg", options=options) as container:
                deliver(
                    container, stop, handler, self._options, ended="the device stopped the stream"
                )
        except (av.FFmpegError, StreamEndedError) as err:
            # What ended the read (no media, a codec switch…) says more than FFmpeg's EOF.
            if stream.failure is not None:
                raise stream.failure from None
            if isinstance(err, StreamEndedError):
                raise
            raise translate_error(err, opened=True, options=self._options) from err
        if stream.failure is not None and not stop.is_set():
            raise stream.failure


class _RtpStream:
    """The PS byte stream of one call, read by FFmpeg through PyAV (``read``)."""

    def __init__(
        self,
        sock: socket.socket,
        ssrc: int | None,
        config: MediaConfig,
        options: SourceOptions,
        stop: threading.Event,
        stats: MediaStats,
    ) -> None:
        self._sock, self._ssrc, self._config, self._stop, self._stats = (
            sock,
            ssrc,
            config,
            stop,
            stats,
        )
        self._options = options
        self._conn: socket.socket | None = None
        self._framer = Rfc4571Framer()
        self._reorder = ReorderBuffer()
        self._codec = CodecWatch()
        self._out = bytearray()
        self._started = time.monotonic()
        self._last_media: float | None = None
        self._gap_since: float | None = None
        self._foreign_logged = False
        #: Why reading ended; handed to FFmpeg as the end of the stream, raised by the source
        #: after it (an exception raised inside PyAV's read callback can be dropped).
        self.failure: IngestError | None = None

    def __enter__(self) -> _RtpStream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()
        self._stats.lost += self._reorder.lost
        self._stats.late += self._reorder.late

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of PS; ``b""`` (end of stream) once stopped or failed."""
        while not self._out:
            if self._stop.is_set() or self.failure is not None:
                return b""
            try:
                for datagram in self._receive():
                    self._accept(datagram)
                self._check_silence()
            except IngestError as err:
                self.failure = err
                return b""
        chunk = bytes(self._out[:size])
        del self._out[:size]
        return chunk

    # --- receiving -----------------------------------------------------------------------
    def _receive(self) -> list[bytes]:
        if not self._config.tcp:
            self._sock.settimeout(_POLL_S)
            with contextlib.suppress(TimeoutError):
                return [self._sock.recv(_RECV)]
            return []
        conn = self._connection()
        if conn is None:
            return []
        with contextlib.suppress(TimeoutError):
            data = conn.recv(_RECV)
            if not data:
                raise StreamEndedError("the device closed the media connection")
            try:
                return self._framer.feed(data)
            except GB28181Error as err:
                raise StreamEndedError(
                    f"the device's RTP over TCP lost its framing: {err}"
                ) from err
        return []

    def _connection(self) -> socket.socket | None:
        """The device's TCP connection to our passive port (accepted on first use)."""
        if self._conn is None:
            self._sock.settimeout(_POLL_S)
            with contextlib.suppress(TimeoutError):
                self._conn, _ = self._sock.accept()
                self._conn.settimeout(_POLL_S)
        return self._conn

    def _accept(self, datagram: bytes) -> None:
        if is_rtcp(datagram):
            return
        try:
            packet = parse_rtp(datagram)
        except GB28181Error:
            self._stats.malformed += 1
            return
        if self._ssrc is None:
            self._ssrc = packet.ssrc  # the answer named none: the first stream is ours
        if packet.ssrc != self._ssrc:
            self._foreign(packet)
            return
        self._stats.packets += 1
        self._last_media = time.monotonic()
        self._deliver(self._reorder.push(packet))
        self._deliver(self._gap_check())

    def _foreign(self, packet: RtpPacket) -> None:
        self._stats.foreign_ssrc += 1
        if not self._foreign_logged:  # once per call: a misrouted stream floods otherwise
            self._foreign_logged = True
            log.warning(
                "GB/T 28181: RTP with SSRC %d on the port of SSRC %d dropped "
                "(a stream meant for another camera)",
                packet.ssrc,
                self._ssrc,
            )

    def _gap_check(self) -> list[bytes]:
        if not self._reorder.waiting:
            self._gap_since = None
            return []
        now = time.monotonic()
        if self._gap_since is None:
            self._gap_since = now
        if now - self._gap_since < self._config.gap_s:
            return []
        self._gap_since = None
        return self._reorder.skip_gap()

    def _deliver(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            change = self._codec.feed(payload)
            if change is not None and change.previous is not None:
                self._stats.codec_changes += 1
                raise StreamEndedError(
                    f"the device switched its video to {change.codec}: reconnecting for it"
                )
            self._out += payload

    def _check_silence(self) -> None:
        now = time.monotonic()
        if self._last_media is None:
            if now - self._started > self._options.open_timeout_s:
                self._stats.no_media += 1
                raise StreamStalledError(
                    f"the device accepted the INVITE but sent no media within "
                    f"{self._options.open_timeout_s:.0f} s (firewall, NAT, or a wrong "
                    "gb28181.media_host?)"
                )
        elif now - self._last_media > self._options.read_timeout_s:
            raise StreamStalledError(
                f"no media from the device for {self._options.read_timeout_s:.0f} s"
            )
