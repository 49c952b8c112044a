"""evidence keys: the installation's Ed25519 key that signs evidence packages

Revision ID: 0023
Revises: 0022

Issue #19: an exported evidence package carries a manifest signed with the installation's
key, so a court can check its origin without our server. Every process of an installation
signs with the same key, so it lives in the shared database (the private half encrypted
with the camera-credential key); the unique ``slot`` makes concurrent creation end with one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evidence_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("slot", sa.String(16), nullable=True, unique=True),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("private_key_enc", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("evidence_keys")
