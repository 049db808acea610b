"""Client-side adaptive throttling, from the Google SRE book (ch. 21, "Handling Overload").

Each client keeps, over a trailing window, the number of ``requests`` it
attempted and the number of ``accepts`` the backend answered. When the backend
starts refusing, the client sheds calls itself, before they cost anything,
with probability::

    max(0, (requests - K * accepts) / (requests + 1))

With K = 2 the client lets through about twice what the backend accepts, so
the backend still sees enough traffic to notice when it recovers. go-zero's
Google breaker uses the same rule over a 10 s window of 40 buckets; those are
the defaults here. A shed call counts as a request that was not accepted, as
in the book and in go-zero, so shedding feeds back into the estimate.

The core is pure: ``allow(now)`` and ``record(accepted, now)``, with the random
source injected (``rng``). ``call``, ``acall`` and ``@throttle`` wrap it and
raise ``Overloaded`` when a call is shed. See docs/circuit-breaking.md.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar, cast

from qanat.core.window import RollingWindow
from qanat.errors import ConfigError, Overloaded

P = ParamSpec("P")
R = TypeVar("R")


def _no(exc: BaseException) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class ThrottleStats:
    """A snapshot for metrics and dashboards."""

    name: str
    requests: int  # attempted in the window, shed ones included
    accepts: int  # accepted by the backend in the window
    reject_probability: float  # the chance the next call is shed
    shed_total: int  # calls shed since the throttle was made


class AdaptiveThrottle:
    """Shed calls client-side in proportion to how much the backend is refusing.

    - ``k`` (2.0): the multiplier K; lower sheds sooner, higher later.
    - ``window`` (10.0 s) and ``buckets`` (40): the trailing window, rolled in
      buckets of ``window / buckets`` seconds.
    - ``is_accepted(exc)`` (always False): whether a call that raised ``exc``
      still counts as accepted by the backend (e.g. a 404 is an answer, a
      503 is a refusal). A call that returns counts as accepted.
    - ``rng``: a zero-argument callable returning a float in [0, 1).
    - ``clock``: a zero-argument callable returning seconds.

    The sync API may be used from several threads; the async API from one loop.
    """

    __slots__ = ("_clock", "_is_accepted", "_k", "_lock", "_rng", "_shed", "_window", "name")

    def __init__(
        self,
        name: str = "",
        *,
        k: float = 2.0,
        window: float = 10.0,
        buckets: int = 40,
        is_accepted: Callable[[BaseException], bool] = _no,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int | float) or not (0 < k < math.inf):
            raise ConfigError(f"must be a finite number > 0 (the SRE book uses 2), got {k!r}",
                              source="AdaptiveThrottle.k")
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
            raise ConfigError(f"must be a whole number >= 1, got {buckets!r}",
                              source="AdaptiveThrottle.buckets")
        if isinstance(window, bool) or not isinstance(window, int | float) \
                or not (0 < window < math.inf):
            raise ConfigError(f"must be a finite number of seconds > 0, got {window!r}",
                              source="AdaptiveThrottle.window")
        self.name = name
        self._k = float(k)
        self._window = RollingWindow(buckets, window / buckets)
        self._is_accepted = is_accepted
        self._rng = rng
        self._clock = clock
        self._lock = threading.Lock()
        self._shed = 0

    # -- the pure core ------------------------------------------------------------------

    def reject_probability(self, now: float) -> float:
        """The SRE formula over the window ending at ``now``."""
        self._lock.acquire()
        try:
            requests, accepts = self._window.totals(now)
        finally:
            self._lock.release()
        return max(0.0, (requests - self._k * accepts) / (requests + 1))

    def allow(self, now: float) -> bool:
        """Whether to send a call at ``now``; a refusal is counted here, as a failed request.

        After a True, report the outcome with ``record``; after a False, do not.
        """
        lock = self._lock
        lock.acquire()
        try:
            requests, accepts = self._window.totals(now)
            excess = requests - self._k * accepts
            # Only draw when shedding is possible, so a healthy backend costs no rng call.
            if excess <= 0 or self._rng() >= excess / (requests + 1):
                return True
            self._window.add(now, False)
            self._shed += 1
            return False
        finally:
            lock.release()

    def record(self, accepted: bool, now: float) -> None:
        """Count a call that was sent: ``accepted`` if the backend answered it."""
        lock = self._lock
        lock.acquire()
        try:
            self._window.add(now, accepted)
        finally:
            lock.release()

    def stats(self, now: float | None = None) -> ThrottleStats:
        """Counts and the current reject probability at ``now`` (default: ``clock()``)."""
        now = self._clock() if now is None else now
        self._lock.acquire()
        try:
            requests, accepts = self._window.totals(now)
            shed = self._shed
        finally:
            self._lock.release()
        p = max(0.0, (requests - self._k * accepts) / (requests + 1))
        return ThrottleStats(self.name, requests, accepts, p, shed)

    # -- wrappers -------------------------------------------------------------------------

    def _refusal(self, now: float) -> Overloaded:
        p = self.reject_probability(now)
        return Overloaded(f"adaptive throttle {self.name!r} shed the call: the backend is "
                          f"refusing calls (reject probability now {p:.2f})")

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` unless shed (``Overloaded``); record its outcome."""
        now = self._clock()
        if not self.allow(now):
            raise self._refusal(now)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.record(self._is_accepted(exc), self._clock())
            raise
        self.record(True, self._clock())
        return result

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args,
                    **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` unless shed (``Overloaded``); record its outcome."""
        now = self._clock()
        if not self.allow(now):
            raise self._refusal(now)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self.record(self._is_accepted(exc), self._clock())
            raise
        self.record(True, self._clock())
        return result

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or an async function so each call goes through the throttle."""
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[object]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> object:
                return await self.acall(afn, *args, **kwargs)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.call(fn, *args, **kwargs)

        return wrapper

    def __repr__(self) -> str:
        return f"<AdaptiveThrottle {self.name!r} k={self._k}>"


__all__ = ["AdaptiveThrottle", "ThrottleStats"]
