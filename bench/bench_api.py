"""The incidents API under concurrent load with 1,000,000 incidents in PostgreSQL, against the
same queries run directly with psycopg.

Run: ``.venv/bin/python bench/bench_api.py [--rows 1000000] [--concurrency 8] [--window 10]
[--rate 200]`` (issue #18 asks for ``--rows 10000000``: about 10 minutes, 5 GB of disk).

1. A fresh database on the local PostgreSQL server (127.0.0.1:5432, ``XL_BENCH_PG_URL`` to
   change it), migrated by the service's own migrations, then filled server-side with
   ``INSERT … SELECT FROM generate_series`` (the fastest bulk path: no rows cross the
   wire; secondary indexes rebuilt afterwards): 1,000 cameras in 100 grids (under 10 towns
   of one county of one city), incidents spread over a year (one every ~31 s), 90 % motion
   / 10 % crowd, mixed review states, archived clips, one history row each. Dropped at the
   end.
2. The API as deployed: ``python -m cli.main serve --role api`` (one uvicorn process),
   retention at 3650 days (the default 30 would expire clips at start-up, mid-scenario).
3. Load from this process (httpx, asyncio, ``--concurrency`` requests in flight), each
   scenario for ``--window`` seconds after a short warm-up:
   * ``list``: ``GET /api/v1/incidents?limit=50``, following ``next_cursor`` for up to
     ``--pages`` pages, then again;
   * ``list camera``: the same with ``camera_id=`` a random camera (1,000 incidents);
   * ``list grid``: the same with ``grid_code=`` a random grid (10,000 incidents);
   * ``list county``: ``grid_code=`` the county (its subtree holds every incident);
   * ``get``: ``GET /api/v1/incidents/{id}`` of random incidents.
4. Baseline, same run, same concurrency: the very SQL the repository issues for each
   request (captured from ``storage.incidents`` through SQLAlchemy, parameters replaced
   per request; for ``get`` the row and its history; for a ``grid_code`` also the query
   resolving its subtree, before every page as the API does) replayed with psycopg's
   async connections, one per worker. Ratio = API requests/s over raw database queries/s.

Before the closed-loop scenarios, an open loop (``--rate``, 200 pages/s by default) for
``list``, ``list grid`` and ``list county``: a page request falls due every 1/rate s
whatever the answers, its latency counted from when it was due; nine in ten follow a
``next_cursor`` an earlier page returned. The incidents span a year whatever their number.

Reported per scenario: requests/s, p50/p99 latency, latency of the first and the last
page (keyset pages should cost the same at any depth), the CPU of the API process (and per
request), of this client and of the database backends. Prints a table and one JSON line;
about 3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    TOKEN,
    ServiceProcess,
    cpu_seconds,
    load_avg,
    machine,
    percentile,
    pg_database,
    print_table,
    rounded,
    workdir,
)

CAMERAS, GRIDS = 1000, 100
COLUMNS = (
    "id, camera_id, grid_code, type, status, started_at, ended_at, peak_persons, peak_motion, "
    "snapshot_key, snapshot_sha256, clip_key, clip_sha256, clip_size, clip_duration_s, "
    "clip_state, clip_error, spool_host, created_at, updated_at"
)
FILL = """
INSERT INTO incidents (id, camera_id, grid_code, type, status, started_at, ended_at,
    peak_motion, snapshot_key, snapshot_sha256, clip_key, clip_sha256, clip_size,
    clip_duration_s, clip_state, spool_host, created_at, updated_at)
SELECT 'inc_' || substr(md5(i::text), 1, 16),
       'cam_' || lpad((i % {cameras})::text, 12, '0'),
       '330102' || lpad((i % {cameras} % {grids})::text, 6, '0'),
       CASE WHEN r < 0.1 THEN 'crowd' ELSE 'motion' END,
       CASE WHEN r < 0.2 THEN 'new' WHEN r < 0.3 THEN 'acknowledged'
            WHEN r < 0.9 THEN 'resolved' ELSE 'dismissed' END,
       t, t + make_interval(secs => 10 + r * 290), r,
       'snapshots/cam/' || i || '.jpg', md5(i::text) || md5(i::text),
       'clips/cam/' || i || '.mp4', md5(t::text) || md5(t::text),
       1000000 + (r * 9000000)::int, 10 + r * 290, 'archived', 'bench-host', t, t
FROM (SELECT i, random() AS r, now() - make_interval(secs => i * {spacing}) AS t
      FROM generate_series(1, {rows}) AS i) AS s
ORDER BY 1
"""
HISTORY = """
INSERT INTO incident_history (incident_id, at, actor, action)
SELECT id, created_at, 'system', 'created' FROM incidents
"""
GRIDS_FILL = """
INSERT INTO grids (code, name, level, parent_code, created_at, updated_at)
SELECT code, code, level, parent, now(), now() FROM (
    VALUES ('3301', 'city', NULL), ('330102', 'county', '3301')
    UNION ALL
    SELECT '330102' || lpad(t::text, 3, '0'), 'town', '330102'
    FROM generate_series(0, {towns} - 1) AS t
    UNION ALL
    SELECT '330102' || lpad(k::text, 6, '0'), 'grid', '330102' || lpad((k / 10)::text, 3, '0')
    FROM generate_series(0, {grids} - 1) AS k
) AS g(code, level, parent)
"""
COUNTY = "330102"
# Marker values: the repository builds each query shape once with them; the baseline then
# replays exactly that SQL with psycopg, the markers replaced by each request's values.
MARK_CAMERA, MARK_GRID, MARK_ID = "cam_MARKER", "grid_MARKER", "inc_MARKER"
MARK_AT = datetime(2001, 2, 3, 4, 5, 6, 789, tzinfo=UTC)


@dataclass(frozen=True)
class Shape:
    """One statement the repository issues, with its parameters as marker values."""

    sql: str
    params: dict[str, Any]

    def bind(self, values: dict[Any, Any]) -> dict[str, Any]:
        return {k: values.get(v, v) if _hashable(v) else v for k, v in self.params.items()}


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    first_page: list[float] = field(default_factory=list)
    last_page: list[float] = field(default_factory=list)
    errors: int = 0


@dataclass(frozen=True)
class Data:
    ids: list[str]
    cameras: list[str]
    grids: list[str]


# The database -----------------------------------------------------------------------------------


def fill(url: str, rows: int) -> tuple[float, Data]:
    """Migrate, insert ``rows`` incidents and their history, analyse; returns the seconds.

    The secondary indexes are dropped for the insert and rebuilt after it (their exact
    definitions, as the migrations made them); rows go in primary-key order.
    """
    from storage.db import Database

    db = Database(url)
    db.migrate()
    db.dispose()
    started = time.monotonic()
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
            "('incidents', 'incident_history') AND indexname NOT LIKE '%pkey'"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"'.encode())
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("SET session_replication_role = replica")  # no per-row FK checks
        conn.execute("SELECT setseed(0.42)")
        spacing = 365 * 86400 / rows  # a year of incidents, whatever their number
        conn.execute(FILL.format(cameras=CAMERAS, grids=GRIDS, rows=rows, spacing=spacing).encode())
        conn.execute(HISTORY.encode())
        conn.execute(GRIDS_FILL.format(towns=GRIDS // 10, grids=GRIDS).encode())
        for _, definition in indexes:
            conn.execute(definition.encode())
        conn.execute("VACUUM ANALYZE incidents")
        conn.execute("VACUUM ANALYZE incident_history")
        took = time.monotonic() - started
        size = conn.execute(
            "SELECT pg_total_relation_size('incidents') "
            "+ pg_total_relation_size('incident_history')"
        ).fetchone()
        assert size is not None
        print(f"  incidents with their history and indexes: {size[0] / rows:.0f} bytes each")
        ids = [r[0] for r in conn.execute("SELECT id FROM incidents TABLESAMPLE SYSTEM (2)")]
        cameras = [r[0] for r in conn.execute("SELECT DISTINCT camera_id FROM incidents")]
        grids = [r[0] for r in conn.execute("SELECT DISTINCT grid_code FROM incidents")]
        conn.execute("ANALYZE grids")
    return took, Data(ids, cameras, grids)


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def backend_cpu(url: str) -> float:
    """CPU seconds of every PostgreSQL backend connected to this database right now."""
    total = 0.0
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    for (pid,) in pids:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            total += cpu_seconds(pid)
    return total


def capture_shapes(url: str) -> dict[str, Shape]:
    """The SQL the repository issues for each request shape (as ``api.routes.incidents``
    builds it: a ``grid_code`` is resolved to its subtree's codes first, then listed with
    ``grid_code IN (…)``), captured from SQLAlchemy with marker values."""
    from sqlalchemy import event

    from storage import incidents as repo
    from storage.db import Database
    from storage.grids import subtree_codes
    from storage.models import Incident

    db = Database(url)
    seen: list[Shape] = []

    def keep(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "incident" in statement or "subtree" in statement:
            seen.append(Shape(statement, dict(params)))

    event.listen(db.engine, "before_cursor_execute", keep)
    shapes = {}
    with db.session() as session:
        seen.clear()
        county = subtree_codes(session, COUNTY)
        shapes["subtree"] = Shape(seen[-1].sql, {k: MARK_GRID for k in seen[-1].params})
    filters = {
        "list": repo.IncidentFilter(),
        "list camera": repo.IncidentFilter(camera_id=MARK_CAMERA),
        "list grid": repo.IncidentFilter(grid_codes=(MARK_GRID,)),
        "list county": repo.IncidentFilter(grid_codes=county),
    }
    cursor = repo.encode_cursor(Incident(started_at=MARK_AT, id=MARK_ID))
    try:
        with db.session() as session:
            for kind, f in filters.items():
                for page, after in (("first", None), ("next", cursor)):
                    seen.clear()
                    repo.list_incidents(session, f, 50, after)
                    shapes[f"{kind}/{page}"] = seen[-1]
            seen.clear()
            session.get(Incident, MARK_ID)
            repo.history(session, MARK_ID)
            shapes["get"], shapes["history"] = seen[0], seen[-1]
    finally:
        db.dispose()
    return shapes


# Load -------------------------------------------------------------------------------------------


Request = Callable[[random.Random, Samples], Awaitable[None]]


async def drive(
    make: Callable[[], Awaitable[Request]], workers: int, warmup: float, window: float
) -> Samples:
    """``workers`` loops calling their request function; only the window is recorded."""
    samples = Samples()
    ignored = Samples()
    start = time.monotonic()
    record_from = start + warmup
    end = record_from + window

    async def worker(n: int) -> None:
        rng = random.Random(n)
        request = await make()
        while (now := time.monotonic()) < end:
            await request(rng, samples if now >= record_from else ignored)

    await asyncio.gather(*(worker(n) for n in range(workers)))
    return samples


def api_scenario(client: httpx.AsyncClient, data: Data, kind: str, pages: int) -> Request:
    async def request(rng: random.Random, s: Samples) -> None:
        if kind == "get":
            t0 = time.perf_counter()
            r = await client.get(f"/api/v1/incidents/{rng.choice(data.ids)}")
            s.latencies.append(time.perf_counter() - t0)
            s.errors += r.status_code != 200
            return
        params: dict[str, Any] = {"limit": 50, **_filter(kind, rng, data)}
        for page in range(pages):
            t0 = time.perf_counter()
            r = await client.get("/api/v1/incidents", params=params)
            took = time.perf_counter() - t0
            _page_sample(s, took, page, pages)
            if r.status_code != 200:
                s.errors += 1
                return
            cursor = r.json()["next_cursor"]
            if cursor is None:
                return
            params["cursor"] = cursor

    return request


def db_scenario(
    conn: psycopg.AsyncConnection[Any], shapes: dict[str, Shape], data: Data, kind: str, pages: int
) -> Request:
    async def request(rng: random.Random, s: Samples) -> None:
        if kind == "get":
            values: dict[str | datetime, Any] = {MARK_ID: rng.choice(data.ids)}
            t0 = time.perf_counter()
            row = await (
                await conn.execute(shapes["get"].sql, shapes["get"].bind(values))
            ).fetchone()
            history = shapes["history"]
            await (await conn.execute(history.sql, history.bind(values))).fetchall()
            s.latencies.append(time.perf_counter() - t0)
            s.errors += row is None
            return
        values = dict.fromkeys((MARK_CAMERA, MARK_GRID), "")
        for key, value in _filter(kind, rng, data).items():
            values[MARK_CAMERA if key == "camera_id" else MARK_GRID] = value
        subtree = shapes["subtree"] if kind in ("list grid", "list county") else None
        for page in range(pages):
            shape = shapes[f"{kind}/{'next' if page else 'first'}"]
            t0 = time.perf_counter()
            if subtree is not None:  # the API resolves the subtree for every page
                await (await conn.execute(subtree.sql, subtree.bind(values))).fetchall()
            rows = await (await conn.execute(shape.sql, shape.bind(values))).fetchall()
            _page_sample(s, time.perf_counter() - t0, page, pages)
            if len(rows) <= 50:
                return
            values[MARK_AT], values[MARK_ID] = rows[49][5], rows[49][0]  # started_at, id

    return request


def _filter(kind: str, rng: random.Random, data: Data) -> dict[str, str]:
    if kind == "list camera":
        return {"camera_id": rng.choice(data.cameras)}
    if kind == "list grid":
        return {"grid_code": rng.choice(data.grids)}
    if kind == "list county":
        return {"grid_code": COUNTY}
    return {}


def _page_sample(s: Samples, took: float, page: int, pages: int) -> None:
    s.latencies.append(took)
    if page == 0:
        s.first_page.append(took)
    elif page == pages - 1:
        s.last_page.append(took)


# At a fixed rate --------------------------------------------------------------------------------


RATE_SCENARIOS = ("list", "list grid", "list county")


async def at_rate(
    client: httpx.AsyncClient, data: Data, kind: str, rate: float, window: float, pages: int
) -> dict[str, Any]:
    """Open loop: a page request every ``1 / rate`` s whatever the answers, each one's
    latency counted from when it was due (a slow answer delays nobody's clock, so no
    coordinated omission). One arrival in ``pages`` starts a list from its first page; the
    others follow a ``next_cursor`` an earlier answer left, as an operator paging does."""
    cursors: list[tuple[dict[str, Any], int]] = []
    latencies: list[float] = []
    errors = 0
    rng = random.Random(7)

    async def one(due: float, params: dict[str, Any], depth: int) -> None:
        nonlocal errors
        try:
            r = await client.get("/api/v1/incidents", params=params)
        except httpx.HTTPError:
            errors += 1
            return
        latencies.append(time.monotonic() - due)
        if r.status_code != 200:
            errors += 1
            return
        cursor = r.json()["next_cursor"]
        if cursor is not None and depth < pages - 1:
            cursors.append((params | {"cursor": cursor}, depth + 1))

    start = time.monotonic() + 0.1
    tasks = []
    n = int(rate * window)
    for i in range(n):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if cursors and rng.random() > 1 / pages:
            params, depth = cursors.pop(rng.randrange(len(cursors)))
        else:
            params, depth = {"limit": 50, **_filter(kind, rng, data)}, 0
        tasks.append(asyncio.create_task(one(due, params, depth)))
    await asyncio.gather(*tasks)
    return {
        "rate": rate,
        "achieved": len(latencies) / (time.monotonic() - start),
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "max_ms": 1000 * max(latencies, default=float("nan")),
        "errors": errors,
        "load": load_avg(),
    }


async def measure_rate(url: str, data: Data, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60
    ) as client:
        await at_rate(client, data, "list", args.rate, 2.0, args.pages)  # warm-up
        return {
            kind: await at_rate(client, data, kind, args.rate, args.window, args.pages)
            for kind in RATE_SCENARIOS
        }


# The run ----------------------------------------------------------------------------------------


SCENARIOS = ("list", "list camera", "list grid", "list county", "get")


async def measure_api(
    url: str, db_url: str, pid: int, data: Data, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    limits = httpx.Limits(max_connections=args.concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60
    ) as client:
        for kind in SCENARIOS:

            async def make(kind: str = kind) -> Request:
                return api_scenario(client, data, kind, args.pages)

            out[kind] = await _measured(make, db_url, pid, args)
    return out


async def measure_db(
    db_url: str, data: Data, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    shapes = capture_shapes(db_url)
    out: dict[str, dict[str, Any]] = {}
    for kind in SCENARIOS:
        conns: list[psycopg.AsyncConnection[Any]] = []

        async def make(
            kind: str = kind, conns: list[psycopg.AsyncConnection[Any]] = conns
        ) -> Request:
            conn = await psycopg.AsyncConnection.connect(_dsn(db_url), autocommit=True)
            conns.append(conn)
            return db_scenario(conn, shapes, data, kind, args.pages)

        try:
            out[kind] = await _measured(make, db_url, None, args)
        finally:
            for conn in conns:
                await conn.close()
    return out


async def _measured(
    make: Callable[[], Awaitable[Request]], db_url: str, pid: int | None, args: argparse.Namespace
) -> dict[str, Any]:
    api0 = cpu_seconds(pid) if pid else 0.0
    me0, pg0, t0 = cpu_seconds(), backend_cpu(db_url), time.monotonic()
    samples = await drive(make, args.concurrency, args.warmup, args.window)
    wall = time.monotonic() - t0
    api1 = cpu_seconds(pid) if pid else 0.0
    me1, pg1 = cpu_seconds(), backend_cpu(db_url)
    lat = samples.latencies
    return {
        "requests": len(lat),
        "errors": samples.errors,
        "rps": len(lat) / args.window,
        "p50_ms": 1000 * percentile(lat, 50),
        "p99_ms": 1000 * percentile(lat, 99),
        "first_page_p50_ms": 1000 * percentile(samples.first_page, 50),
        "last_page_p50_ms": 1000 * percentile(samples.last_page, 50),
        # CPU over warm-up + window, per second of it (cores)
        "api_cores": (api1 - api0) / wall,
        "api_cpu_ms_per_req": 1000 * (api1 - api0) / max(1, len(lat)) * args.window / wall,
        "client_cores": (me1 - me0) / wall,
        "db_cores": max(0.0, pg1 - pg0) / wall,
        "load": load_avg(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with workdir("bench-api-") as tmp, pg_database("xl_bench_api") as db_url:
        print(f"filling {args.rows:,} incidents…", flush=True)
        fill_s, data = fill(db_url, args.rows)
        print(f"  {fill_s:.1f} s ({args.rows / fill_s:,.0f} rows/s with history and indexes)")
        # The incidents span a year: with the default 30 days, retention would expire 500
        # clips at start-up, inside the first scenario's window (its start-up sweep).
        env = {"XUELIANG_DATABASE__URL": db_url, "XUELIANG_RECORDING__RETENTION_DAYS": "3650"}
        with ServiceProcess(tmp, env, role="api") as api:
            rate_results = asyncio.run(measure_rate(api.url, data, args)) if args.rate else {}
            api_results = asyncio.run(measure_api(api.url, db_url, api.pid, data, args))
        db_results = asyncio.run(measure_db(db_url, data, args))
    scenarios = {
        kind: {
            "api": api_results[kind],
            "db": db_results[kind],
            "ratio_rps": api_results[kind]["rps"] / db_results[kind]["rps"],
        }
        for kind in SCENARIOS
    }
    return {
        "bench": "api",
        "machine": machine(),
        "rows": args.rows,
        "fill_s": round(fill_s, 1),
        "concurrency": args.concurrency,
        "pages": args.pages,
        "window_s": args.window,
        "scenarios": scenarios,
        "at_rate": rate_results,
    }


def _report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"\nmachine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB; load now {m['load']}; "
        f"{r['rows']:,} incidents (filled in {r['fill_s']} s); concurrency {r['concurrency']}, "
        f"lists follow up to {r['pages']} pages"
    )
    rows = []
    for kind, sc in r["scenarios"].items():
        for side in ("api", "db"):
            x = sc[side]
            rows.append(
                (
                    kind if side == "api" else "",
                    "API" if side == "api" else "psycopg",
                    f"{x['rps']:.0f}",
                    f"{x['p50_ms']:.1f}",
                    f"{x['p99_ms']:.1f}",
                    "-" if kind == "get" else f"{x['first_page_p50_ms']:.1f}",
                    "-" if kind == "get" else f"{x['last_page_p50_ms']:.1f}",
                    f"{100 * x['api_cores']:.0f}" if side == "api" else "-",
                    f"{x['api_cpu_ms_per_req']:.1f}" if side == "api" else "-",
                    f"{100 * x['client_cores']:.0f}",
                    f"{100 * x['db_cores']:.0f}",
                    x["errors"],
                    x["load"][0],
                    f"{sc['ratio_rps']:.3f}" if side == "api" else "",
                )
            )
    headers = (
        "scenario", "via", "req/s", "p50 ms", "p99 ms", "page1 ms", "last pg ms", "api %cpu",
        "api ms/req", "client %", "pg %cpu", "err", "load", "ratio",
    )  # fmt: skip
    print_table(headers, rows)
    if r["at_rate"]:
        print(f"\nopen loop at {args_rate(r)} pages/s (latency from when each was due):")
        print_table(
            ("scenario", "pages/s", "p50 ms", "p99 ms", "max ms", "err", "load"),
            [
                (k, f"{x['achieved']:.0f}", f"{x['p50_ms']:.1f}", f"{x['p99_ms']:.1f}",
                 f"{x['max_ms']:.1f}", x["errors"], x["load"][0])
                for k, x in r["at_rate"].items()
            ],
        )  # fmt: skip
    print(json.dumps(rounded(r)))


def args_rate(r: dict[str, Any]) -> str:
    return ", ".join(sorted({f"{x['rate']:.0f}" for x in r["at_rate"].values()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--pages", type=int, default=10, help="cursor pages followed per list")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="open-loop pages/s (0: leave it out)"
    )
    args = parser.parse_args()
    _report(run(args))


if __name__ == "__main__":
    main()
