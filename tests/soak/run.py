"""Run the soak: cameras on a flaky RTSP server, S3 outages, a killed service, a flapping
webhook receiver; then check clips, deliveries and resources. See ``tests/soak/__init__``."""

from __future__ import annotations

import argparse
import contextlib
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
    with peers(workdir, db_url, CACHE) as p:
        start_seq = int(api_get(p.api, "/api/v1/events", after=0, limit=1000)["last_seq"])
        subscribe(p.api, p.receiver)
        cameras = _add_cameras(p, args.cameras)
        t0 = time.monotonic()
        seen = [start_seq]  # the newest seq the progress lines have seen
        monitor = Monitor(p.service_pid, lambda t: _progress(p, workdir, cameras, seen), t0)
        monitor.start()
        harness_errors = _disrupt(p, t0, total_s)
        monitor.stop()
        load_end = os.getloadavg()
        log.info("schedule done (%s); settling", p.counts)
        p.all_up()
        deleted = _delete_cameras(p, cameras)
        settled = _settle(p, workdir, start_seq)
        incidents, events = all_incidents(p.api), all_events(p.api)
        objects = _objects(p)
        delivered = [d for d in list(p.receiver.delivered) if d.path == HOOK]
    results = {
        "clips": checks.clips(incidents, objects, events, p.kills, args.cameras),
        "events": checks.deliveries(delivered, events, start_seq),
        "removal": checks.after_delete(incidents, deleted, DELETE_GRACE_S),
        "resources": checks.resources(monitor.samples, total_s, min(300.0, total_s / 4)),
    }
    failures = [f"{name}: {f}" for name, r in results.items() for f in r.failures]
    failures += harness_errors + ([] if settled else ["did not settle within the time allowed"])
    rows = checks.by_minute(monitor.samples)
    _print_curves(rows)
    for failure in failures[:50]:
        log.error("FAILED %s", failure)
    return {
        "ok": not failures,
        "minutes": args.minutes,
        "cameras": args.cameras,
        "database": "postgresql" if args.postgres else "sqlite",
        "disruptions": p.counts,
        "load": {"start": load_start, "end": load_end},
        **{name: r.numbers for name, r in results.items()},
        "by_minute": rows,
        "failures": failures[:50],
        "failure_count": len(failures),
    }


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


def _disrupt(p: Peers, t0: float, total_s: float) -> list[str]:
    """Carry out the schedule in real time; return what could not be done."""
    errors = []
    for step in schedule(total_s):
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
        f"spool {spooled(workdir / 'data')} | events {seen[0]} received {received}"
    )


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
        spooled(workdir / "data"),
        len(missing),
    )
    return not pending and not spooled(workdir / "data") and not missing


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
