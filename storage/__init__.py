"""What lasts: the database (SQLAlchemy models, repositories, Alembic migrations), the
object store (local directory, S3/MinIO), the clip muxer and the local clip spool.

Repositories take a ``Session`` and work inside the caller's transaction; events are
appended in the same transaction as the change they report. May import: ``config``.
"""
