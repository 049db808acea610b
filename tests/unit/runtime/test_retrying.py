"""The retry wrapper: what it retries, how long it waits, when it stops, and the budget."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from qanat.core.retry import Jitter, RetryBudget, RetryPolicy
from qanat.errors import RateLimited, Unavailable
from qanat.runtime.retrying import Retrying, retry
from qanat.testing import FakeClock


class Flaky:
    """Fails with the given errors in order, then returns ``"ok"``; counts calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, *args: object, **kwargs: object) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def acall(self, *args: object, **kwargs: object) -> str:
        return self(*args, **kwargs)


class Sleeps:
    """A fake sleep: records delays and moves a FakeClock instead of waiting."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.advance(delay)


def make(policy: RetryPolicy, **kwargs: object) -> tuple[Retrying, Sleeps]:
    clock = FakeClock()
    sleeps = Sleeps(clock)
    return retry(policy, sleep=sleeps, clock=clock, rng=lambda: 0.5, **kwargs), sleeps  # type: ignore[arg-type]


def test_retries_retryable_errors_until_success() -> None:
    """Two connection failures, then success: three calls and two backoff sleeps."""
    r, sleeps = make(RetryPolicy(max_attempts=3))
    fn = Flaky(ConnectionRefusedError(), ConnectionResetError())
    assert r.call(fn, 1, x=2) == "ok"
    assert fn.calls == 3
    assert sleeps.delays == [0.5 * 0.025, 0.5 * 0.05]


def test_does_not_retry_other_errors() -> None:
    """An error outside the policy's conditions is raised after one call, unslept."""
    r, sleeps = make(RetryPolicy(max_attempts=5))
    fn = Flaky(ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        r.call(fn)
    assert (fn.calls, sleeps.delays) == (1, [])


def test_exhausted_attempts_raise_the_last_error() -> None:
    """When attempts run out, the last error is raised unchanged."""
    r, _ = make(RetryPolicy(max_attempts=3))
    last = ConnectionResetError("third")
    fn = Flaky(ConnectionRefusedError("first"), ConnectionResetError("second"), last)
    with pytest.raises(ConnectionResetError) as info:
        r.call(fn)
    assert info.value is last
    assert fn.calls == 3


def test_max_elapsed_stops_before_the_deadline() -> None:
    """With max_elapsed, no retry starts after it; the clock is the injected one."""
    policy = RetryPolicy(max_attempts=100, base=1.0, cap=1.0, jitter=Jitter.NONE, max_elapsed=3.5)
    r, sleeps = make(policy)
    fn = Flaky(*[ConnectionRefusedError() for _ in range(50)])
    with pytest.raises(ConnectionRefusedError):
        r.call(fn)
    assert sleeps.delays == [1.0, 1.0, 1.0]
    assert fn.calls == 4


def test_retry_after_from_the_error_is_honoured() -> None:
    """An Unavailable error's retry_after becomes the delay."""
    r, sleeps = make(RetryPolicy(max_attempts=2))
    fn = Flaky(RateLimited("slow down", retry_after=7.0))
    assert r.call(fn) == "ok"
    assert sleeps.delays == [7.0]


def test_retry_on_types_replace_the_policy() -> None:
    """retry_on=Unavailable retries only errors raised before any work, not resets."""
    r, _ = make(RetryPolicy(max_attempts=3), retry_on=Unavailable)
    assert r.call(Flaky(RateLimited())) == "ok"
    fn = Flaky(ConnectionResetError())
    with pytest.raises(ConnectionResetError):
        r.call(fn)
    assert fn.calls == 1


def test_retry_on_predicate_for_non_idempotent_calls() -> None:
    """A predicate can allow only errors the upstream never saw (request_sent False)."""

    class Sent(Exception):
        def __init__(self, sent: bool) -> None:
            self.request_sent = sent

    r, _ = make(
        RetryPolicy(max_attempts=3),
        retry_on=lambda e: getattr(e, "request_sent", True) is False,
    )
    assert r.call(Flaky(Sent(False))) == "ok"
    with pytest.raises(Sent):
        r.call(Flaky(Sent(True)))


def test_decorator_on_sync_function() -> None:
    """@retry(...) on a plain function retries it and keeps its name."""
    r, _ = make(RetryPolicy(max_attempts=2))
    fn = Flaky(ConnectionRefusedError())

    @r
    def fetch(x: int) -> str:
        return fn(x)

    assert fetch(1) == "ok"
    assert fetch.__name__ == "fetch"
    assert fn.calls == 2


async def test_decorator_and_acall_on_async_functions() -> None:
    """@retry on an async def, and acall, retry with an awaited fake sleep."""
    clock = FakeClock()
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)
        clock.advance(delay)

    r = retry(RetryPolicy(max_attempts=3), sleep=fake_sleep, clock=clock, rng=lambda: 0.0)
    fn = Flaky(ConnectionRefusedError(), ConnectionRefusedError())

    @r
    async def fetch() -> str:
        return await fn.acall()

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch() == "ok"
    assert (fn.calls, slept) == (3, [0.0, 0.0])
    other = Flaky(RateLimited(retry_after=2.0))
    assert await r.acall(other.acall) == "ok"
    assert slept[-1] == 2.0


async def test_async_cancellation_is_not_retried() -> None:
    """CancelledError propagates at once: it is not an Exception and never retried."""
    r = retry(RetryPolicy(max_attempts=5), retry_on=BaseException, sleep=lambda d: None)
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await r.acall(cancelled)
    assert calls == 1


def test_budget_refusal_raises_the_last_error_with_a_note() -> None:
    """With the budget spent, the last error is raised, annotated, and the refusal counted."""
    budget = RetryBudget(percent=0.0, min_retry_concurrency=0)
    r, sleeps = make(RetryPolicy(max_attempts=5), budget=budget)
    err = ConnectionRefusedError("down")
    with pytest.raises(ConnectionRefusedError) as info:
        r.call(Flaky(err))
    assert info.value is err
    assert any("retry budget" in note for note in info.value.__notes__)
    assert sleeps.delays == []
    assert budget.stats().refused == 1
    assert (budget.stats().active_requests, budget.stats().active_retries) == (0, 0)


def test_budget_counts_every_call_and_releases_retries() -> None:
    """Calls are active while running; granted retries are released whatever the outcome."""
    budget = RetryBudget(percent=20.0, min_retry_concurrency=3)
    seen: list[tuple[int, int]] = []

    def probe() -> str:
        seen.append((budget.stats().active_requests, budget.stats().active_retries))
        if len(seen) < 3:
            raise ConnectionRefusedError
        return "ok"

    r, _ = make(RetryPolicy(max_attempts=3), budget=budget)
    assert r.call(probe) == "ok"
    assert seen == [(1, 0), (1, 1), (1, 1)]
    assert budget.stats().active_requests == budget.stats().active_retries == 0


def test_default_policy_and_real_sleep_with_zero_base() -> None:
    """Without a sleep argument the real sleep runs; base 0 makes it instant."""
    assert Retrying().policy == RetryPolicy()
    fn = Flaky(ConnectionRefusedError())
    assert Retrying(RetryPolicy(base=0.0)).call(fn) == "ok"
    assert fn.calls == 2


async def test_default_async_sleep_with_zero_base() -> None:
    """The async path awaits asyncio.sleep by default; base 0 makes it instant."""
    fn = Flaky(ConnectionResetError())
    assert await Retrying(RetryPolicy(base=0.0)).acall(fn.acall) == "ok"
    assert fn.calls == 2
