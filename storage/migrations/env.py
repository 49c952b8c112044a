"""Alembic environment: runs on the connection handed in by storage.db.Database.migrate."""

from alembic import context

import storage.grid_models  # noqa: F401  (register tables for migrations)
from storage.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
