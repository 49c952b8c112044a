"""The small city (1,000 cameras, 909 grids, 4 workers on PostgreSQL) through the code the
city simulator measures (tests/scale): the real leases, state writer, event log, SSE and
webhooks. Asserts correctness — spread, failover, a burst, the report — never speed."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from config.settings import Settings
from runtime.services import Services
from tests.conftest import wait_for
from tests.scale.city import CityShape, build_city, populate
from tests.scale.run import TOKEN, Hooks, Installation, Probe, Received, SseClient, fair
from tests.scale.sim import Control, Schedule, SimulationRefused, SimWorker

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LEASE_S = 6.0


@pytest.fixture
def city(shared_db: str, tmp_path: Path) -> Iterator[tuple[Installation, Probe, list[str]]]:
    settings = Settings(data_dir=tmp_path / "data", database={"url": shared_db})
    services = Services.from_settings(settings)
    services.db.migrate()
    built = build_city(CityShape.small())
    done = populate(services, built)
    services.close()
    assert done.placed == 1000
    # No flapping, stalls or motion: every event the test counts is the test's own doing.
    inst = Installation(shared_db, tmp_path, LEASE_S, motion_per_hour=0.0, quiet=True)
    probe = Probe(shared_db, "")
    try:
        yield inst, probe, built.counties
    finally:
        inst.stop()
        probe.conn.close()


def test_a_small_city_spreads_fails_over_and_reports_a_power_cut(
    city: tuple[Installation, Probe, list[str]],
) -> None:
    inst, probe, counties = city
    hooks = Hooks(["hook"])
    inst.start_api()
    api = httpx.Client(
        base_url=inst.api_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    r = api.post("/api/v1/subscriptions", json={"url": f"{hooks.url}/hook", "secret": "s" * 32})
    assert r.status_code == 201, r.text
    sse = SseClient(inst.api_url, "sse", 0)
    sse.start()
    try:
        for _ in range(2):
            inst.start_sim(2)
        # Every camera on exactly one of the 4 workers, shares fair (lease rows are unique by
        # camera; holdings counts unexpired ones only).
        wait_for(lambda: inst.alive() and fair(probe.holdings(), 1000, 4), 90, "a fair spread")
        wait_for(
            lambda: probe.one("SELECT count(*) FROM camera_status WHERE state = 'online'") >= 990,
            60,
            "the cameras online",
        )

        # A worker dies without a word: each of its cameras is taken by one live worker.
        victim = sorted(probe.holdings())[1]
        lost = {
            c
            for (c,) in probe.q("SELECT camera_id FROM camera_leases WHERE worker_id = %s", victim)
        }
        inst.order(kill=[victim])

        def taken_over() -> bool:
            rows = probe.q(
                "SELECT l.worker_id, s.worker_id, s.state FROM camera_leases l JOIN camera_status"
                " s ON s.camera_id = l.camera_id WHERE l.camera_id = ANY(%s)"
                " AND l.expires_at >= now()",
                list(lost),
            )
            return len(rows) == len(lost) and all(
                w != victim and sw == w and st != "connecting" for w, sw, st in rows
            )

        wait_for(taken_over, LEASE_S + 40, "the dead worker's cameras on the others")
        holdings = probe.holdings()
        assert victim not in holdings and sum(holdings.values()) == 1000
        inst.order()

        # A district's power cut: one camera.offline per camera, then one camera.online,
        # in seq order, at the webhook and on SSE.
        seq0 = probe.one("SELECT coalesce(max(seq), 0) FROM events")
        cut = [
            c
            for (c,) in probe.q(
                "SELECT c.id FROM cameras c JOIN camera_status s ON s.camera_id = c.id WHERE"
                " c.grid_code LIKE %s AND s.state = 'online' ORDER BY c.id LIMIT 200",
                counties[0] + "%",
            )
        ]
        start = time.time() + 1
        inst.order(cut={"cameras": cut, "from": start, "until": start + 8})

        def events(kind: str) -> list[tuple[int, str]]:
            return probe.q(
                "SELECT seq, data->>'camera_id' FROM events WHERE seq > %s AND type = %s AND"
                " data->>'camera_id' = ANY(%s) ORDER BY seq",
                seq0,
                kind,
                cut,
            )

        wait_for(lambda: len(events("camera.online")) >= len(cut), 60, "the power back")
        offline, online = events("camera.offline"), events("camera.online")
        assert Counter(c for _, c in offline) == Counter(cut)
        assert Counter(c for _, c in online) == Counter(cut)
        assert max(s for s, _ in offline) < min(s for s, _ in online)
        last = max(s for s, _ in online)
        for got in (hooks.got["hook"], sse.got):

            def arrived(g: Received = got) -> bool:
                return any(i[0] >= last for i in g.since(seq0))

            wait_for(arrived, 60, f"the events at {got.name}")
            seqs = [i[0] for i in got.since(seq0)]
            assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
            assert {s for s, _ in offline + online} <= set(seqs)

        # The availability report of one cut camera over the last minutes: offline ~8 s.
        until = datetime.now(UTC)
        since = until - timedelta(minutes=5)
        params = {"since": since.isoformat(), "until": until.isoformat(), "camera_id": cut[0]}
        report = api.get("/api/v1/cameras/availability", params=params).json()
        (row,) = report["cameras"]
        first_at = probe.one(
            "SELECT min(at) FROM camera_state_log WHERE camera_id = %s", cut[0]
        ).timestamp()
        expected = until.timestamp() - max(first_at, since.timestamp()) - 8.0
        assert abs(row["online_s"] - expected) < 4.0, (row, expected)
        totals = api.get(
            "/api/v1/cameras/availability",
            params={
                "since": since.isoformat(),
                "until": until.isoformat(),
                "cameras": "false",
                "grid_code": counties[0],
            },
        ).json()
        assert totals["cameras"] == [] and totals["camera_count"] > len(cut)
    finally:
        sse.stopped.set()
        hooks.close()


def test_simulated_cameras_are_refused_without_their_setting(tmp_path: Path) -> None:
    services = Services.from_settings(Settings(data_dir=tmp_path / "data"))
    with pytest.raises(SimulationRefused, match="SIMULATED_CAMERAS"):
        SimWorker(services, "w", Schedule(), Control(tmp_path / "c.json"))
    services.close()


def test_a_service_refuses_to_start_with_the_simulator_setting(tmp_path: Path) -> None:
    from config.errors import XueliangError
    from runtime.process import build_process

    settings = Settings(data_dir=tmp_path / "data", workers={"simulated_cameras": True})
    with pytest.raises(XueliangError, match="city simulator"):
        build_process(settings, role="worker")
    build_process(settings, role="api")  # an api node runs no cameras: nothing to refuse
