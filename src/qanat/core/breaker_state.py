"""The circuit breaker's locked internals: admission, settling and state changes.

``qanat.core.breaker.CircuitBreaker`` keeps the public API and the lock-free
hot paths; this base class holds its state and everything decided under its
lock (gobreaker v2's mutex-guarded ``beforeRequest``/``afterRequest``,
``currentState``, ``setState`` and ``toNewGeneration``). Pure: time is passed
in. See the ``qanat.core.breaker`` docstring for the concurrency argument.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from qanat.core.breaker_settings import BreakerSettings, State
from qanat.core.window import FAILURE, SUCCESS, Counts, Epoch, RollingCounts, Tally
from qanat.errors import CircuitOpenError, TooManyRequestsError

# A ticket is one int: generation * _SPAN + bucket age. Generations start at 1,
# so a ticket is always >= _SPAN and the refusals below can be negative ints.
_SPAN = 1 << 52
_REFUSED_OPEN = -1
_REFUSED_FULL = -2

_CLOSED, _HALF_OPEN, _OPEN = State.CLOSED, State.HALF_OPEN, State.OPEN
# CircuitOpenError without Unavailable's Python-level __init__: a refusal's biggest cost.
_new_open = CircuitOpenError.__new__


class BreakerCore:
    """State and lock-held transitions of a ``CircuitBreaker``; not used on its own."""

    __slots__ = (
        "_base", "_clock", "_counts", "_epoch", "_expiry", "_generation", "_interval",
        "_is_excluded", "_is_successful", "_lock", "_max", "_on_change", "_open_message",
        "_period", "_ready", "_start", "_state", "_timeout", "_transitions", "_window",
        "name", "settings",
    )

    name: str
    settings: BreakerSettings
    _clock: Callable[[], float]
    _lock: threading.Lock
    _max: int
    _timeout: float
    _interval: float
    _period: float
    _window: RollingCounts | None
    _counts: Tally
    _ready: Callable[[Counts], bool]
    _is_successful: Callable[[BaseException], bool]
    _is_excluded: Callable[[BaseException], bool]
    _on_change: Callable[[str, State, State], None] | None
    _open_message: str
    _transitions: list[tuple[State, State]]
    _state: State
    _generation: int
    _epoch: Epoch
    _base: int
    _start: float
    _expiry: float

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

