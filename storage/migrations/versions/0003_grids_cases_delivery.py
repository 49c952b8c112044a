"""grids, cases and event delivery

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "grids",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("parent_code", sa.String(length=64), nullable=True),
        sa.Column("boundary", sa.JSON(), nullable=True),
        sa.Column("created_at", AT, nullable=False),
        sa.Column("updated_at", AT, nullable=False),
        sa.PrimaryKeyConstraint("code"),
    )
    with op.batch_alter_table("grids", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_grids_level"), ["level"], unique=False)
        batch_op.create_index(batch_op.f("ix_grids_parent_code"), ["parent_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_grids_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "cases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("external_ref", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("grid_code", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", AT, nullable=False),
        sa.Column("updated_at", AT, nullable=False),
        sa.Column("closed_at", AT, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index("ix_cases_created", ["created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_external_ref"), ["external_ref"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_grid_code"), ["grid_code"], unique=False)

    op.create_table(
        "case_incidents",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("incident_id", sa.String(length=32), nullable=False),
        sa.Column("linked_at", AT, nullable=False),
        sa.Column("linked_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("case_id", "incident_id"),
    )
    with op.batch_alter_table("case_incidents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_case_incidents_incident_id"), ["incident_id"], unique=False
        )

    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret_enc", sa.Text(), nullable=False),
        sa.Column("types", sa.JSON(), nullable=True),
        sa.Column("grid_codes", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", AT, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscriptions_created_by"), ["created_by"], unique=False
        )

    op.create_table(
        "delivery_cursors",
        sa.Column("consumer", sa.String(length=32), nullable=False),
        sa.Column("last_delivered_seq", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", AT, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_until", AT, nullable=True),
        sa.Column("updated_at", AT, nullable=False),
        sa.PrimaryKeyConstraint("consumer"),
    )

    op.create_table(
        "delivery_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("consumer", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("at", AT, nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("delivery_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_log_at"), ["at"], unique=False)
        batch_op.create_index("ix_delivery_log_consumer_id", ["consumer", "id"], unique=False)

    with op.batch_alter_table("cameras", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("grid_auto", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("cameras", schema=None) as batch_op:
        batch_op.drop_column("grid_auto")
    op.drop_table("delivery_log")
    op.drop_table("delivery_cursors")
    op.drop_table("subscriptions")
    op.drop_table("case_incidents")
    op.drop_table("cases")
    op.drop_table("grids")
