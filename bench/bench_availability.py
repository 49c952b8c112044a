"""The availability report of a city: 20,000 cameras in 18,174 grids, 30 days of
transitions, on PostgreSQL.

Run: ``.venv/bin/python bench/bench_availability.py [--cameras 20000] [--days 30]``.

1. A fresh database on the local PostgreSQL server (``XL_BENCH_PG_URL`` to change it),
   migrated by the service's own migrations, filled server-side by :func:`populate`
   (``INSERT … SELECT FROM generate_series``; no rows cross the wire): one city, 8
   counties, 80 towns, 900 communities, 18,174 grids (codes only, no boundaries); the
   cameras spread over the grids in order, so a county holds an eighth of them; per camera
   and day two outages (offline, back online 1–31 minutes later: 4 transitions), every
   20th camera flapping 12 times a day; every 5th camera's picture degraded once a day
   for 10–70 minutes (the picture-quality log, for 完好 time). Dropped at the end.
2. Every finished day rolled up (``storage.retention.roll_up``, what the retention worker
   does each sweep), timed.
3. The report over the last ``--days`` days (both ends partial days, read from the
   transitions; the days between from the daily rows): the median of ``--repeat`` calls
   of ``storage.availability.report`` for the whole city (per camera, and totals only), a
   county's subtree, one camera, and the rate per county (``grid_report``: the health
   page's table); then the same median through the HTTP route
   (``GET /api/v1/cameras/availability``, FastAPI's TestClient, an ``api``-role app),
   each call's time printed (this VM drifts by a third between minutes).

Targets: city ≤ 2 s, county ≤ 300 ms, one camera ≤ 50 ms. Prints a table and one JSON line.
:func:`populate` is meant to be reused (a city simulator): it needs only a psycopg
connection to a migrated database.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, machine, pg_database, print_table, rounded

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

#: Grids per level of the hierarchy, city to grid (a city of Zhejiang's size).
LEVELS = (("city", 1), ("county", 8), ("town", 80), ("community", 900), ("grid", 18174))
TOKEN = "xl_bench_availability_token_000000000001"
TARGETS_S = {"city": 2.0, "city totals": 2.0, "county": 0.3, "camera": 0.05, "per county": 2.0}

GRIDS_FILL = """
INSERT INTO grids (code, name, level, parent_code, created_at, updated_at)
SELECT %(level)s || '_' || i, %(level)s || ' ' || i, %(level)s,
       CASE WHEN %(parent)s::text IS NULL THEN NULL
            ELSE %(parent)s || '_' || (i::bigint * %(parents)s / %(count)s) END,
       now(), now()
FROM generate_series(0, %(count)s - 1) AS i
"""
CAMERAS_FILL = """
INSERT INTO cameras (id, name, grid_code, grid_auto, zones, analytics, recording, enabled,
                     version, created_at, updated_at)
SELECT 'cam_' || lpad(i::text, 8, '0'), 'camera ' || i,
       'grid_' || (i::bigint * %(grids)s / %(cameras)s), false, '[]', '{}', '{}', %(enabled)s,
       1, %(start)s - interval '1 day' + i * interval '1 ms', %(start)s
FROM generate_series(0, %(cameras)s - 1) AS i
"""
# Per camera: online just before the period; per day and outage k of n, offline at a random
# moment of the k-th n-th of the day, online again 1-31 minutes later.
TRANSITIONS_FILL = """
INSERT INTO camera_state_log (camera_id, state, at)
SELECT camera_id, state, at FROM (
    SELECT 'cam_' || lpad(c::text, 8, '0') AS camera_id, 'online' AS state,
           %(start)s - interval '1 s' AS at
    FROM generate_series(0, %(cameras)s - 1) AS c
    UNION ALL
    SELECT 'cam_' || lpad(c::text, 8, '0'), s.state, s.at
    FROM generate_series(0, %(cameras)s - 1) AS c
    CROSS JOIN generate_series(0, %(days)s - 1) AS d
    CROSS JOIN LATERAL (
        SELECT CASE WHEN c %% 20 = 0 THEN 12 ELSE 2 END AS n
    ) AS per
    CROSS JOIN LATERAL generate_series(0, per.n - 1) AS k
    CROSS JOIN LATERAL (
        SELECT %(start)s + d * interval '1 day'
               + (k + random() * 0.9) * interval '1 day' / per.n AS off_at,
               interval '1 minute' + random() * interval '30 minutes' AS down
    ) AS o
    CROSS JOIN LATERAL (
        VALUES ('offline', o.off_at), ('online', o.off_at + o.down)
    ) AS s(state, at)
    WHERE s.at < %(now)s
) AS t
ORDER BY at
"""

QUALITY_FILL = """
INSERT INTO camera_quality_log (camera_id, state, at)
SELECT 'cam_' || lpad(c::text, 8, '0'), s.state, s.at
FROM generate_series(0, %(cameras)s - 1, 5) AS c
CROSS JOIN generate_series(0, %(days)s - 1) AS d
CROSS JOIN LATERAL (
    SELECT %(start)s + d * interval '1 day' + random() * interval '22 hours' AS bad_at,
           interval '10 minutes' + random() * interval '60 minutes' AS bad
) AS o
CROSS JOIN LATERAL (
    VALUES ('degraded', o.bad_at), ('ok', o.bad_at + o.bad)
) AS s(state, at)
WHERE s.at < %(now)s
ORDER BY s.at
"""


@dataclass(frozen=True)
class City:
    """What :func:`populate` made: where the period starts, a county, some cameras."""

    start: datetime
    now: datetime
    days: int
    cameras: int
    transitions: int
    counties: list[str]
    camera_ids: list[str]


def populate(
    conn: psycopg.Connection[Any],
    cameras: int = 20000,
    days: int = 30,
    now: datetime | None = None,
    enabled: bool = False,
) -> City:
    """Fill a migrated, empty database (autocommit connection) with the grids of a city,
    ``cameras`` cameras and ``days`` days of transitions up to ``now``; returns what it made.

    The state log's indexes are dropped for the insert and made again afterwards (their
    exact definitions, as the migrations made them); the tables are analysed.
    """
    now = now or datetime.now(UTC)
    start = datetime.combine((now - timedelta(days=days)).date(), datetime.min.time(), UTC)
    parents: tuple[str | None, int] = (None, 1)
    for level, count in LEVELS:
        parent, parent_count = parents
        params = {"level": level, "parent": parent, "parents": parent_count, "count": count}
        conn.execute(GRIDS_FILL, params)
        parents = (level, count)
    grids = LEVELS[-1][1]
    common = {"cameras": cameras, "start": start, "now": now, "days": days + 1}
    conn.execute(CAMERAS_FILL, {**common, "grids": grids, "enabled": enabled})
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'camera_state_log' "
        "AND indexname NOT LIKE '%pkey'"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"'.encode())
    conn.execute("SET maintenance_work_mem = '256MB'")
    conn.execute("SELECT setseed(0.42)")
    conn.execute(TRANSITIONS_FILL, common)
    conn.execute(QUALITY_FILL, common)
    for _, definition in indexes:
        conn.execute(definition.encode())
    for table in ("grids", "cameras", "camera_state_log", "camera_quality_log"):
        conn.execute(f"VACUUM ANALYZE {table}".encode())
    transitions = conn.execute("SELECT count(*) FROM camera_state_log").fetchone()
    ids = [f"cam_{i:08d}" for i in range(0, cameras, max(1, cameras // 50))]
    return City(
        start=start,
        now=now,
        days=days,
        cameras=cameras,
        transitions=int(transitions[0]) if transitions else 0,
        counties=[f"county_{i}" for i in range(LEVELS[1][1])],
        camera_ids=ids,
    )


# Timing -----------------------------------------------------------------------------------------


def median_s(call: Callable[[], object], repeat: int) -> tuple[float, list[float]]:
    """The median wall time of ``repeat`` calls after one warm-up call, and all of them."""
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def time_storage(url: str, city: City, repeat: int) -> dict[str, float]:
    from storage import availability
    from storage.db import Database

    db = Database(url)
    since, until = city.now - timedelta(days=city.days), city.now

    def run(**kwargs: Any) -> Callable[[], object]:
        def call() -> object:
            with db.session() as session:
                return availability.report(session, since, until, **kwargs)

        return call

    calls = {
        "city": run(),
        "city totals": run(per_camera=False),
        "county": run(grid_code=city.counties[3]),
        "camera": run(camera_ids=[city.camera_ids[7]]),
    }

    def per_county() -> object:
        with db.session() as session:
            return availability.grid_report(session, since, until, parent_code="city_0")

    calls["per county"] = per_county
    try:
        with db.session() as session:
            check = availability.report(session, since, until, grid_code=city.counties[3])
        county = f"{city.counties[3]}: {check.camera_count} cameras"
        print(f"{county}, availability {check.total_ratio:.4f}, 完好率 {check.good_ratio:.4f}")
        medians = {}
        for name, call in calls.items():
            medians[name], times = median_s(call, repeat)
            print(f"storage {name}: {', '.join(f'{t * 1000:.0f}' for t in times)} ms")
        return medians
    finally:
        db.dispose()


def time_http(url: str, city: City, repeat: int) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from config.settings import Settings

    settings = Settings(
        data_dir=Path("/tmp") / "xl_bench_availability",
        database={"url": url},
        auth={"bootstrap_token": TOKEN},
    )
    since = (city.now - timedelta(days=city.days)).isoformat()
    base = {"since": since, "until": city.now.isoformat()}
    asks = {
        "city": {},
        "city totals": {"cameras": "false"},
        "county": {"grid_code": city.counties[3]},
        "camera (grid)": {"grid_code": "grid_100"},
    }
    out = {}
    with TestClient(create_app(settings, role="api")) as client:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for name, params in asks.items():

            def call(params: dict[str, str] = params) -> object:
                response = client.get(
                    "/api/v1/cameras/availability", params={**base, **params}, headers=headers
                )
                return response.raise_for_status()

            out[name], times = median_s(call, repeat)
            print(f"http {name}: {', '.join(f'{t * 1000:.0f}' for t in times)} ms")
    return out


def roll_up_all(url: str, city: City) -> tuple[int, float]:
    from storage.db import Database
    from storage.retention import roll_up

    db = Database(url)
    try:
        started = time.perf_counter()
        days = roll_up(db.session, city.now, oldest=city.start.date() - timedelta(days=1))
        return days, time.perf_counter() - started
    finally:
        db.dispose()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from storage.db import Database

    with pg_database("xl_bench_avail") as url:
        db = Database(url)
        db.migrate()
        db.dispose()
        started = time.perf_counter()
        dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(dsn, autocommit=True) as conn:
            city = populate(conn, args.cameras, args.days)
        fill_s = time.perf_counter() - started
        print(f"filled {city.cameras} cameras, {city.transitions} transitions in {fill_s:.1f} s")
        days, rollup_s = roll_up_all(url, city)
        print(f"rolled up {days} days in {rollup_s:.1f} s ({rollup_s / max(days, 1):.2f} s/day)")
        storage_s = time_storage(url, city, args.repeat)
        http_s = time_http(url, city, args.repeat)
    return {
        "machine": machine(),
        "cameras": city.cameras,
        "transitions": city.transitions,
        "fill_s": fill_s,
        "rollup_days": days,
        "rollup_s": rollup_s,
        "storage_s": storage_s,
        "http_s": http_s,
    }


def _report(result: dict[str, Any]) -> None:
    rows = []
    for name, seconds in result["storage_s"].items():
        target = TARGETS_S[name]
        rows.append(
            ["storage", name, seconds * 1000, target * 1000, "yes" if seconds <= target else "NO"]
        )
    for name, seconds in result["http_s"].items():
        target = TARGETS_S.get(name.split(" (")[0], 0.05)
        rows.append(
            ["http", name, seconds * 1000, target * 1000, "yes" if seconds <= target else "NO"]
        )
    print_table(["path", "report", "ms", "target ms", "met"], rows)
    print(json.dumps(rounded(result)))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cameras", type=int, default=20000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5, help="calls per median")
    _report(run(parser.parse_args()))


if __name__ == "__main__":
    main()
