"""The one place that hides credentials in URLs, messages and FFmpeg's log.

RTSP URLs carry the camera's password (``rtsp://user:pass@host/path``), and FFmpeg repeats
the URL in its error messages. Everything the ingest engine logs or shows in a status goes
through :func:`redact`. :func:`configure_av_logging` makes FFmpeg's own log safe: PyAV
forwards it to the ``libav.*`` loggers, each of which gets a :class:`RedactingFilter`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote

import av.logging

__all__ = ["RedactingFilter", "configure_av_logging", "redact", "redact_url", "url_secrets"]

MASK = "***"

# userinfo with a password: scheme://user:password@ — the password may contain '@' or ':'
# when the integrator did not percent-encode it, so it runs to the last '@' before the path.
_USERINFO = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):(?P<pw>[^/\s]*)@")
# password-like query parameters some cameras use (?user=admin&password=...).
_QUERY = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd|pass)=)(?P<pw>[^&\s'\"]*)", re.I)

# FFmpeg contexts that may print the URL; PyAV names its loggers "libav.<context>".
_AV_LOGGERS = ("libav", "libav.generic", "libav.rtsp", "libav.tcp", "libav.tls", "libav.http")
_configured = threading.Lock()
_done = False


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords, password query parameters and each of ``secrets`` masked.

    >>> redact("open rtsp://admin:s3cret@10.0.0.5:554/Streaming/101 failed")
    'open rtsp://admin:***@10.0.0.5:554/Streaming/101 failed'
    """
    text = _USERINFO.sub(rf"\g<head>:{MASK}@", text)
    text = _QUERY.sub(rf"\g<head>{MASK}", text)
    for secret in secrets:
        # Very short secrets would mask ordinary words; the URL patterns above cover them.
        if len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def redact_url(url: str) -> str:
    """``url`` safe to show: ``rtsp://user:***@host/path`` (user and path kept)."""
    return redact(url, url_secrets(url))


def url_secrets(url: str) -> tuple[str, ...]:
    """The passwords in ``url`` (as written and percent-decoded), to mask wherever they show up."""
    found = {m.group("pw") for m in _USERINFO.finditer(url)}
    found |= {m.group("pw") for m in _QUERY.finditer(url)}
    found |= {unquote(pw) for pw in found}
    return tuple(sorted(pw for pw in found if pw))


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's final message. Attach it to handlers or loggers.

    Note that a filter on a logger only sees records logged on that very logger, not on
    its children; attach it to the handlers to cover everything.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = redact(message)
        if safe != message:
            record.msg, record.args = safe, None
        return True


def configure_av_logging() -> None:
    """Route FFmpeg errors through PyAV (so readers can capture them) and redact its loggers.

    PyAV ignores FFmpeg's log by default, which leaves errors without detail; at ``ERROR``
    each reader thread captures its own lines (``av.logging.Capture``) to explain a
    failure. Lines from other threads reach the ``libav.*`` loggers, filtered here.
    Idempotent.
    """
    global _done
    with _configured:
        if _done:
            return
        if av.logging.get_level() is None:
            av.logging.set_level(av.logging.ERROR)
        # PyAV folds repeated lines across all threads, which would move one camera's
        # lines into another camera's capture; each thread's lines must stay its own.
        av.logging.set_skip_repeated(False)
        for name in _AV_LOGGERS:
            logging.getLogger(name).addFilter(RedactingFilter())
        _done = True
