"""A circuit breaker with the semantics of sony/gobreaker v2.

Closed: calls pass and are counted; when a call fails and
``ready_to_trip(counts)`` says so, the breaker opens. Open: calls fail fast
with ``CircuitOpenError`` until ``timeout`` has passed, then the breaker is
half-open. Half-open: at most ``max_requests`` trial calls are let through
(more get ``TooManyRequestsError``); ``max_requests`` consecutive successes
close it, one failure opens it again.

Every state change, and every closed-state ``interval`` of a fixed window,
starts a new *generation* and clears the counts; a call admitted in an older
generation has its result ignored. With ``bucket_period`` the closed-state
window rolls instead: the interval is cut into buckets and the oldest falls
off as time passes (gobreaker v2 ``BucketPeriod``; see ``window.RollingCounts``).

The decision core is pure and time is passed in: ``allow(now)`` /
``before(now)`` admit a call and return a ticket, ``after(ticket, ok, now)``
settles it. ``call``, ``acall`` and ``@breaker`` wrap that core with
``clock()``. See docs/circuit-breaking.md.

Thread safety. The sync API may be used from many threads. State changes,
failures, exclusions and half-open admissions take one lock, as gobreaker's
mutex does. The hot paths take none: admitting and settling a success while
closed, and refusing while open. They read the current generation as one
object (``window.Epoch``, replaced, never edited, when the generation or the
rolling bucket changes) and count with ``next()`` on an ``itertools.count``,
which is atomic under CPython's GIL. A thread that counted just as the lock
holder was judging a failure or moving the window on finds ``fast`` false
afterwards and settles under the lock, by the index ``next`` gave it: counted
if the epoch drained it, otherwise admitted afresh or credited late. That keeps
every call linearizable with gobreaker's mutex semantics. A free-threaded
(no-GIL) build would need the lock on the fast paths back.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from qanat.core.breaker_settings import BreakerSettings, BreakerStats, State, default_ready_to_trip
from qanat.core.breaker_state import _CLOSED, _OPEN, BreakerCore
from qanat.core.window import EXCLUDED, FAILURE, SUCCESS, Counts, Epoch, RollingCounts, Tally
from qanat.errors import ConfigError

P = ParamSpec("P")
R = TypeVar("R")

class CircuitBreaker(BreakerCore):
    """A gobreaker v2 circuit breaker; thread-safe, lock-free on its hot paths.

    ``clock`` is a zero-argument callable returning seconds (``time.monotonic``
    by default; ``qanat.testing.FakeClock`` in tests). The sync API may be used
    from several threads; the async API from one event loop (or several: it
    shares the sync API's safety).
    """

    __slots__ = ()  # all state is declared by BreakerCore

    def __init__(self, settings: BreakerSettings | None = None, *,
                 clock: Callable[[], float] = time.monotonic, **options: Any) -> None:
        """``CircuitBreaker(BreakerSettings(...))`` or ``CircuitBreaker(name="db", timeout=30)``.

        Keyword ``options`` are ``BreakerSettings`` fields, applied over ``settings``.
        """
        s = settings if settings is not None else BreakerSettings()
        if options:
            unknown = set(options) - set(BreakerSettings.__dataclass_fields__)
            if unknown:
                allowed = ", ".join(sorted(BreakerSettings.__dataclass_fields__))
                raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))}; "
                                  f"allowed: {allowed}", source="CircuitBreaker")
            s = dataclasses.replace(s, **options)
        self.settings = s
        self.name = s.name
        self._clock = clock
        self._lock = threading.Lock()
        self._max = s.max_requests
        self._timeout = s.timeout
        self._interval = s.interval
        self._period = s.bucket_period
        self._window = RollingCounts(s.buckets) if s.buckets > 1 else None
        self._counts = self._window.total if self._window is not None else Tally()
        self._ready = s.ready_to_trip
        self._is_successful = s.is_successful
        self._is_excluded = s.is_excluded
        self._on_change = s.on_state_change
        self._open_message = f"circuit breaker {s.name!r} is open"
        self._transitions: list[tuple[State, State]] = []
        self._state = _CLOSED
        self._generation = 0
        self._epoch = Epoch(_CLOSED, 0, math.inf)  # a placeholder, never fast
        self._new_generation(clock())

    # -- the pure core: time is passed in ---------------------------------------------

    def allow(self, now: float) -> int | None:
        """Admit a call at ``now``: its ticket, or None when the breaker refuses it."""
        epoch = self._epoch
        if epoch.fast and (epoch.timeless or now <= epoch.until):
            index = next(epoch.requests)
            if epoch.fast:  # re-read after counting: another thread may clear it (see Epoch)
                return epoch.ticket
            ticket = self._late_admit(epoch, index, now)  # type: ignore[unreachable]
        elif epoch.state is _OPEN and now <= epoch.until:
            return None
        else:
            ticket = self._admit(now)
        return ticket if ticket >= 0 else None

    def before(self, now: float) -> int:
        """Admit a call at ``now`` and return its ticket.

        Raises ``CircuitOpenError`` (with ``retry_after``) when open and
        ``TooManyRequestsError`` when half-open and the trial quota is taken.
        """
        epoch = self._epoch
        if epoch.fast and (epoch.timeless or now <= epoch.until):
            index = next(epoch.requests)
            if epoch.fast:  # re-read after counting: another thread may clear it (see Epoch)
                return epoch.ticket
            ticket = self._late_admit(epoch, index, now)  # type: ignore[unreachable]
        elif epoch.state is _OPEN and now <= epoch.until:
            raise self._open_error(epoch.until - now)
        else:
            ticket = self._admit(now)
        if ticket < 0:
            raise self._refusal(ticket, now)
        return ticket

    def after(self, ticket: int, success: bool, now: float) -> None:
        """Settle an admitted call as a success or a failure; stale tickets are ignored."""
        epoch = self._epoch
        if success and epoch.fast and ticket == epoch.ticket \
                and (epoch.timeless or now <= epoch.until):
            index = next(epoch.successes)
            if not epoch.fast:  # re-read after counting (see Epoch)
                self._late_success(epoch, index, ticket, now)  # type: ignore[unreachable]
            return
        self._settle(ticket, SUCCESS if success else FAILURE, now)

    def after_excluded(self, ticket: int, now: float) -> None:
        """Settle an admitted call as an exclusion: neither success nor failure."""
        self._settle(ticket, EXCLUDED, now)

    def after_exception(self, ticket: int, exc: BaseException, now: float) -> None:
        """Settle an admitted call that raised ``exc``, via ``is_excluded``/``is_successful``."""
        if self._is_excluded(exc):
            outcome = EXCLUDED
        else:
            outcome = SUCCESS if self._is_successful(exc) else FAILURE
        self._settle(ticket, outcome, now)

    def stats(self, now: float | None = None) -> BreakerStats:
        """State, counts and generation at ``now`` (default: ``clock()``)."""
        now = self._clock() if now is None else now
        with self._lock:
            state = self._current(now)
            if self._epoch.fast:
                self._epoch.drain()
            open_ = state is _OPEN
            stats = BreakerStats(
                self.name, state, self._counts.snapshot(), self._generation,
                self._expiry - self._timeout if open_ else None,
                max(0.0, self._expiry - now) if open_ else None,
            )
        if self._transitions:
            self._flush()
        return stats

    @property
    def state(self) -> State:
        """The state now, by ``clock()`` (an open breaker half-opens when read late)."""
        return self.stats().state

    @property
    def counts(self) -> Counts:
        """A snapshot of the counts in the current window."""
        with self._lock:
            if self._epoch.fast:
                self._epoch.drain()
            return self._counts.snapshot()

    # -- wrappers: the effects ------------------------------------------------------------

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` through the breaker; its exceptions propagate."""
        # allow() and after() inlined: on this path a Python call costs as much as the
        # bookkeeping. A timeless epoch (no interval, fixed window) reads no clock.
        epoch = self._epoch
        if epoch.fast and (epoch.timeless or self._clock() <= epoch.until):
            index = next(epoch.requests)
            ticket = epoch.ticket if epoch.fast else self._late_admit(epoch, index, None)
        else:
            now = self._clock()
            if epoch.state is _OPEN and now <= epoch.until:
                raise self._open_error(epoch.until - now)
            ticket = self._admit(now)
        if ticket < 0:
            raise self._refusal(ticket, self._clock())
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            # BaseException too: a KeyboardInterrupt must not leak a half-open slot.
            self.after_exception(ticket, exc, self._clock())
            raise
        epoch = self._epoch
        if epoch.fast and ticket == epoch.ticket \
                and (epoch.timeless or self._clock() <= epoch.until):
            index = next(epoch.successes)
            if not epoch.fast:  # re-read after counting (see Epoch)
                self._late_success(epoch, index, ticket, self._clock())  # type: ignore[unreachable]
        else:
            self._settle(ticket, SUCCESS, self._clock())
        return result

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args,
                    **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` through the breaker.

        A cancellation (e.g. a caller's timeout) counts as a failure unless
        ``is_excluded`` says otherwise, as gobreaker counts a panic.
        """
        ticket = self.before(self._clock())
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self.after_exception(ticket, exc, self._clock())
            raise
        self.after(ticket, True, self._clock())
        return result

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or an async function so each call goes through the breaker."""
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[object]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> object:
                return await self.acall(afn, *args, **kwargs)

            return cast(Callable[P, R], async_wrapper)

        breaker, clock = self, self._clock

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            # call() inlined, one Python frame less per call: keep the two in step
            # (tests/unit/core/test_breaker.py runs the same history through both).
            epoch = breaker._epoch
            if epoch.fast and (epoch.timeless or clock() <= epoch.until):
                index = next(epoch.requests)
                ticket = epoch.ticket if epoch.fast else breaker._late_admit(epoch, index, None)
            else:
                now = clock()
                if epoch.state is _OPEN and now <= epoch.until:
                    raise breaker._open_error(epoch.until - now)
                ticket = breaker._admit(now)
            if ticket < 0:
                raise breaker._refusal(ticket, clock())
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                breaker.after_exception(ticket, exc, clock())
                raise
            epoch = breaker._epoch
            if epoch.fast and ticket == epoch.ticket \
                    and (epoch.timeless or clock() <= epoch.until):
                index = next(epoch.successes)
                if not epoch.fast:  # re-read after counting (see Epoch)
                    breaker._late_success(epoch, index, ticket, clock())  # type: ignore[unreachable]
            else:
                breaker._settle(ticket, SUCCESS, clock())
            return result

        return wrapper

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state.value}>"


__all__ = [
    "BreakerSettings",
    "BreakerStats",
    "CircuitBreaker",
    "Counts",
    "State",
    "default_ready_to_trip",
]
