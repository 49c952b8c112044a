"""The analysis slot: bounded, drops the oldest, counts drops, wakes an async reader."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ingest.slot import FrameSlot, SlotClosedError


def test_full_slot_drops_the_oldest_and_counts() -> None:
    slot: FrameSlot[int] = FrameSlot(2)
    for i in range(5):
        slot.put(i)
    assert len(slot) == 2
    assert slot.dropped == 3
    assert [slot.get_nowait(), slot.get_nowait()] == [3, 4]
    with pytest.raises(LookupError):
        slot.get_nowait()


async def test_get_waits_for_a_put_from_another_thread() -> None:
    slot: FrameSlot[str] = FrameSlot(1)
    getter = asyncio.create_task(slot.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    threading.Thread(target=slot.put, args=("frame",)).start()
    assert await asyncio.wait_for(getter, 5) == "frame"
    assert slot.dropped == 0


async def test_slow_reader_sees_only_the_newest_frames() -> None:
    slot: FrameSlot[int] = FrameSlot(2)

    def produce() -> None:
        for i in range(1000):
            slot.put(i)

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join()
    assert [await slot.get(), await slot.get()] == [998, 999]
    assert slot.dropped == 998


async def test_close_wakes_waiters_and_ignores_later_puts() -> None:
    slot: FrameSlot[int] = FrameSlot(2)
    getter = asyncio.create_task(slot.get())
    await asyncio.sleep(0.01)
    slot.close()
    with pytest.raises(SlotClosedError):
        await asyncio.wait_for(getter, 5)
    slot.put(1)
    assert len(slot) == 0
    with pytest.raises(SlotClosedError):
        await slot.get()


async def test_cancelled_get_leaves_no_waiter_behind() -> None:
    slot: FrameSlot[int] = FrameSlot(1)
    getter = asyncio.create_task(slot.get())
    await asyncio.sleep(0.01)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    slot.put(7)
    assert slot._waiters == []
    assert await slot.get() == 7


def test_resize_trims_and_counts() -> None:
    slot: FrameSlot[int] = FrameSlot(3)
    for i in range(3):
        slot.put(i)
    slot.resize(1)
    assert slot.maxsize == 1
    assert slot.dropped == 2
    assert slot.get_nowait() == 2


@pytest.mark.parametrize("size", [0, -1])
def test_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError):
        FrameSlot(size)
