"""One camera's picture quality, checked in its analysis task (issue #17).

:class:`QualityWatch` runs :class:`analytics.quality.QualityMonitor` on one analysed frame
every ``every_s`` seconds (in a thread: ~2–3 ms), and moves what it finds to the database
only when it changes: the state and raised problems (``storage/quality.py``, with the
``camera.degraded`` / ``camera.restored`` events in the same transaction) and the reference
views when one is learnt, so the camera keeps them on whichever worker runs it next. A
problem that looks deliberate (:attr:`~analytics.quality.Problem.tamper`) asks the analysis
for a ``tamper`` incident, which gets the usual clip and snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from analytics.quality import (
    Kind,
    Problem,
    QualityConfig,
    QualityMonitor,
    QualityResult,
    reference_from_bytes,
    reference_to_bytes,
)
from ingest.types import Frame
from runtime.services import Services
from storage.quality import (
    QualityChange,
    QualityOrders,
    load_references,
    record_quality,
    reference_taken,
    save_reference,
)

__all__ = ["QualityWatch", "TamperAlarm"]

log = logging.getLogger(__name__)

#: ``(problem, at)``: open a tamper incident for it.
TamperAlarm = Callable[[Problem, float], Awaitable[None]]


@dataclass
class QualityWatch:
    camera_id: str
    grid_code: str | None
    services: Services
    config: QualityConfig
    every_s: float
    on_tamper: TamperAlarm | None = None
    _monitor: QualityMonitor = field(init=False)
    _next: float = field(default=float("-inf"), init=False)
    _loaded: bool = field(default=False, init=False)
    _written: tuple[str, frozenset[Kind]] | None = field(default=None, init=False)
    _saved: dict[bool, float] = field(default_factory=dict, init=False)
    #: The latest check's result (metrics), ``None`` before the first.
    last: QualityResult | None = field(default=None, init=False)
    #: A reference request (``POST /cameras/{id}/quality/reference``) not served yet.
    _requested: datetime | None = field(default=None, init=False)
    _served: datetime | None = field(default=None, init=False)
    #: The end of a PTZ move to tell the monitor at the next check, and the last told.
    _ptz_until: float | None = field(default=None, init=False)
    _ptz_told: float = field(default=float("-inf"), init=False)

    def apply(self, orders: QualityOrders) -> None:
        """Orders from the API, applied at the next check (in the monitor's thread): take
        the next checked frame as the reference (once per request); a PTZ move."""
        at = orders.reference_requested_at
        if at is not None and at != self._served:
            self._requested = at
        if orders.ptz_until is not None:
            until = orders.ptz_until.timestamp()
            if until > self._ptz_told:
                self._ptz_until = until

    def __post_init__(self) -> None:
        self._monitor = QualityMonitor(self.config)

    async def maybe_check(self, frame: Frame) -> QualityResult | None:
        """Check ``frame`` if a check is due; what it found, or ``None``."""
        ts = frame.wallclock
        if ts < self._next:
            return None
        self._next = ts + self.every_s
        if not self._loaded:
            self._loaded = True
            await asyncio.to_thread(self._load)
        requested, self._requested = self._requested, None
        ptz, self._ptz_until = self._ptz_until, None
        if ptz is not None:
            self._ptz_told = ptz
        result = await asyncio.to_thread(self._check, frame, ts, requested is not None, ptz)
        self.last = result
        await self._store(result, ts, requested)
        if self.on_tamper is not None:
            for problem in result.problems:
                if problem.kind in result.raised and problem.tamper:
                    await self.on_tamper(problem, ts)
        return result

    def _check(
        self, frame: Frame, ts: float, new_reference: bool, ptz_until: float | None
    ) -> QualityResult:
        if ptz_until is not None:
            # The view moves until then: reference checks pause, the reference is learnt
            # anew afterwards, and a `displaced` the move itself raised is void.
            self._monitor.suspend_displaced(ptz_until)
            self._monitor.reset()
        if new_reference:
            self._monitor.set_reference(frame.image, ts)
            self._monitor.reset()  # what was raised against the old view is void
        return self._monitor.check(frame.image, ts)

    def _load(self) -> None:
        with self.services.db.session() as session:
            stored = load_references(session, self.camera_id)
        for data in stored:
            try:
                reference = reference_from_bytes(data)
                self._monitor.use_reference(reference)
                self._saved[reference.monochrome] = reference.learnt_at
            except ValueError as err:  # another version's format: learn it again
                log.warning("camera %s: stored quality reference unusable: %s", self.camera_id, err)

    async def _store(
        self, result: QualityResult, ts: float, requested: datetime | None = None
    ) -> None:
        kinds = frozenset(p.kind for p in result.problems)
        changed = self._written != (result.state, kinds)
        new_refs = [
            r for r in self._monitor.references if self._saved.get(r.monochrome) != r.learnt_at
        ]
        if not changed and not new_refs and requested is None:
            return
        change = QualityChange(
            camera_id=self.camera_id,
            grid_code=self.grid_code,
            state=result.state,
            problems=[_problem_json(p) for p in result.problems],
            raised=[k.value for k in result.raised],
            cleared=[k.value for k in result.cleared],
            at=_utc(ts),
        )
        refs = [(r.monochrome, reference_to_bytes(r), _utc(r.learnt_at)) for r in new_refs]

        def write() -> None:
            with self.services.tx() as session:
                if changed:
                    record_quality(session, change)
                for monochrome, data, learnt_at in refs:
                    save_reference(session, self.camera_id, monochrome, data, learnt_at)
                if requested is not None:
                    reference_taken(session, self.camera_id, requested)

        await asyncio.to_thread(write)
        self._written = (result.state, kinds)
        if requested is not None:
            self._served = requested
            log.info("camera %s: reference view taken on request", self.camera_id)
        for r in new_refs:
            self._saved[r.monochrome] = r.learnt_at
        if result.raised or result.cleared:
            log.info(
                "camera %s: picture %s (raised %s, cleared %s)",
                self.camera_id,
                result.state,
                ",".join(k.value for k in result.raised) or "-",
                ",".join(k.value for k in result.cleared) or "-",
            )


def _problem_json(p: Problem) -> dict[str, Any]:
    return {
        "kind": p.kind.value,
        "since": _utc(p.since).isoformat(),
        "score": round(p.score, 3),
        "tamper": p.tamper,
    }


def _utc(wallclock: float) -> datetime:
    return datetime.fromtimestamp(wallclock, UTC)
