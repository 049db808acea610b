"""Named resilience policies: the Dapr-style spec, and how the parts compose."""

from __future__ import annotations

import asyncio

import pytest

from qanat import CircuitOpenError, ConfigError, Overloaded, Timeout, load_policies
from qanat.core.retry import Jitter
from qanat.core.window import Counts
from qanat.policy import Policies
from qanat.policy_spec import ResiliencySpec, parse_status_codes, parse_trip
from qanat.testing import FakeClock

SPEC = """
policies:
  timeouts:
    general: 2s
    short: 10ms
  retries:
    standard: {policy: exponential, duration: 50ms, maxInterval: 1s, maxRetries: 3}
    steady: {policy: constant, duration: 200ms, maxRetries: 2, statusCodes: "429,500-502"}
  circuitBreakers:
    tight: {maxRequests: 1, timeout: 30s, trip: consecutiveFailures >= 2}
    loose: {trip: consecutiveFailures > 5}
  bulkheads:
    one: {maxConcurrent: 1}
  targets:
    services:
      users: {timeout: general, retry: standard, circuitBreaker: tight}
      slow: {perTryTimeout: short}
      narrow: {bulkhead: one}
      steady: {retry: steady}
      retrying: {retry: standard, circuitBreaker: loose}
"""


def make(clock: FakeClock) -> Policies:
    async def fake_sleep(seconds: float) -> None:
        clock.advance(seconds)

    base = load_policies(SPEC)
    return Policies(base.spec, clock=clock, sleep=fake_sleep)


def test_exponential_retry_maps_to_core_policy() -> None:
    """maxRetries counts retries (attempts = retries + 1); duration is the base delay."""
    retry = load_policies(SPEC).for_target("users").retry
    assert retry is not None
    assert retry.max_attempts == 4
    assert retry.base == pytest.approx(0.05)
    assert retry.jitter is Jitter.FULL


def test_constant_retry_has_no_growth_and_extra_status_codes() -> None:
    """A constant policy waits exactly `duration` each time and retries listed codes."""
    retry = load_policies(SPEC).for_target("steady").retry
    assert retry is not None
    assert [retry.backoff(n) for n in (1, 2, 3)] == [pytest.approx(0.2)] * 3
    assert retry.retryable_status(429) and retry.retryable_status(501)
    assert not retry.retryable_status(404)


def test_dapr_crd_shape_is_accepted() -> None:
    """Dapr's `spec: {policies, targets}` document reads unchanged."""
    spec = {"policies": {"timeouts": {"t": "1s"}}, "targets": {"apps": {"a": {"timeout": "t"}}}}
    policies = load_policies({"spec": spec})
    assert policies.for_target("a").timeout == 1.0


def test_unknown_reference_names_the_known_ones() -> None:
    """A target naming an undefined policy is a ConfigError listing what is defined."""
    with pytest.raises(ConfigError, match=r"retry 'nope' is not defined \(known: standard\)"):
        load_policies(
            {"retries": {"standard": {}}, "targets": {"services": {"u": {"retry": "nope"}}}}
        )


def test_error_in_yaml_has_a_line() -> None:
    """A bad value in a YAML spec is reported with its line."""
    with pytest.raises(ConfigError, match=r"<policies>:3: .*maxRetries"):
        load_policies("retries:\n  r:\n    maxRetries: many\n")


def test_retry_forever_needs_max_elapsed() -> None:
    """maxRetries -1 without maxElapsed is refused: it would retry without end."""
    with pytest.raises(ConfigError, match="needs maxElapsed"):
        load_policies({"retries": {"r": {"maxRetries": -1}}})


@pytest.mark.parametrize(
    ("expr", "counts", "trips"),
    [
        ("consecutiveFailures > 5", Counts(consecutive_failures=6), True),
        ("consecutiveFailures > 5", Counts(consecutive_failures=5), False),
        ("requests >= 10 && totalFailures >= 5", Counts(requests=10, total_failures=5), True),
        ("requests >= 10 && totalFailures >= 5", Counts(requests=9, total_failures=9), False),
        ("totalFailures > 100 || consecutiveFailures >= 3", Counts(consecutive_failures=3), True),
    ],
)
def test_trip_expressions(expr: str, counts: Counts, trips: bool) -> None:
    """Trip expressions compare counters; && binds tighter than ||."""
    assert parse_trip(expr)(counts) is trips


@pytest.mark.parametrize("bad", ["consecutiveFailures", "foo > 1", "requests >> 2", "a > b"])
def test_bad_trip_expression(bad: str) -> None:
    """An unreadable trip expression names the counters that exist."""
    with pytest.raises(ValueError, match="counters: requests"):
        parse_trip(bad)


def test_status_code_ranges() -> None:
    """Status code lists accept single codes and ranges."""
    assert parse_status_codes("429, 500-502") == {429, 500, 501, 502}
    with pytest.raises(ValueError, match="outside"):
        parse_status_codes("700")


async def test_retry_then_success_under_the_policy() -> None:
    """Retryable errors are retried (with the fake sleep) until the call succeeds."""
    clock = FakeClock()
    policy = make(clock).for_target("retrying")
    calls = 0

    @policy
    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionRefusedError("down")
        return "ok"

    start = clock.now
    assert await flaky() == "ok"
    assert calls == 3
    assert clock.now > start  # it backed off between attempts
    breaker = policy.breaker
    assert breaker is not None and breaker.counts.consecutive_failures == 0


async def test_breaker_sits_inside_retry() -> None:
    """Each attempt passes the breaker: once it opens, the remaining attempts are refused."""
    clock = FakeClock()

    async def instant(seconds: float) -> None:
        return None  # the clock stands still: the breaker stays open for the later attempts

    users = Policies(load_policies(SPEC).spec, clock=clock, sleep=instant).for_target("users")
    calls = 0  # "users" trips at 2 consecutive failures and allows 4 attempts

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("down")

    with pytest.raises(CircuitOpenError):
        await users.call(down)
    assert calls == 2


async def test_breaker_opens_and_refuses_without_calling() -> None:
    """After the trip condition, calls are refused with CircuitOpenError and fn is not run."""
    clock = FakeClock()
    policies = make(clock)
    users = policies.for_target("users")
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bug")  # not retryable: one attempt per call

    for _ in range(2):
        with pytest.raises(ValueError):
            await users.call(broken)
    with pytest.raises(CircuitOpenError):
        await users.call(broken)
    assert calls == 2
    clock.advance(30)
    with pytest.raises(ValueError):  # half-open: one trial goes through
        await users.call(broken)
    assert calls == 3


async def test_per_try_timeout_raises_qanat_timeout() -> None:
    """An attempt longer than perTryTimeout ends with qanat.Timeout."""
    slow = load_policies(SPEC).for_target("slow")
    never = asyncio.Event()
    with pytest.raises(Timeout, match="attempt exceeded"):
        await slow.call(never.wait)


async def test_bulkhead_full_is_overloaded() -> None:
    """With one slot and no queue, a second concurrent call is refused at once."""
    narrow = load_policies(SPEC).for_target("narrow")
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        entered.set()
        await release.wait()

    first = asyncio.create_task(narrow.call(hold))
    await entered.wait()
    with pytest.raises(Overloaded):
        await narrow.call(hold)
    release.set()
    await first


async def test_context_manager_records_failures() -> None:
    """`async with policy:` settles the breaker from the block's outcome."""
    clock = FakeClock()
    users = make(clock).for_target("users")
    for _ in range(2):
        with pytest.raises(KeyError):
            async with users:
                raise KeyError("x")
    with pytest.raises(CircuitOpenError):
        async with users:
            pass


async def test_target_without_binding_is_a_pass_through() -> None:
    """A target with no policies runs the call unchanged."""
    policy = load_policies(SPEC).for_target("unbound")

    async def value() -> int:
        return 7

    assert await policy.call(value) == 7


def test_spec_model_is_strict() -> None:
    """Unknown fields in a retry spec are rejected, not ignored."""
    with pytest.raises(Exception, match="extra"):
        ResiliencySpec.model_validate({"retries": {"r": {"maxRetrys": 3}}})
