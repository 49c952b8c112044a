"""workers and camera leases (scale-out)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_workers_last_seen", "workers", ["last_seen"])
    op.create_table(
        "camera_leases",
        sa.Column("camera_id", sa.String(length=32), nullable=False),
        sa.Column("worker_id", sa.String(length=100), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("camera_id"),
    )
    op.create_index("ix_camera_leases_worker_id", "camera_leases", ["worker_id"])
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("spool_host", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("spool_host")
    op.drop_index("ix_camera_leases_worker_id", table_name="camera_leases")
    op.drop_table("camera_leases")
    op.drop_index("ix_workers_last_seen", table_name="workers")
    op.drop_table("workers")
