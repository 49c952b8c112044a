"""The durable event log: polling with ``after`` and Server-Sent Events resumable by id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.deps import ServicesDep, require
from runtime.services import Services
from storage.events import EventRecord, last_seq, list_events
from storage.tokens import Principal

router = APIRouter(prefix="/events", tags=["events"])
Reader = Annotated[Principal, Depends(require("grid_platform", "operator"))]

#: Sequence numbers are 64-bit integers in the database; a larger one names no event.
MAX_SEQ = 2**63 - 1
POLL_S = 1.0  # the fallback: other processes' events ring the hub on PostgreSQL (LISTEN)
HEARTBEAT_S = 15.0
BATCH = 200


class EventOut(BaseModel):
    seq: int
    type: str
    at: datetime
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    last_seq: int = Field(description="Pass as `after` to get the next page.")


def _out(e: EventRecord) -> EventOut:
    return EventOut(seq=e.seq, type=e.type, at=e.at, data=e.data)


@router.get("", response_model=EventPage)
def get_events(
    services: ServicesDep,
    _: Reader,
    after: Annotated[
        int, Query(ge=0, le=MAX_SEQ, description="Return events with seq > after.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    type: Annotated[list[str] | None, Query(description="Only these event types.")] = None,
) -> EventPage:
    with services.db.session() as session:
        items = list_events(session, after=after, limit=limit, types=type)
    # The cursor for the next call: the last seq returned (``after`` when nothing is new).
    last = items[-1].seq if items else after
    return EventPage(items=[_out(e) for e in items], last_seq=last)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}},
)
async def stream_events(
    request: Request,
    services: ServicesDep,
    _: Reader,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_SEQ)] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="Start after this seq.")
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events; reconnect with ``Last-Event-ID`` to resume without gaps."""
    start = last_event_id if last_event_id is not None else after
    if start is None:
        start = await asyncio.to_thread(_last_seq, services)
    return StreamingResponse(
        _sse(request, services, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _last_seq(services: Services) -> int:
    with services.db.session() as session:
        return last_seq(session)


def _page(services: Services, after: int) -> list[EventRecord]:
    with services.db.session() as session:
        return list_events(session, after=after, limit=BATCH)


async def _sse(request: Request, services: Services, after: int) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    idle = 0.0
    while not await request.is_disconnected():
        bell = services.hub.bell()
        events = await asyncio.to_thread(_page, services, after)
        for e in events:
            yield f"id: {e.seq}\nevent: {e.type}\ndata: {json.dumps(e.as_json())}\n\n"
            after = e.seq
        if len(events) == BATCH:
            continue
        if idle >= HEARTBEAT_S:
            yield ": keep-alive\n\n"
            idle = 0.0
        await services.hub.wait(POLL_S, bell)
        idle += POLL_S
