"""The durable event log: every change the grid platform can see, in strict ``seq`` order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Event, utcnow

#: Held on PostgreSQL by a committing transaction while its events get their ``seq``
#: (a deferred trigger, migration 0016), so that ``seq`` values become visible in the
#: order they were assigned: a reader polling ``after=SEQ`` never sees 12 committed before
#: 11 and then skips 11 forever. Before the commit an event's ``seq`` is provisional
#: (negative): the :class:`EventRecord` an append returns carries it on PostgreSQL.
EVENT_APPEND_LOCK = 0x58554C02

#: Every event type, defined once: the API's schemas and the subscription filter use it.
EventType = Literal[
    "incident.created",
    "incident.updated",
    "incident.clip_archived",
    "incident.linked",
    "case.created",
    "case.transitioned",
    "case.overdue",
    "camera.online",
    "camera.offline",
    "camera.degraded",
    "camera.restored",
    "gb28181.device.online",
    "gb28181.device.offline",
    "gb28181.catalog",
    "audit.anchor",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


@dataclass(frozen=True)
class EventRecord:
    seq: int
    type: str
    at: datetime
    data: dict[str, Any]
    grid_code: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "at": self.at.isoformat(), "data": self.data}


def append_event(
    session: Session, type_: str, data: dict[str, Any], grid_code: str | None = None
) -> EventRecord:
    """Append one event in the caller's transaction (it commits with the change it reports)."""
    return append_events(session, [(type_, data, grid_code)])[0]


def append_events(
    session: Session, events: Sequence[tuple[str, dict[str, Any], str | None]]
) -> list[EventRecord]:
    """Append several events ``(type, data, grid_code)`` in the caller's transaction, in
    order, in one INSERT (a district's cameras going offline together are one transaction
    per worker, not one per camera: tests/scale)."""
    for type_, _data, _grid in events:
        if type_ not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type_!r}")
    if not events:
        return []
    at = utcnow()
    rows = [Event(type=t, at=at, data=d, grid_code=g) for t, d, g in events]
    session.add_all(rows)
    session.flush()
    return [_record(row) for row in rows]


def list_events(
    session: Session, after: int = 0, limit: int = 100, types: Sequence[str] | None = None
) -> list[EventRecord]:
    # Columns, not ORM entities: a subscriber catching up reads thousands of rows, and
    # building and tracking an entity per row was a fifth of the API node's CPU in a
    # district's power cut (tests/scale, py-spy).
    query = (
        select(Event.seq, Event.type, Event.at, Event.data, Event.grid_code)
        .where(Event.seq > after)
        .order_by(Event.seq)
        .limit(limit)
    )
    if types:
        query = query.where(Event.type.in_(types))
    return [EventRecord(*row) for row in session.execute(query)]


def last_seq(session: Session) -> int:
    return int(session.scalar(select(func.coalesce(func.max(Event.seq), 0))) or 0)


def _record(row: Event) -> EventRecord:
    return EventRecord(
        seq=row.seq, type=row.type, at=row.at, data=row.data, grid_code=row.grid_code
    )
