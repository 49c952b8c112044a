"""Why a live view cannot start (the API maps each to an HTTP status)."""

from __future__ import annotations

from config.errors import XueliangError

__all__ = ["BadOfferError", "LiveError", "LiveUnavailableError", "NoCommonCodecError"]


class LiveError(XueliangError):
    """Live view cannot start."""


class LiveUnavailableError(LiveError):
    """The camera is not run by this process or has sent no video yet (try again)."""


class BadOfferError(LiveError, ValueError):
    """The request body is not an SDP offer with a video section."""


class NoCommonCodecError(LiveError):
    """The browser offers no H.264 with packetization-mode 1."""
