"""An owner for background tasks: nothing qanat starts is fire-and-forget.

``TaskOwner`` keeps a strong reference to every task it starts (asyncio only
keeps weak ones, so an unowned task can be garbage-collected mid-flight), logs
a task that dies of an unexpected exception, and ``close()`` cancels every
task and awaits them all, as a trio/anyio task group does at scope exit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("qanat.runtime")


class TaskOwner:
    """Starts, tracks and stops a set of asyncio tasks.

    ``start`` refuses new work once ``close`` has begun, so a loop that tries
    to respawn itself during shutdown cannot outlive its owner.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once ``close()`` has been called."""
        return self._closed

    def start(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task owned by this owner (needs a running loop)."""
        if self._closed:
            coro.close()  # never awaited otherwise: close it to avoid a warning
            raise RuntimeError(f"{self.name} is closed; cannot start {name!r}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s crashed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel(self, task: asyncio.Task[Any]) -> None:
        """Cancel one task and wait until it has finished."""
        await cancel_and_wait([task])

    async def close(self) -> None:
        """Cancel every task and await them all; idempotent."""
        self._closed = True
        while self._tasks:
            tasks = list(self._tasks)
            await cancel_and_wait(tasks)
            self._tasks.difference_update(tasks)


async def cancel_and_wait(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again any that keep running.

    Why again: in Python 3.11 ``asyncio.wait_for`` can swallow a cancellation
    that arrives just as its inner future completes (CPython gh-86296, fixed in
    3.12), so a task awaiting a library that uses it may survive one cancel().
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.25)


def backoff_delay(attempt: int, *, base: float, cap: float, rand: float) -> float:
    """Full-jitter exponential backoff (AWS Architecture Blog, "Exponential Backoff
    and Jitter", 2015): a delay drawn uniformly from [0, min(cap, base·2^attempt)).

    ``rand`` is a uniform draw in [0, 1), passed in so callers choose the source;
    the jitter spreads reconnects so many clients do not retry in lock step.
    """
    return rand * min(cap, base * 2.0 ** min(attempt, 62))
