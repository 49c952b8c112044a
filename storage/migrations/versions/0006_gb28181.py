"""GB/T 28181 devices and their catalog channels

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gb28181_devices",
        sa.Column("device_id", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("manufacturer", sa.String(length=100), nullable=True),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("firmware", sa.String(length=100), nullable=True),
        sa.Column("transport", sa.String(length=8), nullable=True),
        sa.Column("address", sa.String(length=100), nullable=True),
        sa.Column("contact", sa.String(length=500), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("password_enc", sa.Text(), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("registered_at", AT, nullable=True),
        sa.Column("expires_at", AT, nullable=True),
        sa.Column("last_keepalive_at", AT, nullable=True),
        sa.Column("created_at", AT, nullable=False),
        sa.Column("updated_at", AT, nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_index("ix_gb28181_devices_online", "gb28181_devices", ["online"])
    op.create_index("ix_gb28181_devices_expires_at", "gb28181_devices", ["expires_at"])
    op.create_table(
        "gb28181_channels",
        sa.Column("device_id", sa.String(length=20), nullable=False),
        sa.Column("channel_id", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("manufacturer", sa.String(length=100), nullable=True),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("owner", sa.String(length=100), nullable=True),
        sa.Column("civil_code", sa.String(length=32), nullable=True),
        sa.Column("parent_id", sa.String(length=200), nullable=True),
        sa.Column("address", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=3), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("updated_at", AT, nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["gb28181_devices.device_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "channel_id"),
    )


def downgrade() -> None:
    op.drop_table("gb28181_channels")
    op.drop_index("ix_gb28181_devices_expires_at", table_name="gb28181_devices")
    op.drop_index("ix_gb28181_devices_online", table_name="gb28181_devices")
    op.drop_table("gb28181_devices")
