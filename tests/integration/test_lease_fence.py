"""A worker whose lease renewal hangs (its database row locked, as while PostgreSQL
restarts or a connection attempt blocks) fences itself before its leases can expire, not
when the hung call finally gives up: another worker may take its cameras the moment they
expire, and two workers must never run one camera. docs/soak.md, run 1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, text

from config.settings import Settings
from runtime.leasing import LeaseKeeper, WorkerIdentity
from runtime.services import Services
from storage.models import Camera, utcnow
from tests.conftest import pg_schema

LEASE_S = 3.0


@pytest.fixture
def services(make_settings: Callable[..., Settings], pg_database: str) -> Iterator[Services]:
    with pg_schema(pg_database, "fence") as url:
        services = Services.from_settings(make_settings(database={"url": url}))
        services.db.migrate()
        with services.tx() as session:
            for i in range(3):
                session.add(Camera(id=f"cam_{i}", name=f"camera {i}", enabled=True))
        try:
            yield services
        finally:
            services.close()


@pytest.mark.postgres
async def test_a_hung_renewal_fences_before_the_lease_expires(services: Services) -> None:
    keeper = LeaseKeeper(services, WorkerIdentity("w1", "host", "worker", None, utcnow()), LEASE_S)
    assert await keeper.renew() and keeper.held == {"cam_0", "cam_1", "cam_2"}
    renewed = time.monotonic()
    # Another session locks this worker's row: the next heartbeat waits on it, like a
    # renewal whose database does not answer.
    locker = create_engine(services.db.engine.url)
    with locker.connect() as conn:
        conn.execute(text("SELECT id FROM workers WHERE id = 'w1' FOR UPDATE"))
        changed = await asyncio.wait_for(keeper.renew(), LEASE_S * 2)  # hung for ever before
        fenced_after = time.monotonic() - renewed
        assert changed and keeper.held == set(), "still running cameras it may lose"
        assert fenced_after < LEASE_S, fenced_after  # before another worker may take them
        conn.rollback()
    locker.dispose()
    # The database answers again: the hung call completes, and the next renewal gets the
    # cameras back (nobody took them meanwhile).
    deadline = time.monotonic() + 10
    while keeper.held != {"cam_0", "cam_1", "cam_2"} and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        await keeper.renew()
    assert keeper.held == {"cam_0", "cam_1", "cam_2"}
