"""Retrying calls: the sleeping half of ``qanat.core.retry``.

``retry(policy)`` returns a ``Retrying`` that decorates sync and async
functions and runs calls directly (``call`` / ``acall``)::

    from qanat.core.retry import RetryPolicy
    from qanat.runtime.retrying import retry

    @retry(RetryPolicy(max_attempts=4))
    async def fetch(): ...

When retries stop (attempts or elapsed time used up, an error that is not
retryable, or a retry refused by the budget) the *last error* is raised
unchanged, as Envoy returns the last upstream response; a budget refusal
adds a note to it and is counted in ``budget.stats().refused``. Callers
therefore catch the same errors with or without retrying.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from qanat.core.retry import RetryPolicy

P = ParamSpec("P")
R = TypeVar("R")

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


class Budget(Protocol):
    """What ``Retrying`` needs from a retry budget (``RetryBudget``, ``RatioRetryBudget``)."""

    def request_started(self) -> None: ...
    def request_finished(self) -> None: ...
    def try_retry(self) -> bool: ...
    def retry_finished(self) -> None: ...


def _predicate(policy: RetryPolicy, retry_on: RetryOn | None) -> Callable[[BaseException], bool]:
    if retry_on is None:
        return policy.retryable_error
    if isinstance(retry_on, type | tuple):
        types = retry_on
        return lambda exc: isinstance(exc, types)
    return retry_on


class Retrying:
    """Runs a function under a ``RetryPolicy``, sleeping between attempts.

    ``retry_on`` decides which errors are retried and replaces the policy's
    classification: exception types, or a predicate. Whether a call that is
    not idempotent may be retried is the caller's choice, made here: e.g.
    ``retry_on=Unavailable`` retries only errors raised before any work was
    done; ``retry_on=lambda e: getattr(e, "request_sent", True) is False``
    only those the upstream never saw. Only ``Exception`` subclasses are
    retried; cancellation and ``KeyboardInterrupt`` always propagate.

    ``sleep`` defaults to ``time.sleep`` for sync calls and ``asyncio.sleep``
    for async ones (an async call awaits what ``sleep`` returns if it is
    awaitable). ``clock`` measures elapsed time; ``rng`` feeds the jitter.
    An error's ``retry_after`` attribute (``qanat.errors.Unavailable`` has
    one) is passed to the policy as the server's ``Retry-After``.
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        retry_on: RetryOn | None = None,
        budget: Budget | None = None,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy if policy is not None else RetryPolicy()
        self.budget = budget
        self._retryable = _predicate(self.policy, retry_on)
        self._sleep = sleep
        self._clock = clock
        self._rng = rng

    def _delay(
        self, exc: Exception, attempt: int, start: float, previous: float | None
    ) -> float | None:
        """The delay before the next attempt, or None to re-raise ``exc``."""
        if not self._retryable(exc):
            return None
        retry_after = getattr(exc, "retry_after", None)
        if not isinstance(retry_after, int | float):
            retry_after = None
        delay = self.policy.next_delay(
            attempt, self._clock() - start, retry_after, self._rng, previous=previous
        )
        if delay is not None and self.budget is not None and not self.budget.try_retry():
            exc.add_note("qanat: retry refused, retry budget exhausted")
            return None
        return delay

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)``, retrying under the policy; return its result."""
        budget = self.budget
        if budget is None:
            try:
                return fn(*args, **kwargs)  # the fast path: no bookkeeping unless it fails
            except Exception as exc:
                return self._again(exc, fn, *args, **kwargs)
        budget.request_started()  # the budget's share is of *all* active calls
        try:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                return self._again(exc, fn, *args, **kwargs)
        finally:
            budget.request_finished()

    def _again(self, exc: Exception, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Retry ``fn`` after its first attempt failed with ``exc``."""
        sleep = self._sleep or time.sleep
        budget = self.budget
        start = self._clock()
        attempt, delay = 1, None
        while True:
            delay = self._delay(exc, attempt, start, delay)
            if delay is None:
                raise exc
            try:
                sleep(delay)
                attempt += 1
                return fn(*args, **kwargs)
            except Exception as again:
                exc = again
            finally:
                if budget is not None:
                    budget.retry_finished()

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)``, retrying under the policy; return its result."""
        budget = self.budget
        if budget is None:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                return await self._aagain(exc, fn, *args, **kwargs)
        budget.request_started()
        try:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                return await self._aagain(exc, fn, *args, **kwargs)
        finally:
            budget.request_finished()

    async def _aagain(
        self, exc: Exception, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Retry ``fn`` after its first attempt failed with ``exc``."""
        sleep = self._sleep or asyncio.sleep
        budget = self.budget
        start = self._clock()
        attempt, delay = 1, None
        while True:
            delay = self._delay(exc, attempt, start, delay)
            if delay is None:
                raise exc
            try:
                slept = sleep(delay)
                if inspect.isawaitable(slept):
                    await slept
                attempt += 1
                return await fn(*args, **kwargs)
            except Exception as again:
                exc = again
            finally:
                if budget is not None:
                    budget.retry_finished()

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate ``fn`` (sync or ``async def``) so every call retries."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.acall(fn, *args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self.call(fn, *args, **kwargs)

        return wrapper


def retry(
    policy: RetryPolicy | None = None,
    *,
    retry_on: RetryOn | None = None,
    budget: Budget | None = None,
    sleep: Callable[[float], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> Retrying:
    """A ``Retrying`` for ``policy`` (default ``RetryPolicy()``): a decorator and a runner."""
    return Retrying(policy, retry_on=retry_on, budget=budget, sleep=sleep, clock=clock, rng=rng)


__all__ = ["Budget", "RetryOn", "Retrying", "retry"]
