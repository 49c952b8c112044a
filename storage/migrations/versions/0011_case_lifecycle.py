"""case lifecycle: states, event class, deadline, timeline; inbound webhook message ids

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        # Existing cases: open ones are filed (what POST /cases creates), closed ones closed.
        batch.add_column(sa.Column("state", sa.String(16), nullable=False, server_default="filed"))
        batch.add_column(sa.Column("state_since", AT, nullable=True))
        batch.add_column(sa.Column("class_code", sa.String(16), nullable=True))
        batch.add_column(sa.Column("location", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("camera_national_id", sa.String(20), nullable=True))
        batch.add_column(sa.Column("assignee", sa.String(200), nullable=True))
        batch.add_column(sa.Column("deadline_at", AT, nullable=True))
        batch.add_column(sa.Column("overdue_at", AT, nullable=True))
        batch.create_index("ix_cases_state", ["state"])
        batch.create_index("ix_cases_deadline_at", ["deadline_at"])
    op.execute("UPDATE cases SET state = 'closed' WHERE status = 'closed'")
    op.execute("UPDATE cases SET state_since = COALESCE(closed_at, updated_at, created_at)")
    with op.batch_alter_table("cases") as batch:
        batch.alter_column("state_since", existing_type=AT, nullable=False)
    op.create_table(
        "case_transitions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column(
            "case_id", sa.String(32), sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("at", AT, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("assignee", sa.String(200), nullable=True),
        sa.Column("deadline_at", AT, nullable=True),
    )
    op.create_index("ix_case_transitions_case", "case_transitions", ["case_id", "id"])
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("received_at", AT, nullable=False),
    )
    op.create_index("ix_inbound_messages_received_at", "inbound_messages", ["received_at"])


def downgrade() -> None:
    op.drop_table("inbound_messages")
    op.drop_table("case_transitions")
    with op.batch_alter_table("cases") as batch:
        batch.drop_index("ix_cases_deadline_at")
        batch.drop_index("ix_cases_state")
        for column in (
            "overdue_at", "deadline_at", "assignee", "camera_national_id", "location",
            "class_code", "state_since", "state",
        ):  # fmt: skip
            batch.drop_column(column)
