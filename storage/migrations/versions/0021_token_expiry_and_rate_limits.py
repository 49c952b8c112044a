"""token expiry, rotation, last use; rate limits shared by every process

Revision ID: 0021
Revises: 0019

Issue #19: tokens get ``expires_at`` (NULL: never — the tokens issued before this revision
keep working as they did), ``last_used_at`` (written at most once a minute per token) and
``rotated_to`` (the successor a rotation issued). ``rate_limits`` holds the token buckets of
the failed-authentication and token-creation limits, so that every API process of an
installation counts against the same allowance.
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("rotated_to", sa.String(32), nullable=True))
    op.create_table(
        "rate_limits",
        sa.Column("scope", sa.String(32), primary_key=True),
        sa.Column("client", sa.String(64), primary_key=True),
        sa.Column("level", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
    )
    op.create_index("ix_rate_limits_at", "rate_limits", ["at"])


def downgrade() -> None:
    op.drop_index("ix_rate_limits_at", "rate_limits")
    op.drop_table("rate_limits")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("rotated_to")
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
