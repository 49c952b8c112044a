"""availability: daily rows per camera, the days rolled up, transitions indexed by time;
the audit log lets retention delete rows older than 180 days

Revision ID: 0013
Revises: 0012

``camera_availability_daily`` holds one finished UTC day per camera (seconds online, seconds
known, transitions, state at the end) and ``availability_rollups`` the days that are
complete, so the availability report sums days instead of reading the raw transitions, and
retention can compact those (storage/availability.py, storage/retention.py).

The audit log stays append-only (migration 0005) for every row younger than 180 days — the
six months China's Cybersecurity Law asks for — and nothing may ever UPDATE or TRUNCATE it;
DELETE of older rows is what retention (``retention.audit_days``) needs. The floor lives in
the database, so neither a bug nor injected SQL can remove recent history.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

MESSAGE = "audit_log is append-only"
AUDIT_FLOOR_DAYS = 180

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {allow}
    RAISE EXCEPTION '{message}: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$
"""
# Nested IF: a TRUNCATE trigger has no OLD row, and plpgsql's AND does not short-circuit.
_PG_ALLOW_OLD = f"""IF TG_OP = 'DELETE' THEN
        IF OLD.at < now() - interval '{AUDIT_FLOOR_DAYS} days' THEN
            RETURN OLD;
        END IF;
    END IF;"""
_SQLITE_UP = [
    "DROP TRIGGER IF EXISTS audit_log_no_delete",
    f"""
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    WHEN OLD.at >= datetime('now', '-{AUDIT_FLOOR_DAYS} days')
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}: DELETE refused'); END
    """,
]
_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS audit_log_no_delete",
    f"""
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}: DELETE refused'); END
    """,
]


def upgrade() -> None:
    op.create_table(
        "camera_availability_daily",
        sa.Column("camera_id", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("online_s", sa.Float(), nullable=False),
        sa.Column("known_s", sa.Float(), nullable=False),
        sa.Column("changes", sa.Integer(), nullable=False),
        sa.Column("end_state", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("camera_id", "day"),
    )
    op.create_index("ix_camera_availability_daily_day", "camera_availability_daily", ["day"])
    op.create_table(
        "availability_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("cameras", sa.Integer(), nullable=False),
        sa.Column("rolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day"),
    )
    op.create_index("ix_camera_state_log_at", "camera_state_log", ["at"])
    _audit_guard(allow_old=True)


def downgrade() -> None:
    _audit_guard(allow_old=False)
    op.drop_index("ix_camera_state_log_at", table_name="camera_state_log")
    op.drop_table("availability_rollups")
    op.drop_index("ix_camera_availability_daily_day", table_name="camera_availability_daily")
    op.drop_table("camera_availability_daily")


def _audit_guard(allow_old: bool) -> None:
    if op.get_bind().dialect.name == "postgresql":
        allow = _PG_ALLOW_OLD if allow_old else ""
        op.execute(_PG_FUNCTION.format(allow=allow, message=MESSAGE))
    else:
        for statement in _SQLITE_UP if allow_old else _SQLITE_DOWN:
            op.execute(statement)
