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
from qanat.core.window import EXCLUDED, FAILURE, SUCCESS, Counts, Epoch, RollingCounts, Tally
from qanat.errors import CircuitOpenError, ConfigError, TooManyRequestsError

P = ParamSpec("P")
R = TypeVar("R")

# A ticket is one int: generation * _SPAN + bucket age. Generations start at 1,
# so a ticket is always >= _SPAN and the refusals below can be negative ints.
_SPAN = 1 << 52
_REFUSED_OPEN = -1
_REFUSED_FULL = -2

_CLOSED, _HALF_OPEN, _OPEN = State.CLOSED, State.HALF_OPEN, State.OPEN
# CircuitOpenError without Unavailable's Python-level __init__: a refusal's biggest cost.
_new_open = CircuitOpenError.__new__


class CircuitBreaker:
    """A gobreaker v2 circuit breaker; thread-safe, lock-free on its hot paths.

    ``clock`` is a zero-argument callable returning seconds (``time.monotonic``
    by default; ``qanat.testing.FakeClock`` in tests). The sync API may be used
    from several threads; the async API from one event loop (or several: it
    shares the sync API's safety).
    """

    __slots__ = (
        "_base", "_clock", "_counts", "_epoch", "_expiry", "_generation", "_interval",
        "_is_excluded", "_is_successful", "_lock", "_max", "_on_change", "_open_message",
        "_period", "_ready", "_start", "_state", "_timeout", "_transitions", "_window",
        "name", "settings",
    )

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

    # -- internals (the lock is held where noted) --------------------------------------

    def _admit(self, now: float) -> int:
        """A ticket, or ``_REFUSED_OPEN`` / ``_REFUSED_FULL``, decided under the lock."""
        # acquire/release, not ``with``: half the cost on CPython 3.11.
        self._lock.acquire()
        try:
            ticket = self._admit_locked(now)
        finally:
            self._lock.release()
        if self._transitions:
            self._flush()
        return ticket

    def _late_admit(self, epoch: Epoch, index: int, now: float | None) -> int:
        """An admission counted lock-free as ``epoch`` stopped being fast (see Epoch).

        Counted in time (the epoch is still current, or drained it before retiring):
        the call belongs to that epoch. Otherwise it is admitted afresh, which may refuse.
        """
        self._lock.acquire()
        try:
            if epoch is self._epoch or index < epoch.seen_requests:
                return epoch.ticket
            ticket = self._admit_locked(self._clock() if now is None else now)
        finally:
            self._lock.release()
        if self._transitions:
            self._flush()
        return ticket

    def _admit_locked(self, now: float) -> int:
        state = self._current(now)
        counts = self._counts
        if state is _OPEN:
            return _REFUSED_OPEN
        if state is _HALF_OPEN and counts.requests - counts.total_exclusions >= self._max:
            return _REFUSED_FULL
        if self._window is None:
            counts.requests += 1
            return self._base
        self._window.on_request()
        return self._base + self._window.age

    def _open_error(self, retry_after: float) -> CircuitOpenError:
        # Built like Unavailable.__init__ does (args + retry_after), a fresh instance
        # each time (callers add notes), without the Python-level __init__.
        exc = _new_open(CircuitOpenError, self._open_message)
        exc.retry_after = retry_after
        return exc

    def _refusal(self, ticket: int, now: float) -> CircuitOpenError | TooManyRequestsError:
        if ticket == _REFUSED_OPEN:
            return self._open_error(max(0.0, self._expiry - now))
        return TooManyRequestsError(
            f"circuit breaker {self.name!r} is half-open and its {self._max} trial "
            "call(s) are taken", retry_after=None)

    def _late_success(self, epoch: Epoch, index: int, ticket: int, now: float) -> None:
        """A success counted lock-free as ``epoch`` stopped being fast: settle it if missed."""
        self._lock.acquire()
        try:
            if epoch is self._epoch or index < epoch.seen_successes:
                return  # drained with the epoch, or will be
            self._settle_locked(ticket, SUCCESS, now)
        finally:
            self._lock.release()
        if self._transitions:
            self._flush()

    def _settle(self, ticket: int, outcome: int, now: float) -> None:
        self._lock.acquire()
        try:
            self._settle_locked(ticket, outcome, now)
        finally:
            self._lock.release()
        if self._transitions:
            self._flush()

    def _settle_locked(self, ticket: int, outcome: int, now: float) -> None:
        """Lock held. Pause the lock-free path while the counts are judged."""
        epoch = self._epoch
        paused = epoch.fast
        if paused:
            # Admissions that count from here on wait for the verdict (see _late_admit),
            # so ready_to_trip sees every call admitted before this result, and no other.
            epoch.fast = False
            epoch.drain()
        try:
            self._settle_slow(ticket, outcome, now)
        finally:
            if paused and self._epoch is epoch:
                epoch.fast = True

    def _settle_slow(self, ticket: int, outcome: int, now: float) -> None:
        state = self._current(now)
        age = ticket - self._base
        if not 0 <= age < _SPAN:
            return  # admitted in an earlier generation: ignored
        if outcome == FAILURE and state is _HALF_OPEN:
            self._set_state(_OPEN, now)
            return
        if self._window is None:
            self._counts.record(outcome)
        else:
            self._window.record(age, outcome)
        if outcome == SUCCESS:
            if state is _HALF_OPEN and self._counts.consecutive_successes >= self._max:
                self._set_state(_CLOSED, now)
        elif outcome == FAILURE and self._ready(self._counts.snapshot()):
            self._set_state(_OPEN, now)

    def _current(self, now: float) -> State:
        """Apply the clock: interval expiry, window roll, open -> half-open. Lock held."""
        state = self._state
        if state is _CLOSED:
            if now > self._expiry:
                self._new_generation(now)
            elif self._window is not None:
                age = int((now - self._start) // self._period)
                if age > self._window.age:
                    self._epoch.retire(keep=True)
                    self._window.grow(age)
                    self._epoch = self._make_epoch(age)
        elif state is _OPEN and now > self._expiry:
            self._set_state(_HALF_OPEN, now)
        return self._state

    def _set_state(self, state: State, now: float) -> None:
        """Lock held. The callback is queued and run by ``_flush`` after the lock."""
        prev = self._state
        if prev is state:
            return
        self._state = state
        self._new_generation(now)
        if self._on_change is not None:
            self._transitions.append((prev, state))

    def _new_generation(self, now: float) -> None:
        """Lock held (or construction). Clear the counts and set the state's expiry."""
        self._epoch.retire(keep=False)
        self._generation += 1
        self._base = self._generation * _SPAN
        self._start = now
        if self._window is not None:
            self._window.clear()
        else:
            self._counts.clear()
        if self._state is _OPEN:
            self._expiry = now + self._timeout
        elif self._state is _CLOSED and self._interval and self._window is None:
            self._expiry = now + self._interval
        else:
            self._expiry = math.inf
        self._epoch = self._make_epoch(0)

    def _make_epoch(self, age: int) -> Epoch:
        """Lock held. The epoch for bucket ``age`` of the current generation."""
        state = self._state
        if state is not _CLOSED:
            return Epoch(state, self._base, self._expiry)  # never fast
        window = self._window
        if window is None:
            return Epoch(state, self._base, self._expiry, (self._counts,))
        bucket = window.buckets[age % len(window.buckets)]
        return Epoch(state, self._base + age, self._bucket_end(age), (window.total, bucket))

    def _bucket_end(self, age: int) -> float:
        """The last clock time that ``_current`` still puts in bucket ``age``."""
        start, period = self._start, self._period
        end = start + (age + 1) * period
        # Float rounding may put start + (age + 1) * period itself in bucket age + 1;
        # step back so the fast path (now <= end) never counts past the bucket.
        while int((end - start) // period) > age:
            end = math.nextafter(end, -math.inf)
        return end

    def _flush(self) -> None:
        """Run queued ``on_state_change`` callbacks, in order, outside the lock."""
        with self._lock:
            pending, self._transitions = self._transitions, []
        callback = self._on_change
        if callback is not None:
            for prev, state in pending:
                callback(self.name, prev, state)


__all__ = [
    "BreakerSettings",
    "BreakerStats",
    "CircuitBreaker",
    "Counts",
    "State",
    "default_ready_to_trip",
]
