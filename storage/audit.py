"""Append-only audit log: who read, downloaded or changed what, and when.

Only :func:`audit` writes it, and only by INSERT; the database itself refuses UPDATE and
DELETE of its rows (triggers of migration 0005; docs/security.md). Each entry is chained to
the one before it by its hash (storage/audit_chain.py) when its transaction commits: an
entry waits in ``session.info`` until then, so the chain's lock is taken last and held only
while the transaction commits — never while a route is still working, and never before a
lock the route takes later (no deadlock). An entry recorded in a transaction that rolls
back is dropped with it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from storage.audit_chain import NewEntry, append_entries, normalised
from storage.models import AuditEntry, utcnow

_PENDING = "xueliang.audit.pending"


def audit(
    session: Session,
    actor: str,
    action: str,
    resource: str,
    resource_id: str,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Record an entry; it is written, chained, when ``session``'s transaction commits.
    ``detail`` must be JSON (NaN and infinity are refused: ValueError)."""
    entry = NewEntry(at or utcnow(), actor, action, resource, resource_id, normalised(detail))
    session.info.setdefault(_PENDING, []).append(entry)


def pending(session: Session) -> list[NewEntry]:
    """Entries :func:`audit` recorded in ``session``'s transaction, not written yet (they
    are chained when it commits)."""
    return list(session.info.get(_PENDING, []))


@event.listens_for(Session, "before_commit")
def _chain_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint: its entries wait for the outer commit
    pending: list[NewEntry] | None = session.info.pop(_PENDING, None)
    if pending:
        # The transaction's other changes first: the session flushes them after this hook,
        # and a row lock waited for while holding the chain's would be a deadlock.
        session.flush()
        append_entries(session, pending)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


def list_audit(
    session: Session,
    resource: str | None = None,
    resource_id: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if resource:
        query = query.where(AuditEntry.resource == resource)
    if resource_id:
        query = query.where(AuditEntry.resource_id == resource_id)
    if since:
        query = query.where(AuditEntry.at >= since)
    return list(session.scalars(query))
