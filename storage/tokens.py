"""API tokens: random secrets shown once, stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ApiToken, utcnow

ROLES = ("admin", "integrator", "operator", "grid_platform")
TOKEN_PREFIX = "xl_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id and name, its role and optional grid scope."""

    token_id: str
    name: str
    role: str
    grid_scope: str | None = None


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, role: str, name: str = "", grid_scope: str | None = None
) -> tuple[str, Principal]:
    """Create a token; the plaintext is returned once and never stored."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        id=uuid.uuid4().hex,
        name=name or f"{role}-token",
        role=role,
        token_hash=hash_token(token),
        grid_scope=grid_scope,
    )
    session.add(row)
    session.flush()
    return token, _principal(row)


def find_token(session: Session, token: str) -> Principal | None:
    row = session.scalar(
        select(ApiToken).where(
            ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
        )
    )
    return _principal(row) if row else None


def revoke_token(session: Session, token_id: str) -> bool:
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def list_tokens(session: Session) -> list[Principal]:
    rows = session.scalars(select(ApiToken).where(ApiToken.revoked_at.is_(None)))
    return [_principal(r) for r in rows]


def _principal(row: ApiToken) -> Principal:
    return Principal(token_id=row.id, name=row.name, role=row.role, grid_scope=row.grid_scope)
