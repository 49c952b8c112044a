"""Audit anchors: the head of the audit log's hash chain published as an ``audit.anchor``
event every ``audit.anchor_interval_s`` when it moved, so the grid platform holds copies
the database's owner cannot rewrite (docs/security.md).

Every process runs an :class:`AnchorWorker`; they may all check at once, because
:func:`storage.audit_chain.publish_anchor` claims each anchor with a conditional UPDATE:
exactly one of them publishes it. Checking a tenth of the interval (at most a minute)
apart keeps an anchor from coming much later than due.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from config.errors import XueliangError
from runtime.services import Services
from storage.audit_chain import publish_anchor
from storage.events import append_event
from storage.models import utcnow

log = logging.getLogger(__name__)


class AnchorWorker:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.every = timedelta(seconds=services.settings.audit.anchor_interval_s)

    async def run(self) -> None:
        pause = min(self.every.total_seconds() / 10, 60.0)
        while True:
            try:
                await asyncio.to_thread(self.publish)
            except (XueliangError, SQLAlchemyError) as err:
                log.warning("audit anchor not published: %s", err)
            await asyncio.sleep(pause)

    def publish(self, now: datetime | None = None) -> bool:
        """Publish the head as ``audit.anchor`` if due; True when this process did."""
        with self.services.tx() as session:
            anchor = publish_anchor(session, now or utcnow(), self.every)
            if anchor is None:
                return False
            data = {"position": anchor.position, "hash": anchor.hash, "at": anchor.at.isoformat()}
            append_event(session, "audit.anchor", data)
        log.info("audit anchor published: position %d", anchor.position)
        return True
