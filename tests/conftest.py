"""Shared fixtures: settings, databases (SQLite and the local PostgreSQL), a live server.

Peer fixtures (RTSP server, SeaweedFS) live in tests/peers/.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from config.settings import Settings
from storage.db import Database

pytest_plugins = ["tests.peers.rtsp", "tests.peers.seaweedfs", "tests.peers.onvif"]

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
PG_ADMIN_URL = os.environ.get(
    "XL_TEST_PG_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
)

# Tests build their own settings; a developer's XUELIANG_* variables must not leak in.
for _name in [n for n in os.environ if n.startswith("XUELIANG_")]:
    del os.environ[_name]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def fresh_pg_database(prefix: str) -> Iterator[tuple[str, str]]:
    """A new database on the local PostgreSQL server, as (URL, name); dropped afterwards,
    connected clients or not."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, name
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    with fresh_pg_database("xl_test") as (url, _name):
        yield url


def footage(name: str, frames: int, size: tuple[int, int]) -> list[npt.NDArray[np.uint8]]:
    """``frames`` BGR frames of ``../shared/data/NAME`` at ``size`` (w, h), looped."""
    cap = cv2.VideoCapture(str(SHARED_DATA / name))
    out: list[npt.NDArray[np.uint8]] = []
    while len(out) < frames:
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        out.append(np.asarray(cv2.resize(frame, size), dtype=np.uint8))
    cap.release()
    return out


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def steady(read: Callable[[], float | None], readings: int = 5, every: float = 0.5) -> float:
    """The median of ``readings`` values of ``read`` (a camera's frame rate) ``every``
    seconds apart: one reading is a 1-s window, which a loaded machine (the suite runs in
    three processes) pushes 10 % off now and then; a real fault is off all the time."""
    values = []
    for i in range(readings):
        if i:
            time.sleep(every)
        values.append(read() or 0.0)
    return statistics.median(values)


async def steady_async(
    read: Callable[[], float | None], readings: int = 5, every: float = 0.5
) -> float:
    """:func:`steady` on the event loop."""
    values = []
    for i in range(readings):
        if i:
            await asyncio.sleep(every)
        values.append(read() or 0.0)
    return statistics.median(values)


@contextmanager
def pg_schema(base: str, prefix: str) -> Iterator[str]:
    """A fresh schema in the PostgreSQL database ``base``, as a URL every connection of
    which sees only that schema (libpq option); dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using this runs against SQLite and against PostgreSQL (fresh schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    with pg_schema(request.getfixturevalue("pg_database"), "t") as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database on SQLite and on PostgreSQL (``db_url``), disposed of after."""
    database = Database(db_url)
    database.migrate()
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def shared_db(pg_database: str) -> Iterator[str]:
    """A PostgreSQL schema of its own, for every process of an installation a test runs."""
    with pg_schema(pg_database, "inst") as url:
        yield url


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with a private data dir; keyword overrides are nested dicts as in YAML."""

    def make(**overrides: Any) -> Settings:
        data: dict[str, Any] = {"data_dir": tmp_path / "data"}
        data.update(overrides)
        return Settings(**data)

    return make


class LiveServer:
    """uvicorn serving an app on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("live server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def live_server() -> Callable[[Any], LiveServer]:
    return LiveServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whatever reaches PostgreSQL is marked ``postgres`` (``make check`` runs SQLite only)."""
    for item in items:
        if "pg_database" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
