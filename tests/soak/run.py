"""Run the soak: cameras on a flaky RTSP server, S3 outages, a killed service, a flapping
webhook receiver; then check clips, deliveries and resources. See ``tests/soak/__init__``."""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import machine, rounded
from tests.conftest import REPO, fresh_pg_database
from tests.integration.test_delivery import TOKEN
from tests.soak import checks
from tests.soak.city import CityPeers, Owners, city_peers
from tests.soak.peers import HOOK, MOUNT, Peers, peers, subscribe
from tests.soak.probe import Monitor, all_events, all_incidents, api_get, spooled
from tests.soak.schedule import schedule

log = logging.getLogger("soak")

CACHE = REPO / "tests" / ".artifacts" / "soak-cache"
SETTLE_S = 600.0
DELETE_GRACE_S = 10.0  # the runtime is woken at once, but a round may be under way


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _logging()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="xl-soak-"))
    log.info("workdir %s; machine %s", workdir, machine())
    if args.city:  # a PostgreSQL of its own (city_peers)
        summary = run(args, workdir, "")
    else:
        with _database(args.postgres, workdir) as db_url:
            summary = run(args, workdir, db_url)
    print(json.dumps(rounded(summary), separators=(",", ":")))
    if summary["ok"] and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log.info("kept %s (service.log, rtsp/, seaweedfs/)", workdir)
    return 0 if summary["ok"] else 1


def _logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s soak %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries while S3 is down


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    p.add_argument("--minutes", type=float, default=30.0, help="length of the run")
    p.add_argument("--cameras", type=int, default=16, help="number of cameras")
    p.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database")
    p.add_argument(
        "--city",
        action="store_true",
        help="the city stack: an API node and two workers on a PostgreSQL of its own, S3; "
        "a worker SIGKILLed and PostgreSQL restarted",
    )
    p.add_argument("--workdir", help="where to keep data and logs (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the workdir even on success")
    return p


@contextlib.contextmanager
def _database(postgres: bool, workdir: Path) -> Iterator[str]:
    if postgres:
        with fresh_pg_database("xl_soak") as (url, _name):
            yield url
    else:
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{workdir / 'data' / 'xueliang.db'}"


def run(args: argparse.Namespace, workdir: Path, db_url: str) -> dict[str, Any]:
    total_s = args.minutes * 60
    load_start = os.getloadavg()
    started = city_peers(workdir, CACHE) if args.city else peers(workdir, db_url, CACHE)
    with started as p:
        start_seq = int(api_get(p.api, "/api/v1/events", after=0, limit=1000)["last_seq"])
        subscribe(p.api, p.receiver)
        cameras = _add_cameras(p, args.cameras)
        t0 = time.monotonic()
        seen = [start_seq]  # the newest seq the progress lines have seen
        monitors = _monitors(p, workdir, cameras, seen, t0)
        owners = Owners(p.workers, cameras) if isinstance(p, CityPeers) else None
        watchers: list[Monitor | Owners] = [*monitors.values(), *([owners] if owners else [])]
        for w in watchers:
            w.start()
        harness_errors = _disrupt(p, t0, total_s, args.city)
        for w in watchers:
            w.stop()
        load_end = os.getloadavg()
        log.info("schedule done (%s); settling", p.counts)
        p.all_up()
        deleted = _delete_cameras(p, cameras)
        settled = _settle(p, workdir, start_seq)
        incidents, events = all_incidents(p.api), all_events(p.api)
        objects = _objects(p)
        delivered = [d for d in list(p.receiver.delivered) if d.path == HOOK]
    window = min(300.0, total_s / 4)
    results = {
        "clips": checks.clips(incidents, objects, events, p.kills, args.cameras),
        "events": checks.deliveries(delivered, events, start_seq),
        "removal": checks.after_delete(incidents, deleted, DELETE_GRACE_S),
        **{
            ("resources" if name == "service" else f"resources_{name}"): checks.resources(
                m.samples, total_s, window
            )
            for name, m in monitors.items()
        },
        **({"ownership": owners.result()} if owners else {}),
    }
    failures = [f"{name}: {f}" for name, r in results.items() for f in r.failures]
    failures += harness_errors + ([] if settled else ["did not settle within the time allowed"])
    rows = checks.by_minute(monitors["service"].samples)
    _print_curves(rows)
    for failure in failures[:50]:
        log.error("FAILED %s", failure)
    return {
        "ok": not failures,
        "minutes": args.minutes,
        "cameras": args.cameras,
        "database": "postgresql" if args.postgres or args.city else "sqlite",
        "stack": "city: api + 2 workers, own PostgreSQL, S3" if args.city else "one process",
        "disruptions": p.counts,
        "load": {"start": load_start, "end": load_end},
        **{name: r.numbers for name, r in results.items()},
        "by_minute": rows,
        "failures": failures[:50],
        "failure_count": len(failures),
    }


def _monitors(
    p: Peers, workdir: Path, cameras: list[str], seen: list[int], t0: float
) -> dict[str, Monitor]:
    """A resource monitor per process: the service (the API node on the city stack, which
    also prints the progress lines) and each worker."""
    found = {"service": Monitor(p.service_pid, lambda t: _progress(p, workdir, cameras, seen), t0)}
    if isinstance(p, CityPeers):
        for i, _worker in enumerate(p.workers):
            name = f"worker{i}"
            found[name] = Monitor(functools.partial(_pid, p, name), None, t0)
    return found


def _add_cameras(p: Peers, count: int) -> list[str]:
    ids = []
    with httpx.Client(
        base_url=p.api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as http:
        for i in range(count):
            body = {"name": f"soak {i:02d}", "rtsp_url": p.rtsp.url(MOUNT)}
            r = http.post("/api/v1/cameras", json=body)
            r.raise_for_status()
            ids.append(r.json()["id"])
    return ids


def _disrupt(p: Peers, t0: float, total_s: float, city: bool) -> list[str]:
    """Carry out the schedule in real time; return what could not be done."""
    errors = []
    for step in schedule(total_s, city):
        time.sleep(max(0.0, t0 + step.at_s - time.monotonic()))
        try:
            p.do(step.action)
        except Exception as err:  # a step that fails is reported, the run goes on
            log.exception("step %s failed", step.action)
            errors.append(f"harness: {step.action} at {step.at_s:.0f} s failed: {err!r}"[:300])
    time.sleep(max(0.0, t0 + total_s - time.monotonic()))
    return errors


def _progress(p: Peers, workdir: Path, cameras: list[str], seen: list[int]) -> str:
    incidents = all_incidents(p.api)
    states: dict[str, int] = {}
    for inc in incidents:
        state = inc["clip"]["state"] if inc.get("clip") else "none"
        states[state] = states.get(state, 0) + 1
    online = sum(
        api_get(p.api, f"/api/v1/cameras/{c}/status")["state"] == "online" for c in cameras
    )
    seen[0] = max([seen[0], *(e["seq"] for e in all_events(p.api, seen[0]))])
    received = len(set(p.receiver.seqs(HOOK)))
    return (
        f"online {online}/{len(cameras)} | incidents {len(incidents)} {states} | "
        f"spool {_spooled(p, workdir)} | events {seen[0]} received {received}"
    )


def _pid(p: CityPeers, name: str) -> int | None:
    return p.pids()[name]


def _spooled(p: Peers, workdir: Path) -> int:
    dirs = p.data_dirs if isinstance(p, CityPeers) else [workdir / "data"]
    return sum(spooled(d) for d in dirs)


def _delete_cameras(p: Peers, cameras: list[str]) -> dict[str, datetime]:
    """Remove the cameras (their open incidents end, their clips finish); when each went."""
    deleted = {}
    for camera in cameras:
        r = httpx.delete(
            f"{p.api}/api/v1/cameras/{camera}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
        deleted[camera] = datetime.now(UTC)
        if r.status_code not in (204, 404):
            log.error("deleting camera %s: %s %s", camera, r.status_code, r.text[:200])
    return deleted


def _settle(p: Peers, workdir: Path, start_seq: int) -> bool:
    """Wait until every clip is settled, the spool is empty and the receiver has every
    event."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if _settled(p, workdir, start_seq):
                return True
        time.sleep(5)
    return False


def _settled(p: Peers, workdir: Path, start_seq: int) -> bool:
    incidents = all_incidents(p.api)
    pending = [i for i in incidents if i.get("ended_at") is None or i["clip"]["state"] == "pending"]
    wanted = {e["seq"] for e in all_events(p.api, start_seq)}
    missing = wanted - set(p.receiver.seqs(HOOK))
    log.info(
        "settling: %d incidents pending, %d spooled, %d events undelivered",
        len(pending),
        _spooled(p, workdir),
        len(missing),
    )
    return not pending and not _spooled(p, workdir) and not missing


def _objects(p: Peers) -> dict[str, checks.StoredObject]:
    """Every clip in the bucket, by incident id, with the SHA-256 of its bytes."""
    client = p.s3.client()
    found = {}
    for obj in client.list_objects(p.bucket, "clips/", recursive=True):
        key = str(obj.object_name)
        response = client.get_object(p.bucket, key)
        try:
            data = response.read()
        finally:
            response.close()
            response.release_conn()
        name = key.rsplit("/", 1)[-1].removesuffix(".mp4")
        sha = hashlib.sha256(data).hexdigest()
        found[name] = checks.StoredObject(key, len(data), sha, data[4:8] == b"ftyp")
    return found


def _print_curves(rows: list[dict[str, Any]]) -> None:
    print("minute  pid  rss_mib  fds  threads  load1", file=sys.stderr)
    for r in rows:
        print(
            f"{r['minute']:6d} {r['pid']:6d} {r['rss_mib']:8.1f} {r['fds']:5.0f} "
            f"{r['threads']:7.0f} {r['load1']:6.2f}",
            file=sys.stderr,
        )
    print("RSS (MiB) by minute:\n" + checks.chart(rows, "rss_mib"), file=sys.stderr)
    print("open fds by minute:\n" + checks.chart(rows, "fds"), file=sys.stderr)
