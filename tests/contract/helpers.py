"""Test helpers for watches: collect what an async iterator yields and wait on it.

For state that has no change feed to wait on (e.g. a read that filters by a fake
clock), poll with ``qanat.testing.eventually`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

DEADLINE = 10.0
"""Default seconds to wait for a condition before failing (generous: CI machines are slow)."""


class Collector(Generic[T]):
    """Consume an async iterator in a task; let a test wait until what it yielded satisfies a test.

    Waiting is on the real condition (an ``asyncio.Condition`` notified per
    item) with a deadline, never a fixed sleep.
    """

    def __init__(self, source: AsyncIterator[T]) -> None:
        self.items: list[T] = []
        self.error: BaseException | None = None
        self.done = False
        self._source = source
        self._cond = asyncio.Condition()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for item in self._source:
                async with self._cond:
                    self.items.append(item)
                    self._cond.notify_all()
        except Exception as exc:  # surfaced by wait_for, with the items seen so far
            self.error = exc
        finally:
            self.done = True
            async with self._cond:
                self._cond.notify_all()

    async def wait_for(
        self, predicate: Callable[[list[T]], bool], timeout: float = DEADLINE
    ) -> list[T]:
        """Wait until ``predicate(items)`` holds; else fail, showing the items seen."""
        try:
            async with asyncio.timeout(timeout), self._cond:
                await self._cond.wait_for(lambda: self.done or predicate(self.items))
        except TimeoutError:
            raise AssertionError(
                f"condition not met within {timeout} s; got {len(self.items)} items: {self.items!r}"
            ) from None
        if not predicate(self.items):
            raise AssertionError(
                f"the iterator ended ({self.error!r}) before the condition held; "
                f"items: {self.items!r}"
            )
        return self.items

    async def stays(self, predicate: Callable[[list[T]], bool], seconds: float) -> None:
        """Assert ``predicate(items)`` holds throughout ``seconds`` (checked at every new item)."""
        assert predicate(self.items), f"does not hold at the start: {self.items!r}"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds), self._cond:
                await self._cond.wait_for(lambda: self.done or not predicate(self.items))
        assert predicate(self.items), f"stopped holding: {self.items!r}"

    async def close(self) -> None:
        """Stop consuming and close the iterator."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()

