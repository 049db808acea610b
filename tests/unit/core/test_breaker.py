"""The circuit breaker follows sony/gobreaker v2, rule by rule, with a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from qanat.core.breaker import (
    BreakerSettings,
    CircuitBreaker,
    Counts,
    State,
    default_ready_to_trip,
)
from qanat.errors import CircuitOpenError, ConfigError, TooManyRequestsError, Unavailable
from qanat.testing import FakeClock


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom("down")


def ok() -> str:
    return "ok"


def make(clock: FakeClock, **settings: Any) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(**settings), clock=clock)


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(Boom):
            breaker.call(boom)


def trip(breaker: CircuitBreaker) -> None:
    fail(breaker, 6)
    assert breaker.state is State.OPEN


# -- settings ---------------------------------------------------------------------------


def test_settings_defaults_are_gobreakers() -> None:
    """Defaults: one half-open trial, no interval, a 60 s timeout, a fixed window."""
    s = BreakerSettings()
    assert (s.max_requests, s.interval, s.timeout, s.bucket_period, s.buckets) == (
        1, 0.0, 60.0, 0.0, 1)
    assert s.ready_to_trip is default_ready_to_trip
    assert s.on_state_change is None


def test_settings_zero_means_the_default() -> None:
    """max_requests 0 means 1 and timeout 0 means 60 s, as in gobreaker."""
    s = BreakerSettings(max_requests=0, timeout=0)
    assert (s.max_requests, s.timeout) == (1, 60.0)


def test_settings_round_the_interval_up_to_whole_buckets() -> None:
    """With a bucket_period the interval becomes a whole number of buckets, rounded up."""
    s = BreakerSettings(interval=9, bucket_period=2)
    assert (s.interval, s.buckets) == (10.0, 5)
    assert BreakerSettings(interval=1.0, bucket_period=0.1).buckets == 10


def test_settings_a_bucket_as_long_as_the_interval_is_a_fixed_window() -> None:
    """A bucket_period at least as long as the interval gives one bucket: a fixed window."""
    assert BreakerSettings(interval=5, bucket_period=5).buckets == 1
    assert BreakerSettings(interval=0, bucket_period=5).bucket_period == 0.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_requests", -1), ("max_requests", 1.5), ("timeout", -1.0), ("interval", float("nan")),
     ("bucket_period", float("inf")), ("timeout", "60")],
)
def test_settings_reject_bad_values_naming_the_field(field: str, value: object) -> None:
    """A negative, non-finite or non-numeric setting is a ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        BreakerSettings(**{field: value})
    assert info.value.source == f"BreakerSettings.{field}"


# -- closed -> open -----------------------------------------------------------------------


def test_trips_after_more_than_five_consecutive_failures() -> None:
    """Five failures in a row leave it closed; the sixth opens it."""
    breaker = make(FakeClock())
    fail(breaker, 5)
    assert breaker.state is State.CLOSED
    fail(breaker)
    assert breaker.state is State.OPEN


def test_a_success_breaks_the_failure_run() -> None:
    """A success resets consecutive failures, so 5 + 5 failures do not trip."""
    breaker = make(FakeClock())
    fail(breaker, 5)
    assert breaker.call(ok) == "ok"
    fail(breaker, 5)
    assert breaker.state is State.CLOSED
    assert breaker.stats().counts == Counts(11, 1, 10, 0, 0, 5)


def test_open_breaker_fails_fast_without_calling() -> None:
    """When open, call() raises CircuitOpenError and never runs the function."""
    breaker = make(FakeClock())
    trip(breaker)
    calls: list[int] = []
    with pytest.raises(CircuitOpenError):
        breaker.call(calls.append, 1)
    assert calls == []


def test_custom_ready_to_trip_sees_the_counts() -> None:
    """ready_to_trip gets a snapshot of the counts after each closed-state failure."""
    seen: list[Counts] = []

    def two_of_three(counts: Counts) -> bool:
        seen.append(counts)
        return counts.requests >= 3 and counts.total_failures >= 2

    breaker = make(FakeClock(), ready_to_trip=two_of_three)
    fail(breaker)
    breaker.call(ok)
    assert breaker.state is State.CLOSED
    fail(breaker)
    assert breaker.state is State.OPEN
    assert seen == [Counts(1, 0, 1, 0, 0, 1), Counts(3, 1, 2, 0, 0, 1)]


# -- open -> half-open -> closed/open ----------------------------------------------------


def test_open_half_opens_only_after_the_timeout() -> None:
    """Open lasts for `timeout`: still open at exactly the timeout, half-open just after."""
    clock = FakeClock()
    breaker = make(clock, timeout=30)
    trip(breaker)
    clock.advance(30)
    assert breaker.state is State.OPEN
    clock.advance(0.001)
    assert breaker.state is State.HALF_OPEN


def test_circuit_open_error_carries_retry_after() -> None:
    """CircuitOpenError is Unavailable and its retry_after is the time left until half-open."""
    clock = FakeClock()
    breaker = make(clock, name="db", timeout=30)
    trip(breaker)
    clock.advance(12)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert isinstance(info.value, Unavailable)
    assert info.value.retry_after == pytest.approx(18)
    assert "'db'" in str(info.value)
    assert info.value.args == ("circuit breaker 'db' is open",)


def test_half_open_admits_exactly_max_requests() -> None:
    """Half-open lets max_requests calls through; the next gets TooManyRequestsError."""
    clock = FakeClock()
    breaker = make(clock, max_requests=3, timeout=1)
    trip(breaker)
    clock.advance(2)
    tickets = [breaker.before(clock()) for _ in range(3)]
    assert breaker.allow(clock()) is None
    with pytest.raises(TooManyRequestsError) as info:
        breaker.before(clock())
    assert isinstance(info.value, Unavailable)
    breaker.after(tickets[0], True, clock())
    breaker.after(tickets[1], True, clock())
    assert breaker.state is State.HALF_OPEN
    breaker.after(tickets[2], True, clock())
    assert breaker.state is State.CLOSED


def test_half_open_failure_reopens_for_a_fresh_timeout() -> None:
    """One failure while half-open reopens, and the timeout counts from that failure."""
    clock = FakeClock()
    breaker = make(clock, max_requests=2, timeout=10)
    trip(breaker)
    clock.advance(11)
    breaker.call(ok)
    clock.advance(5)
    fail(breaker)
    assert breaker.state is State.OPEN
    assert breaker.stats().retry_after == pytest.approx(10)
    assert breaker.stats().opened_at == pytest.approx(clock())


# -- windows and generations -------------------------------------------------------------


def test_interval_clears_closed_state_counts() -> None:
    """With an interval, closed-state counts restart once it has passed."""
    clock = FakeClock()
    breaker = make(clock, interval=10)
    fail(breaker, 5)
    clock.advance(10)
    assert breaker.stats().counts.consecutive_failures == 5
    clock.advance(0.5)
    fail(breaker)
    assert breaker.state is State.CLOSED
    assert breaker.stats().counts == Counts(1, 0, 1, 0, 0, 1)


def test_interval_result_from_before_the_reset_is_ignored() -> None:
    """A call admitted before an interval reset does not count after it (new generation)."""
    clock = FakeClock()
    breaker = make(clock, interval=10)
    ticket = breaker.before(clock())
    clock.advance(11)
    breaker.after(ticket, False, clock())
    assert breaker.stats().counts == Counts()


def test_rolling_window_drops_the_oldest_bucket() -> None:
    """With bucket_period, old buckets fall off: totals and the failure run lose them."""
    clock = FakeClock(start=0.0)
    breaker = make(clock, interval=10, bucket_period=2)
    fail(breaker, 3)  # bucket 0
    clock.advance(4)
    fail(breaker, 2)  # bucket 2
    assert breaker.stats().counts == Counts(5, 0, 5, 0, 0, 5)
    clock.advance(6)  # now in bucket 5: bucket 0 has fallen off
    assert breaker.stats().counts == Counts(2, 0, 2, 0, 0, 2)
    fail(breaker, 3)  # a run of 5 in the window: not more than 5
    assert breaker.state is State.CLOSED
    fail(breaker)
    assert breaker.state is State.OPEN


def test_rolling_window_forgets_everything_after_a_whole_interval() -> None:
    """A quiet whole interval empties a rolling window."""
    clock = FakeClock(start=0.0)
    breaker = make(clock, interval=10, bucket_period=1)
    fail(breaker, 5)
    clock.advance(10)
    assert breaker.stats().counts == Counts()


def test_rolling_window_credits_late_results_to_their_bucket() -> None:
    """A result lands in the bucket its call was admitted in, or is dropped if that is gone."""
    clock = FakeClock(start=0.0)
    breaker = make(clock, interval=4, bucket_period=1)
    early = breaker.before(clock())
    late = breaker.before(clock())
    clock.advance(3)  # bucket 3: bucket 0 is still in the window
    breaker.after(early, False, clock())
    assert breaker.stats().counts.total_failures == 1
    clock.advance(1)  # bucket 4: bucket 0 is gone, with its request and failure
    breaker.after(late, False, clock())
    assert breaker.stats().counts == Counts()


def test_stale_generation_result_is_ignored() -> None:
    """A result admitted before a state change neither counts nor closes the breaker."""
    clock = FakeClock()
    breaker = make(clock, timeout=5)
    slow = breaker.before(clock())
    trip(breaker)
    clock.advance(6)
    assert breaker.state is State.HALF_OPEN
    breaker.after(slow, True, clock())
    assert breaker.state is State.HALF_OPEN
    assert breaker.stats().counts == Counts()


def test_generation_increases_on_every_state_change() -> None:
    """Each state change starts a new generation, visible in stats()."""
    clock = FakeClock()
    breaker = make(clock, timeout=1)
    first = breaker.stats().generation
    trip(breaker)
    clock.advance(2)
    breaker.call(ok)
    assert breaker.stats().generation == first + 3


# -- outcomes ------------------------------------------------------------------------------


def test_excluded_results_count_only_as_exclusions() -> None:
    """An excluded exception is neither success nor failure and keeps the runs as they were."""
    breaker = make(FakeClock(), is_excluded=lambda exc: isinstance(exc, KeyError))
    fail(breaker, 2)
    with pytest.raises(KeyError):
        breaker.call({}.__getitem__, "missing")
    assert breaker.stats().counts == Counts(3, 0, 2, 1, 0, 2)


def test_exclusion_frees_a_half_open_slot() -> None:
    """In half-open an excluded call gives its trial slot back (gobreaker validRequests)."""
    clock = FakeClock()
    breaker = make(clock, timeout=1)
    trip(breaker)
    clock.advance(2)
    ticket = breaker.before(clock())
    assert breaker.allow(clock()) is None
    breaker.after_excluded(ticket, clock())
    assert breaker.allow(clock()) is not None


def test_is_successful_counts_an_exception_as_success() -> None:
    """is_successful(exc) True counts the call as a success; the exception still propagates."""
    breaker = make(FakeClock(), is_successful=lambda exc: isinstance(exc, Boom))
    fail(breaker, 10)
    assert breaker.state is State.CLOSED
    assert breaker.stats().counts.total_successes == 10


def test_after_exception_applies_exclusion_before_success() -> None:
    """after_exception asks is_excluded first, as gobreaker does."""
    clock = FakeClock()
    breaker = make(clock, is_successful=lambda exc: True, is_excluded=lambda exc: True)
    breaker.after_exception(breaker.before(clock()), Boom(), clock())
    assert breaker.stats().counts == Counts(1, 0, 0, 1, 0, 0)


def test_base_exception_does_not_leak_a_half_open_slot() -> None:
    """A KeyboardInterrupt inside call() is settled (as a failure), so no slot stays taken."""
    clock = FakeClock()
    breaker = make(clock, timeout=1, is_excluded=lambda exc: isinstance(exc, KeyboardInterrupt))
    trip(breaker)
    clock.advance(2)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    assert breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED


# -- callbacks, wrappers, threads ------------------------------------------------------------


def test_on_state_change_reports_each_transition_in_order() -> None:
    """on_state_change gets (name, from, to) for every change, in order."""
    clock = FakeClock()
    seen: list[tuple[str, State, State]] = []
    breaker = make(clock, name="pay", timeout=1,
                   on_state_change=lambda *args: seen.append(args))
    trip(breaker)
    clock.advance(2)
    fail(breaker)
    clock.advance(2)
    breaker.call(ok)
    assert seen == [
        ("pay", State.CLOSED, State.OPEN),
        ("pay", State.OPEN, State.HALF_OPEN),
        ("pay", State.HALF_OPEN, State.OPEN),
        ("pay", State.OPEN, State.HALF_OPEN),
        ("pay", State.HALF_OPEN, State.CLOSED),
    ]


def test_on_state_change_runs_outside_the_lock() -> None:
    """The callback may use the breaker (its lock is not held, so this cannot deadlock)."""
    states: list[State] = []
    holder: list[CircuitBreaker] = []

    def on_change(name: str, old: State, new: State) -> None:
        assert holder[0]._lock.acquire(blocking=False)
        holder[0]._lock.release()
        states.append(holder[0].stats().state)

    breaker = make(FakeClock(), on_state_change=on_change)
    holder.append(breaker)
    trip(breaker)
    assert states == [State.OPEN]


def test_state_values_are_gobreakers_names() -> None:
    """State is a StrEnum whose values are closed, half-open and open."""
    assert [s.value for s in State] == ["closed", "half-open", "open"]
    assert State.HALF_OPEN == "half-open"


def test_decorator_on_a_sync_function() -> None:
    """@breaker wraps a sync function, keeps its name and counts its calls."""
    breaker = make(FakeClock())

    @breaker
    def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    assert add(2, b=3) == 5
    assert add.__name__ == "add" and add.__doc__ == "Adds."
    assert breaker.stats().counts.total_successes == 1


async def test_decorator_on_an_async_function() -> None:
    """@breaker wraps a coroutine function into a coroutine function that trips the breaker."""
    breaker = make(FakeClock())

    @breaker
    async def flaky(fail_it: bool) -> str:
        await asyncio.sleep(0)
        if fail_it:
            raise Boom
        return "fine"

    assert inspect.iscoroutinefunction(flaky)
    assert await flaky(False) == "fine"
    for _ in range(6):
        with pytest.raises(Boom):
            await flaky(True)
    with pytest.raises(CircuitOpenError):
        await flaky(False)


async def test_acall_counts_a_cancellation_as_a_failure() -> None:
    """A call cancelled by its caller (e.g. a timeout) counts as a failure by default."""
    breaker = make(FakeClock(), ready_to_trip=lambda c: c.total_failures >= 1)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(breaker.acall(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is State.OPEN


def test_threads_share_one_breaker_without_losing_counts() -> None:
    """Concurrent call() from several threads loses no request or success."""
    breaker = make(FakeClock())
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        for _ in range(2000):
            breaker.call(ok)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert breaker.stats().counts == Counts(8000, 8000, 0, 0, 8000, 0)


def test_stats_is_a_frozen_snapshot() -> None:
    """stats() names the breaker and does not change when the breaker does."""
    clock = FakeClock()
    breaker = make(clock, name="inv")
    snap = breaker.stats()
    fail(breaker)
    assert (snap.name, snap.state, snap.counts, snap.opened_at, snap.retry_after) == (
        "inv", State.CLOSED, Counts(), None, None)
    with pytest.raises(AttributeError):
        snap.name = "x"  # type: ignore[misc]


def test_pure_core_uses_the_time_passed_in() -> None:
    """before/after decide from `now`, not from the breaker's clock."""
    clock = FakeClock()
    breaker = make(clock, timeout=5)
    for _ in range(6):
        breaker.after(breaker.before(100.0), False, 100.0)
    assert breaker.allow(105.0) is None
    assert breaker.allow(105.5) is not None


# -- invariants over random histories ------------------------------------------------------

_EDGES = {
    (State.CLOSED, State.OPEN),
    (State.OPEN, State.HALF_OPEN),
    (State.HALF_OPEN, State.CLOSED),
    (State.HALF_OPEN, State.OPEN),
}


class BreakerMachine(RuleBasedStateMachine):
    """Random admissions, outcomes and clock moves against gobreaker's invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(start=0.0)
        self.changes: list[tuple[State, State]] = []
        self.inflight: list[tuple[int, int]] = []  # (ticket, generation at admission)

    @initialize(
        max_requests=st.integers(1, 4),
        interval=st.sampled_from([0.0, 5.0]),
        bucket_period=st.sampled_from([0.0, 1.0]),
        timeout=st.sampled_from([0.5, 3.0]),
        threshold=st.integers(1, 4),
    )
    def build(self, max_requests: int, interval: float, bucket_period: float, timeout: float,
              threshold: int) -> None:
        self.threshold = threshold
        self.settings = BreakerSettings(
            name="m", max_requests=max_requests, interval=interval,
            bucket_period=bucket_period, timeout=timeout,
            ready_to_trip=lambda c: c.consecutive_failures >= threshold,
            on_state_change=lambda name, old, new: self.changes.append((old, new)),
        )
        self.breaker = CircuitBreaker(self.settings, clock=self.clock)

    def current_inflight(self, generation: int) -> int:
        return sum(1 for _, gen in self.inflight if gen == generation)

    @rule()
    def admit(self) -> None:
        now = self.clock()
        before = self.breaker.stats(now)
        ticket = self.breaker.allow(now)
        if before.state is State.OPEN:
            assert ticket is None, "an open breaker admitted a call before its timeout"
        if before.state is State.CLOSED:
            assert ticket is not None, "a closed breaker refused a call"
        if ticket is not None:
            self.inflight.append((ticket, self.breaker.stats(now).generation))

    @rule(data=st.data(), outcome=st.sampled_from(["success", "failure", "excluded"]))
    def finish(self, data: st.DataObject, outcome: str) -> None:
        if not self.inflight:
            return
        i = data.draw(st.integers(0, len(self.inflight) - 1))
        ticket, generation = self.inflight.pop(i)
        now = self.clock()
        before = self.breaker.stats(now)
        if outcome == "excluded":
            self.breaker.after_excluded(ticket, now)
        else:
            self.breaker.after(ticket, outcome == "success", now)
        if generation != before.generation:
            assert self.breaker.stats(now) == before, "a stale result changed the breaker"

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.5, 6.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def counts_add_up(self) -> None:
        if not hasattr(self, "breaker"):
            return
        stats = self.breaker.stats(self.clock())
        c = stats.counts
        done = c.total_successes + c.total_failures + c.total_exclusions
        if self.settings.buckets == 1:
            # A fixed window: every admitted call of this generation is done or in flight.
            assert c.requests == done + self.current_inflight(stats.generation)
            assert c.consecutive_successes <= c.total_successes
            assert c.consecutive_failures <= c.total_failures
        else:
            # A rolling window credits results to their bucket, so it can only lose both.
            assert c.requests >= done
        assert not (c.consecutive_successes and c.consecutive_failures)

    @invariant()
    def states_behave(self) -> None:
        if not hasattr(self, "breaker"):
            return
        stats = self.breaker.stats(self.clock())
        if stats.state is State.CLOSED:
            assert stats.counts.consecutive_failures < self.threshold, "should have tripped"
        if stats.state is State.HALF_OPEN:
            live = self.current_inflight(stats.generation)
            assert live <= self.settings.max_requests
        if stats.state is State.OPEN:
            assert stats.opened_at is not None and stats.retry_after is not None
            assert self.clock() - stats.opened_at <= self.settings.timeout
        for old, new in self.changes:
            assert (old, new) in _EDGES
        for (_, new), (old, _) in zip(self.changes, self.changes[1:], strict=False):
            assert new == old, "transitions must chain"
        if self.changes:
            assert self.changes[0][0] is State.CLOSED
            assert self.changes[-1][1] is stats.state


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60,
                                            deadline=None)
TestBreakerMachine = BreakerMachine.TestCase


def test_keyword_settings_build_the_same_breaker() -> None:
    """CircuitBreaker(name=..., timeout=...) is shorthand for BreakerSettings fields."""
    from qanat import CircuitBreaker as FrontDoorBreaker

    breaker = FrontDoorBreaker(name="db", timeout=30.0, max_requests=3)
    assert breaker.settings.name == "db"
    assert breaker.settings.timeout == 30.0
    assert breaker.settings.max_requests == 3


def test_unknown_keyword_setting_is_a_config_error() -> None:
    """A misspelt setting names itself and the allowed ones."""
    import pytest as _pytest

    from qanat import CircuitBreaker as FrontDoorBreaker
    from qanat.errors import ConfigError as _ConfigError

    with _pytest.raises(_ConfigError, match=r"unknown setting\(s\) tiemout; allowed: .*timeout"):
        FrontDoorBreaker(tiemout=3)


# -- the lock-free paths: races forced at the exact points they can happen ------------------


class Hooked:
    """An ``itertools.count`` stand-in that runs ``action`` once, just before or after counting.

    It stands in for another thread that gets the lock at the worst moment of a
    lock-free admission or success: between reading the epoch and counting, or
    between counting and re-reading ``fast``.
    """

    def __init__(self, inner: Any, action: Any, *, after: bool) -> None:
        self.inner, self.action, self.after, self.fired = inner, action, after, False

    def __iter__(self) -> Hooked:
        return self

    def __next__(self) -> int:
        fire = not self.fired
        self.fired = True
        if fire and not self.after:
            self.action()
        index: int = next(self.inner)
        if fire and self.after:
            self.action()
        return index


def hook(breaker: CircuitBreaker, counter: str, action: Any, *, after: bool) -> None:
    epoch = breaker._epoch
    setattr(epoch, counter, Hooked(getattr(epoch, counter), action, after=after))


def trip_now(breaker: CircuitBreaker, now: float) -> None:
    for _ in range(6):
        breaker.after(breaker.before(now), False, now)
    assert breaker.stats(now).state is State.OPEN


def test_admission_counted_just_before_a_trip_is_admitted_in_the_old_generation() -> None:
    """An admission counted before a trip drained it is admitted, on a now-stale ticket."""
    seen: list[Counts] = []

    def six_in_a_row(counts: Counts) -> bool:
        seen.append(counts)
        return counts.consecutive_failures > 5

    breaker = make(FakeClock(), timeout=10, ready_to_trip=six_in_a_row)
    hook(breaker, "requests", lambda: trip_now(breaker, 1000.0), after=True)
    ticket = breaker.allow(1000.0)
    assert ticket is not None
    assert seen[-1].requests == 7  # the trip saw this admission and its own six
    before = breaker.stats(1000.0)
    breaker.after(ticket, True, 1000.0)
    assert breaker.stats(1000.0) == before


def test_admission_counted_just_after_a_trip_is_refused() -> None:
    """An admission that read a closed breaker but counted after the trip is refused, uncounted."""
    breaker = make(FakeClock(), timeout=10)
    hook(breaker, "requests", lambda: trip_now(breaker, 1000.0), after=False)
    assert breaker.allow(1000.0) is None
    assert breaker.stats(1000.0).counts == Counts()


class SpyLock:
    """A breaker lock that sets ``waited`` when a thread has to wait for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waited = threading.Event()

    def acquire(self, blocking: bool = True) -> bool:
        if self.lock.acquire(False):
            return True
        if not blocking:
            return False
        self.waited.set()
        return self.lock.acquire()

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def judged_with(trip: bool, during: Any) -> tuple[CircuitBreaker, list[Counts], list[Any]]:
    """A breaker whose failure's judgement runs ``during(breaker, early)`` in another thread.

    ``early`` is a ticket admitted before the failure, still in flight.

    The judgement (ready_to_trip, under the lock) waits until that thread is
    blocked on the lock, then answers ``trip``.
    """
    clock = FakeClock()
    spy = SpyLock()
    seen: list[Counts] = []
    results: list[Any] = []
    threads: list[threading.Thread] = []

    def judge(counts: Counts) -> bool:
        seen.append(counts)
        thread = threading.Thread(target=lambda: results.append(during(breaker, early)))
        threads.append(thread)
        thread.start()
        assert spy.waited.wait(5), "the other thread did not wait for the verdict"
        return trip

    breaker = make(clock, ready_to_trip=judge, timeout=10)
    breaker._lock = spy  # type: ignore[assignment]
    early = breaker.before(clock())
    failing = breaker.before(clock())
    breaker.after(failing, False, clock())
    threads[0].join(5)
    return breaker, seen, results


def test_admission_during_a_judgement_that_keeps_it_closed_counts_after_the_failure() -> None:
    """A call admitted while a failure is judged waits for the verdict; closed, it is counted."""
    breaker, seen, results = judged_with(False, lambda b, _: b.allow(b._clock()))
    assert seen == [Counts(2, 0, 1, 0, 0, 1)]
    assert results[0] is not None
    assert breaker.stats().counts == Counts(3, 0, 1, 0, 0, 1)


def test_admission_during_a_judgement_that_trips_is_refused() -> None:
    """A call admitted while a failure is judged waits for the verdict; tripped, it is refused."""
    breaker, seen, results = judged_with(True, lambda b, _: b.allow(b._clock()))
    assert seen == [Counts(2, 0, 1, 0, 0, 1)]
    assert results[0] is None
    assert breaker.stats().counts == Counts()


def test_success_during_a_judgement_that_keeps_it_closed_follows_the_failure() -> None:
    """A success settled while a failure is judged counts after it: it ends the failure run."""
    breaker, _, _ = judged_with(False, lambda b, t: b.after(t, True, b._clock()))
    assert breaker.stats().counts == Counts(2, 1, 1, 0, 1, 0)


def test_success_during_a_judgement_that_trips_is_ignored() -> None:
    """A success settled while a failure trips the breaker is stale: the breaker is unchanged."""
    breaker, _, _ = judged_with(True, lambda b, t: b.after(t, True, b._clock()))
    stats = breaker.stats()
    assert (stats.state, stats.counts) == (State.OPEN, Counts())


def test_success_counted_just_before_the_window_rolls_counts_once() -> None:
    """A lock-free success counted just before a roll is drained into its bucket, exactly once."""
    clock = FakeClock(start=0.0)
    breaker = make(clock, interval=10, bucket_period=1)
    ticket = breaker.before(0.5)
    hook(breaker, "successes", lambda: breaker.stats(3.5), after=True)
    breaker.after(ticket, True, 0.5)
    assert breaker.stats(3.5).counts == Counts(1, 1, 0, 0, 1, 0)
    assert breaker.stats(10.5).counts == Counts()  # and it left with its bucket


def test_success_counted_just_after_the_window_rolls_is_credited_to_its_bucket() -> None:
    """A lock-free success counted after its epoch rolled away is settled into its own bucket."""
    clock = FakeClock(start=0.0)
    breaker = make(clock, interval=10, bucket_period=1)
    ticket = breaker.before(0.5)
    hook(breaker, "successes", lambda: breaker.stats(3.5), after=False)
    breaker.after(ticket, True, 0.5)
    assert breaker.stats(3.5).counts == Counts(1, 1, 0, 0, 1, 0)
    assert breaker.stats(9.5).counts.total_successes == 1
    assert breaker.stats(10.5).counts == Counts()


def test_success_counted_just_after_an_interval_reset_is_ignored() -> None:
    """A lock-free success that counts after an interval reset belongs to the old window."""
    clock = FakeClock()
    breaker = make(clock, interval=10)
    ticket = breaker.before(1000.0)
    hook(breaker, "successes", lambda: breaker.stats(1011.0), after=False)
    breaker.after(ticket, True, 1000.0)
    assert breaker.stats(1011.0).counts == Counts()


def test_threads_on_a_rolling_window_lose_nothing() -> None:
    """Concurrent call() on a rolling-window breaker counts every request and success."""
    breaker = make(FakeClock(start=0.5), interval=10, bucket_period=1)
    run_threads(lambda: breaker.call(ok))
    assert breaker.stats().counts == Counts(8000, 8000, 0, 0, 8000, 0)


def test_threads_mixing_outcomes_keep_the_counts_consistent() -> None:
    """Concurrent successes, failures and exclusions add up: every request has one result."""
    breaker = make(FakeClock(), ready_to_trip=lambda counts: False,
                   is_excluded=lambda exc: isinstance(exc, KeyError))
    outcomes = iter(range(10**6))

    calls: list[Any] = [ok, boom, {}.__getitem__]  # succeeds, fails, is excluded

    def mixed() -> None:
        fn = calls[next(outcomes) % 3]
        with contextlib.suppress(Boom, KeyError):
            breaker.call(fn, "key") if fn is calls[2] else breaker.call(fn)

    run_threads(mixed)
    c = breaker.stats().counts
    assert c.requests == 8000
    assert c.total_successes + c.total_failures + c.total_exclusions == 8000
    assert c.total_exclusions == 8000 // 3 + (8000 % 3 > 2)


def run_threads(work: Any, threads: int = 4, calls: int = 2000) -> None:
    barrier = threading.Barrier(threads)

    def worker() -> None:
        barrier.wait()
        for _ in range(calls):
            work()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


@given(start=st.floats(0, 1e7), period=st.floats(1e-3, 100), age=st.integers(0, 10**4))
def test_bucket_end_is_the_last_instant_of_its_bucket(start: float, period: float,
                                                      age: int) -> None:
    """The fast path's bound for a rolling bucket maps to that bucket, whatever the rounding."""
    breaker = make(FakeClock(start=start), interval=period * 2, bucket_period=period)
    end = breaker._bucket_end(age)
    assert int((end - start) // period) <= age
    assert int((math.nextafter(end, math.inf) - start) // period) >= age


def test_open_errors_are_fresh_instances() -> None:
    """Each refusal raises its own CircuitOpenError, so notes added to one stay on that one."""
    breaker = make(FakeClock())
    trip(breaker)
    errors = []
    for _ in range(2):
        with pytest.raises(CircuitOpenError) as info:
            breaker.call(ok)
        errors.append(info.value)
    errors[0].add_note("first")
    assert errors[0] is not errors[1] and not getattr(errors[1], "__notes__", None)
    assert type(errors[1]) is CircuitOpenError and errors[1].retry_after == 60.0


def test_decorated_method_still_binds_self() -> None:
    """@breaker on a method gives a function, so it binds like one."""
    breaker = make(FakeClock())

    class Client:
        @breaker
        def get(self) -> Client:
            return self

    client = Client()
    assert client.get() is client


def test_decorator_and_call_agree_on_a_whole_history() -> None:
    """The decorator's inlined path and call() give the same results and stats, step by step."""

    def history(run: Any, clock: FakeClock, breaker: CircuitBreaker) -> list[object]:
        seen: list[object] = []
        for step in ["ok"] * 3 + ["boom"] * 6 + ["ok", "wait", "ok", "ok", "boom", "wait", "ok"]:
            if step == "wait":
                clock.advance(11)
                continue
            try:
                seen.append(run(step == "boom"))
            except (Boom, CircuitOpenError, TooManyRequestsError) as exc:
                seen.append((type(exc), getattr(exc, "retry_after", None)))
            seen.append(breaker.stats())
        return seen

    def work(fail: bool) -> str:
        if fail:
            raise Boom
        return "ok"

    clock_a, clock_b = FakeClock(), FakeClock()
    via_call = make(clock_a, timeout=10, interval=30)
    via_decorator = make(clock_b, timeout=10, interval=30)
    decorated = via_decorator(work)
    assert history(lambda fail: via_call.call(work, fail), clock_a, via_call) == history(
        decorated, clock_b, via_decorator)
