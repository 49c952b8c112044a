"""New events committed by other processes, heard at once (PostgreSQL ``LISTEN``).

The trigger that gives an event its ``seq`` at commit sends ``NOTIFY xueliang_events``
(migration 0017); PostgreSQL delivers it to every listening session after the commit, once
per transaction. :class:`EventListener` keeps one such session per process and rings the
process's event doorbell (``runtime.hub.EventHub.notify``), which wakes its SSE streams and
its delivery worker: they read the log as they did after a poll, only sooner. Before this
they saw other processes' events by polling once a second, and the city simulator's
webhook lag missed its 2 s target (issue #18).

Rings are spaced by at least :data:`MIN_INTERVAL_S`: in a burst (a district's power cut,
hundreds of commits a second from 40 workers) every process would otherwise run a delivery
round and every SSE stream a read per commit; spaced, a burst costs each process at most
five reads a second and its last commit still rings (a trailing ring). Notifications carry
no data: the log is the truth, a missed or spurious ring only costs one read, and polling
stays as the fallback while the session is down (it reconnects with capped backoff).
NOTIFY is per database, not per schema: installations sharing a database wake each other
needlessly, nothing worse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from storage.db import shown_url

__all__ = ["CHANNEL", "MIN_INTERVAL_S", "EventListener"]

log = logging.getLogger(__name__)

#: The channel migration 0017's trigger notifies.
CHANNEL = "xueliang_events"
#: The shortest time between two rings.
MIN_INTERVAL_S = 0.2
RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0


class EventListener:
    """Rings ``ring`` when another process commits events; runs until cancelled."""

    def __init__(
        self, url: str, ring: Callable[[], None], min_interval_s: float = MIN_INTERVAL_S
    ) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise ValueError("EventListener needs a PostgreSQL database URL")
        self._dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self._shown = shown_url(url)
        self._ring = ring
        self._min_interval = min_interval_s
        self._last = float("-inf")
        self._trailing: asyncio.TimerHandle | None = None
        self._listening = False

    async def run(self) -> None:
        retry = RETRY_MIN_S
        while True:
            self._listening = False
            try:
                await self._listen()
            except (psycopg.Error, OSError) as err:
                if self._listening:  # it worked until now: a restart, not an outage
                    retry = RETRY_MIN_S
                log.warning(
                    "not listening for new events on %s (%s); polling meanwhile, retry in %.0f s",
                    self._shown,
                    err,
                    retry,
                )
            finally:
                if self._trailing is not None:
                    self._trailing.cancel()
                    self._trailing = None
            await asyncio.sleep(retry)
            retry = min(retry * 2, RETRY_MAX_S)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, connect_timeout=10)
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self._listening = True
            log.info("listening for new events on %s", self._shown)
            self._heard()  # whatever was committed while we were not listening
            async for _ in conn.notifies():
                self._heard()

    def _heard(self) -> None:
        if self._trailing is not None:  # a ring is due already; a second one now would
            return  # double it when the loop runs late (both fired 0.2 ms apart under load)
        wait = self._last + self._min_interval - time.monotonic()
        if wait <= 0:
            self._ring_now()
        elif self._trailing is None:
            loop = asyncio.get_running_loop()
            self._trailing = loop.call_later(wait, self._ring_now)

    def _ring_now(self) -> None:
        self._trailing = None
        self._last = time.monotonic()
        self._ring()
