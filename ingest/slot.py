"""A bounded hand-over of the latest frames from a reader thread to an async analyser.

A slow analyser must never block a camera, and a camera must never fill memory: the slot
holds at most ``maxsize`` items, a ``put`` into a full slot drops the oldest and counts it
(Frigate keeps 2 frames per camera; MediaMTX drops and reports). ``put`` is called from
the reader thread, ``get`` is awaited on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Generic, TypeVar

__all__ = ["FrameSlot", "SlotClosedError"]

T = TypeVar("T")


class SlotClosedError(Exception):
    """The slot was closed (its camera was removed); no more items will come."""


class FrameSlot(Generic[T]):
    """Holds the newest ``maxsize`` items; thread-safe ``put``, async ``get``."""

    def __init__(self, maxsize: int = 2) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._maxsize = maxsize
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._waiters: list[asyncio.Future[None]] = []
        self._dropped = 0
        self._closed = False

    @property
    def maxsize(self) -> int:
        """How many items the slot keeps."""
        return self._maxsize

    @property
    def dropped(self) -> int:
        """Items discarded unread because the slot was full."""
        return self._dropped

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def resize(self, maxsize: int) -> None:
        """Change the capacity, dropping (and counting) the oldest items that no longer fit."""
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        with self._lock:
            self._maxsize = maxsize
            self._trim()

    def put(self, item: T) -> None:
        """Store ``item``, dropping the oldest if full. Safe from any thread; never blocks."""
        with self._lock:
            if self._closed:
                return
            self._items.append(item)
            self._trim()
            waiters, self._waiters = self._waiters, []
        self._wake(waiters)

    def get_nowait(self) -> T:
        """The oldest held item; raises ``LookupError`` when empty."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise SlotClosedError("slot closed")
        raise LookupError("slot empty")

    async def get(self) -> T:
        """Wait for and return the oldest held item; raises :class:`SlotClosedError`."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                if self._closed:
                    raise SlotClosedError("slot closed")
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def close(self) -> None:
        """Wake every waiter with :class:`SlotClosedError`; later puts are ignored."""
        with self._lock:
            self._closed = True
            self._items.clear()
            waiters, self._waiters = self._waiters, []
        self._wake(waiters)

    def _trim(self) -> None:
        while len(self._items) > self._maxsize:
            self._items.popleft()
            self._dropped += 1

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        # Each waiter is woken at most once per get(), so the loop's callback queue stays
        # bounded by the number of waiting consumers however fast frames arrive.
        for waiter in waiters:
            waiter.get_loop().call_soon_threadsafe(_set_done, waiter)


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
