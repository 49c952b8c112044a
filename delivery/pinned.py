"""Webhook connections pinned to the addresses the egress policy judged.

The delivery worker checks a webhook's host against the egress policy before each request
(ingest/egress.py), but httpx then resolves the name again to connect. A name whose DNS
answers an allowed address to the check and 127.0.0.1 or 169.254.169.254 to the connect
(DNS rebinding, a TTL of zero) would reach what the policy refuses. Here the connection is
made by a network backend that resolves through the policy and connects to exactly the
addresses it judged; TLS still verifies the certificate against the name (httpcore wraps
the connection with the URL's host as server name).

httpx builds its connection pool without a way to pass a network backend, so the client's
transport replaces its pool with one that has it (httpcore is httpx's own engine).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from ingest.egress import EgressPolicy, EgressRefused, Purpose

__all__ = ["PinnedBackend", "pinned_client"]


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects TCP to the addresses ``policy`` resolved and judged for the host, in order."""

    def __init__(
        self,
        policy: EgressPolicy,
        purpose: Purpose = Purpose.WEBHOOK,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy, self._purpose = policy, purpose
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self._policy.resolve_checked("url", host, self._purpose)
        except EgressRefused as err:
            raise httpcore.ConnectError(f"refused by the egress policy: {err.reason}") from None
        if not addresses:
            raise httpcore.ConnectError(f"host {host} does not resolve")
        *others, last = addresses  # each in turn; the last one's error is the answer
        for address in others:
            with contextlib.suppress(httpcore.ConnectError, httpcore.ConnectTimeout):
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
        return await self._inner.connect_tcp(
            str(last), port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        super().__init__()
        limits = httpx.Limits()  # httpx's defaults, as its own transport would use
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def pinned_client(policy: EgressPolicy, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """An HTTP client whose every connection goes where ``policy`` judged (no redirects
    followed: the caller checks each). Proxies from the environment are not used: a
    proxy would resolve the name itself."""
    return httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, transport=_PinnedTransport(PinnedBackend(policy))
    )
