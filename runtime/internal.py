"""How the processes of one installation talk to each other over HTTP.

A camera worker asks the GB/T 28181 endpoint's holder to INVITE a channel
(``runtime/gb28181.py``); an ``api`` node forwards a live view to the worker that runs the
camera (``runtime/live.py``). Each process is reached at its :func:`advertise_url`, and
every internal request carries :data:`INTERNAL_HEADER` with :func:`internal_token`, derived
from the installation's key, so nothing more is configured (routes in
``api/routes/internal.py``).
"""

from __future__ import annotations

import hmac
import socket

import httpx

from config.settings import ServerSettings
from storage.secrets import SecretBox

__all__ = [
    "INTERNAL_HEADER",
    "advertise_url",
    "internal_client",
    "internal_token",
    "refusal",
    "token_matches",
]

#: The header carrying the token between processes (:func:`internal_token`).
INTERNAL_HEADER = "X-Xueliang-Internal"


def internal_token(box: SecretBox) -> str:
    """The token processes of one installation show each other: derived from the shared
    key, so nothing more is configured, and useless to anyone without that key."""
    return box.derive(b"internal-rpc").hex()


def token_matches(box: SecretBox, sent: str | None) -> bool:
    """Whether a caller showed :func:`internal_token` (compared in constant time)."""
    return hmac.compare_digest((sent or "").encode(), internal_token(box).encode())


def internal_client(box: SecretBox, timeout_s: float) -> httpx.AsyncClient:
    """An HTTP client for the other processes, sending the internal token. ``trust_env``
    is off: a proxy configured for the outside must not see the token."""
    return httpx.AsyncClient(
        timeout=timeout_s, headers={INTERNAL_HEADER: internal_token(box)}, trust_env=False
    )


def refusal(response: httpx.Response) -> str:
    """What the other process said, and what to do about a refused token."""
    try:
        detail = str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        detail = response.reason_phrase
    if response.status_code == 401:
        detail += " (every process of the installation needs the same secrets.camera_key)"
    return f"{response.status_code} {detail}"


def advertise_url(server: ServerSettings) -> str:
    """This process's HTTP base URL as other processes reach it: ``server.advertise_url``,
    else ``http://HOST:PORT`` (the machine's name when HOST is a wildcard address)."""
    if server.advertise_url:
        return server.advertise_url.rstrip("/")
    host = server.host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{server.port}"
