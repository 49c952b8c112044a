"""audit log hash chain: every entry carries its position, the previous entry's hash and its own

Revision ID: 0022
Revises: 0021

Issue #19: someone with rights on the database can bypass the append-only triggers
(migration 0005); a hash chain lets ``xueliang audit verify`` find what they changed,
removed or inserted (storage/audit_chain.py, docs/security.md). ``audit_chain`` is the one
row appends lock to keep positions contiguous; it also records what retention removed and
the last head published as an ``audit.anchor`` event.

Rows written before this migration are chained here, in ``id`` order (their order of
writing), in batches: the triggers refuse UPDATE, so they are disabled for the backfill
inside this transaction (PostgreSQL: ``DISABLE TRIGGER``, which needs the table's owner,
who runs migrations; SQLite: dropped and created again as in 0005).
"""

import sqlalchemy as sa
from alembic import op

from storage.audit_chain import GENESIS, entry_body, link_hash
from storage.models import UTCDateTime

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

BATCH = 5000
MESSAGE = "audit_log is append-only"
_SQLITE_NO_UPDATE = f"""
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, '{MESSAGE}: UPDATE refused'); END
"""

_log = sa.table(
    "audit_log",
    sa.column("id", sa.BigInteger()),
    sa.column("at", UTCDateTime()),
    sa.column("actor", sa.String()),
    sa.column("action", sa.String()),
    sa.column("resource", sa.String()),
    sa.column("resource_id", sa.String()),
    sa.column("detail", sa.JSON()),
    sa.column("position", sa.BigInteger()),
    sa.column("prev_hash", sa.String()),
    sa.column("entry_hash", sa.String()),
)


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("position", sa.BigInteger(), nullable=True))
    op.add_column("audit_log", sa.Column("prev_hash", sa.String(64), nullable=True))
    op.add_column("audit_log", sa.Column("entry_hash", sa.String(64), nullable=True))
    op.create_index("ix_audit_log_position", "audit_log", ["position"], unique=True)
    chain = op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("base_position", sa.BigInteger(), nullable=False),
        sa.Column("base_hash", sa.String(64), nullable=False),
        sa.Column("anchored_position", sa.BigInteger(), nullable=False),
        sa.Column("anchored_at", sa.DateTime(timezone=True), nullable=True),
    )
    position, head = _backfill()
    op.bulk_insert(
        chain,
        [
            {
                "id": 1,
                "position": position,
                "hash": head,
                "base_position": 0,
                "base_hash": GENESIS,
                "anchored_position": 0,
                "anchored_at": None,
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("audit_chain")
    op.drop_index("ix_audit_log_position", table_name="audit_log")
    op.drop_column("audit_log", "entry_hash")
    op.drop_column("audit_log", "prev_hash")
    op.drop_column("audit_log", "position")


def _backfill() -> tuple[int, str]:
    """Chain the existing rows in ``id`` order; returns the head (position, hash)."""
    conn = op.get_bind()
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        op.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    position, head, last_id = 0, GENESIS, None
    while True:
        query = sa.select(_log).order_by(_log.c.id).limit(BATCH)
        if last_id is not None:
            query = query.where(_log.c.id > last_id)
        rows = conn.execute(query).all()
        if not rows:
            break
        links = []
        for row in rows:
            position += 1
            body = entry_body(
                row.at, row.actor, row.action, row.resource, row.resource_id, row.detail
            )
            entry = link_hash(head, position, body)
            links.append({"b_id": row.id, "b_pos": position, "b_prev": head, "b_hash": entry})
            head = entry
        conn.execute(
            sa.update(_log)
            .where(_log.c.id == sa.bindparam("b_id"))
            .values(
                position=sa.bindparam("b_pos"),
                prev_hash=sa.bindparam("b_prev"),
                entry_hash=sa.bindparam("b_hash"),
            ),
            links,
        )
        last_id = rows[-1].id
    if postgres:
        op.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete")
    else:
        op.execute(_SQLITE_NO_UPDATE)
    return position, head
