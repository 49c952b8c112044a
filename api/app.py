"""The application factory: one composition root wiring settings to adapters and routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError

from api import openapi
from api.archiver import Archiver
from api.delivery import DeliveryWorker
from api.deps import refuse_nul
from api.metrics import SpoolCollector
from api.middleware import BodyLimit, HttpMetrics, install_security
from api.retention import RetentionWorker
from api.routes import (
    admin,
    cameras,
    cases,
    console,
    events,
    grids,
    incidents,
    onvif,
    ops,
    subscriptions,
    webrtc,
)
from api.runtime import CameraRuntime, build_spool
from api.services import Services
from config.errors import XueliangError
from config.settings import Settings
from ingest.onvif import warm_up as warm_onvif
from storage.cases import CaseClosed
from storage.db import DatabaseError, connect_message
from storage.errors import ObjectNotFound, StorageError
from storage.incidents import BadCursor

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


class Worker(Protocol):
    async def run(self) -> None: ...


ROLES = ("all", "api", "worker")


def create_app(settings: Settings, services: Services | None = None, role: str = "all") -> FastAPI:
    """Build the app; the lifespan migrates, checks storage and starts the workers.

    ``role``: ``all`` serves the API and runs cameras; ``api`` only serves the API (stateless,
    add as many as needed); ``worker`` only runs cameras (leased through the database) and
    serves the operations endpoints.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    services = services or Services.from_settings(settings)
    run_cameras = role in ("all", "worker")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.hub.bind(asyncio.get_running_loop())
        await asyncio.to_thread(services.start)
        # Parsing the ONVIF WSDLs takes seconds: do it now, not in the first request.
        warm = asyncio.create_task(warm_onvif(), name="onvif-warm-up")
        archiver = Archiver(services, build_spool(services))
        services.registry.register(SpoolCollector(archiver.spool.depth))
        workers: list[Worker] = [DeliveryWorker(services), RetentionWorker(services)]
        app.state.runtime = None
        if run_cameras:
            # The spool lives on the host that records; only camera workers have one.
            workers.append(archiver)
            app.state.runtime = CameraRuntime(services, archiver, role)
            workers.append(app.state.runtime)
        tasks = [asyncio.create_task(w.run(), name=type(w).__name__) for w in workers]
        try:
            yield
        finally:
            for task in [*tasks, warm]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            services.close()

    app = FastAPI(
        title="Xueliang",
        version="0.1.0",
        description="Video surveillance integration: cameras, incidents with evidence clips, "
        "grids and cases for city grid-management platforms.",
        lifespan=lifespan,
    )
    app.state.services = services
    _install_error_handlers(app)
    openapi.install(app)
    app.include_router(ops.router)
    app.include_router(console.router)
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(refuse_nul)])
    api.include_router(events.router)
    api.include_router(cameras.router)
    api.include_router(onvif.router)
    api.include_router(webrtc.router)
    api.include_router(incidents.router)
    api.include_router(grids.router)
    api.include_router(cases.router)
    api.include_router(subscriptions.router)
    api.include_router(admin.router)
    if role != "worker":
        app.include_router(api)
    app.add_middleware(HttpMetrics, registry=services.registry)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.server.max_body_bytes,
        per_path={f"{API_PREFIX}/grids/import": settings.server.max_import_bytes},
    )
    install_security(app, settings, API_PREFIX)  # outermost: headers, CORS, rate limits
    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Domain errors become HTTP answers here, not in each route."""

    async def not_found(_: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=404)

    async def unavailable(_: Request, err: Exception) -> JSONResponse:
        log.warning("dependency unavailable: %s", err)
        return JSONResponse({"detail": str(err)}, status_code=503)

    async def database_down(request: Request, err: Exception) -> JSONResponse:
        # The database went away mid-request (restart, failover, network): say so and let
        # the client retry, as the OpenAPI document promises (503), rather than a bare 500.
        services: Services = request.app.state.services
        log.warning("database unavailable: %s", connect_message(services.db.url, err))
        detail = "the database is unavailable; retry in a few seconds"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})

    async def invalid(_: Request, err: Exception) -> JSONResponse:
        # FastAPI echoes the rejected input; it may be a camera URL with its password.
        assert isinstance(err, RequestValidationError)
        errors = [{k: v for k, v in e.items() if k not in ("input", "ctx")} for e in err.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    async def conflict(_: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=409)

    async def bad_request(_: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=400)

    async def domain(_: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ObjectNotFound, not_found)
    app.add_exception_handler(BadCursor, bad_request)
    app.add_exception_handler(CaseClosed, conflict)
    app.add_exception_handler(StorageError, unavailable)
    app.add_exception_handler(DatabaseError, unavailable)
    app.add_exception_handler(OperationalError, database_down)
    app.add_exception_handler(InterfaceError, database_down)
    app.add_exception_handler(XueliangError, domain)
