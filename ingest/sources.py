"""Stream sources: one blocking connection attempt that returns on stop or raises.

A source opens a stream with PyAV, hands every video packet to a :class:`StreamHandler`
and, when the handler asks for it, decodes. ``run_once`` runs on a dedicated reader thread
(PyAV releases the GIL while it waits on the network); the camera supervisor restarts it.
This module is the adapter edge: every PyAV/FFmpeg error leaves it as an
:class:`~ingest.errors.IngestError` whose message says what to fix.

Stopping: FFmpeg offers no safe way to abort a read from another thread (closing the
container under a blocked read crashes), so ``run_once`` checks its stop event between
packets. A live camera delivers a packet every frame interval; a silent one is cut off by
PyAV's read timeout (observed: about twice ``read_timeout_s``), which bounds the worst-case
stop latency. Opening is bounded by ``open_timeout_s``.

Hostile or broken cameras: :func:`open_source` refuses URLs that are not ``rtsp://`` or
``rtsps://`` (or files, when allowed) before FFmpeg sees them, and FFmpeg may only use the
protocols RTSP needs (no ``http``, ``file``, ``concat``… behind an RTSP URL or a device's
stream URI). When opening fails in a way FFmpeg does not explain (it reports "invalid
data" for a host that accepts the connection and never answers, for one that sends
garbage, and for one that speaks HTTP), one short probe of the port tells them apart; a
server that refuses PLAY because it offered no video is re-asked once without the
video-only filter to say what it offers instead. A stream whose packets keep coming but
never decode into a picture fails after ``no_picture_s``.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import av
import av.error
import av.logging
from av.container import InputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from ingest.egress import EgressPolicy, EgressRefused, IPAddress, Purpose
from ingest.errors import (
    CameraAuthError,
    CameraRefusedError,
    CameraUnreachableError,
    IngestError,
    StreamEndedError,
    StreamNotFoundError,
    StreamStalledError,
    UnsupportedStreamError,
)
from ingest.redact import redact, url_secrets

__all__ = [
    "FileSource",
    "PyAVSource",
    "RefusedSource",
    "Source",
    "SourceOptions",
    "StreamHandler",
    "UndecodableStreamError",
    "deliver",
    "open_source",
    "translate_error",
    "url_problem",
]

_LOG_TAIL = 8  # FFmpeg lines kept per connection to explain a failure
STREAM_SCHEMES = ("rtsp", "rtsps")
# The FFmpeg protocols a live source may open: RTSP runs over TCP (interleaved, see
# PyAVSource) or TLS (rtsps). FFmpeg then refuses http, file, concat, subfile, pipe… even
# if a URL or a redirect asks for them.
_LIVE_PROTOCOLS = "tcp,tls"
#: Connect errors after which the next address of a name is tried, as FFmpeg would.
_NOT_THERE = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
)
_FILE_PROTOCOLS = "file"
_PROBE_TIMEOUT_S = 1.0  # the longest the port probe after a failed open waits for an answer


class StreamHandler(Protocol):
    """Receives what a source reads. Every method is called on the reader thread."""

    @property
    def decode(self) -> bool:
        """Whether the source should decode packets and call :meth:`on_frame`."""
        ...

    def on_open(self, stream: VideoStream) -> None:
        """The connection is up; ``stream`` is the video stream packets will come from."""

    def on_packet(self, packet: Packet[VideoStream], wallclock: float) -> None:
        """One video packet, in arrival order (``wallclock``: ``time.time()`` at arrival)."""

    def on_frame(self, frame: VideoFrame, wallclock: float) -> None:
        """One decoded frame (only when :attr:`decode` is true)."""

    def on_decode_error(self) -> None:
        """A packet could not be decoded; the connection goes on."""

    def on_close(self) -> None:
        """The connection ended; called once, only after :meth:`on_open`."""


class Source(Protocol):
    """A stream that can be read once per call."""

    @property
    def display_url(self) -> str:
        """The URL with credentials masked, for logs and status."""
        ...

    def run_once(self, stop: threading.Event, handler: StreamHandler) -> None:
        """Connect and read until ``stop`` is set (then return) or the stream fails (raise
        :class:`~ingest.errors.IngestError`)."""


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """Connection knobs (see :class:`~ingest.types.CameraStreamConfig`)."""

    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    analyzeduration_us: int = 500_000
    decode_threads: int = 1
    #: Whether ``file:`` URLs and plain paths may be played (``ingest.allow_file_sources``).
    allow_files: bool = True
    #: A decoded stream whose packets yield no picture for this long fails (garbage payload).
    no_picture_s: float = 20.0
    #: Checked before every connection (DNS may change); None: connect anywhere.
    egress: EgressPolicy | None = None


def open_source(url: str, options: SourceOptions) -> Source:
    """The source for ``url``: ``rtsp://`` and ``rtsps://`` are read live by FFmpeg;
    ``file:`` URLs and plain paths play a looped file when ``options.allow_files``.

    Any other URL (``http://``, ``concat:``, control characters…) gives a
    :class:`RefusedSource`, whose attempts fail with a permanent error naming the problem.
    """
    problem = url_problem(url, allow_files=options.allow_files)
    if problem is not None:
        return RefusedSource(url, problem)
    if urlsplit(url).scheme.lower() in STREAM_SCHEMES:
        return PyAVSource(url, options)
    return FileSource(_file_path(url), options)


def url_problem(url: str, *, allow_files: bool) -> str | None:
    """Why ``url`` may not be opened as a camera, or None when it may."""
    if not url:
        return "the camera URL is empty"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "the camera URL contains spaces or control characters (newline, tab, NUL…)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises on a non-numeric or out-of-range port
    except ValueError as err:
        return f"the camera URL is not a valid URL: {redact(str(err))}"
    scheme = parts.scheme.lower()
    if scheme in STREAM_SCHEMES:
        return None if parts.hostname else "the camera URL names no host"
    if scheme in ("file", ""):
        if allow_files:
            return None
        return "file sources are disabled on this server (ingest.allow_file_sources)"
    if scheme == "gb28181":
        return (
            "this process does not run the GB/T 28181 endpoint (set "
            "XUELIANG_GB28181__ENABLED=true on the process that runs the camera)"
        )
    return f"URL scheme {scheme[:16]!r} is not allowed: cameras are read over rtsp:// or rtsps://"


def _file_path(url: str) -> Path:
    if urlsplit(url).scheme.lower() != "file":
        return Path(url)  # a plain path
    rest = url[len("file:") :]
    if rest.startswith("//"):
        return Path(unquote(urlsplit(url).path))
    return Path(unquote(rest))


class PyAVSource:
    """A live stream read with PyAV over TCP (interleaved RTSP: no UDP loss or NAT issues)."""

    def __init__(self, url: str, options: SourceOptions) -> None:
        self._url = url
        self._options = options
        self._secrets = url_secrets(url)
        self._targets = [url]

    @property
    def display_url(self) -> str:
        """The URL with credentials masked."""
        return redact(self._url, self._secrets)

    def run_once(self, stop: threading.Event, handler: StreamHandler) -> None:
        """Open, then deliver packets until ``stop`` or failure."""
        self._targets = self._pinned_urls()
        # Capture this thread's FFmpeg lines: they explain failures PyAV only numbers.
        with av.logging.Capture(local=True) as ffmpeg_log:
            opened = False
            started = time.monotonic()
            try:
                container = self._open()
                opened = True
                with container:
                    self._read(container, stop, handler, ffmpeg_log)
            except av.FFmpegError as err:
                log = self._tail(ffmpeg_log)
                found = translate_error(err, opened=opened, options=self._options, log=log)
                if not opened and not stop.is_set():
                    # FFmpeg reports the open timeout's interrupt as "invalid data" too.
                    timed_out = time.monotonic() - started >= 0.9 * self._options.open_timeout_s
                    found = self._explain(err, found, timed_out=timed_out)
                    found.ffmpeg_log = log
                raise found from err

    def _pinned_urls(self) -> list[str]:
        """The URLs to open, in turn: with an egress policy, the camera's URL with its host
        replaced by each address the policy judged (a DNS lookup of at most
        ``egress.resolve_timeout_s``: this runs on the reader thread), so that FFmpeg does
        not resolve the name again — a second answer could aim it anywhere (DNS rebinding).
        Raises :class:`CameraRefusedError` before any packet leaves for a refused host."""
        egress = self._options.egress
        host = urlsplit(self._url).hostname
        if egress is None or host is None:
            return [self._url]
        try:
            addresses = egress.addresses_checked("url", host, Purpose.CAMERA)
        except EgressRefused as err:
            raise CameraRefusedError(f"refused by the egress policy: {err.reason}") from None
        if not addresses:
            raise CameraUnreachableError(
                f"host not found: {host} does not resolve (within "
                f"{egress.resolve_timeout_s:g} s): check the camera's address"
            )
        if str(addresses[0]) == host.split("%")[0]:
            return [self._url]  # an address already
        return [_with_host(self._url, a) for a in dict.fromkeys(addresses)]

    def _open(self, *, video_only: bool = True) -> InputContainer:
        opts = self._options
        options = {
            "rtsp_transport": "tcp",
            "protocol_whitelist": _LIVE_PROTOCOLS,
            "analyzeduration": str(opts.analyzeduration_us),
            "timeout": str(int(opts.read_timeout_s * 1_000_000)),
        }
        if video_only:
            options["allowed_media_types"] = "video"  # no audio SETUP: less bandwidth and CPU
        timeout = (opts.open_timeout_s, opts.read_timeout_s)
        *others, last = self._targets
        for url in others:  # the next address when one refuses at once, as FFmpeg would
            try:
                return av.open(url, options=options, timeout=timeout)
            except av.FFmpegError as err:
                if err.errno not in _NOT_THERE:
                    raise
        return av.open(last, options=options, timeout=timeout)

    def _explain(self, err: av.FFmpegError, found: IngestError, *, timed_out: bool) -> IngestError:
        """A clearer error for an open that failed without FFmpeg saying why."""
        e = av.error
        if isinstance(err, e.HTTPClientError) and not found.permanent:
            # The camera refused PLAY: with the video-only filter, a camera that offers no
            # video gets no SETUP, and answers PLAY with 454/455 (gst-rtsp-server: 454).
            offered = self._media_without_video()
            if offered is not None:
                found = UnsupportedStreamError(
                    f"no video stream: the camera offers only {offered}; "
                    "check the URL's path or the camera's stream settings"
                )
        elif isinstance(err, e.InvalidDataError | e.ExitError | e.TimeoutError):
            found = _probe_verdict(self._targets[-1], self._options, found, timed_out=timed_out)
        return found

    def _media_without_video(self) -> str | None:
        """What the camera offers when it offers no video ("audio (opus)"); None if it
        offers video after all or cannot be asked."""
        try:
            with self._open(video_only=False) as container:
                if container.streams.video:
                    return None
                kinds = sorted(
                    {
                        f"{s.type} ({s.codec_context.name if s.codec_context else 'unknown'})"
                        for s in container.streams
                    }
                )
                return ", ".join(kinds) or "no media at all"
        except av.FFmpegError:
            return None

    def _read(
        self,
        container: InputContainer,
        stop: threading.Event,
        handler: StreamHandler,
        ffmpeg_log: list[tuple[int, str, str]],
    ) -> None:
        def trim_log() -> None:
            if len(ffmpeg_log) > 4 * _LOG_TAIL:
                del ffmpeg_log[:-_LOG_TAIL]  # bounded: the capture list is ours to trim

        deliver(container, stop, handler, self._options, after_packet=trim_log)

    def _tail(self, ffmpeg_log: list[tuple[int, str, str]]) -> tuple[str, ...]:
        lines = ffmpeg_log[-_LOG_TAIL:]
        return tuple(redact(f"[{name}] {msg.strip()}", self._secrets) for _lvl, name, msg in lines)


def deliver(
    container: InputContainer,
    stop: threading.Event,
    handler: StreamHandler,
    options: SourceOptions,
    *,
    ended: str = "the camera closed the connection",
    after_packet: Callable[[], None] | None = None,
) -> None:
    """Hand every video packet of an open container to ``handler`` (decoding when it asks)
    until ``stop``; raise :class:`StreamEndedError` (``ended``) when the stream ends.

    The common read loop of every PyAV-demuxed source: RTSP, and GB/T 28181's PS over RTP.
    """
    stream = _video_stream(container)
    decode = handler.decode
    if decode:
        _configure_decoder(stream, options.decode_threads)
    watch = _PictureWatch(stream, options.no_picture_s)
    handler.on_open(stream)
    try:
        for packet in _packets(container, stream, stop, ended):
            now = time.time()
            handler.on_packet(packet, now)
            if decode:
                watch.saw(_decode(packet, handler, now))
            if after_packet is not None:
                after_packet()
    finally:
        handler.on_close()


def _packets(
    container: InputContainer, stream: VideoStream, stop: threading.Event, ended: str
) -> Iterator[Packet[VideoStream]]:
    for packet in container.demux(stream):
        if stop.is_set():
            return
        if packet.size:  # demux ends with an empty flush packet
            yield packet
    if not stop.is_set():
        raise StreamEndedError(ended)


class RefusedSource:
    """A URL this service does not open: every attempt fails with why (permanent)."""

    def __init__(self, url: str, problem: str) -> None:
        self._url = url
        self._problem = problem

    @property
    def display_url(self) -> str:
        """The URL with credentials masked and control characters escaped."""
        shown = redact(self._url, url_secrets(self._url))
        return shown.encode("unicode_escape").decode("ascii")[:300]

    def run_once(self, stop: threading.Event, handler: StreamHandler) -> None:
        """Fail at once, without touching the network or the file system."""
        raise UnsupportedStreamError(self._problem)


def _with_host(url: str, address: IPAddress) -> str:
    """``url`` with its host replaced by ``address`` (user, password and port kept)."""
    parts = urlsplit(url)
    userinfo, at, _hostport = parts.netloc.rpartition("@")
    host = f"[{address}]" if address.version == 6 else str(address)
    port = f":{parts.port}" if parts.port is not None else ""
    return parts._replace(netloc=f"{userinfo}{at}{host}{port}").geturl()


def _probe_verdict(
    url: str, options: SourceOptions, found: IngestError, *, timed_out: bool
) -> IngestError:
    """Tell apart the hosts FFmpeg reports alike ("invalid data", often after the open
    timeout): silent, closing, speaking HTTP or garbage, or an RTSP server too slow.

    Sends one RTSP OPTIONS request and reads the first bytes of the answer. Only for plain
    ``rtsp://`` (a TLS handshake would say no more here).
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "rtsp" or not parts.hostname:
        return found
    port = parts.port or 554
    answer = _probe(parts.hostname, port, min(_PROBE_TIMEOUT_S, options.open_timeout_s))
    if answer is None:  # no longer reachable: the open's own error says it
        return found
    if answer == b"":
        return StreamEndedError(
            f"the camera closed the connection without answering: check that port {port} "
            "is its RTSP port"
        )
    if answer.startswith(b"RTSP/"):
        if not timed_out:
            return found  # it speaks RTSP and promptly sent something that is not a stream
        return IngestError(
            f"the camera answers RTSP but started no stream within {options.open_timeout_s:g} s"
        )
    if answer.startswith(b"HTTP/"):
        return UnsupportedStreamError(
            f"port {port} answers HTTP, not RTSP: check the URL's port (RTSP is usually 554)"
        )
    if len(answer) < 5 and b"RTSP/".startswith(answer):
        answer = b"?"  # a partial "RTSP/" trickled in: as good as no answer
    if answer == b"?":
        return CameraUnreachableError(
            f"the camera accepts connections on port {port} but does not answer "
            f"(nothing within {options.open_timeout_s:g} s): check its address and port"
        )
    return UnsupportedStreamError(
        f"the camera's answer on port {port} is not RTSP: check the URL's address and port"
    )


def _probe(host: str, port: int, timeout: float) -> bytes | None:
    """The first 5 bytes answered to an RTSP OPTIONS request; ``b""`` if the server closed
    the connection, ``b"?"`` if it stayed silent, None if it cannot be reached."""
    request = f"OPTIONS rtsp://{host}:{port}/ RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode(
        "ascii", "replace"
    )
    deadline = time.monotonic() + timeout
    answer = b""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    with sock:
        try:
            sock.sendall(request)
            while len(answer) < 5:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                chunk = sock.recv(5 - len(answer))
                if not chunk:
                    return answer
                answer += chunk
        except TimeoutError:
            pass
        except OSError:  # reset: the server hung up (after what it had sent)
            return answer
    return answer or b"?"


class FileSource:
    """A video file played in a loop at its own frame rate, as if it were a live camera.

    Timestamps keep increasing across loops (each pass is shifted by the file's length),
    so a recorder downstream sees one continuous stream.
    """

    def __init__(self, path: Path, options: SourceOptions) -> None:
        self._path = path
        self._options = options

    @property
    def display_url(self) -> str:
        """``file:`` and the path (files carry no credentials)."""
        return f"file:{self._path}"

    def run_once(self, stop: threading.Event, handler: StreamHandler) -> None:
        """Play the file until ``stop``; raises if it is missing or unreadable."""
        try:
            # "file:" + whitelist: a path such as "concat:a|b" or "http:/x" stays a path.
            container = av.open(
                f"file:{self._path}", options={"protocol_whitelist": _FILE_PROTOCOLS}
            )
        except av.error.FileNotFoundError as err:
            raise StreamNotFoundError(f"file not found: {self._path}") from err
        except av.FFmpegError as err:
            raise UnsupportedStreamError(f"cannot read {self._path} as video: {err}") from err
        with container:
            try:
                self._play(container, stop, handler)
            except av.FFmpegError as err:
                raise UnsupportedStreamError(f"error reading {self._path}: {err}") from err

    def _play(self, container: InputContainer, stop: threading.Event, h: StreamHandler) -> None:
        stream = _video_stream(container)
        if h.decode:
            _configure_decoder(stream, self._options.decode_threads)
        h.on_open(stream)
        try:
            clock = _LoopClock(stream)
            while not stop.is_set():
                if not self._one_pass(container, stream, clock, stop, h):
                    raise UnsupportedStreamError(f"{self._path} holds no video frames")
                container.seek(0)
                clock.next_loop()
        finally:
            h.on_close()

    def _one_pass(
        self,
        container: InputContainer,
        stream: VideoStream,
        clock: _LoopClock,
        stop: threading.Event,
        handler: StreamHandler,
    ) -> bool:
        seen = False
        watch = _PictureWatch(stream, self._options.no_picture_s)
        for packet in container.demux(stream):
            if not packet.size:
                continue
            seen = True
            if stop.wait(clock.wait_s(packet)):
                return True
            now = time.time()
            handler.on_packet(packet, now)
            if handler.decode:
                watch.saw(_decode(packet, handler, now))
        return seen


class _LoopClock:
    """Paces a file in real time and shifts timestamps so they grow across loops."""

    def __init__(self, stream: VideoStream) -> None:
        rate = stream.average_rate or stream.guessed_rate or Fraction(10)
        self._tb = stream.time_base or Fraction(1, 90_000)
        self._frame = max(1, round(1 / (Fraction(rate) * self._tb)))  # in time_base units
        self._offset = 0  # added to every timestamp of this pass
        self._first: int | None = None  # first timestamp of the file, unshifted
        self._last = 0  # last shifted timestamp seen
        self._count = 0  # packets without timestamps are paced by count
        self._start = time.monotonic()

    def wait_s(self, packet: Packet[Any]) -> float:
        """Shift ``packet``'s timestamps; return how long to wait before delivering it."""
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is None:
            ts = self._count * self._frame
        if self._first is None:
            self._first = ts
        if packet.pts is not None:
            packet.pts += self._offset
        if packet.dts is not None:
            packet.dts += self._offset
        self._count += 1
        self._last = max(self._last, ts + self._offset)
        due = self._start + float((self._last - self._first) * self._tb)
        return max(0.0, due - time.monotonic())

    def next_loop(self) -> None:
        """The file restarts: the next pass continues one frame after the last."""
        if self._first is not None:
            self._offset = self._last + self._frame - self._first


def _video_stream(container: InputContainer) -> VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        offered = f"only {', '.join(kinds)}" if kinds else "nothing"
        raise UnsupportedStreamError(f"no video stream: the stream holds {offered}")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UnsupportedStreamError("the camera's video codec is not supported")
    return stream


class UndecodableStreamError(IngestError):
    """Packets arrive but none decodes; retried with the normal backoff (may be transient)."""


class _PictureWatch:
    """Fails a connection whose packets keep coming but never decode into a picture.

    That is a garbage payload or a codec variant the decoder cannot handle; without this
    the camera would look alive (packets flow) while analysis gets nothing. The clock
    starts at the open, so the first keyframe may take up to ``limit_s``.
    """

    def __init__(self, stream: VideoStream, limit_s: float) -> None:
        self._codec = stream.codec_context.name if stream.codec_context else "video"
        self._limit_s = limit_s
        self._deadline = time.monotonic() + limit_s
        self._failed = 0

    def saw(self, frames: int) -> None:
        """One packet was decoded into ``frames`` pictures."""
        now = time.monotonic()
        if frames:
            self._deadline, self._failed = now + self._limit_s, 0
            return
        self._failed += 1
        if now > self._deadline:
            raise UndecodableStreamError(
                f"no picture: {self._failed} {self._codec} packets in {self._limit_s:g} s "
                "could not be decoded (corrupt or unsupported video): check the camera's "
                "video encoding settings"
            )


def _configure_decoder(stream: VideoStream, threads: int) -> None:
    # One thread per camera by default: with thousands of cameras, decoder thread pools
    # multiply (FFmpeg starts cores+1 threads per decoder) for little gain on small frames,
    # and a single-threaded decoder logs on the reader thread, where its lines are captured.
    ctx = stream.codec_context
    ctx.thread_count = threads
    if threads != 1:
        ctx.thread_type = "AUTO"


def _decode(packet: Packet[VideoStream], handler: StreamHandler, wallclock: float) -> int:
    """Decode ``packet``, hand its frames to ``handler``; return how many there were."""
    try:
        frames = packet.decode()
    except av.error.InvalidDataError:
        # Packet loss or a corrupt slice; the next keyframe repairs the picture.
        handler.on_decode_error()
        return 0
    for frame in frames:
        handler.on_frame(frame, wallclock)
    return len(frames)


def translate_error(
    err: av.FFmpegError, *, opened: bool, options: SourceOptions, log: tuple[str, ...] = ()
) -> IngestError:
    """The :class:`IngestError` an integrator should see for a PyAV error.

    ``opened`` tells a failure to connect from one after the stream was playing.
    """
    found = _translate_known(err, opened, options)
    if found is None:
        detail = " ".join(log[-1:]) or (err.strerror or type(err).__name__)
        if any("resolve" in line for line in log):
            found = CameraUnreachableError("host not found: check the camera's address")
        else:
            found = IngestError(f"stream error: {redact(detail)}")
    found.ffmpeg_log = log
    return found


def _translate_known(
    err: av.FFmpegError, opened: bool, options: SourceOptions
) -> IngestError | None:
    e = av.error
    if isinstance(err, e.HTTPUnauthorizedError):
        return CameraAuthError("authentication failed: check the camera's username and password")
    if isinstance(err, e.HTTPForbiddenError):
        return CameraAuthError("access denied (RTSP 403): check the user's rights on the camera")
    if isinstance(err, e.HTTPNotFoundError):
        return StreamNotFoundError("stream not found (RTSP 404): check the path")
    if isinstance(err, e.ConnectionRefusedError):
        return CameraUnreachableError("connection refused: check the camera's address and port")
    if isinstance(err, e.ExitError | e.TimeoutError):
        if opened:
            return StreamStalledError(f"no data for {options.read_timeout_s:g} s (stalled)")
        return CameraUnreachableError(
            f"no answer within {options.open_timeout_s:g} s: check the camera's address"
        )
    if isinstance(err, e.EOFError | e.ConnectionResetError | e.ConnectionAbortedError):
        return StreamEndedError("the camera closed the connection")
    if err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return CameraUnreachableError("no route to the camera: check its address and network")
    if isinstance(err, e.HTTPServerError):
        return IngestError("the camera answered with a server error (RTSP 5xx)")
    if isinstance(err, e.InvalidDataError) and not opened:
        return UnsupportedStreamError("the camera sent data that is not a readable stream")
    return None
