"""Durable event delivery: subscriptions, per-consumer cursors with leases, the delivery log.

A *consumer* is one webhook subscription (named by its id) or ``mqtt``. Its row in
``delivery_cursors`` holds the last ``seq`` delivered; events after it are delivered in
``seq`` order (one per request, or up to a subscription's ``batch`` per request), so a
consumer is blocked on its oldest undelivered event. Successes may be recorded several at a
time (:func:`record_successes`): the cursor then trails what was sent, never leads it.

Leases make scale-out safe on SQLite and PostgreSQL alike: a worker *claims* a consumer with
one conditional UPDATE (free, expired, or already its own), renews the lease before every
attempt, and every cursor write is *fenced* on ``lease_owner`` — a worker that lost its
lease can neither advance nor rewind the cursor. A lease outlives the longest attempt
(``lease_s`` > request timeout), so two workers never deliver one consumer in parallel as
long as their clocks agree to within the difference.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.events import last_seq
from storage.grid_models import DeliveryAttempt, DeliveryCursor, Subscription
from storage.models import Event, utcnow

MQTT_CONSUMER = "mqtt"


@dataclass(frozen=True)
class NewSubscription:
    url: str
    secret_enc: str
    types: list[str] | None
    grid_codes: list[str] | None
    created_by: str
    batch: int = 1  # events per POST (1: one event per request, the original contract)


def new_subscription_id() -> str:
    return "sub_" + uuid.uuid4().hex[:16]


def create_subscription(session: Session, new: NewSubscription) -> Subscription:
    """A subscription and its cursor; it receives the events appended after this moment."""
    row = Subscription(
        id=new_subscription_id(),
        url=new.url,
        secret_enc=new.secret_enc,
        types=new.types,
        grid_codes=new.grid_codes,
        created_by=new.created_by,
        created_at=utcnow(),
        batch=new.batch,
    )
    session.add(row)
    session.add(_cursor(row.id, last_seq(session)))
    session.flush()
    return row


def _cursor(consumer: str, start_seq: int) -> DeliveryCursor:
    return DeliveryCursor(
        consumer=consumer, last_delivered_seq=start_seq, failures=0, updated_at=utcnow()
    )


def get_subscription(session: Session, subscription_id: str) -> Subscription | None:
    return session.get(Subscription, subscription_id)


def list_subscriptions(session: Session, created_by: str | None = None) -> list[Subscription]:
    """All subscriptions, or those created by one token."""
    query = select(Subscription).order_by(Subscription.created_at, Subscription.id)
    if created_by is not None:
        query = query.where(Subscription.created_by == created_by)
    return list(session.scalars(query))


def delete_subscription(session: Session, subscription_id: str) -> bool:
    """Delete a subscription with its cursor and delivery log; False when unknown."""
    row = session.get(Subscription, subscription_id)
    if row is None:
        return False
    session.delete(row)
    session.execute(delete(DeliveryCursor).where(DeliveryCursor.consumer == subscription_id))
    session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.consumer == subscription_id))
    return True


def get_cursor(session: Session, consumer: str) -> DeliveryCursor | None:
    return session.get(DeliveryCursor, consumer)


def ensure_cursor(session: Session, consumer: str) -> None:
    """Create a consumer's cursor at the current end of the log unless it exists.

    Idempotent when several processes start at once (INSERT … ON CONFLICT DO NOTHING).
    """
    values = {
        "consumer": consumer,
        "last_delivered_seq": last_seq(session),
        "failures": 0,
        "updated_at": utcnow(),
    }
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(DeliveryCursor).values(values).on_conflict_do_nothing())


# Claiming work ------------------------------------------------------------------------------


def due_consumers(
    session: Session, now: datetime, owner: str, *, include_mqtt: bool = False
) -> list[str]:
    """Consumers with undelivered events, not backing off, and free (or leased by ``owner``).

    Every subscription, and ``mqtt`` when ``include_mqtt``.
    """
    head = select(func.max(Event.seq)).scalar_subquery()
    query = select(DeliveryCursor.consumer).where(
        DeliveryCursor.last_delivered_seq < head,
        DeliveryCursor.next_attempt_at.is_(None) | (DeliveryCursor.next_attempt_at <= now),
        DeliveryCursor.lease_owner.is_(None)
        | (DeliveryCursor.lease_until < now)
        | (DeliveryCursor.lease_owner == owner),
    )
    if not include_mqtt:
        query = query.where(DeliveryCursor.consumer != MQTT_CONSUMER)
    return list(session.scalars(query.order_by(DeliveryCursor.consumer)))


def next_retry_at(session: Session, now: datetime) -> datetime | None:
    """The earliest future retry of any consumer (so the worker wakes for it)."""
    query = select(func.min(DeliveryCursor.next_attempt_at)).where(
        DeliveryCursor.next_attempt_at > now
    )
    value: datetime | None = session.scalar(query)
    return value


def claim(session: Session, consumer: str, owner: str, now: datetime, lease_s: float) -> bool:
    """Take (or keep) a consumer's lease unless another live worker holds it."""
    result = session.execute(
        update(DeliveryCursor)
        .where(
            DeliveryCursor.consumer == consumer,
            DeliveryCursor.lease_owner.is_(None)
            | (DeliveryCursor.lease_until < now)
            | (DeliveryCursor.lease_owner == owner),
        )
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_s))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def renew(session: Session, consumer: str, owner: str, now: datetime, lease_s: float) -> bool:
    """Extend a lease this worker holds; False when it was lost."""
    result = session.execute(
        update(DeliveryCursor)
        .where(DeliveryCursor.consumer == consumer, DeliveryCursor.lease_owner == owner)
        .values(lease_until=now + timedelta(seconds=lease_s))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release(session: Session, consumer: str, owner: str) -> None:
    """Give a lease back so any worker may continue at once."""
    session.execute(
        update(DeliveryCursor)
        .where(DeliveryCursor.consumer == consumer, DeliveryCursor.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )


# Recording attempts -------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """The outcome of one delivery attempt."""

    seq: int
    attempt: int
    at: datetime
    duration_ms: float
    status_code: int | None = None
    error: str | None = None


def _log(session: Session, consumer: str, a: Attempt) -> None:
    session.add(
        DeliveryAttempt(
            consumer=consumer,
            seq=a.seq,
            attempt=a.attempt,
            status_code=a.status_code,
            error=a.error,
            at=a.at,
            duration_ms=a.duration_ms,
        )
    )


def record_success(
    session: Session, consumer: str, owner: str, a: Attempt, lease_until: datetime
) -> bool:
    """Log the attempt, advance the cursor to its seq and extend the lease to
    ``lease_until``; False when the lease was lost."""
    return record_successes(session, consumer, owner, [a], lease_until)


def record_successes(
    session: Session,
    consumer: str,
    owner: str,
    attempts: Sequence[Attempt],
    lease_until: datetime,
) -> bool:
    """Log successful attempts (in ``seq`` order), advance the cursor to the last one's seq
    and extend the lease to ``lease_until``, in one transaction; False when the lease was
    lost (nothing is written then)."""
    if not attempts:
        raise ValueError("record_successes needs at least one attempt")
    last = attempts[-1]
    result = session.execute(
        update(DeliveryCursor)
        .where(
            DeliveryCursor.consumer == consumer,
            DeliveryCursor.lease_owner == owner,
            DeliveryCursor.last_delivered_seq < last.seq,
        )
        .values(
            last_delivered_seq=last.seq,
            failures=0,
            next_attempt_at=None,
            last_error=None,
            lease_until=lease_until,
            updated_at=last.at,
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    for a in attempts:
        _log(session, consumer, a)
    return True


def record_failure(
    session: Session, consumer: str, owner: str, a: Attempt, retry_at: datetime
) -> bool:
    """Log the attempt and schedule the retry of the same event; False when the lease was lost."""
    result = session.execute(
        update(DeliveryCursor)
        .where(DeliveryCursor.consumer == consumer, DeliveryCursor.lease_owner == owner)
        .values(
            failures=DeliveryCursor.failures + 1,
            next_attempt_at=retry_at,
            last_error=a.error or f"HTTP {a.status_code}",
            updated_at=a.at,
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    _log(session, consumer, a)
    return True


def defer(session: Session, consumer: str, owner: str, retry_at: datetime, error: str) -> bool:
    """Postpone a consumer that cannot be served (not the receiver's fault: e.g. its secret
    cannot be decrypted with this installation's key); False when the lease was lost."""
    result = session.execute(
        update(DeliveryCursor)
        .where(DeliveryCursor.consumer == consumer, DeliveryCursor.lease_owner == owner)
        .values(next_attempt_at=retry_at, last_error=error[:2000], updated_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def skip_to(session: Session, consumer: str, owner: str, seq: int, lease_until: datetime) -> bool:
    """Move the cursor past events this consumer does not want; False when the lease was lost."""
    result = session.execute(
        update(DeliveryCursor)
        .where(
            DeliveryCursor.consumer == consumer,
            DeliveryCursor.lease_owner == owner,
            DeliveryCursor.last_delivered_seq < seq,
        )
        .values(last_delivered_seq=seq, lease_until=lease_until, updated_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_deliveries(
    session: Session, consumer: str, limit: int = 100, before_id: int | None = None
) -> list[DeliveryAttempt]:
    """A consumer's delivery log, newest first; page with ``before_id``."""
    query = (
        select(DeliveryAttempt)
        .where(DeliveryAttempt.consumer == consumer)
        .order_by(DeliveryAttempt.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(DeliveryAttempt.id < before_id)
    return list(session.scalars(query))


def prune_log(session: Session, older_than: datetime) -> int:
    """Delete delivery-log rows older than a moment; returns how many."""
    result = session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.at < older_than))
    return int(result.rowcount)  # type: ignore[attr-defined]
