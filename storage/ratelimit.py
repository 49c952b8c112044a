"""Rate limits every process of an installation shares: token buckets in the database.

One row per limit (``scope``) and client address in ``rate_limits``: ``level`` attempts were
left at Unix time ``at``; the bucket refills at ``attempts / window_s`` per second up to
``attempts``. Spending is one atomic upsert (``INSERT … ON CONFLICT DO UPDATE``, PostgreSQL
and SQLite alike), so two processes counting the same address at once both count. Checking
is one primary-key read. Rows whose bucket is full again mean nothing and are purged, and at
most ``max_clients`` rows are kept per limit (least recently spent forgotten first), each in
its own short transaction: a purge never holds a row lock another spend waits for while it
waits itself (no deadlock between two processes purging and spending).

Times are the processes' wall clocks (``time.time``): keep the nodes' clocks in sync (NTP);
a node a few seconds ahead only refills its view of a bucket a little early.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from storage.models import RateLimit


@dataclass(frozen=True)
class Limit:
    """``attempts`` at once per client, regained over ``window_s``."""

    scope: str
    attempts: int
    window_s: float
    max_clients: int = 10000

    @property
    def rate(self) -> float:
        """Attempts regained per second."""
        return self.attempts / self.window_s

    def level(self, level: float, at: float, now: float) -> float:
        """Attempts left at ``now`` of a bucket that had ``level`` left at ``at``."""
        return min(float(self.attempts), level + max(now - at, 0.0) * self.rate)

    def wait_s(self, level: float) -> float:
        """Seconds until a bucket at ``level`` holds one attempt; 0 when it does."""
        return 0.0 if level >= 1 else (1 - level) / self.rate


def retry_after(session: Session, limit: Limit, client: str, now: float) -> float:
    """Seconds until ``client`` may try again under ``limit``; 0 when it may now."""
    row = session.get(RateLimit, (limit.scope, client))
    if row is None:
        return 0.0
    return limit.wait_s(limit.level(row.level, row.at, now))


def spend(session: Session, limit: Limit, client: str, now: float) -> bool:
    """Take one attempt from ``client``'s bucket, atomically with other processes.

    True when the bucket was full (a new or refilled row: the table may have grown, so
    :func:`purge` is due once this transaction is committed).
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(RateLimit)
        .values(scope=limit.scope, client=client, level=limit.attempts - 1.0, at=now)
        .on_conflict_do_update(
            index_elements=[RateLimit.scope, RateLimit.client],
            set_={"level": _spent(limit, now), "at": now},
        )
        .returning(RateLimit.level)
    )
    left = float(session.execute(stmt).scalar_one())
    return left >= limit.attempts - 1


def purge(session: Session, limit: Limit, now: float) -> int:
    """Forget full buckets and all but the ``max_clients`` most recent; the rows removed."""
    full = delete(RateLimit).where(
        RateLimit.scope == limit.scope, RateLimit.at <= now - limit.window_s
    )
    removed: int = session.execute(full).rowcount  # type: ignore[attr-defined]
    oldest = (
        select(RateLimit.client)
        .where(RateLimit.scope == limit.scope)
        .order_by(RateLimit.at.desc())
        .offset(limit.max_clients)
    )
    crowd = delete(RateLimit).where(
        RateLimit.scope == limit.scope, RateLimit.client.in_(oldest.scalar_subquery())
    )
    return removed + int(session.execute(crowd).rowcount)  # type: ignore[attr-defined]


def _spent(limit: Limit, now: float) -> ColumnElement[float]:
    """The stored row's level refilled to ``now``, less one, never below 0 (portable SQL)."""
    elapsed = case((RateLimit.at < now, now - RateLimit.at), else_=0.0)
    refilled = RateLimit.level + elapsed * limit.rate
    capped = case((refilled > limit.attempts, float(limit.attempts)), else_=refilled)
    return case((capped < 1, 0.0), else_=capped - 1)
