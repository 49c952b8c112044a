"""The API's rate limits: failed authentications and token creations per client address.

The counts live in the database every process shares (:mod:`storage.ratelimit`), so an
installation of N API processes allows what one would, not N times as much. The client
address is the TCP peer's, or the one a proxy of ``server.trusted_proxies`` forwarded
(uvicorn rewrites the peer only for those); IPv6 counts per /64. See docs/security.md.
"""

from __future__ import annotations

import ipaddress
import math

from fastapi import HTTPException, status
from sqlalchemy.orm import Session
from starlette.types import Scope

from config.settings import Settings
from storage.db import Database
from storage.ratelimit import Limit, purge, retry_after, spend


def failure_limit(settings: Settings) -> Limit:
    sec = settings.security
    return Limit("auth_failure", sec.auth_failures, sec.auth_failures_window_s, sec.tracked_clients)


def creation_limit(settings: Settings) -> Limit:
    sec = settings.security
    return Limit(
        "token_creation", sec.token_creations, sec.token_creations_window_s, sec.tracked_clients
    )


def client_key(scope: Scope) -> str:
    """The address rate limits count by: the client's IP, or its /64 for IPv6 (one host
    usually owns a whole /64, and could otherwise hop between its addresses)."""
    client = scope.get("client")
    host = client[0] if client else "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return str(host)[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def too_many(wait_s: float, detail: str) -> HTTPException:
    """429 with ``Retry-After`` in whole seconds (at least 1)."""
    retry = max(1, math.ceil(wait_s))
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"{detail}; retry in {retry} s",
        headers={"Retry-After": str(retry)},
    )


def count_failure(db: Database, limit: Limit, client: str, now: float) -> None:
    """Count a failed authentication in a transaction of its own (committed at once)."""
    with db.session() as session:
        due = spend(session, limit, client, now)
    if due:
        purge_limit(db, limit, now)


def take_creation(session: Session, limit: Limit, client: str, now: float) -> bool:
    """Count a token creation in the caller's transaction (undone if it fails), or raise 429.

    True when :func:`purge_limit` is due after the transaction commits.
    """
    wait = retry_after(session, limit, client, now)
    if wait > 0:
        raise too_many(wait, "too many tokens created from this address")
    return spend(session, limit, client, now)


def purge_limit(db: Database, limit: Limit, now: float) -> None:
    with db.session() as session:
        purge(session, limit, now)
