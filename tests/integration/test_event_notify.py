"""Events committed by another process ring this one's doorbell at commit (PostgreSQL
LISTEN/NOTIFY, migration 0017), not at the next poll; bursts ring at most 5 times a second."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from config.settings import Settings
from runtime.process import build_process
from storage.db import Database
from storage.event_notify import EventListener
from storage.events import append_event
from tests.conftest import pg_schema


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    with pg_schema(pg_database, "notify") as url:
        db = Database(url)
        db.migrate()
        db.dispose()
        yield url


class Rings:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.times.append(time.monotonic())
        self.event.set()

    async def next(self, timeout: float) -> float:
        self.event.clear()
        await asyncio.wait_for(self.event.wait(), timeout)
        return self.times[-1]


@pytest.fixture
async def listening(pg_url: str) -> AsyncIterator[tuple[Rings, Database]]:
    """A listener (this process) and a database of its own (another process's appends)."""
    rings = Rings()
    task = asyncio.create_task(EventListener(pg_url, rings).run())
    other = Database(pg_url)
    try:
        await rings.next(10.0)  # the ring at LISTEN: whatever came before it
        await asyncio.sleep(0.3)  # past the minimum interval
        yield rings, other
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        other.dispose()


def _append(db: Database, n: int = 1) -> float:
    """Append ``n`` events in one transaction; the time just before it commits."""
    with db.session() as session:
        for i in range(n):
            append_event(session, "camera.online", {"camera_id": f"c{i}"})
        session.flush()
        committing = time.monotonic()
    return committing


@pytest.mark.postgres
async def test_a_commit_in_another_process_rings_at_once(
    listening: tuple[Rings, Database],
) -> None:
    rings, other = listening
    before = len(rings.times)
    with other.session() as session:  # appended, not yet committed: no ring
        append_event(session, "camera.offline", {"camera_id": "c1"})
        await asyncio.sleep(0.5)
        assert len(rings.times) == before
        session.commit()
        committed = time.monotonic()
    rung = await rings.next(2.0)
    assert rung - committed < 1.0, "the ring came as late as a poll"


@pytest.mark.postgres
async def test_a_burst_rings_a_few_times_and_its_last_commit_rings(
    listening: tuple[Rings, Database],
) -> None:
    rings, other = listening
    start = len(rings.times)
    first = time.monotonic()
    last = first
    while last - first < 1.0:  # ~1 s of commits, 5 events each
        last = await asyncio.to_thread(_append, other, 5)
    await asyncio.sleep(0.6)
    burst = rings.times[start:]
    assert 2 <= len(burst) <= 1.0 / 0.2 + 3, burst
    gaps = [b - a for a, b in itertools.pairwise(burst)]
    assert min(gaps) >= 0.18, gaps
    assert burst[-1] >= last, "the last commit of the burst did not ring"


@pytest.mark.postgres
def test_every_process_on_postgresql_listens(pg_url: str, tmp_path: object) -> None:
    for role in ("api", "worker", "all"):
        settings = Settings(data_dir=str(tmp_path), database={"url": pg_url})
        process = build_process(settings, role=role)
        try:
            assert any(isinstance(w, EventListener) for w in process.workers), role
        finally:
            process.services.close()
    sqlite = build_process(Settings(data_dir=str(tmp_path)))
    assert not any(isinstance(w, EventListener) for w in sqlite.workers)
    sqlite.services.close()
