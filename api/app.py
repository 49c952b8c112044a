"""The application factory: the HTTP face of a process built by the composition root.

:func:`create_app` asks :func:`runtime.process.build_process` for the parts a process of
this role runs, runs them in the app's lifespan, and mounts the routers; routes reach the
parts through ``api.deps`` (``app.state.process``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError

from api import openapi
from api.deps import refuse_nul
from api.middleware import BodyLimit, HttpMetrics, install_security
from api.routes import (
    admin,
    availability,
    cameras,
    cases,
    console,
    events,
    evidence,
    gb28181,
    grids,
    incidents,
    internal,
    onvif,
    ops,
    subscriptions,
    webrtc,
)
from config.errors import XueliangError
from config.settings import Settings
from ingest.egress import EgressRefused
from runtime.process import ROLES, build_process
from runtime.services import Services
from storage.cases import CaseClosed
from storage.db import DatabaseError, connect_message
from storage.errors import ObjectNotFound, StorageError
from storage.evidence import EvidenceConflict
from storage.gb28181 import DeviceExists
from storage.incidents import BadCursor

__all__ = ["API_PREFIX", "ROLES", "create_app"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def create_app(settings: Settings, services: Services | None = None, role: str = "all") -> FastAPI:
    """Build the app; the lifespan migrates, checks storage and starts the workers.

    ``role``: ``all`` serves the API and runs cameras; ``api`` only serves the API (stateless,
    add as many as needed); ``worker`` only runs cameras (leased through the database) and
    serves the operations endpoints.
    """
    process = build_process(settings, services, role)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with process.running():
            yield

    app = FastAPI(
        title="Xueliang",
        version="0.1.0",
        description="Video surveillance integration: cameras, incidents with evidence clips, "
        "grids and cases for city grid-management platforms.",
        lifespan=lifespan,
    )
    app.state.process = process
    app.state.services = process.services
    _install_error_handlers(app)
    openapi.install(app)
    app.include_router(ops.router)
    app.include_router(console.router)
    app.include_router(internal.router)  # every role: processes ask each other (GB/T 28181)
    if process.serves_api:
        app.include_router(_api_router())
        app.include_router(cases.hooks)  # the grid platform's signed webhooks (no token)
    app.add_middleware(HttpMetrics, registry=process.services.registry)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.server.max_body_bytes,
        per_path={f"{API_PREFIX}/grids/import": settings.server.max_import_bytes},
    )
    install_security(app, settings)  # outermost: headers, CORS
    return app


def _api_router() -> APIRouter:
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(refuse_nul)])
    for module in (
        events,
        availability,  # before cameras: /cameras/availability is not a camera id
        cameras,
        onvif,
        gb28181,
        webrtc,
        incidents,
        evidence,
        grids,
        cases,
        subscriptions,
        admin,
    ):
        api.include_router(module.router)
    api.include_router(cases.reports)  # POST /incidents/{id}/report
    return api


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

    async def egress_refused(_: Request, err: Exception) -> JSONResponse:
        # Shaped like a validation error: the field that named the refused host.
        assert isinstance(err, EgressRefused)
        loc = ["body", *err.field.split(".")]
        detail = [{"loc": loc, "msg": str(err), "type": "egress_refused"}]
        return JSONResponse({"detail": detail}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ObjectNotFound, not_found)
    app.add_exception_handler(BadCursor, bad_request)
    app.add_exception_handler(CaseClosed, conflict)
    app.add_exception_handler(DeviceExists, conflict)
    app.add_exception_handler(EvidenceConflict, conflict)
    app.add_exception_handler(StorageError, unavailable)
    app.add_exception_handler(DatabaseError, unavailable)
    app.add_exception_handler(OperationalError, database_down)
    app.add_exception_handler(InterfaceError, database_down)
    app.add_exception_handler(EgressRefused, egress_refused)
    app.add_exception_handler(XueliangError, domain)
