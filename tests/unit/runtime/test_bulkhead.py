"""The async bulkhead: limits, FIFO service, max_wait, cancellation without leaks, stats."""

from __future__ import annotations

import asyncio

import pytest

from qanat.errors import ConfigError, Overloaded
from qanat.runtime.bulkhead import Bulkhead
from qanat.testing import eventually


async def hold(bulkhead: Bulkhead, gate: asyncio.Event, log: list[int], i: int) -> None:
    """Enter the bulkhead, note the order of entry, stay inside until ``gate`` opens."""
    async with bulkhead:
        log.append(i)
        await gate.wait()


async def test_limits_then_overloaded_at_once() -> None:
    """max_concurrent run, max_queue wait, the next caller gets Overloaded immediately."""
    bh = Bulkhead(2, max_queue=1)
    gate, log = asyncio.Event(), []
    tasks = [asyncio.create_task(hold(bh, gate, log, i)) for i in range(3)]
    await eventually(lambda: bh.stats().queued == 1, interval=0)
    assert (bh.stats().in_flight, log) == (2, [0, 1])
    with pytest.raises(Overloaded, match="full"):
        await bh.acquire()
    gate.set()
    await asyncio.gather(*tasks)
    s = bh.stats()
    assert (s.in_flight, s.queued, s.admitted, s.rejected) == (0, 0, 3, 1)


async def test_waiters_are_served_in_arrival_order() -> None:
    """Queued callers enter in the order they arrived."""
    bh = Bulkhead(1, max_queue=10)
    gates = [asyncio.Event() for _ in range(6)]
    log: list[int] = []
    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(hold(bh, gates[i], log, i)))
        await eventually(lambda n=i: bh.stats().in_flight + bh.stats().queued == n + 1, interval=0)
    for i in range(6):
        await eventually(lambda n=i: len(log) == n + 1, interval=0)
        gates[i].set()
    await asyncio.gather(*tasks)
    assert log == [0, 1, 2, 3, 4, 5]


async def test_waiting_past_max_wait_is_overloaded() -> None:
    """A queued caller that gets no slot within max_wait fails with Overloaded."""
    bh = Bulkhead(1, max_queue=1, max_wait=0.0)  # the timer fires on the next loop turn
    await bh.acquire()
    with pytest.raises(Overloaded, match="max_wait"):
        await bh.acquire()
    s = bh.stats()
    assert (s.in_flight, s.queued, s.timed_out) == (1, 0, 1)
    bh.release()
    assert bh.stats().in_flight == 0


async def test_slot_within_max_wait_is_granted() -> None:
    """A slot freed before max_wait goes to the waiter, and its timer is dropped."""
    bh = Bulkhead(1, max_queue=1, max_wait=60.0)
    await bh.acquire()
    waiter = asyncio.create_task(bh.acquire())
    await eventually(lambda: bh.stats().queued == 1, interval=0)
    bh.release()
    await asyncio.wait_for(waiter, timeout=10)
    assert (bh.stats().in_flight, bh.stats().timed_out) == (1, 0)


async def test_cancelled_waiter_leaves_the_queue() -> None:
    """Cancelling a queued caller frees its queue place; the next waiter still gets the slot."""
    bh = Bulkhead(1, max_queue=2)
    await bh.acquire()
    first = asyncio.create_task(bh.acquire())
    second = asyncio.create_task(bh.acquire())
    await eventually(lambda: bh.stats().queued == 2, interval=0)
    first.cancel()
    await eventually(lambda: bh.stats().queued == 1, interval=0)
    assert bh.stats().cancelled == 1
    bh.release()
    await asyncio.wait_for(second, timeout=10)
    assert first.cancelled()
    bh.release()
    assert (bh.stats().in_flight, bh.stats().queued) == (0, 0)


async def test_cancel_right_after_hand_over_does_not_leak() -> None:
    """A waiter cancelled after its slot was handed over, before it ran, passes the slot on."""
    bh = Bulkhead(1, max_queue=2)
    await bh.acquire()
    first = asyncio.create_task(bh.acquire())
    second = asyncio.create_task(bh.acquire())
    await eventually(lambda: bh.stats().queued == 2, interval=0)
    bh.release()  # hands the slot to `first`, which has not run yet
    first.cancel()
    await asyncio.wait_for(second, timeout=10)
    assert first.cancelled()
    assert (bh.stats().in_flight, bh.stats().queued) == (1, 0)
    bh.release()
    assert bh.stats().in_flight == 0


async def test_release_skips_a_cancelled_waiter_not_yet_cleaned_up() -> None:
    """A release that meets a waiter cancelled a moment ago gives the slot to the next one."""
    bh = Bulkhead(1, max_queue=2)
    await bh.acquire()
    first = asyncio.create_task(bh.acquire())
    second = asyncio.create_task(bh.acquire())
    await eventually(lambda: bh.stats().queued == 2, interval=0)
    first.cancel()  # its future is cancelled now; its cleanup runs on a later turn
    bh.release()
    await asyncio.wait_for(second, timeout=10)
    await eventually(first.done, interval=0)
    assert (bh.stats().in_flight, bh.stats().queued) == (1, 0)
    bh.release()
    assert bh.stats().in_flight == 0


async def test_decorator_runs_inside_and_releases_on_error() -> None:
    """@bulkhead counts the call in flight while it runs and releases even when it raises."""
    bh = Bulkhead(1)
    seen: list[int] = []

    @bh
    async def work(fail: bool) -> str:
        seen.append(bh.stats().in_flight)
        if fail:
            raise ValueError("boom")
        return "done"

    assert await work(False) == "done"
    with pytest.raises(ValueError, match="boom"):
        await work(True)
    assert seen == [1, 1]
    assert bh.stats().in_flight == 0
    assert work.__name__ == "work"


def test_bad_max_wait_is_a_config_error() -> None:
    """A negative or infinite max_wait raises ConfigError naming the bulkhead."""
    with pytest.raises(ConfigError, match="max_wait"):
        Bulkhead(1, max_wait=-1.0)
    with pytest.raises(ConfigError, match="max_wait"):
        Bulkhead(1, max_wait=float("inf"))
