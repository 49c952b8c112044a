"""FastAPI dependencies: the services of this app and the caller's identity."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.ratelimit import client_key, count_failure, failure_limit, too_many
from runtime.live import LiveRouter
from runtime.process import CameraControl, Process
from runtime.services import Services
from storage.ratelimit import retry_after
from storage.tokens import Principal, Refusal, authenticate

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer xl_…`")

BOOTSTRAP = Principal(token_id="bootstrap", name="bootstrap-admin", role="admin")


# ``async`` although nothing here is awaited: these only read memory, never block, and a
# ``def`` dependency costs a hop to the thread pool on every request (issue #9).
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_cameras(request: Request) -> CameraControl:
    """The cameras this process runs (a no-op control in an API-only process)."""
    process: Process = request.app.state.process
    return process.camera_control


async def get_live(request: Request) -> LiveRouter:
    """Live view: served here when the camera runs here, else forwarded to its worker."""
    process: Process = request.app.state.process
    return process.live_router


CamerasDep = Annotated[CameraControl, Depends(get_cameras)]
LiveDep = Annotated[LiveRouter, Depends(get_live)]


async def get_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from a bearer token; 401 when missing, unknown, revoked or expired, 429
    when this address sent too many wrong tokens (docs/security.md)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    client = client_key(request.scope)
    found = await run_in_threadpool(_authenticate, services, credentials.credentials, client)
    if isinstance(found, Principal):
        return found
    if isinstance(found, float):
        raise too_many(found, "too many requests with a wrong token from this address")
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        found.detail,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _authenticate(services: Services, token: str, client: str) -> Principal | Refusal | float:
    """The principal, the refusal (counted), or the seconds this address must wait.

    Looked up on every request, never cached: a revoked token is refused at once on every
    process. The limit comes first, so that once it is reached even the right token gets
    429 from that address: the answers must not confirm a guess.
    """
    limit = failure_limit(services.settings)
    now = time.time()
    with services.db.session() as session:
        wait = retry_after(session, limit, client, now)
        if wait > 0:
            return wait
        if _is_bootstrap(services, token):
            return BOOTSTRAP
        found = authenticate(session, token)
    if isinstance(found, Refusal):
        count_failure(services.db, limit, client, now)
    return found


def _is_bootstrap(services: Services, token: str) -> bool:
    bootstrap = services.settings.auth.bootstrap_token
    return bootstrap is not None and secrets.compare_digest(
        token.encode(), bootstrap.get_secret_value().encode()
    )


def require(*roles: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting the given roles; ``admin`` is always admitted (no I/O: async)."""
    allowed = frozenset(roles) | {"admin"}

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
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


async def refuse_nul(request: Request) -> None:
    """422 for a NUL character in a path or query parameter or in a JSON string.

    No name, id, code or URL of this API has one, and PostgreSQL cannot store or even
    compare text with one (SQLite would): refused here, alike on both, naming the field.
    """
    errors = [_nul("path", name) for name, v in request.path_params.items() if "\x00" in str(v)]
    route = request.scope.get("route")
    declared = _query_names(route.dependant) if isinstance(route, APIRoute) else set()
    errors += [
        _nul("query", name)
        for name, v in request.query_params.multi_items()
        if name in declared and "\x00" in v
    ]
    if "json" in request.headers.get("content-type", ""):
        body = await request.body()  # read once: FastAPI reuses it
        # A JSON text can only carry NUL escaped; look closer only when it may.
        if b"\\u0000" in body:
            with contextlib.suppress(ValueError, RecursionError):
                where = _nul_in(json.loads(body))
                if where is not None:
                    errors.append(_nul("body", *where))
    if errors:
        raise RequestValidationError(errors)


def _nul(*loc: str | int) -> dict[str, object]:
    return {"loc": list(loc), "msg": "must not contain a NUL character", "type": "value_error"}


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _nul_in(value: object) -> list[str | int] | None:
    """Where the first string with a NUL lies in a JSON value (keys count too), or None."""
    if isinstance(value, str):
        return [] if "\x00" in value else None
    items: list[tuple[str | int, object]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return [key]
            items.append((key, item))
    elif isinstance(value, list):
        items = list(enumerate(value))
    for key, item in items:
        inner = _nul_in(item)
        if inner is not None:
            return [key, *inner]
    return None
