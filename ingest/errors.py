"""Ingest errors: what went wrong with a camera, in words an integrator can act on.

Library errors (PyAV/FFmpeg) are translated into these at the adapter edge
(:mod:`ingest.sources`) with ``raise ... from err``. ``str(err)`` is shown as the camera's
``last_error``: it never contains credentials. ``permanent`` errors (wrong password, wrong
path, unreadable stream) are retried rarely instead of with the normal backoff.
"""

from __future__ import annotations

from typing import ClassVar

from config.errors import XueliangError

__all__ = [
    "CameraAuthError",
    "CameraRefusedError",
    "CameraUnreachableError",
    "IngestError",
    "StreamEndedError",
    "StreamNotFoundError",
    "StreamStalledError",
    "UnsupportedStreamError",
]


class IngestError(XueliangError, ConnectionError):
    """A camera connection failed or ended; retried with backoff unless ``permanent``."""

    permanent: ClassVar[bool] = False

    def __init__(self, message: str, *, ffmpeg_log: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        # The last FFmpeg log lines of the failing connection, already redacted.
        self.ffmpeg_log = ffmpeg_log

    def __str__(self) -> str:
        return self.message


class CameraAuthError(IngestError, PermissionError):
    """The camera rejected the credentials (RTSP 401/403)."""

    permanent = True


class StreamNotFoundError(IngestError):
    """The path does not exist on the camera (RTSP 404) or the file is missing."""

    permanent = True


class UnsupportedStreamError(IngestError):
    """The stream opened but holds nothing this service can read (no video, unknown codec)."""

    permanent = True


class CameraRefusedError(IngestError, PermissionError):
    """The egress policy refuses the camera's address (``ingest/egress.py``); retried
    rarely, since only a change of DNS or of ``egress.allow`` helps."""

    permanent = True


class CameraUnreachableError(IngestError):
    """The camera could not be reached: refused, unknown host, no answer."""


class StreamStalledError(IngestError):
    """The connection is open but no video arrived for too long."""


class StreamEndedError(IngestError):
    """The camera closed the connection (server restart, reboot, end of a file)."""
