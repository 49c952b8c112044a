"""cameras: indexes for the keysets of GET /cameras (newest first, and by name)

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cameras_created", "cameras", ["created_at", "id"])
    op.create_index("ix_cameras_name", "cameras", ["name", "id"])


def downgrade() -> None:
    op.drop_index("ix_cameras_name", table_name="cameras")
    op.drop_index("ix_cameras_created", table_name="cameras")
