"""The availability report: how much of a period each camera, a grid's or all, was online.

Mounted before the cameras router: ``/cameras/availability`` is this report, not a camera.
Whole days come from the daily rows retention rolls up, the rest from the transitions
(``storage.availability``), so a city of 20,000 cameras is answered in the database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from api.deps import ServicesDep, require
from api.schemas.availability import AvailabilityReport, CameraAvailability
from api.scope import visible_grid_codes
from storage import availability as repo
from storage.tokens import Principal

router = APIRouter(prefix="/cameras", tags=["cameras"])
Viewer = Annotated[Principal, Depends(require("integrator", "operator", "grid_platform"))]


@router.get("/availability", response_model=AvailabilityReport)
def availability(
    services: ServicesDep,
    who: Viewer,
    since: Annotated[datetime | None, Query(description="Default: 24 h before `until`.")] = None,
    until: Annotated[datetime | None, Query(description="Default: now.")] = None,
    grid_code: Annotated[
        str | None, Query(description="Only the cameras of this grid and the grids below it.")
    ] = None,
    cameras: Annotated[
        bool, Query(description="false: the totals only (`cameras` is empty).")
    ] = True,
    camera_id: Annotated[str | None, Query(max_length=64, description="Only this camera.")] = None,
) -> AvailabilityReport:
    """Share of time each camera was online over a period, and in total."""
    until = _aware(until) if until else datetime.now(UTC)
    since = _aware(since) if since else until - timedelta(days=1)
    if since >= until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since must be before until")
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
                camera_id=c.camera_id, name=c.name, online_s=c.online_s, ratio=c.ratio
            )
            for c in found.cameras
        ],
        camera_count=found.camera_count,
        total_ratio=found.total_ratio,
        cameras_at_or_above_98=found.at_or_above_98,
    )


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)
