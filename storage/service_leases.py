"""Service leases: which process runs a service the installation needs exactly once.

Devices register to one SIP address, so the GB/T 28181 endpoint runs in one process at a
time; every process that could run it competes for the lease ``gb28181-sip`` and renews it
every ``lease_s / 3``, as camera leases are (:mod:`storage.leases`). A lease is taken only
when free or expired, by a conditional UPDATE (or the INSERT of a new row, which the
primary key makes fail for all but one): atomic on SQLite, and on PostgreSQL the second of
two concurrent UPDATEs re-reads the row the first committed and no longer matches. So a
name has at most one live holder; a standby takes over once the holder stops renewing.

The row also says where the holder is (``url``, its HTTP base URL), for the processes that
ask it to act for them (a camera worker asking the endpoint to INVITE a channel).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import ServiceLease

__all__ = ["LeaseHolder", "claim", "current_holder", "release"]


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who holds a service lease, where to reach it, and until when."""

    holder: str
    url: str
    expires_at: datetime


def claim(
    session: Session, name: str, holder: str, url: str, now: datetime, lease_s: float
) -> bool:
    """Renew ``holder``'s lease on ``name``, or take it when free or expired.

    True when ``holder`` holds it until ``now + lease_s``; False when another live process
    does. The holder must stop serving before that time unless a later claim succeeds.
    """
    expires = now + timedelta(seconds=lease_s)
    renewed = session.execute(
        update(ServiceLease)
        .where(ServiceLease.name == name, ServiceLease.holder == holder)
        .values(url=url, expires_at=expires)
    )
    if renewed.rowcount:  # type: ignore[attr-defined]
        return True
    taken = session.execute(
        update(ServiceLease)
        .where(ServiceLease.name == name, ServiceLease.expires_at < now)
        .values(holder=holder, url=url, expires_at=expires, acquired_at=now)
    )
    if taken.rowcount:  # type: ignore[attr-defined]
        return True
    if session.get(ServiceLease, name) is not None:
        return False  # held by a live process
    try:
        with session.begin_nested():
            session.execute(
                insert(ServiceLease).values(
                    name=name, holder=holder, url=url, expires_at=expires, acquired_at=now
                )
            )
    except IntegrityError:
        return False  # another process inserted it first
    return True


def current_holder(session: Session, name: str, now: datetime) -> LeaseHolder | None:
    """The live holder of ``name``, or None when nobody holds it (free, or expired)."""
    row = session.scalar(
        select(ServiceLease).where(ServiceLease.name == name, ServiceLease.expires_at >= now)
    )
    return LeaseHolder(row.holder, row.url, row.expires_at) if row is not None else None


def release(session: Session, name: str, holder: str) -> None:
    """Give the lease back (a clean stop): a standby takes over at its next claim rather
    than after the lease time."""
    session.execute(
        delete(ServiceLease).where(ServiceLease.name == name, ServiceLease.holder == holder)
    )
