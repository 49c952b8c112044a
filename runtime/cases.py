"""Case deadlines: ``case.overdue`` once for each state whose deadline passed.

Every process runs one :class:`CaseDeadlineWorker`; they may all check at once, because
:func:`storage.case_flow.raise_overdue` claims each overdue case with a conditional
UPDATE: exactly one of them raises the event.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import SQLAlchemyError

from config.errors import XueliangError
from runtime.services import Services
from storage.case_flow import raise_overdue

log = logging.getLogger(__name__)


class CaseDeadlineWorker:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def run(self) -> None:
        interval = self.services.settings.cases.overdue_check_s
        while True:
            try:
                raised = await asyncio.to_thread(self.check)
                if raised:
                    self.services.hub.notify()
                    log.info("%d case(s) overdue", raised)
            except (XueliangError, SQLAlchemyError) as err:
                log.warning("case deadlines not checked: %s", err)
            await asyncio.sleep(interval)

    def check(self) -> int:
        """Raise ``case.overdue`` for every case past its deadline; how many."""
        with self.services.tx() as session:
            return raise_overdue(session)
