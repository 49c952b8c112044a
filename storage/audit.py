"""Append-only audit log: who read, downloaded or changed what, and when.

Only :func:`audit` writes it, and only by INSERT; the database itself refuses UPDATE and
DELETE of its rows (triggers of migration 0005; docs/security.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import AuditEntry, utcnow


def audit(
    session: Session,
    actor: str,
    action: str,
    resource: str,
    resource_id: str,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=actor,
            action=action,
            resource=resource,
            resource_id=resource_id,
            detail=detail or {},
        )
    )


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
