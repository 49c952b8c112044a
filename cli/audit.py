"""``xueliang audit verify``: walk the audit log's hash chain and check held anchors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy.orm import Session

from config.settings import Settings
from storage.audit_chain import Anchor, Verdict, check_anchor, verify
from storage.db import Database

#: Problems printed one per line; more are counted.
SHOWN = 100


def run_verify(settings: Settings, anchors: Sequence[Anchor]) -> int:
    """Print what the chain and the anchors show; 0 when all hold, 1 otherwise."""
    db = Database(settings.database_url, pool_size=1)
    try:
        db.migrate()  # a log written before the chain is chained by the migration
        with _snapshot(db) as session:
            verdict = verify(session)
            failed = [(a, why) for a in anchors if (why := check_anchor(session, a))]
    finally:
        db.dispose()
    _print_verdict(verdict)
    for anchor in anchors:
        why = dict(failed).get(anchor)
        print(f"anchor {anchor}: " + (f"FAILED: {why}" if why else "in the chain"))
    return 0 if verdict.ok and not failed else 1


@contextmanager
def _snapshot(db: Database) -> Iterator[Session]:
    """One read-only snapshot on PostgreSQL, so that appends and retention meanwhile are
    not mistaken for tampering; SQLite has one writer and the walk copes with appends."""
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with Session(bind=conn) as session:
            yield session


def _print_verdict(verdict: Verdict) -> None:
    if verdict.ok:
        print(
            f"audit log OK: {verdict.entries} entries verified (positions "
            f"{verdict.first_position}–{verdict.head_position}); head "
            f"{verdict.head_hash}@{verdict.head_position}"
        )
        return
    print(
        f"audit log FAILED verification: {len(verdict.problems)} problem(s) in "
        f"{verdict.entries} entries (positions {verdict.first_position}–{verdict.head_position})"
    )
    for problem in verdict.problems[:SHOWN]:
        print(f"  {problem}")
    if len(verdict.problems) > SHOWN:
        print(f"  … and {len(verdict.problems) - SHOWN} more")
