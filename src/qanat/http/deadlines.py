"""Coarse deadlines for many in-flight requests, on one loop timer.

A hashed timing wheel (Varghese & Lauck, "Hashed and Hierarchical Timing
Wheels", 1987; the scheme of Netty's ``HashedWheelTimer`` and Kafka's
purgatory): deadlines fall into slots of ``resolution`` seconds; one timer
ticks while any slot is occupied and expires the slots that have passed.
Arming and disarming cost a set insert and remove, where a per-request
``loop.call_at`` costs a timer handle and measurably slows every loop
iteration on uvloop and asyncio alike (see ``docs/http-client.md``).

A deadline never fires early; it fires at most one ``resolution`` (plus the
loop's latency) late.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol


class Expirable(Protocol):
    """Something with a deadline: told once when it passes."""

    def expire(self) -> None: ...


class DeadlineWheel:
    """Slots of ``resolution`` seconds, one timer; not thread-safe (one event loop)."""

    __slots__ = ("_loop", "_next", "_resolution", "_slots", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = 0.005) -> None:
        self._loop = loop
        self._resolution = resolution
        self._slots: dict[int, set[Expirable]] = {}
        self._next = 0  # every slot before this one has been expired
        self._timer: asyncio.TimerHandle | None = None

    def add(self, item: Expirable, deadline: float) -> int:
        """Arm ``item`` to expire at ``deadline`` (loop time); return the slot to ``remove`` it."""
        slot = math.ceil(deadline / self._resolution)  # round up: never early
        if self._timer is None:  # the wheel is empty: start ticking from now
            self._next = math.floor(self._loop.time() / self._resolution)
            self._timer = self._loop.call_later(self._resolution, self._tick)
        elif slot < self._next:
            slot = self._next  # passed slots are not revisited; the next tick takes it
        bucket = self._slots.get(slot)
        if bucket is None:
            bucket = self._slots[slot] = set()
        bucket.add(item)
        return slot

    def remove(self, item: Expirable, slot: int) -> None:
        """Disarm ``item`` (a no-op if it already expired)."""
        bucket = self._slots.get(slot)
        if bucket is not None:
            bucket.discard(item)
            if not bucket:
                del self._slots[slot]

    def _tick(self) -> None:
        self._timer = None
        now_slot = math.floor(self._loop.time() / self._resolution)
        due: list[Expirable] = []
        if self._slots:
            # Walk the passed slots one by one, unless far fewer are occupied.
            passed = now_slot - self._next + 1
            slots = range(self._next, now_slot + 1) if passed <= len(self._slots) else [
                s for s in self._slots if s <= now_slot
            ]
            for slot in slots:
                bucket = self._slots.pop(slot, None)
                if bucket:
                    due.extend(bucket)
        self._next = now_slot + 1
        if self._slots:
            self._timer = self._loop.call_later(self._resolution, self._tick)
        for item in due:
            item.expire()

    def close(self) -> None:
        """Stop ticking and forget every deadline."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._slots.clear()

    def __len__(self) -> int:
        return sum(len(b) for b in self._slots.values())


__all__ = ["DeadlineWheel", "Expirable"]
