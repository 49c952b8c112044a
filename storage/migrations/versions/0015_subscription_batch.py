"""subscriptions: events per webhook POST (opt-in batches)

Revision ID: 0015
Revises: 0014

``batch`` = 1 (the server default, so every existing subscription keeps its contract) is
one event per POST; N > 1 lets the delivery worker send up to N consecutive events in one
request as ``{"events": [...]}`` (delivery/worker.py).
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "subscriptions",
        sa.Column("batch", sa.Integer(), nullable=False, server_default="1"),
    )


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as table:  # SQLite rebuilds the table
        table.drop_column("batch")
