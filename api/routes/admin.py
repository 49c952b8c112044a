"""Administration: API tokens and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import AdminDep, ServicesDep
from storage.audit import audit, list_audit
from storage.leases import live_workers
from storage.models import utcnow
from storage.tokens import create_token, list_tokens, revoke_token

router = APIRouter(tags=["admin"])

Role = Literal["admin", "integrator", "operator", "grid_platform"]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    name: str = Field(default="", max_length=200)
    grid_scope: str | None = Field(
        default=None, max_length=64, description="Limit the token to this grid and below."
    )


class TokenOut(BaseModel):
    id: str
    name: str
    role: Role
    grid_scope: str | None = None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown once; only its hash is stored.")


class AuditOut(BaseModel):
    at: datetime
    actor: str
    action: str
    resource: str
    resource_id: str
    detail: dict[str, Any]


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated)
def post_token(body: TokenCreate, services: ServicesDep, who: AdminDep) -> TokenCreated:
    with services.tx() as session:
        token, p = create_token(session, body.role, body.name, body.grid_scope)
        audit(session, who.name, "create", "token", p.token_id, {"role": p.role})
    return TokenCreated(
        id=p.token_id, name=p.name, role=body.role, grid_scope=p.grid_scope, token=token
    )


@router.get("/tokens", response_model=list[TokenOut])
def get_tokens(services: ServicesDep, _: AdminDep) -> list[TokenOut]:
    with services.db.session() as session:
        rows = list_tokens(session)
    return [
        TokenOut(id=p.token_id, name=p.name, role=p.role, grid_scope=p.grid_scope) for p in rows
    ]


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(token_id: str, services: ServicesDep, who: AdminDep) -> None:
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
