"""Administration: API tokens and the audit log."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from api.deps import AdminDep, ServicesDep, require
from api.openapi import error
from api.ratelimit import client_key, creation_limit, purge_limit, take_creation
from config.settings import AuthSettings
from storage.audit import audit, list_audit
from storage.leases import live_workers
from storage.models import ApiToken, utcnow
from storage.tokens import (
    ROLES,
    Principal,
    RotationRefused,
    TokenState,
    create_token,
    list_tokens,
    revoke_token,
    rotate_token,
)

router = APIRouter(tags=["admin"])
AnyRoleDep = Annotated[Principal, Depends(require(*ROLES))]

Role = Literal["admin", "integrator", "operator", "grid_platform"]
#: At most ten years: an expiry is meant to end a forgotten copy, not to be forgotten itself.
MAX_LIFETIME_S = 10 * 365 * 86400


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    name: str = Field(default="", max_length=200)
    grid_scope: str | None = Field(
        default=None, max_length=64, description="Limit the token to this grid and below."
    )
    expires_in_s: int | None = Field(
        default=None,
        ge=60,
        le=MAX_LIFETIME_S,
        description="Lifetime in seconds; the role's default (auth.*_lifetime_s) when none "
        "of expires_in_s, expires_at, never_expires is given.",
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the token stops working (RFC 3339 with a zone)."
    )
    never_expires: bool = Field(
        default=False, description="A token without expiry (for a peer that cannot rotate)."
    )

    @field_validator("expires_at")
    @classmethod
    def _one_expiry(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is not None and info.data.get("expires_in_s") is not None:
            raise ValueError("give expires_in_s or expires_at, not both")
        if value is not None and not utcnow() < value <= utcnow() + MAX_LIFE:
            raise ValueError("must lie in the future, within ten years")
        return value

    @field_validator("never_expires")
    @classmethod
    def _no_expiry(cls, value: bool, info: ValidationInfo) -> bool:
        if value and (info.data.get("expires_in_s") or info.data.get("expires_at")):
            raise ValueError("never_expires excludes expires_in_s and expires_at")
        return value

    def expiry(self, auth: AuthSettings, now: datetime) -> datetime | None:
        """When the new token expires: what the body asks, else the role's default."""
        if self.never_expires:
            return None
        if self.expires_at is not None:
            return self.expires_at
        return now + timedelta(seconds=self.expires_in_s or auth.lifetime_s(self.role))


MAX_LIFE = timedelta(seconds=MAX_LIFETIME_S)


class TokenOut(BaseModel):
    id: str
    name: str
    role: Role
    grid_scope: str | None = None
    state: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None = Field(description="null: never expires.")
    last_used_at: datetime | None = Field(description="To the minute; null: never used.")
    revoked_at: datetime | None = None
    rotated_to: str | None = Field(
        default=None, description="The token a rotation replaced this one with."
    )

    @classmethod
    def of(cls, row: ApiToken, now: datetime) -> TokenOut:
        expired = row.expires_at is not None and row.expires_at <= now
        state = "revoked" if row.revoked_at else "expired" if expired else "active"
        fields = {name: getattr(row, name) for name in cls.model_fields if name != "state"}
        return cls.model_validate({**fields, "state": state})


class TokenCreated(BaseModel):
    id: str
    name: str
    role: Role
    grid_scope: str | None = None
    expires_at: datetime | None = Field(description="null: never expires.")
    token: str = Field(description="Shown once; only its hash is stored.")


class TokenRotated(TokenCreated):
    replaces: str = Field(description="The rotated token's id.")
    replaced_expires_at: datetime = Field(
        description="Until when the rotated token still works (auth.rotation_grace_s)."
    )


class AuditOut(BaseModel):
    at: datetime
    actor: str
    action: str
    resource: str
    resource_id: str
    detail: dict[str, Any]


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated)
def post_token(
    body: TokenCreate, request: Request, services: ServicesDep, who: AdminDep
) -> TokenCreated:
    """A new token, shown once; it expires after the role's default lifetime unless the
    body says otherwise. Counts against the address's token-creation limit."""
    now, limit = utcnow(), creation_limit(services.settings)
    expires_at = body.expiry(services.settings.auth, now)
    with services.tx() as session:
        purge_due = take_creation(session, limit, client_key(request.scope), now.timestamp())
        token, p = create_token(session, body.role, body.name, body.grid_scope, expires_at)
        detail = {"role": p.role, "expires_at": expires_at and expires_at.isoformat()}
        audit(session, who.name, "create", "token", p.token_id, detail)
    if purge_due:
        purge_limit(services.db, limit, now.timestamp())
    return TokenCreated(
        id=p.token_id,
        name=p.name,
        role=body.role,
        grid_scope=p.grid_scope,
        expires_at=expires_at,
        token=token,
    )


@router.post(
    "/tokens/{token_id}/rotate",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenRotated,
    responses={409: error("The token is revoked, expired or was already rotated.")},
)
def rotate(token_id: str, request: Request, services: ServicesDep, who: AnyRoleDep) -> TokenRotated:
    """A successor for a token (same name, role, scope and lifetime), shown once; the old
    token keeps working for ``auth.rotation_grace_s``. Admins rotate any token, every other
    role only the token it calls with (404 for another one)."""
    if who.role != "admin" and who.token_id != token_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no token {token_id} of yours")
    now, limit = utcnow(), creation_limit(services.settings)
    grace = timedelta(seconds=services.settings.auth.rotation_grace_s)
    with services.tx() as session:
        purge_due = take_creation(session, limit, client_key(request.scope), now.timestamp())
        try:
            rotated = rotate_token(session, token_id, grace, now)
        except RotationRefused as err:
            raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None
        if rotated is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no token {token_id}")
        token, new, old = rotated
        audit(session, who.name, "rotate", "token", token_id, {"successor": new.token_id})
        expires_at, old_until = session.get_one(ApiToken, new.token_id).expires_at, old.expires_at
    if purge_due:
        purge_limit(services.db, limit, now.timestamp())
    assert old_until is not None  # rotate_token sets it
    return TokenRotated(
        id=new.token_id,
        name=new.name,
        role=cast(Role, new.role),
        grid_scope=new.grid_scope,
        expires_at=expires_at,
        token=token,
        replaces=token_id,
        replaced_expires_at=old_until,
    )


@router.get("/tokens", response_model=list[TokenOut])
def get_tokens(
    services: ServicesDep,
    _: AdminDep,
    state: Annotated[
        TokenState, Query(description="active (default), expired, revoked, or all.")
    ] = "active",
) -> list[TokenOut]:
    """Tokens (never their secret), oldest first; by default only those that work."""
    now = utcnow()
    with services.db.session() as session:
        return [TokenOut.of(row, now) for row in list_tokens(session, state, now)]


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(token_id: str, services: ServicesDep, who: AdminDep) -> None:
    """Revoke a token: every process refuses it from the next request on."""
    with services.tx() as session:
        if not revoke_token(session, token_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no active token {token_id}")
        audit(session, who.name, "revoke", "token", token_id)


class WorkerOut(BaseModel):
    id: str
    host: str
    pid: int
    role: str
    started_at: datetime
    last_seen: datetime
    cameras: list[str]


class WorkerList(BaseModel):
    items: list[WorkerOut]


@router.get("/workers", response_model=WorkerList)
def get_workers(services: ServicesDep, _: AdminDep) -> WorkerList:
    """Live camera workers and the cameras each one analyses."""
    lease_s = services.settings.workers.lease_s
    with services.db.session() as session:
        rows = live_workers(session, utcnow(), lease_s)
    return WorkerList(items=[WorkerOut.model_validate(w, from_attributes=True) for w in rows])


@router.get("/audit", response_model=list[AuditOut])
def get_audit(
    services: ServicesDep,
    _: AdminDep,
    resource: str | None = None,
    resource_id: str | None = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditOut]:
    with services.db.session() as session:
        rows = list_audit(session, resource, resource_id, since, limit)
        return [AuditOut.model_validate(r, from_attributes=True) for r in rows]
