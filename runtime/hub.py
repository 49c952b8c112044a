"""Wakes SSE streams and delivery when events are appended: by this process (``Services.tx``)
or, on PostgreSQL, by another one (``storage.event_notify``); polling is the fallback."""

from __future__ import annotations

import asyncio
import contextlib


class EventHub:
    """A broadcast doorbell. ``notify`` may be called from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bell = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closing during shutdown
            loop.call_soon_threadsafe(self._ring)

    def _ring(self) -> None:
        bell, self._bell = self._bell, asyncio.Event()
        bell.set()

    def bell(self) -> asyncio.Event:
        """The doorbell of the next append: take it *before* reading the log, then wait on
        it, so an append committed while reading is not missed."""
        return self._bell

    async def wait(self, timeout: float, bell: asyncio.Event | None = None) -> None:
        """Return when an event is appended here (since ``bell`` was taken), or after
        ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel
                await (bell or self._bell).wait()
