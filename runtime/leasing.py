"""This worker's camera leases: heartbeat, renew, take a fair share, fence on failure.

Shared by the camera runtime (`runtime/cameras.py`) and the city simulator (`tests/scale/`),
so the simulator measures the code a city runs. The rules are in `storage/leases.py`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from runtime.services import Services
from storage.leases import heartbeat, release, release_all, renew, take
from storage.models import Worker, utcnow

log = logging.getLogger(__name__)

#: Attempts per renewal to take cameras while other workers hold the take lock.
TAKE_TRIES = 8
#: The most cameras a worker holding none takes at once (then at most what it holds).
TAKE_MIN = 100

#: Called, in a transaction of its own, with the cameras this worker has just taken.
OnTaken = Callable[[Session, list[str]], None]


@dataclass(frozen=True)
class WorkerIdentity:
    id: str
    host: str
    role: str
    url: str | None
    started_at: datetime


class LeaseKeeper:
    """Keeps this worker's row alive and its leases renewed; knows what it holds.

    ``held`` excludes ``surplus``: cameras above the fair share that the owner stops first
    and then hands back with :meth:`release` (the next holder never starts while this one
    still runs). When the database cannot be reached for 0.8 of the lease time, ``held``
    becomes empty: the worker fences itself before another one may take its cameras over.
    """

    def __init__(
        self,
        services: Services,
        worker: WorkerIdentity,
        lease_s: float,
        on_taken: OnTaken | None = None,
    ) -> None:
        self.services = services
        self.worker = worker
        self.lease_s = lease_s
        self.held: set[str] = set()
        self.surplus: set[str] = set()
        self.renewals = 0
        self.behind = False  # the last renewal left this worker short: renew sooner
        self._on_taken = on_taken
        self._renewed = time.monotonic()
        self._call: asyncio.Future[set[str]] | None = None
        self._hung = False  # the last call was given up on while still running
        # A thread of its own: a renewal must not queue behind other database work in the
        # shared pool (state writers waiting for the event log starved heartbeats, and
        # workers were taken for dead: tests/scale).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leases")

    async def renew(self) -> bool:
        """Renew and balance once; ``True`` when the cameras this worker holds changed.

        The fence is counted from when the last committed renewal *began* — the database
        counts the lease from then — and does not wait for a renewal that hangs (the
        database restarting, a connection blocked): at 0.8 of the lease the worker fences
        itself, whatever the call is still doing. Before, the clock started when the
        renewal returned (a slow one ate into the margin left to stop the cameras) and
        a hung call delayed the fence until it failed (docs/soak.md, run 1).
        """
        call = self._call
        # A call given up on and still running is waited on again, not queued behind.
        if call is None or call.done() or not self._hung:
            call = asyncio.get_running_loop().run_in_executor(self._executor, self.renew_now)
            call.add_done_callback(_retrieved)  # a call given up on may still fail later
            self._call = call
        try:
            while True:
                left = self.lease_s * 0.8 - (time.monotonic() - self._renewed)
                try:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a
                    # cancel landing as the call completes, and the service never stopped.
                    async with asyncio.timeout(max(left, 0.0)):
                        held = await asyncio.shield(call)
                    self._hung = False
                    break
                except TimeoutError:
                    if not self._expiring():
                        continue  # renewed meanwhile; taking or telling is what takes long
                    self._hung = True
                    raise TimeoutError("no answer from the database in time") from None
        except Exception as err:
            log.warning("worker %s: cannot renew camera leases: %s", self.worker.id, err)
            if not self._expiring():
                return False
            # Fence ourselves before the leases expire and another worker takes over:
            # two workers must never analyse one camera (duplicate incidents).
            held = set()
        if held == self.held:
            return False
        gained, lost = len(held - self.held), len(self.held - held)
        log.info(
            "worker %s: runs %d camera(s) now (+%d, -%d; %d surplus to hand back)",
            self.worker.id,
            len(held),
            gained,
            lost,
            len(self.surplus),
        )
        self.held = held
        return True

    def renew_now(self) -> set[str]:
        """One heartbeat and balance (blocking); returns the cameras to run.

        Three short transactions: the heartbeat with the renewal (never held up by the
        others), taking what is missing of the share, then telling ``on_taken``.
        """
        began, now = time.monotonic(), utcnow()
        w = self.worker
        row = Worker(
            id=w.id,
            host=w.host,
            pid=os.getpid(),
            role=w.role,
            started_at=w.started_at,
            last_seen=now,
            url=w.url,
        )
        with self.services.db.session() as session:
            heartbeat(session, row, now)
            held = renew(session, w.id, now, self.lease_s)
        self._renewed = began  # committed: the leases run from ``now``
        cameras = held.cameras
        self.behind = False
        if len(cameras) < held.share:
            # Slow start: at most double what we hold (at least TAKE_MIN) per renewal. The
            # first of 40 workers starting together saw itself alone, took all 20,000
            # cameras, connected them and handed 19,500 back seconds later (tests/scale).
            wanted = min(held.share - len(cameras), max(TAKE_MIN, len(cameras)))
            cameras = sorted(cameras + self._take(wanted))
            # Far below the share (a new worker; others still hand back their surplus):
            # look again soon rather than a whole period later.
            self.behind |= held.share - len(cameras) > max(2, held.share // 10)
        self.surplus |= set(held.surplus)
        running = set(cameras) - self.surplus
        new = sorted(running - self.held)
        if new and self._on_taken is not None:
            with self.services.tx() as session:  # SSE is woken after it commits
                self._on_taken(session, new)
        self.renewals += 1
        return running

    def _take(self, wanted: int) -> list[str]:
        """Take up to ``wanted`` cameras; while another worker is taking, try again a
        moment later rather than at the next renewal: when a worker dies its ~500 cameras
        are shared by every survivor at once, and each collision cost a whole renewal
        period (5 s) of the cameras' time unowned (tests/scale, "killed worker")."""
        for _ in range(TAKE_TRIES):
            with self.services.db.session() as session:
                got = take(session, self.worker.id, utcnow(), self.lease_s, wanted)
            if got is not None:
                return got
            time.sleep(random.uniform(0.05, 0.25))
        self.behind = True
        return []

    def _expiring(self) -> bool:
        """Whether 0.8 of the lease has passed since the last committed renewal began."""
        return time.monotonic() - self._renewed >= self.lease_s * 0.8

    def next_renewal_s(self) -> float:
        """Seconds until the next renewal: a third of the lease, or one second while this
        worker is far below its share or found other workers taking all the time (in a
        rolling restart, cameras released by a stopping worker waited whole periods for a
        taker, tests/scale)."""
        return 1.0 if self.behind else self.lease_s / 3

    def release(self, camera_ids: list[str]) -> None:
        """Hand back surplus cameras this worker no longer runs (blocking)."""
        with self.services.db.session() as session:
            release(session, self.worker.id, camera_ids)
        self.surplus -= set(camera_ids)

    def release_all(self) -> None:
        """On a clean shutdown: every camera back at once, not after the lease time."""
        with self.services.db.session() as session:
            release_all(session, self.worker.id)
        self._executor.shutdown(wait=False)


def _retrieved(call: asyncio.Future[set[str]]) -> None:
    """Read a finished call's exception, so that one given up on is not logged as lost."""
    if not call.cancelled():
        call.exception()
