"""Incidents: the queue operators review and the grid platform reads, with their evidence."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response, status
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from api.deps import ServicesDep, require
from api.openapi import BAD_CURSOR, error
from api.schemas.incidents import (
    IncidentOut,
    IncidentPage,
    IncidentStatus,
    IncidentType,
    ReviewIn,
)
from api.scope import check_visible, visible_grid_codes
from runtime.services import Services
from storage import incidents as repo
from storage.audit import audit
from storage.cases import case_ids_for
from storage.grids import subtree_codes
from storage.models import Incident, IncidentAction
from storage.objects import ObjectStream
from storage.tokens import Principal

router = APIRouter(prefix="/incidents", tags=["incidents"])
Reader = Annotated[Principal, Depends(require("operator", "grid_platform"))]
Reviewer = Annotated[Principal, Depends(require("operator"))]


def incident_out(session: Session, row: Incident) -> IncidentOut:
    """One incident with its history and cases (a list page builds its items with
    :func:`_fields`, without history)."""
    case_ids = case_ids_for(session, [row.id])[row.id]
    return IncidentOut.model_validate(_fields(row, case_ids, repo.history(session, row.id)))


def _fields(row: Incident, case_ids: list[str], history: list[IncidentAction]) -> dict[str, Any]:
    """The body of an incident as plain data, validated by the caller in one pydantic call
    (building the nested models one by one cost about a third of a list page's CPU)."""
    base = f"/api/v1/incidents/{row.id}"
    clip = None
    if row.clip_state:
        clip = {
            "url": f"{base}/clip" if row.clip_state == "archived" else None,
            "sha256": row.clip_sha256,
            "size": row.clip_size,
            "duration_s": row.clip_duration_s,
            "state": row.clip_state,
            "error": row.clip_error,
        }
    return repo.incident_fields(row) | {
        "snapshot": {"url": f"{base}/snapshot"} if row.snapshot_key else None,
        "clip": clip,
        "case_ids": case_ids,
        "history": [
            {"at": h.at, "actor": h.actor, "action": h.action, "note": h.note} for h in history
        ],
    }


# The reading routes are ``async`` and run their database work in one worker-thread call:
# with ``def`` routes and ``def`` dependencies FastAPI hopped to the thread pool about five
# times per request (the route, its response validation and each dependency).


@router.get("", response_model=IncidentPage, responses={400: BAD_CURSOR})
async def list_incidents(
    services: ServicesDep,
    who: Reader,
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
        type=type,
        status=status,
        since=_time("since", since),
        until=_time("until", until),
    )
    subtrees = tuple(code for code in (grid_code, who.grid_scope) if code)
    return await run_in_threadpool(_page, services, f, subtrees, limit, cursor)


def _page(
    services: Services,
    f: repo.IncidentFilter,
    subtrees: tuple[str, ...],
    limit: int,
    cursor: str | None,
) -> IncidentPage:
    """A page of incidents whose grid lies in every one of ``subtrees`` (a requested grid,
    the caller's scope)."""
    with services.db.session() as session:
        if subtrees:
            codes = set.intersection(*(set(subtree_codes(session, c)) for c in subtrees))
            f = replace(f, grid_codes=codes)
        rows, next_cursor = repo.list_incidents(session, f, limit, cursor)
        cases = case_ids_for(session, [r.id for r in rows])
        items = [_fields(r, cases[r.id], []) for r in rows]
    return IncidentPage.model_validate({"items": items, "next_cursor": next_cursor})


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["query", name], "msg": "not an RFC 3339 time", "type": "value_error"}],
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _get(session: Session, incident_id: str, who: Principal) -> Incident:
    """The incident, if it exists and lies in the caller's grid scope (else 404: a scoped
    token must not learn what exists elsewhere)."""
    row = session.get(Incident, incident_id)
    not_found = f"no incident {incident_id}"
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, not_found)
    check_visible(visible_grid_codes(session, who), row.grid_code, not_found)
    return row


@router.get("/{incident_id}", response_model=IncidentOut)
async def get_incident(incident_id: str, services: ServicesDep, who: Reader) -> IncidentOut:
    return await run_in_threadpool(_one, services, incident_id, who)


def _one(services: Services, incident_id: str, who: Principal) -> IncidentOut:
    with services.db.session() as session:
        return incident_out(session, _get(session, incident_id, who))


@router.post(
    "/{incident_id}/review",
    response_model=IncidentOut,
    responses={409: error("The action does not apply to the incident's status.")},
)
def review_incident(
    incident_id: str, body: ReviewIn, services: ServicesDep, who: Reviewer
) -> IncidentOut:
    with services.tx() as session:
        _get(session, incident_id, who)
        try:
            row = repo.review(session, incident_id, body.action, who.name, body.note)
        except repo.ReviewConflict as err:
            raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None
        assert row is not None
        audit(session, who.name, body.action, "incident", incident_id)
        return incident_out(session, row)


EVIDENCE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "The bytes (local store)."},
    206: {"description": "The requested byte range (local store; `Range: bytes=a-b`)."},
    307: {"description": "Redirect to a short-lived presigned URL (S3, which serves ranges)."},
    404: {"description": "No such incident, or no evidence archived yet."},
    416: {"description": "The range lies outside the object."},
}


@router.get("/{incident_id}/clip", response_class=Response, responses=EVIDENCE_RESPONSES)
def get_clip(
    incident_id: str,
    services: ServicesDep,
    who: Reader,
    range_: Annotated[str | None, Header(alias="range")] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    """The clip (MP4, faststart), seekable with Range requests. Every access is audited."""
    return _evidence(services, who, incident_id, "clip", _range_if(range_, if_range))


@router.get("/{incident_id}/snapshot", response_class=Response, responses=EVIDENCE_RESPONSES)
def get_snapshot(
    incident_id: str,
    services: ServicesDep,
    who: Reader,
    range_: Annotated[str | None, Header(alias="range")] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    """The snapshot (JPEG) of the incident's peak frame. Every access is audited."""
    return _evidence(services, who, incident_id, "snapshot", _range_if(range_, if_range))


class EvidenceLink(BaseModel):
    url: str = Field(
        description="Where to GET the bytes: a presigned object-store URL (no token; it "
        "expires), or this API's own evidence path (send the bearer token)."
    )
    expires_at: datetime | None = Field(
        description="When the presigned URL stops working; null for the API's own path."
    )


@router.get("/{incident_id}/{kind}/link", response_model=EvidenceLink)
def get_evidence_link(
    incident_id: str,
    kind: Literal["clip", "snapshot"],
    services: ServicesDep,
    who: Reader,
) -> EvidenceLink:
    """Where a browser loads the clip or snapshot from directly (audited as ``link``).

    With an object store that presigns (S3), following the 307 of ``/clip`` from a web page
    fails: a browser sends no ``Origin`` on a same-origin request redirected to another
    origin, so the store answers without CORS headers. A ``<video>`` or ``<img>`` given
    the presigned URL itself loads it without CORS (the console does that).
    """
    key = _audited_key(services, who, incident_id, kind, None, action="link")
    ttl = timedelta(seconds=services.settings.storage.presign_s)
    expires_at = datetime.now(UTC) + ttl
    url = services.objects.presigned_get_url(key, ttl)
    if url is None:
        return EvidenceLink(url=f"/api/v1/incidents/{incident_id}/{kind}", expires_at=None)
    return EvidenceLink(url=url, expires_at=expires_at)


@dataclass(frozen=True)
class _RangeAsk:
    """A ``Range`` header and the ``If-Range`` validator it is conditional on."""

    range: str
    if_range: str | None


def _range_if(range_: str | None, if_range: str | None) -> _RangeAsk | None:
    return _RangeAsk(range_, if_range) if range_ else None


def _evidence(
    services: Services,
    who: Principal,
    incident_id: str,
    kind: str,
    ask: _RangeAsk | None = None,
) -> Response:
    key = _audited_key(services, who, incident_id, kind, ask)
    ttl = timedelta(seconds=services.settings.storage.presign_s)
    url = services.objects.presigned_get_url(key, ttl)
    if url is not None:
        return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    return _local_bytes(services.objects.open(key), ask)


def _audited_key(
    services: Services,
    who: Principal,
    incident_id: str,
    kind: str,
    ask: _RangeAsk | None,
    action: str = "download",
) -> str:
    """The object key of the evidence; the access is audited (each range request too)."""
    with services.tx() as session:
        row = _get(session, incident_id, who)
        key = row.clip_key if kind == "clip" else row.snapshot_key
        if key is None or (kind == "clip" and row.clip_state != "archived"):
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"the {kind} of incident {incident_id} is not archived yet"
                + (f" (clip state: {row.clip_state})" if row.clip_state else ""),
            )
        detail = {"key": key, "range": ask.range} if ask else {"key": key}
        audit(session, who.name, action, kind, incident_id, detail)
    return key


def _local_bytes(stream: ObjectStream, ask: _RangeAsk | None) -> Response:
    """The whole object (200) or the asked byte range (206, 416), streamed."""
    info = stream.info
    etag = f'"{info.sha256}"' if info.sha256 else None
    headers = {"Accept-Ranges": "bytes", "X-Content-SHA256": info.sha256}
    if etag:
        headers["ETag"] = etag
    span = _byte_range(ask, info.size, etag)
    if span == _UNSATISFIABLE:
        stream.close()
        return JSONResponse(
            {"detail": f"the range lies outside the object: it has {info.size} bytes"},
            status_code=status.HTTP_416_RANGE_NOT_SATISFIABLE,
            headers={**headers, "Content-Range": f"bytes */{info.size}"},
        )
    body: Iterator[bytes] = stream
    code = status.HTTP_200_OK
    headers["Content-Length"] = str(info.size)
    if span is not None:
        start, end = span
        body, code = _slice(stream, start, end), status.HTTP_206_PARTIAL_CONTENT
        headers["Content-Length"] = str(end - start + 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    return StreamingResponse(
        body,
        status_code=code,
        media_type=info.content_type,
        headers=headers,
        background=BackgroundTask(stream.close),
    )


_UNSATISFIABLE = (-1, -1)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _byte_range(ask: _RangeAsk | None, size: int, etag: str | None) -> tuple[int, int] | None:
    """The inclusive byte span a ``Range`` header asks for (RFC 9110 14.2).

    None means "send everything": no or unparsable header, several ranges (may be
    ignored; media elements ask for one), or an ``If-Range`` that no longer matches.
    :data:`_UNSATISFIABLE` means 416.
    """
    if ask is None or (ask.if_range is not None and ask.if_range != etag):
        return None
    found = _RANGE.fullmatch(ask.range.strip())
    if found is None or found.groups() == ("", ""):
        return None
    first, last = found.groups()
    if not first:  # a suffix: the last N bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else _UNSATISFIABLE
    start = int(first)
    if start >= size:
        return _UNSATISFIABLE
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if end >= start else None


def _slice(chunks: Iterator[bytes], start: int, end: int) -> Iterator[bytes]:
    """Bytes ``start..end`` (inclusive) of a chunk stream.

    The object store streams from the beginning, so the bytes before ``start`` are read
    and dropped: clips are a few MB and the local store serves small installations.
    """
    pos = 0
    for chunk in chunks:
        lo, hi = pos, pos + len(chunk)
        pos = hi
        if hi <= start:
            continue
        yield chunk[max(0, start - lo) : min(len(chunk), end + 1 - lo)]
        if hi > end:
            break
