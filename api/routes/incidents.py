"""Incidents: the queue operators review and the grid platform reads, with their evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.responses import RedirectResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from api.deps import ServicesDep, require
from api.schemas.incidents import (
    ClipRef,
    HistoryItem,
    IncidentOut,
    IncidentPage,
    IncidentStatus,
    IncidentType,
    ReviewIn,
    SnapshotRef,
)
from api.services import Services
from storage import incidents as repo
from storage.audit import audit
from storage.models import Incident
from storage.tokens import Principal

router = APIRouter(prefix="/incidents", tags=["incidents"])
Reader = Annotated[Principal, Depends(require("operator", "grid_platform"))]
Reviewer = Annotated[Principal, Depends(require("operator"))]


def incident_out(session: Session, row: Incident, with_history: bool = False) -> IncidentOut:
    base = f"/api/v1/incidents/{row.id}"
    clip = None
    if row.clip_state:
        archived = row.clip_state == "archived"
        clip = ClipRef(
            url=f"{base}/clip" if archived else None,
            sha256=row.clip_sha256,
            size=row.clip_size,
            duration_s=row.clip_duration_s,
            state=row.clip_state,
            error=row.clip_error,
        )
    history = (
        [
            HistoryItem(at=h.at, actor=h.actor, action=h.action, note=h.note)
            for h in repo.history(session, row.id)
        ]
        if with_history
        else []
    )
    return IncidentOut(
        id=row.id,
        camera_id=row.camera_id,
        grid_code=row.grid_code,
        type=row.type,
        status=row.status,
        started_at=row.started_at,
        ended_at=row.ended_at,
        peak_persons=row.peak_persons,
        snapshot=SnapshotRef(url=f"{base}/snapshot") if row.snapshot_key else None,
        clip=clip,
        history=history,
    )


@router.get("", response_model=IncidentPage)
def list_incidents(
    services: ServicesDep,
    _: Reader,
    camera_id: str | None = None,
    grid_code: str | None = None,
    type: IncidentType | None = None,
    status: IncidentStatus | None = None,
    since: Annotated[str | None, Query(description="RFC 3339; started at or after.")] = None,
    until: Annotated[str | None, Query(description="RFC 3339; started before.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> IncidentPage:
    """Newest first; follow ``next_cursor`` for older pages."""
    f = repo.IncidentFilter(
        camera_id=camera_id,
        grid_codes=(grid_code,) if grid_code else None,
        type=type,
        status=status,
        since=_time("since", since),
        until=_time("until", until),
    )
    with services.db.session() as session:
        rows, next_cursor = repo.list_incidents(session, f, limit, cursor)
        items = [incident_out(session, r) for r in rows]
    return IncidentPage(items=items, next_cursor=next_cursor)


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            [{"loc": ["query", name], "msg": "not an RFC 3339 time", "type": "value_error"}],
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _get(session: Session, incident_id: str) -> Incident:
    row = session.get(Incident, incident_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no incident {incident_id}")
    return row


@router.get("/{incident_id}", response_model=IncidentOut)
def get_incident(incident_id: str, services: ServicesDep, _: Reader) -> IncidentOut:
    with services.db.session() as session:
        return incident_out(session, _get(session, incident_id), with_history=True)


@router.post("/{incident_id}/review", response_model=IncidentOut)
def review_incident(
    incident_id: str, body: ReviewIn, services: ServicesDep, who: Reviewer
) -> IncidentOut:
    with services.tx() as session:
        _get(session, incident_id)
        try:
            row = repo.review(session, incident_id, body.action, who.name, body.note)
        except repo.ReviewConflict as err:
            raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None
        assert row is not None
        audit(session, who.name, body.action, "incident", incident_id)
        return incident_out(session, row, with_history=True)


EVIDENCE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "The bytes (local store)."},
    307: {"description": "Redirect to a short-lived presigned URL (S3)."},
    404: {"description": "No such incident, or no evidence archived yet."},
}


@router.get("/{incident_id}/clip", response_class=Response, responses=EVIDENCE_RESPONSES)
def get_clip(incident_id: str, services: ServicesDep, who: Reader) -> Response:
    """The clip (MP4, faststart). Every access is audited."""
    return _evidence(services, who, incident_id, "clip")


@router.get("/{incident_id}/snapshot", response_class=Response, responses=EVIDENCE_RESPONSES)
def get_snapshot(incident_id: str, services: ServicesDep, who: Reader) -> Response:
    """The snapshot (JPEG) of the incident's peak frame. Every access is audited."""
    return _evidence(services, who, incident_id, "snapshot")


def _evidence(services: Services, who: Principal, incident_id: str, kind: str) -> Response:
    with services.tx() as session:
        row = _get(session, incident_id)
        key = row.clip_key if kind == "clip" else row.snapshot_key
        if key is None or (kind == "clip" and row.clip_state != "archived"):
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"the {kind} of incident {incident_id} is not archived yet"
                + (f" (clip state: {row.clip_state})" if row.clip_state else ""),
            )
        audit(session, who.name, "download", kind, incident_id, {"key": key})
    ttl = timedelta(seconds=services.settings.storage.presign_s)
    url = services.objects.presigned_get_url(key, ttl)
    if url is not None:
        return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    stream = services.objects.open(key)
    return StreamingResponse(
        stream,
        media_type=stream.info.content_type,
        headers={"Content-Length": str(stream.info.size), "X-Content-SHA256": stream.info.sha256},
        background=BackgroundTask(stream.close),
    )
