"""Rate limiters: token bucket, GCRA and sliding window, keyed per client, pure.

Every limiter answers ``allow(key, now, n=1) -> Decision`` and never reads a
clock::

    limiter = TokenBucket(rate=10, burst=20)        # 10/s, bursts of 20, per key
    d = limiter.allow(client_ip, time.monotonic())
    if not d.allowed:
        return 429, headers(d, window=2.0)          # Retry-After + IETF RateLimit

``Unkeyed(limiter)`` is the same limiter for a single client
(``allow(now, n=1)``); ``RateLimiter`` wraps one for application code, with a
clock, ``acquire()`` raising ``qanat.errors.RateLimited`` and a decorator.
The algorithms live in ``ratelimit_bucket`` and ``ratelimit_window``.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Hashable
from typing import Any, ParamSpec, Protocol, TypeVar

from qanat.core.ratelimit_base import DEFAULT_MAX_KEYS, Decision, KeyedState
from qanat.core.ratelimit_bucket import GCRA, TokenBucket
from qanat.core.ratelimit_window import SlidingWindow
from qanat.errors import RateLimited

P = ParamSpec("P")
R = TypeVar("R")


class Limiter(Protocol):
    """Anything with qanat's limiter calling convention."""

    def allow(self, key: Hashable, now: float, n: int = 1) -> Decision: ...


class Unkeyed:
    """One limit for everyone: ``allow(now, n=1)`` over a keyed limiter's single key."""

    __slots__ = ("_allow",)

    def __init__(self, limiter: Limiter) -> None:
        self._allow = limiter.allow

    def allow(self, now: float, n: int = 1) -> Decision:
        """The wrapped limiter's decision for the one shared key."""
        return self._allow(None, now, n)


class RateLimiter:
    """A limiter for application code: reads ``clock``, raises ``RateLimited``.

    ``acquire(n, key=...)`` returns the ``Decision`` when allowed and raises
    ``RateLimited`` (an ``Unavailable``: no work was done) carrying
    ``retry_after`` otherwise. Used as a decorator, every call acquires one
    permit for ``key`` first (the same key for all calls).
    """

    def __init__(
        self,
        limiter: Limiter,
        *,
        clock: Callable[[], float] = time.monotonic,
        key: Hashable = None,
    ) -> None:
        self.limiter = limiter
        self.key = key
        self._clock = clock

    def try_acquire(self, n: int = 1, *, key: Hashable = None) -> Decision:
        """The decision for ``n`` permits now, without raising."""
        return self.limiter.allow(self.key if key is None else key, self._clock(), n)

    def acquire(self, n: int = 1, *, key: Hashable = None) -> Decision:
        """Take ``n`` permits now or raise ``RateLimited`` saying when to retry."""
        d = self.limiter.allow(self.key if key is None else key, self._clock(), n)
        if not d.allowed:
            raise RateLimited(
                f"rate limited: {n} permit(s) refused (limit {d.limit}); "
                f"retry after {d.retry_after:.3f}s",
                retry_after=d.retry_after,
            )
        return d

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or ``async def`` function: each call acquires a permit first."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                self.acquire()
                return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            self.acquire()
            return fn(*args, **kwargs)

        return wrapper


__all__ = [
    "DEFAULT_MAX_KEYS",
    "GCRA",
    "Decision",
    "KeyedState",
    "Limiter",
    "RateLimiter",
    "SlidingWindow",
    "TokenBucket",
    "Unkeyed",
]
