"""The availability report: how much of a period each camera, a grid's or all, was online,
and 完好 (online with a usable picture); the same per grid; the cameras not 完好 now.

Mounted before the cameras router: ``/cameras/availability`` and ``/cameras/health`` are
these, not cameras.
Whole days come from the daily rows retention rolls up, the rest from the transitions
(``storage.availability``), so a city of 20,000 cameras is answered in the database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from starlette.concurrency import run_in_threadpool

from api.deps import ServicesDep, require
from api.openapi import BAD_CURSOR
from api.schemas.availability import (
    AvailabilityReport,
    CameraAvailability,
    CameraHealth,
    CameraHealthList,
    GridAvailability,
    GridAvailabilityReport,
)
from api.schemas.cameras import QualityProblemOut
from api.scope import visible_grid_codes
from runtime.services import Services
from storage import availability as repo
from storage import cameras as camera_repo
from storage.models import Camera, CameraQuality, CameraStatus
from storage.tokens import Principal

router = APIRouter(prefix="/cameras", tags=["cameras"])
Viewer = Annotated[Principal, Depends(require("integrator", "operator", "grid_platform"))]
Since = Annotated[datetime | None, Query(description="Default: 24 h before `until`.")]
Until = Annotated[datetime | None, Query(description="Default: now.")]


@router.get("/availability", response_model=AvailabilityReport)
def availability(
    services: ServicesDep,
    who: Viewer,
    since: Since = None,
    until: Until = None,
    grid_code: Annotated[
        str | None, Query(description="Only the cameras of this grid and the grids below it.")
    ] = None,
    cameras: Annotated[
        bool, Query(description="false: the totals only (`cameras` is empty).")
    ] = True,
    camera_id: Annotated[str | None, Query(max_length=64, description="Only this camera.")] = None,
) -> AvailabilityReport:
    """Share of time each camera was online over a period, and 完好 (online and its
    picture not degraded), per camera and in total."""
    since, until = _period(since, until)
    with services.db.session() as session:
        found = repo.report(
            session,
            since,
            until,
            grid_code=grid_code,
            camera_ids=[camera_id] if camera_id is not None else None,
            per_camera=cameras,
            visible=visible_grid_codes(session, who),
        )
    return AvailabilityReport(
        since=since,
        until=until,
        cameras=[
            CameraAvailability(
                camera_id=c.camera_id,
                name=c.name,
                online_s=c.online_s,
                ratio=c.ratio,
                good_s=c.good_s,
                good_ratio=c.good_ratio,
            )
            for c in found.cameras
        ],
        camera_count=found.camera_count,
        total_ratio=found.total_ratio,
        cameras_at_or_above_98=found.at_or_above_98,
        good_ratio=found.good_ratio,
        cameras_good_at_or_above_98=found.good_at_or_above_98,
    )


@router.get("/availability/grids", response_model=GridAvailabilityReport)
def availability_per_grid(
    services: ServicesDep,
    who: Viewer,
    since: Since = None,
    until: Until = None,
    grid_code: Annotated[
        str | None,
        Query(max_length=64, description="Report the grids right below this one (none: the top)."),
    ] = None,
) -> GridAvailabilityReport:
    """Online rate and 完好率 of each grid right below `grid_code`, each over its whole
    subtree: a health page's table and map colours, in one query."""
    since, until = _period(since, until)
    with services.db.session() as session:
        found = repo.grid_report(
            session,
            since,
            until,
            parent_code=grid_code,
            visible=visible_grid_codes(session, who),
        )
    return GridAvailabilityReport(
        since=since,
        until=until,
        parent_code=grid_code,
        items=[
            GridAvailability(
                grid_code=g.code,
                name=g.name,
                level=g.level,
                camera_count=g.report.camera_count,
                total_ratio=g.report.total_ratio,
                good_ratio=g.report.good_ratio,
                cameras_at_or_above_98=g.report.at_or_above_98,
                cameras_good_at_or_above_98=g.report.good_at_or_above_98,
            )
            for g in found
        ],
    )


@router.get("/health", response_model=CameraHealthList, responses={400: BAD_CURSOR})
async def cameras_not_good(
    services: ServicesDep,
    who: Viewer,
    grid_code: Annotated[
        str | None, Query(max_length=64, description="This grid and every grid below it.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="A `next_cursor` of this list.")] = None,
) -> CameraHealthList:
    """The enabled cameras that are not 完好 now, by name: not online (with the stream's
    error), or online with a degraded picture (with its problems)."""
    f = camera_repo.CameraFilter(grid_code=grid_code, scope=who.grid_scope, problem=True)
    return await run_in_threadpool(_health_page, services, f, limit, cursor)


def _health_page(
    services: Services, f: camera_repo.CameraFilter, limit: int, cursor: str | None
) -> CameraHealthList:
    with services.db.session() as session:
        rows, next_cursor = camera_repo.page_cameras(session, f, limit, cursor, "name")
        health = camera_repo.health_of(session, [r.id for r in rows])
        references = camera_repo.reference_times(session, [r.id for r in rows])
        items = [_health(r, *health[r.id], references.get(r.id)) for r in rows]
    return CameraHealthList(items=items, next_cursor=next_cursor)


def _health(
    camera: Camera,
    status_row: CameraStatus | None,
    picture: CameraQuality | None,
    reference_at: datetime | None,
) -> CameraHealth:
    state = status_row.state if status_row is not None else "connecting"
    return CameraHealth(
        camera_id=camera.id,
        name=camera.name,
        grid_code=camera.grid_code,
        state=state if state in ("online", "offline") else "connecting",
        since=status_row.since if status_row is not None else None,
        last_error=status_row.last_error if status_row is not None else None,
        quality=picture.state if picture is not None else "unknown",
        quality_since=picture.since if picture is not None else None,
        problems=[
            QualityProblemOut.model_validate(p) for p in (picture.problems if picture else [])
        ],
        reference_at=reference_at,
    )


def _period(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    until = _aware(until) if until else datetime.now(UTC)
    since = _aware(since) if since else until - timedelta(days=1)
    if since >= until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since must be before until")
    return since, until


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)
