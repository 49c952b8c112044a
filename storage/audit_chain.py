"""The audit log's hash chain: each entry carries the hash of the one before it.

Entry ``n`` (positions 1, 2, 3… with no gap) stores ``prev_hash`` (entry ``n-1``'s hash, or
64 zeros for the first) and ``entry_hash``, the SHA-256 (hex) of the UTF-8 of the JSON array
``[prev_hash, position, at, actor, action, resource, resource_id, detail]`` written without
spaces, keys sorted, non-ASCII as is (``json.dumps(…, separators=(",", ":"),
sort_keys=True, ensure_ascii=False)``), ``at`` as ``2024-05-01T08:00:00.000000+00:00``.
Anyone can recompute it: docs/contract.md states the same.

Appends (:func:`append_entries`) run while the writing transaction commits
(storage/audit.py): they lock the one ``audit_chain`` row with an UPDATE that advances its
head, chain the new entries from the head's hash, insert them and store the new head hash.
Concurrent writers, in any number of processes, queue on that row lock (PostgreSQL) or on
the single writer lock (SQLite), so positions are strictly contiguous in commit order. The
JSON of each entry is serialised before the lock; under it: three statements and a SHA-256.

:func:`verify` walks the chain in batches (a few thousand rows in memory at a time) and
reports each entry changed, removed or inserted since it was written. It cannot tell a
rewrite of the whole chain from a point on (the chain has no secret): the ``audit.anchor``
events (:func:`publish_anchor`) give copies of the head to the grid platform, and
:func:`check_anchor` proves a held copy is still in the chain.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.orm import Session

from config.errors import XueliangError
from storage.models import AuditChain, AuditEntry

GENESIS = "0" * 64
CHAIN_ID = 1
#: Rows read per query by :func:`verify`.
VERIFY_BATCH = 5000
_HASH = re.compile(r"^[0-9a-f]{64}$")


class AuditChainError(XueliangError):
    """The chain's head row is missing (the database is not migrated)."""


# --- the hash ---------------------------------------------------------------------------


def entry_body(
    at: datetime, actor: str, action: str, resource: str, resource_id: str, detail: Any
) -> str:
    """The canonical JSON of an entry's content: the array without its first two items."""
    return _dumps([_when(at), actor, action, resource, resource_id, detail])


def link_hash(prev_hash: str, position: int, body: str) -> str:
    """SHA-256 of ``[prev_hash, position, *content]`` (``body`` from :func:`entry_body`).

    Spliced rather than serialised again, so that the lock holder only hashes; it is byte
    for byte ``_dumps([prev_hash, position, *content])`` (tests/unit/test_audit_chain.py).
    """
    canonical = f'["{prev_hash}",{position},{body[1:]}'
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def normalised(detail: dict[str, Any] | None) -> dict[str, Any]:
    """``detail`` as the database will give it back (JSON types only), so that the hash
    taken now is the hash recomputed later. Raises ValueError for NaN or infinity."""
    value = json.loads(json.dumps(detail or {}, allow_nan=False))
    assert isinstance(value, dict)
    return value


def _dumps(value: Any) -> str:
    return json.dumps(
        value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    )


def _when(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


# --- appending --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry waiting for its transaction to commit (storage/audit.py)."""

    at: datetime
    actor: str
    action: str
    resource: str
    resource_id: str
    detail: dict[str, Any]

    def body(self) -> str:
        return entry_body(
            self.at, self.actor, self.action, self.resource, self.resource_id, self.detail
        )


def append_entries(session: Session, entries: Sequence[NewEntry]) -> int:
    """Chain and insert ``entries`` in the caller's transaction; returns the new head
    position. Holds the chain row's lock until that transaction ends."""
    if not entries:
        raise ValueError("nothing to append")
    bodies = [e.body() for e in entries]  # before the lock: the JSON is the slow part
    head = session.execute(
        update(AuditChain)
        .where(AuditChain.id == CHAIN_ID)
        .values(position=AuditChain.position + len(entries))
        .returning(AuditChain.position, AuditChain.hash)
    ).one_or_none()
    if head is None:
        raise AuditChainError("the audit chain's head row is missing: migrate the database")
    position: int = head.position - len(entries)
    prev: str = head.hash
    rows = []
    for entry, body in zip(entries, bodies, strict=True):
        position += 1
        entry_hash = link_hash(prev, position, body)
        rows.append(_row(entry, position, prev, entry_hash))
        prev = entry_hash
    session.execute(insert(AuditEntry), rows)
    session.execute(update(AuditChain).where(AuditChain.id == CHAIN_ID).values(hash=prev))
    return position


def _row(entry: NewEntry, position: int, prev: str, entry_hash: str) -> dict[str, Any]:
    return {
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "resource": entry.resource,
        "resource_id": entry.resource_id,
        "detail": entry.detail,
        "position": position,
        "prev_hash": prev,
        "entry_hash": entry_hash,
    }


# --- verifying --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """Where the chain does not hold: the first position concerned, the row's id when a
    row is concerned, and what was found."""

    position: int | None
    entry_id: int | None
    what: str

    def __str__(self) -> str:
        where = f"position {self.position}" if self.position is not None else "no position"
        row = f" (id {self.entry_id})" if self.entry_id is not None else ""
        return f"{where}{row}: {self.what}"


@dataclass
class Verdict:
    """What :func:`verify` found: the entries checked, the head, and every problem."""

    entries: int = 0
    first_position: int = 1
    head_position: int = 0
    head_hash: str = GENESIS
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class _Link:
    position: int
    hash: str


def verify(session: Session, batch: int = VERIFY_BATCH) -> Verdict:
    """Walk the whole chain, ``batch`` rows per query, and report every break: an entry
    whose content no longer matches its hash (changed), positions missing (removed), an
    entry that does not follow the one before (inserted, or the chain rewritten before
    it), entries past the recorded head or outside the chain.

    Safe while the service appends: the walk stops at the head read first (its entries
    committed with it), and an entry is "past the head" only if the head read after it
    does not cover it. Run it in a snapshot (PostgreSQL REPEATABLE READ) so that a
    retention sweep meanwhile does not look like a removal.
    """
    chain = _chain_row(session)
    base, head = _Link(chain.base_position, chain.base_hash), _Link(chain.position, chain.hash)
    verdict = Verdict(first_position=base.position + 1)
    last = base
    for row in _rows(session, batch, head.position):
        last = _check_row(row, last, verdict)
        verdict.entries += 1
    _check_head(head, last, verdict)
    _check_outside(session, verdict)
    verdict.head_position, verdict.head_hash = last.position, last.hash
    return verdict


def _chain_row(session: Session) -> AuditChain:
    chain = session.get(AuditChain, CHAIN_ID)
    if chain is None:
        raise AuditChainError("the audit chain's head row is missing: migrate the database")
    return chain


def _rows(session: Session, batch: int, upto: int) -> Iterator[Row[Any]]:
    columns = (
        AuditEntry.id,
        AuditEntry.position,
        AuditEntry.prev_hash,
        AuditEntry.entry_hash,
        AuditEntry.at,
        AuditEntry.actor,
        AuditEntry.action,
        AuditEntry.resource,
        AuditEntry.resource_id,
        AuditEntry.detail,
    )
    after = -1
    while True:
        query = select(*columns).where(AuditEntry.position > after, AuditEntry.position <= upto)
        rows = session.execute(query.order_by(AuditEntry.position).limit(batch)).all()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].position


def _check_row(row: Row[Any], last: _Link, verdict: Verdict) -> _Link:
    """Check one row against the link before it; returns this row's link (the walk goes
    on from each row as found, so one break is reported once, not at every later row)."""
    found = verdict.problems.append
    if row.position > last.position + 1:
        missing = f"{last.position + 1}" + (
            f"–{row.position - 1}" if row.position - 1 > last.position + 1 else ""
        )
        gap = f"entries missing at position(s) {missing}: removed"
        found(Problem(last.position + 1, None, gap))
    body = entry_body(row.at, row.actor, row.action, row.resource, row.resource_id, row.detail)
    if link_hash(row.prev_hash or "", row.position, body) != row.entry_hash:
        found(Problem(row.position, row.id, "content does not match its hash: changed or moved"))
    elif row.prev_hash != last.hash and row.position == last.position + 1:
        found(
            Problem(
                row.position,
                row.id,
                "does not follow the entry before it: inserted, or the one before rewritten",
            )
        )
    return _Link(row.position, row.entry_hash or "")


def _check_head(head: _Link, last: _Link, verdict: Verdict) -> None:
    if last.position < head.position:
        missing = Problem(
            last.position + 1, None, f"entries missing up to the head ({head.position}): removed"
        )
        verdict.problems.append(missing)
    elif last.hash != head.hash:
        verdict.problems.append(
            Problem(last.position, None, "the head entry differs from the recorded head hash")
        )


def _check_outside(session: Session, verdict: Verdict) -> None:
    """Entries past the head (read after them: it covers every entry committed before) and
    entries without a position: neither was appended through the chain."""
    beyond = session.scalar(select(func.max(AuditEntry.position)))
    head = session.scalar(select(AuditChain.position).where(AuditChain.id == CHAIN_ID))
    if beyond is not None and head is not None and beyond > head:
        verdict.problems.append(
            Problem(head + 1, None, f"entries after the recorded head ({head}): inserted")
        )
    outside = select(AuditEntry.id).where(AuditEntry.position.is_(None)).order_by(AuditEntry.id)
    for entry_id in session.scalars(outside):
        verdict.problems.append(Problem(None, entry_id, "not in the chain: inserted"))


# --- anchors ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Anchor:
    """A copy of the head held outside: the hash of the entry at ``position``."""

    hash: str
    position: int

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """``HASH@POSITION`` as the ``audit.anchor`` event gives them."""
        hash_, _, position = text.strip().lower().partition("@")
        if not _HASH.match(hash_) or not position.isdigit() or int(position) < 1:
            raise ValueError(
                f"anchor {text!r} is not HASH@POSITION (64 hex digits, '@', a position ≥ 1; "
                "the 'hash' and 'position' of an audit.anchor event)"
            )
        return cls(hash_, int(position))

    def __str__(self) -> str:
        return f"{self.hash}@{self.position}"


def check_anchor(session: Session, anchor: Anchor) -> str | None:
    """None when the entry at the anchor's position still has the anchor's hash; else why
    not. Together with a clean :func:`verify`, every entry up to the anchor is as it was."""
    chain = _chain_row(session)
    if anchor.position == chain.base_position and anchor.hash == chain.base_hash:
        return None
    if anchor.position <= chain.base_position:
        return (
            f"position {anchor.position} was removed by retention (the log starts at "
            f"{chain.base_position + 1}): it cannot be checked; use a newer anchor"
        )
    stored = session.scalar(
        select(AuditEntry.entry_hash).where(AuditEntry.position == anchor.position)
    )
    if stored is None:
        return f"no entry at position {anchor.position}: the log was truncated"
    if stored != anchor.hash:
        return f"the entry at position {anchor.position} has another hash: the log was rewritten"
    return None


@dataclass(frozen=True, slots=True)
class Published:
    """The head just published as an ``audit.anchor`` event."""

    position: int
    hash: str
    at: datetime


def publish_anchor(session: Session, now: datetime, every: timedelta) -> Published | None:
    """Claim the anchor for ``now`` when the head moved since the last anchor and that was
    at least ``every`` ago; the caller appends the event in the same transaction.

    A conditional UPDATE claims it: of several processes checking at once exactly one
    matches (the others re-read the row it committed, PostgreSQL, or wait for the writer
    lock, SQLite), so each head is published once whichever process runs the check.
    """
    claimed = session.execute(
        update(AuditChain)
        .where(
            AuditChain.id == CHAIN_ID,
            AuditChain.position > AuditChain.anchored_position,
            (AuditChain.anchored_at.is_(None)) | (AuditChain.anchored_at <= now - every),
        )
        .values(anchored_position=AuditChain.position, anchored_at=now)
        .returning(AuditChain.position, AuditChain.hash)
    ).one_or_none()
    if claimed is None:
        return None
    at = session.scalar(select(AuditEntry.at).where(AuditEntry.position == claimed.position))
    return Published(claimed.position, claimed.hash, at or now)


# --- retention --------------------------------------------------------------------------


def prune(session: Session, before: datetime, batch: int) -> int:
    """Delete at most ``batch`` of the oldest entries written before ``before``, from the
    start of the chain only (a removed entry in the middle would be a break), and move the
    chain's base past them in the same transaction; returns how many rows."""
    base = session.scalar(select(AuditChain.base_position).where(AuditChain.id == CHAIN_ID))
    oldest = session.execute(
        select(AuditEntry.position, AuditEntry.entry_hash, AuditEntry.at)
        .where(AuditEntry.position > (base or 0))
        .order_by(AuditEntry.position)
        .limit(batch)
    ).all()
    last = None
    for row in oldest:
        if row.at >= before:
            break
        last = row
    if last is None:
        return 0
    removed = session.execute(delete(AuditEntry).where(AuditEntry.position <= last.position))
    session.execute(
        update(AuditChain)
        .where(AuditChain.id == CHAIN_ID, AuditChain.base_position < last.position)
        .values(base_position=last.position, base_hash=last.entry_hash)
    )
    return int(removed.rowcount)  # type: ignore[attr-defined]
