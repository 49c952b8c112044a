"""What the soak watches while it runs: the service's RSS and open fds every ~15 s (from
``/proc``, as ``bench/common.py`` reads it), and a progress line on stderr each minute."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from storage.spool import MANIFEST_SUFFIX
from tests.integration.test_delivery import TOKEN

log = logging.getLogger("soak")

SAMPLE_S = 15.0


@dataclass(frozen=True)
class Sample:
    t_s: float  # seconds since the cameras were added
    pid: int
    rss_mib: float
    fds: int
    threads: int
    load1: float


def read_proc(pid: int) -> tuple[float, int, int] | None:
    """(VmRSS in MiB, open fds, threads) of a live process; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            status = dict(line.split(":", 1) for line in fh if ":" in line)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    if "VmRSS" not in status:
        return None  # a zombie: killed, not yet reaped
    return int(status["VmRSS"].split()[0]) / 1024, fds, int(status["Threads"])


def api_get(base: str, path: str, **params: Any) -> Any:
    """GET an API path as the admin; raises httpx.HTTPError when the service is down."""
    r = httpx.get(
        base + path, params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    r.raise_for_status()
    return r.json()


def all_incidents(base: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = api_get(base, "/api/v1/incidents", limit=500, cursor=cursor)
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def all_events(base: str, after: int = 0) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = api_get(base, "/api/v1/events", after=after, limit=1000)
        items += page["items"]
        if not page["items"]:
            return items
        after = page["last_seq"]


def spooled(data_dir: Path) -> int:
    return sum(1 for _ in (data_dir / "spool").glob("*" + MANIFEST_SUFFIX))


class Monitor(threading.Thread):
    """Samples every SAMPLE_S seconds; prints a progress line once a minute."""

    def __init__(
        self,
        pid: Callable[[], int | None],
        progress: Callable[[float], str] | None,
        t0: float,
    ) -> None:
        super().__init__(name="soak-monitor", daemon=True)
        self.samples: list[Sample] = []
        self._pid, self._progress, self._t0 = pid, progress, t0
        self._halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self._halt.wait(max(0.0, self._t0 + n * SAMPLE_S - time.monotonic())):
            try:
                self._sample()
                if n % 4 == 2 and self._progress is not None:  # mid-minute: not at RTSP kills
                    self._report()
            except Exception:  # the monitor must outlive any surprise; say what it was
                log.exception("monitor")
            n += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)

    def _sample(self) -> None:
        pid = self._pid()
        got = read_proc(pid) if pid is not None else None
        if pid is None or got is None:
            return  # the service is down (killed): no sample
        rss, fds, threads = got
        t = time.monotonic() - self._t0
        self.samples.append(
            Sample(round(t, 1), pid, round(rss, 1), fds, threads, os.getloadavg()[0])
        )

    def _report(self) -> None:
        t = time.monotonic() - self._t0
        assert self._progress is not None
        try:
            line = self._progress(t)
        except (httpx.HTTPError, OSError) as err:
            line = f"(service not answering: {type(err).__name__})"
        last = asdict(self.samples[-1]) if self.samples else {}
        log.info(
            "minute %4.1f | rss %s MiB fds %s threads %s load %.2f | %s",
            t / 60,
            last.get("rss_mib", "-"),
            last.get("fds", "-"),
            last.get("threads", "-"),
            os.getloadavg()[0],
            line,
        )
