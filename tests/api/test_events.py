"""The event log: strictly increasing seq under concurrency; SSE resumes without gaps."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator

import httpx

from api.app import create_app
from config.settings import Settings
from storage.events import append_event, list_events
from tests.api.conftest import BOOTSTRAP, Api
from tests.conftest import LiveServer

WRITERS, PER_WRITER = 6, 40


def test_concurrent_appends_get_strictly_increasing_seq_and_readers_miss_none(api: Api) -> None:
    services = api.services
    done = threading.Event()
    seen: list[int] = []

    def write(n: int) -> None:
        for i in range(PER_WRITER):
            with services.tx() as session:
                append_event(session, "camera.online", {"writer": n, "i": i})

    def read() -> None:
        # A poller that follows the log with `after` must see every seq exactly once, even
        # while transactions commit concurrently.
        after = 0
        while True:
            finished = done.is_set()
            with services.db.session() as session:
                batch = list_events(session, after=after, limit=50)
            seen.extend(e.seq for e in batch)
            after = batch[-1].seq if batch else after
            if finished and not batch:
                return

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join(timeout=60)

    with services.db.session() as session:
        events = list_events(session, limit=10_000)
    seqs = [e.seq for e in events]
    assert len(seqs) == WRITERS * PER_WRITER
    assert all(b > a for a, b in itertools.pairwise(seqs))
    assert seen == seqs
    # Each writer's own events are in its order.
    for n in range(WRITERS):
        mine = [e.data["i"] for e in events if e.data["writer"] == n]
        assert mine == list(range(PER_WRITER))


def test_events_page_by_cursor(api: Api) -> None:
    with api.services.tx() as session:
        for i in range(5):
            append_event(session, "camera.offline", {"i": i})
    h = api.as_role("grid_platform")
    first = api.client.get("/api/v1/events", params={"after": 0, "limit": 3}, headers=h).json()
    assert [e["data"]["i"] for e in first["items"]] == [0, 1, 2]
    rest = api.client.get("/api/v1/events", params={"after": first["last_seq"]}, headers=h).json()
    assert [e["data"]["i"] for e in rest["items"]] == [3, 4]
    empty = api.client.get("/api/v1/events", params={"after": rest["last_seq"]}, headers=h).json()
    assert empty == {"items": [], "last_seq": rest["last_seq"]}


def _sse(lines: Iterator[str], count: int) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    current: dict[str, object] = {}
    for line in lines:
        if line.startswith("id:"):
            current["id"] = int(line[3:].strip())
        elif line.startswith("data:"):
            current["data"] = json.loads(line[5:].strip())
        elif line == "" and "id" in current:
            events.append(current)
            current = {}
            if len(events) == count:
                break
    return events


def test_sse_reconnect_with_last_event_id_misses_none_and_repeats_none(
    api_settings: Settings,
) -> None:
    app = create_app(api_settings)
    headers = {"Authorization": f"Bearer {BOOTSTRAP}"}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=20) as http:
        services = app.state.services

        def emit(first: int, n: int) -> None:
            with services.tx() as session:
                for i in range(first, first + n):
                    append_event(session, "incident.created", {"n": i})

        emit(0, 3)
        with http.stream("GET", "/api/v1/events/stream?after=0", headers=headers) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            got = _sse(r.iter_lines(), 3)
        last_id = got[-1]["id"]
        emit(3, 4)  # while the client is away
        resumed = {**headers, "Last-Event-ID": str(last_id)}
        with http.stream("GET", "/api/v1/events/stream", headers=resumed) as r:
            threading.Timer(0.5, emit, args=(7, 2)).start()  # and live ones after reconnecting
            got += _sse(r.iter_lines(), 6)
    numbers = [e["data"]["data"]["n"] for e in got]  # type: ignore[index]
    assert numbers == list(range(9))
    ids = [e["id"] for e in got]
    assert ids == sorted(set(ids))  # type: ignore[type-var]
