"""camera quality (视频质量诊断): state now, its changes, reference views

Revision ID: 0018
Revises: 0017

Issue #17: a camera is 完好 only while its picture is usable. ``camera_quality`` holds the
state the analytics found (ok / degraded with its problems / unknown),
``camera_quality_log`` its changes (for 完好 time), ``camera_quality_refs`` the reference
views the checks compare against, so a camera keeps them when another worker takes it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "camera_quality",
        sa.Column(
            "camera_id",
            sa.String(32),
            sa.ForeignKey("cameras.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reference_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ptz_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "camera_quality_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("camera_id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_camera_quality_log_camera_at", "camera_quality_log", ["camera_id", "at"])
    op.create_table(
        "camera_quality_refs",
        sa.Column(
            "camera_id",
            sa.String(32),
            sa.ForeignKey("cameras.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("monochrome", sa.Boolean(), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("learnt_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("camera_quality_refs")
    op.drop_index("ix_camera_quality_log_camera_at", "camera_quality_log")
    op.drop_table("camera_quality_log")
    op.drop_table("camera_quality")
