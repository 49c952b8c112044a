"""Tables of grids, cases and event delivery (webhook subscriptions, MQTT).

The ``events`` table is the outbox: a consumer (one webhook subscription, or MQTT) is a row
of ``delivery_cursors`` holding the last ``seq`` it has delivered, its retry state and a
lease, so deliveries survive restarts and several worker processes never deliver the same
consumer's events in parallel.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, BigIntId, utcnow


class Grid(Base):
    """A unit of grid management: city, county, town, community or grid."""

    __tablename__ = "grids"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(16), index=True)
    parent_code: Mapped[str | None] = mapped_column(String(64), index=True)
    #: GeoJSON Polygon or MultiPolygon (WGS 84, lon/lat), validated on the way in.
    boundary: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Case(Base):
    """A dispute, police matter or other case of an outside system, referenced here."""

    __tablename__ = "cases"
    __table_args__ = (Index("ix_cases_created", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    external_ref: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(16))
    grid_code: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]
    #: Where it is in the handling of an event (storage/case_flow.py); ``status`` follows it
    #: (``closed`` once ``closed`` or ``rejected``).
    state: Mapped[str] = mapped_column(String(16), default="filed", index=True)
    state_since: Mapped[datetime] = mapped_column(default=utcnow)
    class_code: Mapped[str | None] = mapped_column(String(16))
    #: ``{"lat", "lon"}`` of the camera that saw it.
    location: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    camera_national_id: Mapped[str | None] = mapped_column(String(20))
    assignee: Mapped[str | None] = mapped_column(String(200))
    deadline_at: Mapped[datetime | None] = mapped_column(index=True)
    #: When ``case.overdue`` was raised for the current state (once per transition).
    overdue_at: Mapped[datetime | None]


class CaseTransition(Base):
    """One step of a case's timeline: who moved it from where to where, and why."""

    __tablename__ = "case_transitions"
    __table_args__ = (Index("ix_case_transitions_case", "case_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    assignee: Mapped[str | None] = mapped_column(String(200))
    deadline_at: Mapped[datetime | None]


class InboundMessage(Base):
    """An inbound webhook message of the grid platform, kept to refuse a replay."""

    __tablename__ = "inbound_messages"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class CaseIncident(Base):
    """Many-to-many link of cases and incidents."""

    __tablename__ = "case_incidents"

    case_id: Mapped[str] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    linked_at: Mapped[datetime] = mapped_column(default=utcnow)
    linked_by: Mapped[str] = mapped_column(String(200))


class Subscription(Base):
    """A webhook subscription of the grid platform (or any integrator)."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    #: The HMAC secret, encrypted at rest (the API never returns it).
    secret_enc: Mapped[str] = mapped_column(Text)
    types: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    grid_codes: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    created_by: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Events per POST: 1 is one event per request (the original contract); N > 1 sends
    #: up to N consecutive wanted events as ``{"events": [...]}`` (opt-in).
    batch: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class DeliveryCursor(Base):
    """Where one consumer stands in the event log, its retry state and its lease."""

    __tablename__ = "delivery_cursors"

    #: A subscription id, or ``mqtt``.
    consumer: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_delivered_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryAttempt(Base):
    """One delivery attempt of one event to one consumer: the log integrators read."""

    __tablename__ = "delivery_log"
    __table_args__ = (Index("ix_delivery_log_consumer_id", "consumer", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    consumer: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
