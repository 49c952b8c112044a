"""The audit log's hash chain on SQLite and PostgreSQL: appends from many threads and
processes stay contiguous, ``xueliang audit verify`` (a real subprocess) finds rows changed,
removed or inserted with the triggers disabled, the migration chains old rows, retention
moves the chain's base, and ``audit.anchor`` events catch a rewritten chain."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from config.settings import RetentionSettings, Settings
from runtime.audit_anchor import AnchorWorker
from runtime.services import Services
from storage import retention
from storage.audit import audit
from storage.audit_chain import GENESIS, entry_body, link_hash, verify
from storage.db import MIGRATIONS, Database
from storage.events import list_events
from storage.models import AuditChain, AuditEntry, Base, utcnow
from tests.conftest import pg_schema

REPO = Path(__file__).resolve().parents[2]


def run_verify(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XUELIANG_DATA_DIR": str(tmp_path / "cli"), "XUELIANG_DATABASE__URL": url}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "audit", "verify", *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def append(db: Database, n: int, actor: str = "op") -> None:
    for i in range(n):
        with db.session() as session:
            audit(session, f"{actor}-{i}", "download", "clip", f"inc_{i}", {"n": i, "名": "值"})


def tamper(db: Database, *statements: str, **params: Any) -> None:
    """Run SQL the way someone with the database's rights can: triggers off."""
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
        for statement in statements:
            conn.execute(text(statement), params)


def ids_by_position(db: Database) -> dict[int, int]:
    with db.session() as session:
        rows = session.execute(select(AuditEntry.position, AuditEntry.id)).all()
    return {p: i for p, i in rows if p is not None}


def head(db: Database) -> AuditChain:
    with db.session() as session:
        chain = session.get(AuditChain, 1)
        assert chain is not None
        return chain


# --- appending and verifying --------------------------------------------------------------


def test_entries_form_an_unbroken_chain_that_verify_walks_in_batches(
    db: Database, tmp_path: Path
) -> None:
    append(db, 7)
    with db.session() as session:
        audit(session, "a", "x", "r", "1")
        audit(session, "b", "y", "r", "2")  # two in one transaction: consecutive
    with db.session() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.position)).all()
        verdict = verify(session, batch=2)  # several batches
    assert [r.position for r in rows] == list(range(1, 10))
    assert [r.actor for r in rows[-2:]] == ["a", "b"]
    assert rows[0].prev_hash == GENESIS
    assert all(r.prev_hash == p.entry_hash for p, r in itertools.pairwise(rows))
    assert verdict.ok and verdict.entries == 9 and verdict.head_hash == rows[-1].entry_hash
    assert (head(db).position, head(db).hash) == (9, rows[-1].entry_hash)
    result = run_verify(db.url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"audit log OK: 9 entries verified (positions 1–9); head {rows[-1].entry_hash}@9" in (
        result.stdout
    )


def test_an_entry_of_a_rolled_back_transaction_is_not_written(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as session:
        audit(session, "op", "download", "clip", "inc_1")
        raise RuntimeError("the route failed")
    append(db, 1)
    with db.session() as session:
        assert session.scalars(select(AuditEntry.position)).all() == [1]
        assert verify(session).ok


def test_the_migrations_agree_with_the_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if "audit" in repr(d)] == []


# --- tampering ------------------------------------------------------------------------------

#: (what someone with the database's rights does, with positions 1..10 written; what verify
#: prints). ``{id5}`` is the id of the row at position 5.
TAMPERING = {
    "changed": (
        ["UPDATE audit_log SET actor = 'someone else' WHERE position = 4"],
        "position 4 (id {id4}): content does not match its hash",
    ),
    "changed, its own hash recomputed": (
        ["UPDATE audit_log SET actor = 'someone else', entry_hash = :rehashed WHERE position = 4"],
        "position 5 (id {id5}): does not follow the entry before it",
    ),
    "detail changed": (
        ["UPDATE audit_log SET detail = '{\"n\": 7}' WHERE position = 7"],
        "position 7 (id {id7}): content does not match its hash",
    ),
    "removed": (
        ["DELETE FROM audit_log WHERE position = 6"],
        "position 6: entries missing at position(s) 6: removed",
    ),
    "removed first": (
        ["DELETE FROM audit_log WHERE position <= 2"],
        "position 1: entries missing at position(s) 1–2: removed",
    ),
    "removed last": (
        ["DELETE FROM audit_log WHERE position >= 9"],
        "position 9: entries missing up to the head (10): removed",
    ),
    "inserted": (
        [
            "UPDATE audit_log SET position = -position WHERE position >= 5",
            "UPDATE audit_log SET position = 1 - position WHERE position < 0",
            "INSERT INTO audit_log (id, at, actor, action, resource, resource_id, detail, "
            "position, prev_hash, entry_hash) SELECT 9999, at, 'intruder', action, resource, "
            "resource_id, detail, 5, entry_hash, entry_hash FROM audit_log WHERE position = 4",
        ],
        "position 5 (id 9999): content does not match its hash",
    ),
    "inserted after the head": (
        [
            "INSERT INTO audit_log (id, at, actor, action, resource, resource_id, detail, "
            "position, prev_hash, entry_hash) SELECT 9999, at, actor, action, resource, "
            "resource_id, detail, 11, entry_hash, :forged FROM audit_log WHERE position = 10",
        ],
        "position 11: entries after the recorded head (10): inserted",
    ),
    "inserted outside the chain": (
        [
            "INSERT INTO audit_log (id, at, actor, action, resource, resource_id, detail) "
            "SELECT 9999, at, 'intruder', action, resource, resource_id, detail "
            "FROM audit_log WHERE position = 3"
        ],
        "no position (id 9999): not in the chain: inserted",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_verify_finds_what_someone_with_database_rights_changed(
    case: str, db: Database, tmp_path: Path
) -> None:
    statements, says = TAMPERING[case]
    append(db, 10)
    ids = ids_by_position(db)
    assert run_verify(db.url, tmp_path).returncode == 0
    # Forgers who compute hashes right: for a row after the head (but not the head row),
    # for a changed row (but not the rows after it).
    with db.session() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.position.in_([3, 4, 10])))
        by = {r.position: r for r in rows}
    last, fourth = by[10], by[4]
    body = entry_body(last.at, last.actor, *_rest(last))
    forged = link_hash(last.entry_hash or "", 11, body)
    body = entry_body(fourth.at, "someone else", *_rest(fourth))
    rehashed = link_hash(by[3].entry_hash or "", 4, body)
    tamper(db, *statements, forged=forged, rehashed=rehashed)
    result = run_verify(db.url, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "audit log FAILED verification" in result.stdout
    assert says.format(**{f"id{p}": i for p, i in ids.items()}) in result.stdout, result.stdout


def _rest(row: AuditEntry) -> tuple[str, str, str, dict[str, Any]]:
    return row.action, row.resource, row.resource_id, row.detail


# --- concurrency ------------------------------------------------------------------------------

_WRITER = """
import sys
from storage.audit import audit
from storage.db import Database
db = Database(sys.argv[1], pool_size=2)
for i in range(int(sys.argv[2])):
    with db.session() as session:
        audit(session, sys.argv[3], "download", "clip", str(i))
db.dispose()
"""


def test_concurrent_appends_from_threads_and_processes_keep_the_chain_whole(
    db: Database, tmp_path: Path
) -> None:
    threads, per_thread, processes, per_process = 8, 40, 2, 60
    if db.dialect == "sqlite":
        processes = 1  # one writer at a time anyway; one process proves the file lock
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_WRITER), db.url, str(per_process), f"p{n}"],
            cwd=REPO,
        )
        for n in range(processes)
    ]
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        start.wait()
        try:
            for i in range(per_thread):
                with db.session() as session:
                    audit(session, f"t{n}", "download", "clip", str(i))
                    if i % 5 == 0:
                        audit(session, f"t{n}", "link", "clip", str(i))
        except BaseException as err:  # reported below
            errors.append(err)

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert [w.wait(timeout=120) for w in writers] == [0] * processes
    assert errors == []
    total = threads * (per_thread + per_thread // 5) + processes * per_process
    with db.session() as session:
        positions = session.scalars(select(AuditEntry.position).order_by(AuditEntry.id)).all()
        verdict = verify(session)
    assert positions == list(range(1, total + 1))  # contiguous, and in the order of the ids
    assert verdict.ok and verdict.entries == total, verdict.problems
    result = run_verify(db.url, tmp_path)
    assert result.returncode == 0 and f"{total} entries verified" in result.stdout


# --- migration and retention ----------------------------------------------------------------


def test_the_migration_chains_the_rows_written_before_it(db_url: str, tmp_path: Path) -> None:
    db = Database(db_url)
    try:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0021")
        with db.session() as session:
            for i, (actor, detail) in enumerate([("op", "{}"), ("值班员", '{"k": [1, 2.5]}')] * 3):
                session.execute(
                    text(
                        "INSERT INTO audit_log (at, actor, action, resource, resource_id, detail)"
                        " VALUES (:at, :actor, 'download', 'clip', :rid, :detail)"
                    ),
                    {
                        "at": (utcnow() - timedelta(hours=6 - i)).replace(tzinfo=None),
                        "actor": actor,
                        "rid": f"inc_{i}",
                        "detail": detail,
                    },
                )
        db.migrate()
        with db.session() as session:
            rows = session.execute(select(AuditEntry.id, AuditEntry.position)).all()
            assert [p for _, p in sorted(rows)] == list(range(1, 7))  # in the order written
            assert verify(session).ok
        append(db, 1)  # the chain goes on from the backfilled head
        result = run_verify(db_url, tmp_path)
        assert result.returncode == 0 and "7 entries verified" in result.stdout, result.stdout
        with pytest.raises(DBAPIError, match="append-only"), db.session() as session:
            session.execute(text("UPDATE audit_log SET actor = 'x'"))  # triggers are back
    finally:
        db.dispose()


def test_retention_removes_the_start_of_the_chain_and_moves_its_base(
    db: Database, tmp_path: Path
) -> None:
    now = utcnow()
    with db.session() as session:
        for days in (400, 300, 200, 190, 10, 0):
            audit(session, f"{days} days", "read", "clip", "i", at=now - timedelta(days=days))
        # A late writer: older than the next but written after it; it stays with it.
        audit(session, "late", "read", "clip", "i", at=now - timedelta(days=500))
    fourth = ids_by_position(db)[4]
    with db.session() as session:
        fourth_hash = session.scalar(select(AuditEntry.entry_hash).where(AuditEntry.id == fourth))
    assert retention.sweep(db.session, RetentionSettings(), now).audit == 4
    chain = head(db)
    assert (chain.base_position, chain.base_hash) == (4, fourth_hash)
    with db.session() as session:
        kept = select(AuditEntry.position).order_by(AuditEntry.position)
        assert session.scalars(kept).all() == [5, 6, 7]
        verdict = verify(session)
    assert verdict.ok and verdict.entries == 3 and verdict.first_position == 5
    tamper(db, "DELETE FROM audit_log WHERE position = 5")  # not retention: the base stays
    result = run_verify(db.url, tmp_path)
    assert result.returncode == 1
    assert "position 5: entries missing at position(s) 5: removed" in result.stdout


# --- anchors --------------------------------------------------------------------------------


@pytest.fixture
def services(db_url: str, make_settings: Callable[..., Settings]) -> Iterator[Services]:
    built = Services.from_settings(make_settings(database={"url": db_url}))
    built.start()
    try:
        yield built
    finally:
        built.close()


def anchors(services: Services) -> list[dict[str, Any]]:
    with services.db.session() as session:
        return [e.data for e in list_events(session, limit=1000, types=["audit.anchor"])]


def test_the_head_is_published_as_an_anchor_when_it_moved_and_the_interval_passed(
    services: Services,
) -> None:
    worker, now = AnchorWorker(services), utcnow()
    assert worker.every == timedelta(minutes=10)  # the default
    assert not worker.publish(now)  # nothing written yet
    append(services.db, 3)
    assert worker.publish(now)
    chain = head(services.db)
    with services.db.session() as session:
        at3 = session.scalar(select(AuditEntry.at).where(AuditEntry.position == 3))
    assert at3 is not None
    assert anchors(services) == [{"position": 3, "hash": chain.hash, "at": at3.isoformat()}]
    assert not worker.publish(now + timedelta(minutes=30))  # the head did not move
    append(services.db, 1)
    assert not worker.publish(now + timedelta(minutes=5))  # not due yet
    assert worker.publish(now + timedelta(minutes=31))
    assert [a["position"] for a in anchors(services)] == [3, 4]


@pytest.mark.postgres
def test_of_several_processes_one_publishes_each_anchor(
    pg_database: str, make_settings: Callable[..., Settings]
) -> None:
    with pg_schema(pg_database, "anc") as url:
        nodes = [Services.from_settings(make_settings(database={"url": url})) for _ in range(3)]
        try:
            for node in nodes:
                node.start()
            workers, now = [AnchorWorker(n) for n in nodes], utcnow()
            for round_ in range(5):
                append(nodes[0].db, 1)
                at = now + timedelta(hours=round_)
                barrier, won = threading.Barrier(len(workers)), list[bool]()

                def race(w: AnchorWorker, at: Any = at, b: Any = barrier, won: Any = won) -> None:
                    b.wait()
                    won.append(w.publish(at))

                threads = [threading.Thread(target=race, args=(w,)) for w in workers]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                assert sorted(won) == [False, False, True]
            assert [a["position"] for a in anchors(nodes[0])] == [1, 2, 3, 4, 5]
        finally:
            for node in nodes:
                node.close()


def test_a_rewritten_or_truncated_chain_fails_the_anchor_check(
    services: Services, tmp_path: Path
) -> None:
    db = services.db
    append(db, 5)
    assert AnchorWorker(services).publish(utcnow())
    anchor = anchors(services)[0]
    held = f"{anchor['hash']}@{anchor['position']}"
    assert run_verify(db.url, tmp_path, "--anchor", held).returncode == 0
    # A rewrite from position 2 on, hashes recomputed and the head row updated: the chain
    # itself holds (it has no secret), the anchor held outside does not.
    rewrite, prev = [], None
    with db.session() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.position)).all()
    for row in rows:
        actor = "forged" if row.position and row.position >= 2 else row.actor
        prev = prev or GENESIS
        body = entry_body(row.at, actor, row.action, row.resource, row.resource_id, row.detail)
        new = link_hash(prev, row.position or 0, body)
        rewrite.append(
            f"UPDATE audit_log SET actor = '{actor}', prev_hash = '{prev}', entry_hash = '{new}' "
            f"WHERE position = {row.position}"
        )
        prev = new
    tamper(db, *rewrite, f"UPDATE audit_chain SET hash = '{prev}'")
    alone = run_verify(db.url, tmp_path)
    assert alone.returncode == 0, alone.stdout  # what the chain alone cannot see
    checked = run_verify(db.url, tmp_path, "--anchor", held)
    assert checked.returncode == 1
    assert f"anchor {held}: FAILED: the entry at position 5 has another hash" in checked.stdout
    tamper(
        db,
        "DELETE FROM audit_log WHERE position >= 4",
        "UPDATE audit_chain SET position = 3, hash = "
        "(SELECT entry_hash FROM audit_log WHERE position = 3)",
    )
    truncated = run_verify(db.url, tmp_path, "--anchor", held)
    assert truncated.returncode == 1
    assert "no entry at position 5: the log was truncated" in truncated.stdout
    assert "audit log OK: 3 entries" in truncated.stdout


def test_bad_anchors_and_settings_are_refused_clearly(db: Database, tmp_path: Path) -> None:
    bad = run_verify(db.url, tmp_path, "--anchor", "abc@1")
    assert bad.returncode == 2 and "HASH@POSITION" in bad.stderr
    config = tmp_path / "bad.yaml"
    config.write_text("audit:\n  anchor_interval_s: 1\n")
    result = run_verify(db.url, tmp_path, "--config", str(config))
    assert result.returncode == 2 and "anchor_interval_s" in result.stderr
