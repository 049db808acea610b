"""An async bulkhead: at most ``max_concurrent`` calls at once, a bounded FIFO queue behind.

::

    bulkhead = Bulkhead(max_concurrent=10, max_queue=50, max_wait=0.5)

    async with bulkhead:
        await call_payments()

    @bulkhead
    async def call_risk(): ...

A call that finds the queue full fails at once with ``qanat.errors.Overloaded``
(Envoy answers 503 on overflow the same way); a call that waits longer than
``max_wait`` seconds also gets ``Overloaded``. Waiters are served in arrival
order. A waiter that is cancelled leaves the queue, and if a slot had already
been handed to it, passes that slot on, so cancellation never leaks a slot.
The counting is ``qanat.core.bulkhead.BulkheadCore``.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

from qanat.core.bulkhead import Admission, BulkheadCore, BulkheadStats
from qanat.errors import ConfigError, Overloaded

P = ParamSpec("P")
R = TypeVar("R")


class Bulkhead:
    """Limits concurrency of async calls; see the module docstring for the rules.

    ``max_queue`` defaults to 0 (no waiting: full means ``Overloaded`` at
    once); ``max_wait`` defaults to None (a queued call waits until served or
    cancelled).
    """

    def __init__(
        self,
        max_concurrent: int,
        max_queue: int = 0,
        max_wait: float | None = None,
        *,
        name: str = "bulkhead",
    ) -> None:
        if max_wait is not None and not (math.isfinite(max_wait) and max_wait >= 0):
            raise ConfigError(
                f"must be seconds >= 0 or None, got {max_wait!r}",
                source=f"Bulkhead({name!r}).max_wait",
            )
        self.name = name
        self.max_wait = max_wait
        self._core = BulkheadCore(max_concurrent, max_queue)
        # insertion-ordered, so the first key is the head of the FIFO queue; O(1) removal
        self._waiters: dict[asyncio.Future[None], None] = {}

    async def acquire(self) -> None:
        """Take a slot, waiting in line if allowed; raise ``Overloaded`` if none comes."""
        verdict = self._core.arrive()
        if verdict is Admission.RUN:
            return
        if verdict is Admission.REJECT:
            core = self._core
            raise Overloaded(
                f"bulkhead {self.name!r} is full: {core.in_flight} running "
                f"(max_concurrent={core.max_concurrent}), {core.queued} queued "
                f"(max_queue={core.max_queue})"
            )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters[fut] = None
        timer = None if self.max_wait is None else loop.call_later(self.max_wait, self._expire, fut)
        try:
            await fut
        except asyncio.CancelledError:
            self._abandon(fut)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def try_acquire(self) -> bool:
        """Take a slot only if one is free and nobody waits (never queues, never raises).

        False leaves no trace: the caller may then ``acquire`` and wait in line.
        """
        core = self._core
        if core.in_flight < core.max_concurrent and not core.queued:
            core.arrive()  # a free slot and an empty queue: RUN
            return True
        return False

    def _expire(self, fut: asyncio.Future[None]) -> None:
        """``max_wait`` passed: take ``fut`` out of the queue and fail it."""
        if fut in self._waiters and not fut.done():
            del self._waiters[fut]
            self._core.abandon(timed_out=True)
            fut.set_exception(
                Overloaded(f"bulkhead {self.name!r}: no slot within max_wait={self.max_wait}s")
            )

    def _abandon(self, fut: asyncio.Future[None]) -> None:
        """The waiter owning ``fut`` was cancelled: leave the queue, or give back its slot."""
        if fut in self._waiters:
            del self._waiters[fut]
            self._core.abandon(timed_out=False)
        elif fut.done() and not fut.cancelled() and fut.exception() is None:
            self.release()  # a slot was handed over just before the cancellation landed

    def release(self) -> None:
        """Give a slot back; the longest-waiting live caller gets it."""
        while self._core.release():
            fut = next(iter(self._waiters))
            del self._waiters[fut]
            if not fut.done():
                fut.set_result(None)
                return
            # that waiter was cancelled and has not run yet: its slot goes round again

    async def __aenter__(self) -> Bulkhead:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Decorate an ``async def`` function so each call runs inside the bulkhead."""

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            await self.acquire()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.release()

        return wrapper

    def stats(self) -> BulkheadStats:
        """Limits, current counts and totals (admitted, rejected, timed out, cancelled)."""
        return self._core.stats()


__all__ = ["Bulkhead"]
