"""Public test helpers for qanat users and qanat's own tests.

- ``FakeClock``: a clock that moves only when told to, for every ``clock=``.
- ``eventually`` / ``eventually_sync``: wait for a condition another task,
  thread or process will make true, with a deadline and a message that says
  what was awaited and what was last seen. The one way qanat's tests wait.
- ``free_port``: a TCP port to hand to a server started in another process.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from qanat.errors import ConfigError

T = TypeVar("T")

Description = str | Callable[[], str]


class FakeClock:
    """A clock that only moves when told to.

    Pass it wherever qanat takes a ``clock`` (a zero-argument callable that
    returns seconds): ``CircuitBreaker(clock=clock)``. Tests call
    ``clock.advance(seconds)`` instead of sleeping.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance({seconds}))")
        self.now += seconds
        return self.now

    def set(self, now: float) -> None:
        """Jump to ``now``; it must not be earlier than the current time."""
        if now < self.now:
            raise ValueError(f"a clock cannot go backwards ({now} < {self.now})")
        self.now = now


class _Poll:
    """The bookkeeping both ``eventually`` flavours share: deadline, last value, message."""

    def __init__(
        self,
        name: str,
        timeout: float,
        interval: float,
        what: Description,
        ignore: tuple[type[BaseException], ...],
        clock: Callable[[], float],
    ) -> None:
        for arg, value in (("timeout", timeout), ("interval", interval)):
            if not value >= 0:  # also refuses NaN
                raise ConfigError(
                    f"{arg} must be a number of seconds >= 0, got {value!r}",
                    source=f"{name}({arg}=...)",
                )
        self.timeout = timeout
        self.interval = interval
        self.what = what
        self.ignore = ignore
        self.clock = clock
        self.deadline = clock() + timeout
        self.attempts = 0
        self.last: object = None
        self.raised: BaseException | None = None

    def seen(self, value: object) -> bool:
        """Record one attempt's value; whether it ends the wait."""
        self.attempts += 1
        self.last, self.raised = value, None
        return bool(value)

    def failed(self, exc: BaseException) -> None:
        """Record one attempt that raised one of the ``ignore`` exceptions."""
        self.attempts += 1
        self.raised = exc

    def expired(self) -> AssertionError:
        """The failure for an async attempt still running when its time ran out."""
        self.attempts += 1
        return self.timed_out(still_running=True)

    def pause(self) -> float | None:
        """Seconds to wait before the next attempt, or None once the deadline has passed.

        The last pause is cut short so that one attempt always happens at the
        deadline itself: a condition that turns true during the final interval
        is still seen.
        """
        left = self.deadline - self.clock()
        if left <= 0:
            return None
        return min(self.interval, left)

    def timed_out(self, *, still_running: bool = False) -> AssertionError:
        what = self.what() if callable(self.what) else self.what
        if still_running:
            last = "the last attempt was still running, cut off"
        elif self.raised is not None:
            last = f"the last attempt raised {type(self.raised).__name__}: {self.raised}"
        else:
            last = f"the last value was {_short_repr(self.last)}"
        tries = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        return AssertionError(
            f"timed out after {self.timeout:g}s waiting for {what} ({tries}); {last}"
        )


def _short_repr(value: object, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _AttemptExpired(Exception):
    """An async attempt was still running at the deadline."""


async def _bounded(attempt: Awaitable[T], seconds: float) -> T:
    """Await ``attempt`` for at most ``seconds``; a timeout of its own propagates as is."""
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await attempt
    except TimeoutError:
        if scope.expired():
            raise _AttemptExpired from None
        raise


async def eventually(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    what: Description = "the condition",
    ignore: tuple[type[BaseException], ...] = (),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Call ``condition`` until it returns something truthy, and return that value.

    ``condition`` is a plain or an async callable. It is tried at once, then
    every ``interval`` seconds (``0``: on every turn of the event loop), and a
    last time at the deadline, ``timeout`` seconds after the call. An async
    attempt is itself bounded by the time left (but at least ``timeout / 10``,
    so the attempt made at the deadline can finish): a condition that hangs
    ends the wait by ``1.1 × timeout`` at the latest. An exception whose type is in ``ignore``
    counts as "not yet" (for example ``OSError`` while a server is starting);
    any other exception propagates at once.

    At the deadline it raises ``AssertionError`` naming ``what`` (a string,
    or a zero-argument callable evaluated only then, e.g. to include a log
    tail), the number of attempts and the last value or exception seen.

    This waits for a real condition; it is not a way to let time pass. To
    test timing, pass a ``FakeClock`` to the code under test instead.
    """
    poll = _Poll("eventually", timeout, interval, what, ignore, clock)
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                # the floor gives the attempt made at the deadline a real chance to finish
                value = await _bounded(value, max(poll.deadline - clock(), timeout / 10))
        except _AttemptExpired:
            raise poll.expired() from None
        except ignore as exc:
            poll.failed(exc)
        else:
            if poll.seen(value):
                return value  # type: ignore[return-value]  # awaited, so a T
        pause = poll.pause()
        if pause is None:
            raise poll.timed_out()
        await sleep(pause)


def eventually_sync(
    condition: Callable[[], T],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    what: Description = "the condition",
    ignore: tuple[type[BaseException], ...] = (),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """The blocking twin of ``eventually``, for code outside an event loop.

    Same contract: returns the first truthy value of ``condition()``, tried at
    once, every ``interval`` seconds and once more at the deadline; raises
    ``AssertionError`` naming ``what`` and the last value after ``timeout``.
    A single attempt is not interrupted, so it must bound itself (a socket or
    subprocess timeout). Never call it from a coroutine: it blocks the loop.
    """
    poll = _Poll("eventually_sync", timeout, interval, what, ignore, clock)
    while True:
        try:
            value = condition()
        except ignore as exc:
            poll.failed(exc)
        else:
            if poll.seen(value):
                return value
        pause = poll.pause()
        if pause is None:
            raise poll.timed_out()
        sleep(pause)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listened on a moment ago (the OS picks it).

    Only for a server that must be told its port up front (a subprocess, a
    config file). Another process may take the port before that server binds
    it; a server in this process should bind port 0 and read its port back.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


__all__ = ["FakeClock", "eventually", "eventually_sync", "free_port"]
