"""Rings stay spaced when the event loop runs late: a notification heard while a trailing
ring is due does not ring a second time (both fired 0.2 ms apart under a loaded CI)."""

from __future__ import annotations

import asyncio
import itertools
import time

from storage.event_notify import EventListener


async def test_a_late_loop_does_not_double_the_trailing_ring() -> None:
    rings: list[float] = []
    listener = EventListener("postgresql://x@127.0.0.1/x", lambda: rings.append(time.monotonic()))
    listener._heard()  # rings at once
    await asyncio.sleep(0.05)
    listener._heard()  # too soon: a trailing ring is due 0.2 s after the first
    time.sleep(0.3)  # the loop is busy past the trailing ring's time
    listener._heard()  # heard before the late timer runs
    await asyncio.sleep(0.4)
    gaps = [b - a for a, b in itertools.pairwise(rings)]
    assert len(rings) == 2, gaps
    assert min(gaps) >= 0.2, gaps
