"""The durable event log: every change the grid platform can see, in strict ``seq`` order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from storage.models import Event, utcnow

#: Held for the rest of the appending transaction on PostgreSQL, so that ``seq`` values
#: become visible in the order they were assigned: a reader polling ``after=SEQ`` never
#: sees 12 committed before 11 and then skips 11 forever.
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
    "gb28181.device.online",
    "gb28181.device.offline",
    "gb28181.catalog",
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
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENT_APPEND_LOCK})
    row = Event(type=type_, at=utcnow(), data=data, grid_code=grid_code)
    session.add(row)
    session.flush()
    return _record(row)


def list_events(
    session: Session, after: int = 0, limit: int = 100, types: Sequence[str] | None = None
) -> list[EventRecord]:
    query = select(Event).where(Event.seq > after).order_by(Event.seq).limit(limit)
    if types:
        query = query.where(Event.type.in_(types))
    return [_record(row) for row in session.scalars(query)]


def last_seq(session: Session) -> int:
    return int(session.scalar(select(func.coalesce(func.max(Event.seq), 0))) or 0)


def _record(row: Event) -> EventRecord:
    return EventRecord(
        seq=row.seq, type=row.type, at=row.at, data=row.data, grid_code=row.grid_code
    )
