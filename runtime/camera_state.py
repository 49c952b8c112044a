"""Camera state transitions to the database: status row, transition log, online/offline
events, in the order they happened, batched.

A district losing power takes thousands of cameras offline in a second. Written one
transaction per camera, each waiting for the event log's append lock, that was the limit
of the control plane; here a worker writes what has queued up in one transaction (up to
``BATCH``), keeping the order of each camera's transitions. Shared by the camera runtime
and the city simulator (`tests/scale/`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from ingest.camera import CameraState
from runtime.services import Services
from storage import cameras as repo
from storage.events import append_events
from storage.models import Camera, utcnow

log = logging.getLogger(__name__)

BATCH = 500
#: Seconds between writes of a running camera's unchanged measurements.
REFRESH_S = 15.0

#: The status row to store for a camera entering a state (with the runner's measurements).
StatusOf = Callable[[str, CameraState, str | None], repo.StatusUpdate]


@dataclass(frozen=True)
class StateChange:
    camera_id: str
    old: CameraState
    new: CameraState
    error: str | None
    at: datetime


class StateWriter:
    def __init__(self, services: Services, status_of: StatusOf, maxsize: int = 100_000) -> None:
        self.services = services
        self._status_of = status_of
        self._queue: asyncio.Queue[StateChange] = asyncio.Queue(maxsize=maxsize)
        self.written = 0
        self._flushed: dict[str, tuple[float, repo.StatusUpdate]] = {}

    def put(self, change: StateChange) -> None:
        """Queue a transition (on the event loop's thread)."""
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            log.error("camera %s: state queue full; %s not recorded", change.camera_id, change.new)

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)

    async def _write(self, batch: list[StateChange]) -> None:
        """Write a batch; a transient database error (a deadlock, a lost connection) is
        retried, so that a transition and its event are not lost to it."""
        for attempt in range(1, 4):
            try:
                await asyncio.to_thread(self.write, batch)
                return
            except OperationalError as err:
                if attempt == 3:
                    log.error("%d camera state change(s) not recorded: %s", len(batch), err)
                    return
                log.warning("camera states not written yet (attempt %d): %s", attempt, err)
                await asyncio.sleep(0.2 * attempt)
            except Exception:
                log.exception("%d camera state change(s) not recorded", len(batch))
                return

    async def drain(self) -> None:
        """Write what is still queued (at shutdown)."""
        batch: list[StateChange] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        for i in range(0, len(batch), BATCH):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.write, batch[i : i + BATCH])

    def write(self, changes: Sequence[StateChange]) -> None:
        """One transaction for ``changes``, in order (blocking)."""
        ids = sorted({c.camera_id for c in changes})
        with self.services.tx() as session:
            known = set(session.scalars(select(Camera.id).where(Camera.id.in_(ids))))
            repo.record_transitions(
                session,
                [
                    (c.camera_id, self._status_of(c.camera_id, c.new, c.error), c.at)
                    for c in changes
                    if c.camera_id in known  # else deleted meanwhile
                ],
            )
            events: list[tuple[str, dict[str, Any], str | None]] = []
            for c in changes:
                if c.camera_id not in known:
                    continue
                data = {"camera_id": c.camera_id, "state": c.new.value, "at": c.at.isoformat()}
                if c.new == CameraState.ONLINE and c.old != CameraState.ONLINE:
                    events.append(("camera.online", data, None))
                elif c.new == CameraState.OFFLINE and c.old != CameraState.OFFLINE:
                    events.append(("camera.offline", data | {"error": c.error}, None))
            append_events(session, events)
        self.written += len(changes)

    def flush(self, states: Mapping[str, tuple[CameraState, str | None]]) -> None:
        """Measurements (fps, last frame, drops) of running cameras, in one statement
        (blocking). A camera whose stored state differs is skipped (in SQL): transitions and
        their events are :meth:`write`'s, and writing them here too could race it.

        A camera is written when a measurement changed (fps by over 5 %, reconnects,
        drops, error) or every ``REFRESH_S`` otherwise: writing 20,000 unchanged rows
        every 2 s was 10,000 updates a second, the largest load of a city's database and
        of its workers' CPU (tests/scale)."""
        now = time.monotonic()
        due: dict[str, repo.StatusUpdate] = {}
        for camera_id, (state, error) in states.items():
            update = self._status_of(camera_id, state, error)
            last = self._flushed.get(camera_id)
            if last is None or now - last[0] >= REFRESH_S or measurement_changed(last[1], update):
                due[camera_id] = update
        for gone in self._flushed.keys() - states.keys():
            del self._flushed[gone]
        if not due:
            return
        with self.services.db.session() as session:
            repo.update_measurements(session, due, utcnow())
        for camera_id, update in due.items():
            self._flushed[camera_id] = (now, update)


def measurement_changed(old: repo.StatusUpdate, new: repo.StatusUpdate) -> bool:
    """Whether a measurement moved enough to be written before its refresh is due."""
    if (old.fps is None) != (new.fps is None):
        return True
    if old.fps is not None and new.fps is not None and abs(new.fps - old.fps) > 0.05 * old.fps:
        return True
    return (old.state, old.reconnects, old.frames_dropped, old.last_error, old.worker_id) != (
        new.state,
        new.reconnects,
        new.frames_dropped,
        new.last_error,
        new.worker_id,
    )
