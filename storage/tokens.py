"""API tokens: random secrets shown once, stored as SHA-256 hashes, with an expiry.

A token is refused when unknown, revoked or past its ``expires_at`` (NULL: never expires).
Every request looks its token up here, in the database all processes share, and nothing is
cached: a revocation or an expiry holds on every process at once (docs/security.md).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from storage.models import ApiToken, utcnow

ROLES = ("admin", "integrator", "operator", "grid_platform")
TOKEN_PREFIX = "xl_"
#: ``last_used_at`` is written at most this often per token (a write per request is not cheap).
LAST_USE_RESOLUTION = timedelta(minutes=1)

TokenState = Literal["active", "expired", "revoked", "all"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id and name, its role and optional grid scope."""

    token_id: str
    name: str
    role: str
    grid_scope: str | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a token was not accepted; ``detail`` is safe to answer (it names no token)."""

    reason: Literal["unknown", "revoked", "expired"]
    expired_at: datetime | None = None

    @property
    def detail(self) -> str:
        if self.reason == "expired" and self.expired_at is not None:
            return (
                f"token expired at {self.expired_at.isoformat(timespec='seconds')}; "
                "ask an admin for a new one (rotate tokens before they expire)"
            )
        return "invalid or revoked token"


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session,
    role: str,
    name: str = "",
    grid_scope: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, Principal]:
    """Create a token; the plaintext is returned once and never stored.

    ``expires_at`` None: the token never expires (callers pass the role's default lifetime,
    ``AuthSettings.lifetime_s``, unless someone chose otherwise).
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        id=uuid.uuid4().hex,
        name=name or f"{role}-token",
        role=role,
        token_hash=hash_token(token),
        grid_scope=grid_scope,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return token, _principal(row)


def authenticate(session: Session, token: str, now: datetime | None = None) -> Principal | Refusal:
    """The principal a token stands for, or why it is refused; notes its use (once a minute)."""
    now = now or utcnow()
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None:
        return Refusal("unknown")
    if row.revoked_at is not None:
        return Refusal("revoked")
    if row.expires_at is not None and row.expires_at <= now:
        return Refusal("expired", row.expires_at)
    if row.last_used_at is None or now - row.last_used_at >= LAST_USE_RESOLUTION:
        row.last_used_at = now
    return _principal(row)


def find_token(session: Session, token: str) -> Principal | None:
    """The principal of an accepted token, None when it is refused."""
    found = authenticate(session, token)
    return found if isinstance(found, Principal) else None


def revoke_token(session: Session, token_id: str) -> bool:
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


class RotationRefused(Exception):
    """The token cannot be rotated (already rotated, revoked or expired): say which."""


def rotate_token(
    session: Session, token_id: str, grace: timedelta, now: datetime | None = None
) -> tuple[str, Principal, ApiToken] | None:
    """Issue the successor of a token; the old one works ``grace`` longer, then expires.

    The successor keeps the name, role, scope and lifetime (``expires_at - created_at``) of
    the old token. None when there is no such token. Raises :class:`RotationRefused` for a
    token that is revoked, expired or already rotated (one token never forks into two).
    """
    now = now or utcnow()
    old = session.get(ApiToken, token_id, with_for_update=True)
    if old is None:
        return None
    if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
        raise RotationRefused(f"token {token_id} is revoked or expired: create a new one")
    if old.rotated_to is not None:
        raise RotationRefused(f"token {token_id} was already rotated to {old.rotated_to}")
    lifetime = None if old.expires_at is None else old.expires_at - old.created_at
    token, successor = create_token(
        session, old.role, old.name, old.grid_scope, None if lifetime is None else now + lifetime
    )
    old.rotated_to = successor.token_id
    old.expires_at = min(now + grace, old.expires_at or now + grace)
    return token, successor, old


def list_tokens(
    session: Session, state: TokenState = "active", now: datetime | None = None
) -> list[ApiToken]:
    """Tokens in ``state`` (``all``: every one), oldest first."""
    return list(session.scalars(_in_state(state, now or utcnow()).order_by(ApiToken.created_at)))


def _in_state(state: TokenState, now: datetime) -> Select[ApiToken]:
    query = select(ApiToken)
    live = (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now)
    if state == "active":
        return query.where(ApiToken.revoked_at.is_(None), live)
    if state == "expired":
        return query.where(ApiToken.revoked_at.is_(None), ~live)
    if state == "revoked":
        return query.where(ApiToken.revoked_at.is_not(None))
    return query


def _principal(row: ApiToken) -> Principal:
    return Principal(token_id=row.id, name=row.name, role=row.role, grid_scope=row.grid_scope)
