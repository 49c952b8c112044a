"""Retention: clips older than the configured days leave the store, unless on legal hold;
the control-plane tables are kept to their horizons.

An incident linked to an open case keeps its evidence however old it is. The incident
record itself is kept (its clip state becomes ``expired``), so the history stays complete.
The tables (transitions, events, audit, daily availability) are swept by
``storage.retention`` after the clips, finished days rolled up first; see
docs/deployment.md, "Retention".
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from config.errors import XueliangError
from runtime.services import Services
from storage.cases import held_incident_ids
from storage.incidents import expired_clips, mark_expired
from storage.models import utcnow
from storage.retention import sweep as sweep_tables

log = logging.getLogger(__name__)


class RetentionWorker:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def run(self) -> None:
        interval = self.services.settings.archive.retention_interval_s
        while True:
            try:
                removed = await asyncio.to_thread(self.sweep)
                if removed:
                    log.info("retention removed %d expired clip(s)", removed)
            except XueliangError as err:
                log.warning("retention postponed: %s", err)
            await asyncio.sleep(interval)

    def sweep(self, now: datetime | None = None) -> int:
        """Remove expired, unheld clips once, then sweep the tables; returns how many clips."""
        now = now or utcnow()
        removed = self._expire_clips(now)
        swept = sweep_tables(self.services.db.session, self.services.settings.retention, now)
        if swept:
            log.info(
                "retention: %d day(s) of availability rolled up; removed %d transition(s), "
                "%d event(s), %d audit row(s), %d day(s) of daily availability",
                swept.days_rolled_up,
                swept.transitions,
                swept.events,
                swept.audit,
                swept.availability_days,
            )
        return removed

    def _expire_clips(self, now: datetime) -> int:
        days = self.services.settings.recording.retention_days
        before = now - timedelta(days=days)
        with self.services.db.session() as session:
            rows = expired_clips(session, before)
            held = held_incident_ids(session, [r.id for r in rows])
            doomed = [(r.id, r.clip_key, r.snapshot_key) for r in rows if r.id not in held]
        for incident_id, clip_key, snapshot_key in doomed:
            for key in (clip_key, snapshot_key):
                if key:
                    self.services.objects.delete(key)
            with self.services.tx() as session:
                mark_expired(session, incident_id)
        return len(doomed)
