"""The deadline wheel, driven by a fake loop on a FakeClock: never early, at most a slot late."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from qanat.http.deadlines import DeadlineWheel
from qanat.testing import FakeClock

RES = 0.005


class FakeHandle:
    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class FakeLoop:
    """Just enough of an event loop for the wheel: time() and call_later() on a FakeClock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.timers: list[tuple[float, Callable[[], None], FakeHandle]] = []

    def time(self) -> float:
        return self.clock()

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle()
        self.timers.append((self.clock() + delay, callback, handle))
        return handle

    def advance_to(self, when: float) -> None:
        """Move the clock, firing due timers in order (as a loop would)."""
        while True:
            due = [t for t in self.timers if t[0] <= when and not t[2].cancelled()]
            if not due:
                break
            first = min(due, key=lambda t: t[0])
            self.timers.remove(first)
            self.clock.set(max(self.clock(), first[0]))
            first[1]()
        self.clock.set(max(self.clock(), when))


class Item:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.expired_at: float | None = None

    def expire(self) -> None:
        assert self.expired_at is None, "expired twice"
        self.expired_at = self.clock()


@given(
    deadlines=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=30),
    removed=st.sets(st.integers(min_value=0, max_value=29)),
)
def test_items_expire_never_early_and_at_most_one_slot_late(
    deadlines: list[float], removed: set[int]
) -> None:
    """Every armed item expires once, at or after its deadline and within two resolutions."""
    clock = FakeClock(start=1000.0)
    loop = FakeLoop(clock)
    wheel = DeadlineWheel(cast(asyncio.AbstractEventLoop, loop), RES)
    items = [Item(clock) for _ in deadlines]
    slots = [wheel.add(item, 1000.0 + d) for item, d in zip(items, deadlines, strict=True)]
    for i in removed & set(range(len(items))):
        wheel.remove(items[i], slots[i])
    loop.advance_to(1003.0)
    for i, (item, d) in enumerate(zip(items, deadlines, strict=True)):
        if i in removed:
            assert item.expired_at is None
        else:
            assert item.expired_at is not None
            assert 1000.0 + d <= item.expired_at <= 1000.0 + d + 2 * RES
    assert len(wheel) == 0
    assert not [t for t in loop.timers if not t[2].cancelled()]  # stops ticking when empty


def test_a_short_deadline_added_after_a_long_one_is_not_delayed() -> None:
    """Arming order does not matter: a later, shorter deadline still fires on time."""
    clock = FakeClock(start=50.0)
    loop = FakeLoop(clock)
    wheel = DeadlineWheel(cast(asyncio.AbstractEventLoop, loop), RES)
    long, short = Item(clock), Item(clock)
    wheel.add(long, 55.0)
    loop.advance_to(50.002)
    wheel.add(short, 50.1)
    loop.advance_to(50.2)
    assert short.expired_at is not None and 50.1 <= short.expired_at <= 50.1 + 2 * RES
    assert long.expired_at is None
