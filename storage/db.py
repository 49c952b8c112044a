"""Database engine, sessions and migrations (Alembic, applied at start-up)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from config.errors import XueliangError

log = logging.getLogger(__name__)


class DatabaseError(XueliangError, ConnectionError):
    """The database is unreachable, misconfigured or refused an operation."""


MIGRATIONS = Path(__file__).with_name("migrations")
#: pg_advisory lock ids; arbitrary but fixed so every process agrees.
MIGRATION_LOCK = 0x58554C01


def shown_url(url: str) -> str:
    """The database URL with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


class Database:
    """One engine and session factory per process."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.engine = _create_engine(url, pool_size)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self.sessions() as session, session.begin():
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest revision; safe when several processes start at once."""
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
                cfg = AlembicConfig()
                cfg.set_main_option("script_location", str(MIGRATIONS))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as err:
            raise DatabaseError(connect_message(self.url, err)) from err

    def check(self) -> None:
        """Raise :class:`DatabaseError` unless the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as err:
            raise DatabaseError(connect_message(self.url, err)) from err

    def dispose(self) -> None:
        self.engine.dispose()


def _create_engine(url: str, pool_size: int) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise DatabaseError(
            f"database URL is not valid: {shown_url(url)} — set XUELIANG_DATABASE__URL to e.g. "
            "postgresql+psycopg://user@127.0.0.1:5432/xueliang"
        ) from err
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size)
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ArgumentError, ImportError) as err:
        raise DatabaseError(
            f"unsupported database URL {shown_url(url)} ({err}): set XUELIANG_DATABASE__URL "
            "to sqlite:///PATH or postgresql+psycopg://user@host:5432/db"
        ) from err
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers (SSE, API) proceed while the ingest side writes.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def connect_message(url: str, err: Exception) -> str:
    reason = str(getattr(err, "orig", err)).strip().splitlines()[0] if str(err) else repr(err)
    return (
        f"cannot use database {shown_url(url)}: {reason} — check XUELIANG_DATABASE__URL "
        "and that the server is running"
    )
