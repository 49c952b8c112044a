"""完好 time in the daily availability rows

Revision ID: 0019
Revises: 0018

Issue #17: a camera counts as available (完好) only while it is online and its picture is
not degraded. The daily rows keep that time beside the online time, and the picture's state
at the day's end, so a report sums days as it does for online time. Days rolled up before
this migration keep NULL: their online time counts as 完好 (nothing was checked then).
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("camera_availability_daily") as table:
        table.add_column(sa.Column("good_s", sa.Float(), nullable=True))
        table.add_column(sa.Column("quality_end_state", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("camera_availability_daily") as table:
        table.drop_column("quality_end_state")
        table.drop_column("good_s")
