"""Operations endpoints for orchestrators: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ServicesDep
from config.errors import XueliangError

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is not reachable."}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """The database and the object store are reachable."""
    checks = await asyncio.gather(
        asyncio.to_thread(_check, services.db.check),
        asyncio.to_thread(_check, services.objects.check),
    )
    result = {"database": checks[0], "storage": checks[1]}
    ready = all(v == "ok" for v in result.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": result},
        status_code=200 if ready else 503,
    )


def _check(fn: Callable[[], None]) -> str:
    try:
        fn()
    except XueliangError as err:
        return str(err)
    return "ok"


@router.get("/metrics", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(services.registry), media_type=CONTENT_TYPE_LATEST)
