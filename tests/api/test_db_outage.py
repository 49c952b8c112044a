"""The database going away under a running API: 503 with Retry-After, then back on its own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from api.app import create_app
from config.settings import Settings
from tests.api.conftest import BOOTSTRAP
from tests.conftest import PG_ADMIN_URL, fresh_pg_database

AUTH = {"Authorization": f"Bearer {BOOTSTRAP}"}


@pytest.fixture
def outage_db() -> Iterator[tuple[str, Engine, str]]:
    """A database of its own: the test refuses connections to it, others must not notice."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with fresh_pg_database("xl_outage") as (url, name):
        yield url, admin, name
    admin.dispose()


def _terminate(conn: object, name: str) -> None:
    conn.execute(  # type: ignore[attr-defined]
        text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
        {"n": name},
    )


def test_a_database_outage_answers_503_and_the_api_recovers(
    make_settings: Callable[..., Settings], outage_db: tuple[str, Engine, str]
) -> None:
    url, admin, name = outage_db
    settings = make_settings(database={"url": url}, auth={"bootstrap_token": BOOTSTRAP})
    with TestClient(create_app(settings, role="api")) as client:
        assert client.get("/api/v1/cameras", headers=AUTH).status_code == 200

        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            _terminate(conn, name)
        down = client.get("/api/v1/cameras", headers=AUTH)
        assert down.status_code == 503, down.text
        assert "database is unavailable" in down.json()["detail"]
        assert down.headers["retry-after"] == "5"
        assert "postgres:postgres" not in down.text  # no credentials, no URL

        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline and status != 200:
            status = client.get("/api/v1/cameras", headers=AUTH).status_code
            time.sleep(0.2)
        assert status == 200, "the API did not come back after the database did"
