"""Retention: clips older than the configured days leave the store, unless on legal hold.

An incident linked to an open case keeps its evidence however old it is. The incident
record itself is kept (its clip state becomes ``expired``), so the history stays complete.
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
        """Remove expired, unheld clips once; returns how many."""
        days = self.services.settings.recording.retention_days
        before = (now or utcnow()) - timedelta(days=days)
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
