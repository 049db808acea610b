"""Retry policy: backoff bounds per jitter, stop rules, Retry-After, classification, budgets."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.core.retry import (
    BudgetStats,
    Jitter,
    RatioRetryBudget,
    RetryBudget,
    RetryPolicy,
    parse_retry_after,
)
from qanat.errors import CircuitOpenError, ConfigError, DeadlineExceeded, RateLimited
from qanat.testing import FakeClock

bases = st.floats(min_value=1e-4, max_value=10.0)
attempts = st.integers(min_value=1, max_value=200)
unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(base=bases, factor=st.floats(1.0, 100.0), attempt=attempts, u=unit)
def test_full_jitter_within_zero_and_ceiling(
    base: float, factor: float, attempt: int, u: float
) -> None:
    """Full jitter waits in [0, min(cap, base·2^(attempt−1)))."""
    p = RetryPolicy(base=base, cap=base * factor, jitter=Jitter.FULL, max_attempts=1000)
    delay = p.backoff(attempt, lambda: u)
    ceiling = min(base * factor, base * 2.0 ** (attempt - 1))
    assert 0.0 <= delay <= ceiling
    assert delay == pytest.approx(u * ceiling)


@given(base=bases, factor=st.floats(1.0, 100.0), attempt=attempts, u=unit)
def test_equal_jitter_within_half_and_ceiling(
    base: float, factor: float, attempt: int, u: float
) -> None:
    """Equal jitter waits in [ceiling/2, ceiling]."""
    p = RetryPolicy(base=base, cap=base * factor, jitter="equal", max_attempts=1000)  # type: ignore[arg-type]
    delay = p.backoff(attempt, lambda: u)
    ceiling = min(base * factor, base * 2.0 ** (attempt - 1))
    assert ceiling / 2 * (1 - 1e-12) <= delay <= ceiling * (1 + 1e-12)


@given(base=bases, factor=st.floats(1.0, 100.0), seed=st.integers(0, 2**32), n=st.integers(1, 50))
def test_decorrelated_jitter_within_base_and_three_times_previous(
    base: float, factor: float, seed: int, n: int
) -> None:
    """Decorrelated jitter waits in [base, min(cap, 3 × previous)] at every step."""
    cap = base * factor
    p = RetryPolicy(base=base, cap=cap, jitter=Jitter.DECORRELATED, max_attempts=1000)
    rng = random.Random(seed).random
    previous = None
    for attempt in range(1, n + 1):
        delay = p.backoff(attempt, rng, previous=previous)
        high = min(cap, 3 * (base if previous is None else previous))
        assert base * (1 - 1e-12) <= delay <= max(high, base) * (1 + 1e-12)
        previous = delay


@given(attempt=attempts, u=unit)
def test_default_cap_is_ten_times_base(attempt: int, u: float) -> None:
    """Without an explicit cap, no delay exceeds 10 × base (Envoy's default), here 250 ms."""
    p = RetryPolicy(max_attempts=1000)
    assert p.backoff(attempt, lambda: u) <= 0.25
    assert p.backoff(attempt, lambda: 0.999999) <= 0.25


def test_defaults_are_envoys() -> None:
    """Defaults: one retry, base 25 ms, full jitter; the ceiling doubles from base."""
    p = RetryPolicy()
    assert (p.max_attempts, p.base, p.jitter) == (2, 0.025, Jitter.FULL)
    top = 0.999999
    assert p.backoff(1, lambda: top) == pytest.approx(0.025 * top)
    assert p.backoff(3, lambda: top) == pytest.approx(0.1 * top)


def test_no_jitter_is_plain_exponential_capped() -> None:
    """Jitter.NONE waits exactly base·2^(n−1), capped."""
    p = RetryPolicy(base=1.0, cap=5.0, jitter=Jitter.NONE, max_attempts=10)
    assert [p.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


@given(max_attempts=st.integers(1, 20), attempt=st.integers(1, 40))
def test_max_attempts_stops_retries(max_attempts: int, attempt: int) -> None:
    """next_delay returns None exactly when the attempts made reach max_attempts."""
    p = RetryPolicy(max_attempts=max_attempts)
    delay = p.next_delay(attempt, 0.0, rng=lambda: 0.5)
    assert (delay is None) == (attempt >= max_attempts)


@given(elapsed=st.floats(0.0, 10.0), max_elapsed=st.floats(0.0, 10.0), u=unit)
def test_max_elapsed_stops_retries(elapsed: float, max_elapsed: float, u: float) -> None:
    """A retry is refused when waiting would start it after max_elapsed."""
    p = RetryPolicy(base=1.0, max_attempts=100, max_elapsed=max_elapsed)
    delay = p.next_delay(3, elapsed, rng=lambda: u)
    expected = p.backoff(3, lambda: u)
    if elapsed + expected > max_elapsed:
        assert delay is None
    else:
        assert delay == expected


@given(retry_after=st.floats(0.0, 1000.0), cap=st.floats(0.0, 500.0))
def test_retry_after_replaces_backoff_and_is_capped(retry_after: float, cap: float) -> None:
    """A server's Retry-After is the delay, clamped to retry_after_cap."""
    p = RetryPolicy(retry_after_cap=cap)
    assert p.next_delay(1, 0.0, retry_after=retry_after) == min(retry_after, cap)


def test_retry_after_still_respects_max_elapsed() -> None:
    """A Retry-After that would overrun max_elapsed stops retrying."""
    p = RetryPolicy(max_elapsed=5.0)
    assert p.next_delay(1, 1.0, retry_after=10.0) is None
    assert p.next_delay(1, 1.0, retry_after=3.0) == 3.0


def test_parse_retry_after_seconds_and_dates() -> None:
    """Retry-After parses delay-seconds and HTTP-dates; junk and zoneless dates are ignored."""
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0)
    past = format_datetime(datetime.fromtimestamp(now - 30, UTC), usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00", now) is None


@pytest.mark.parametrize(
    ("retry_on", "retryable", "not_retryable"),
    [
        ({"5xx"}, [500, 502, 503, 504, 599], [409, 429, 404, 200]),
        ({"gateway-error"}, [502, 503, 504], [500, 501, 409]),
        ({"retriable-4xx"}, [409], [400, 429, 500, 503]),
        ({"retriable-status-codes"}, [429, 418], [500, 503]),
    ],
)
def test_status_conditions(
    retry_on: set[str], retryable: list[int], not_retryable: list[int]
) -> None:
    """Each Envoy status condition retries exactly its statuses."""
    p = RetryPolicy(retry_on=frozenset(retry_on), retriable_status_codes=frozenset({429, 418}))
    assert all(p.retryable_status(s) for s in retryable)
    assert not any(p.retryable_status(s) for s in not_retryable)


class _Sent(Exception):
    def __init__(self, request_sent: bool) -> None:
        self.request_sent = request_sent


class _Status(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def test_error_conditions() -> None:
    """Errors map to Envoy's conditions; Unavailable by default, Timeout only when configured."""
    default = RetryPolicy()
    assert default.retryable_error(ConnectionRefusedError())
    assert default.retryable_error(_Sent(False))
    assert not default.retryable_error(_Sent(True))
    assert default.retryable_error(ConnectionResetError())
    assert default.retryable_error(BrokenPipeError())
    assert default.retryable_error(RateLimited(retry_after=1))
    assert default.retryable_error(CircuitOpenError())
    assert default.retryable_error(_Status(503))
    assert not default.retryable_error(_Status(500))
    assert not default.retryable_error(DeadlineExceeded())
    assert not default.retryable_error(TimeoutError())
    assert not default.retryable_error(ValueError())
    with_timeout = RetryPolicy(retry_on=frozenset({"timeout"}))
    assert with_timeout.retryable_error(DeadlineExceeded())
    assert with_timeout.retryable_error(TimeoutError())
    assert not with_timeout.retryable_error(ConnectionRefusedError())
    only_reset = RetryPolicy(retry_on=frozenset({"reset"}))
    assert only_reset.retryable_error(ConnectionResetError())
    assert not only_reset.retryable_error(ConnectionRefusedError())
    assert not only_reset.retryable_error(RateLimited())
    broad = RetryPolicy(retry_on=frozenset({"5xx"}))
    assert broad.retryable_error(ConnectionRefusedError())
    assert broad.retryable_error(ConnectionResetError())
    assert broad.retryable_error(_Status(500))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_attempts", 0),
        ("base", -1.0),
        ("base", float("nan")),
        ("cap", 0.001),
        ("max_elapsed", -1.0),
        ("retry_after_cap", -1.0),
        ("retry_on", frozenset({"5xx", "sometimes"})),
    ],
)
def test_bad_settings_name_the_field(field: str, value: object) -> None:
    """Invalid settings raise ConfigError whose source names the field."""
    with pytest.raises(ConfigError) as info:
        RetryPolicy(**{field: value})  # type: ignore[arg-type]
    assert info.value.source == f"RetryPolicy.{field}"


@given(
    ops=st.lists(st.sampled_from(["start", "finish", "retry", "retry_done"]), max_size=300),
    percent=st.floats(0.0, 100.0),
    minimum=st.integers(0, 5),
)
def test_budget_never_exceeds_max_of_min_and_percent(
    ops: list[str], percent: float, minimum: int
) -> None:
    """A granted retry never brings retries in flight above max(min, percent % × active)."""
    budget = RetryBudget(percent=percent, min_retry_concurrency=minimum)
    active = retries = refused = granted = 0
    for op in ops:
        if op == "start":
            budget.request_started()
            active += 1
        elif op == "finish" and active > retries:
            budget.request_finished()
            active -= 1
        elif op == "retry" and retries < active:
            if budget.try_retry():
                retries += 1
                granted += 1
                assert retries <= max(minimum, percent / 100 * active)
            else:
                refused += 1
                assert retries + 1 > max(minimum, percent / 100 * active)
        elif op == "retry_done" and retries:
            budget.retry_finished()
            retries -= 1
    assert budget.stats() == BudgetStats(active, retries, refused, granted)


def test_budget_defaults_allow_three_then_twenty_percent() -> None:
    """Envoy defaults: 3 concurrent retries however few requests, then 20 % of active ones."""
    budget = RetryBudget()
    budget.request_started()
    assert [budget.try_retry() for _ in range(4)] == [True, True, True, False]
    for _ in range(99):
        budget.request_started()
    granted = sum(budget.try_retry() for _ in range(100))
    assert granted == 20 - 3
    assert budget.stats().refused == 1 + 100 - 17


def test_budgets_count_the_retries_they_granted_since_made() -> None:
    """``granted`` counts every retry let through (Envoy's upstream_rq_retry), finished or
    not, beside ``refused`` (upstream_rq_retry_overflow); both only grow."""
    budget = RetryBudget(percent=0, min_retry_concurrency=2)
    budget.request_started()
    assert [budget.try_retry() for _ in range(3)] == [True, True, False]
    budget.retry_finished()
    budget.retry_finished()
    assert budget.try_retry()
    assert budget.stats() == BudgetStats(1, 1, 1, 3)
    ratio = RatioRetryBudget(ttl=1.0, min_retries_per_sec=2.0, percent=0.0, clock=FakeClock())
    assert [ratio.try_retry() for _ in range(3)] == [True, True, False]
    assert (ratio.stats().granted, ratio.stats().refused) == (2, 1)


def test_ratio_budget_deposits_and_expiry() -> None:
    """Finagle's budget: retries ≤ percent of recent requests + reserve; old deposits expire."""
    clock = FakeClock()
    budget = RatioRetryBudget(ttl=10.0, min_retries_per_sec=0.0, percent=50.0, clock=clock)
    assert not budget.try_retry()
    for _ in range(10):
        budget.request_started()
    assert sum(budget.try_retry() for _ in range(10)) == 5
    clock.advance(11.0)
    assert not budget.try_retry()
    assert budget.stats().refused == 7


def test_ratio_budget_reserve() -> None:
    """The reserve of min_retries_per_sec × ttl allows retries with no traffic."""
    budget = RatioRetryBudget(ttl=2.0, min_retries_per_sec=1.5, percent=0.0, clock=FakeClock())
    assert sum(budget.try_retry() for _ in range(10)) == 3


def test_budgets_stay_importable_from_core_retry() -> None:
    """The budgets moved to core.retry_budget are the same objects under core.retry."""
    from qanat.core import retry, retry_budget

    assert retry.RetryBudget is retry_budget.RetryBudget
    assert retry.RatioRetryBudget is retry_budget.RatioRetryBudget
    assert retry.BudgetStats is retry_budget.BudgetStats


def test_transport_errors_name_their_own_condition() -> None:
    """A connect failure that is also Unavailable matches connect-failure; a reset matches reset."""
    from qanat.http import ConnectError, UpstreamReset

    refused = ConnectError("refused")
    reset = UpstreamReset("reset", request_sent=True)
    only_connect = RetryPolicy(retry_on=frozenset({"connect-failure"}))
    only_reset = RetryPolicy(retry_on=frozenset({"reset"}))
    only_unavailable = RetryPolicy(retry_on=frozenset({"unavailable"}))
    assert only_connect.retryable_error(refused)
    assert not only_connect.retryable_error(reset)
    assert only_reset.retryable_error(reset)
    assert not only_reset.retryable_error(refused)
    assert only_unavailable.retryable_error(refused)  # still Unavailable: nothing was done
    assert not only_unavailable.retryable_error(reset)
