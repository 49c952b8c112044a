"""FastAPI dependencies: the services of this app and the caller's identity."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.services import Services
from storage.tokens import Principal, find_token

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer xl_…`")

BOOTSTRAP = Principal(token_id="bootstrap", name="bootstrap-admin", role="admin")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from a bearer token; 401 when missing, unknown or revoked."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = credentials.credentials
    bootstrap = services.settings.auth.bootstrap_token
    if bootstrap is not None and secrets.compare_digest(
        token.encode(), bootstrap.get_secret_value().encode()
    ):
        return BOOTSTRAP
    with services.db.session() as session:
        principal = find_token(session, token)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


def require(*roles: str) -> Callable[[Principal], Principal]:
    """A dependency admitting the given roles; ``admin`` is always admitted."""
    allowed = frozenset(roles) | {"admin"}

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role '{principal.role}' may not do this; needs one of: "
                + ", ".join(sorted(allowed)),
            )
        return principal

    check.roles = allowed  # type: ignore[attr-defined]  # read by the route-permission test
    return check


AdminDep = Annotated[Principal, Depends(require("admin"))]
