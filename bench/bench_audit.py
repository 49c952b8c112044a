"""Audit log hash chain on PostgreSQL: concurrent appends, chained vs plain, and verify speed.

Every clip download writes an audit entry, so the chain's cost is what an append costs
when many requests write at once. Measured, on a fresh database on the local PostgreSQL
(``XL_BENCH_PG_URL`` to change it):

1. ``--threads`` threads (default 8; one connection each) each commit ``--per-thread``
   transactions of one audit entry, through :func:`storage.audit.audit` (the chain: the
   chain row locked at commit) and, interleaved round by round (ABAB), the same rows
   inserted without the chain (the baseline: what an append cost before it). Printed:
   appends per second and per-transaction latency (median, p99), and their ratio.
2. ``xueliang audit verify``'s walk (:func:`storage.audit_chain.verify`) over
   ``--verify-rows`` entries (default 200,000): rows per second in this process, then the
   CLI as a user runs it (wall time, its peak resident memory: it reads a batch at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from common import REPO, load_avg, machine, percentile, pg_database, print_table, rounded


def _append_chained(session: Any, i: int) -> None:
    from storage.audit import audit

    audit(session, "bench", "download", "clip", f"inc_{i}", {"key": f"clips/{i}.mp4"})


def _append_plain(session: Any, i: int) -> None:
    from storage.models import AuditEntry, utcnow

    detail = {"key": f"clips/{i}.mp4"}
    session.add(
        AuditEntry(
            at=utcnow(),
            actor="bench",
            action="download",
            resource="clip",
            resource_id=f"inc_{i}",
            detail=detail,
        )
    )


def one_round(
    db: Any, threads: int, per_thread: int, write: Callable[[Any, int], None]
) -> dict[str, float]:
    """Every thread commits ``per_thread`` one-entry transactions; appends/s and latency."""
    start = threading.Barrier(threads + 1)
    latencies: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        mine = []
        start.wait()
        for i in range(per_thread):
            began = time.perf_counter()
            with db.session() as session:
                write(session, i)
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - began
    return {
        "per_s": threads * per_thread / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def appends(args: argparse.Namespace) -> dict[str, Any]:
    from storage.audit_chain import verify
    from storage.db import Database

    with pg_database("xl_bench_audit") as url:
        db = Database(url, pool_size=args.threads)
        try:
            db.migrate()
            one_round(db, args.threads, 20, _append_chained)  # warm the pool and the caches
            one_round(db, args.threads, 20, _append_plain)
            rounds: dict[str, list[dict[str, float]]] = {"chained": [], "plain": []}
            for _ in range(args.rounds):
                for name, write in (("chained", _append_chained), ("plain", _append_plain)):
                    rounds[name].append(one_round(db, args.threads, args.per_thread, write))
            with db.session() as session:
                verdict = verify(session)
            # The plain rows are outside the chain, by design of the baseline: nothing else.
            broken = [p for p in verdict.problems if "not in the chain" not in p.what]
            assert not broken, broken[:3]
        finally:
            db.dispose()
    return {name: _median(results) for name, results in rounds.items()}


def _median(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def verify_speed(rows: int) -> dict[str, float]:
    from storage.audit_chain import NewEntry, append_entries, verify
    from storage.db import Database
    from storage.models import utcnow

    with pg_database("xl_bench_audit_verify") as url:
        db = Database(url, pool_size=1)
        try:
            db.migrate()
            at, batch = utcnow(), 5000
            for first in range(0, rows, batch):
                entries = [
                    NewEntry(at, "bench", "download", "clip", f"inc_{i}", {"key": f"c/{i}.mp4"})
                    for i in range(first, min(first + batch, rows))
                ]
                with db.session() as session:
                    append_entries(session, entries)
            began, cpu = time.perf_counter(), time.process_time()
            with db.session() as session:
                verdict = verify(session)
            elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
        finally:
            db.dispose()
        assert verdict.ok and verdict.entries == rows
        cli_s, cli_rss = _verify_cli(url)
    return {
        "rows": rows,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "rows_per_cpu_s": rows / cpu,
        "cli_seconds": cli_s,
        "cli_peak_rss_mib": cli_rss,
    }


def _verify_cli(url: str) -> tuple[float, float]:
    """``xueliang audit verify`` as a user runs it: wall time and the child's peak RSS."""
    env = {**os.environ, "XUELIANG_DATABASE__URL": url}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "audit", "verify"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - began
    assert done.returncode == 0, done.stdout + done.stderr
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--per-thread", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--verify-rows", type=int, default=200_000)
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine(), "threads": args.threads, "load": load_avg()}
    result["appends"] = appends(args)
    chained, plain = result["appends"]["chained"], result["appends"]["plain"]
    result["ratio_per_s"] = chained["per_s"] / plain["per_s"]
    result["verify"] = verify_speed(args.verify_rows)
    print_table(
        ["appends", "per s", "p50 ms", "p99 ms"],
        [[name, r["per_s"], r["p50_ms"], r["p99_ms"]] for name, r in result["appends"].items()],
    )
    print(f"chained / plain throughput: {result['ratio_per_s']:.2f}")
    v = result["verify"]
    print(
        f"verify: {v['rows']} entries in {v['seconds']:.1f} s ({v['rows_per_s']:.0f}/s, "
        f"{v['rows_per_cpu_s']:.0f} per CPU second of this process); "
        f"the CLI {v['cli_seconds']:.1f} s, peak RSS {v['cli_peak_rss_mib']:.0f} MiB"
    )
    print(json.dumps(rounded(result)))


if __name__ == "__main__":
    main()
