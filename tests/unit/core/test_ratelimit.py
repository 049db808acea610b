"""Rate limiters: the admission bound, exact retry_after, bounded keys, headers and the wrapper."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.core.ratelimit import (
    GCRA,
    RateLimiter,
    SlidingWindow,
    TokenBucket,
    Unkeyed,
)
from qanat.errors import ConfigError, RateLimited
from qanat.testing import FakeClock

KINDS = ["token", "gcra", "window"]


def build(
    kind: str, rate: float, burst: int, max_keys: int = 100
) -> TokenBucket | GCRA | SlidingWindow:
    """A limiter of ``kind`` allowing ``rate`` per second with bursts of ``burst``."""
    if kind == "token":
        return TokenBucket(rate, burst, max_keys=max_keys)
    if kind == "gcra":
        return GCRA(rate, burst, max_keys=max_keys)
    return SlidingWindow(burst, burst / rate, max_keys=max_keys)


requests = st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(1, 4)), min_size=1, max_size=80)


@pytest.mark.parametrize("kind", KINDS)
@given(
    rate=st.floats(0.1, 100.0),
    burst=st.integers(4, 20),
    start=st.floats(0.0, 1e6),
    reqs=requests,
)
def test_never_admits_more_than_rate_times_t_plus_burst(
    kind: str, rate: float, burst: int, start: float, reqs: list[tuple[float, int]]
) -> None:
    """Over every interval [a, b] the permits admitted are at most rate × (b − a) + burst."""
    limiter = build(kind, rate, burst)
    now = start
    admitted: list[tuple[float, int]] = []
    for dt, n in reqs:
        now += dt
        if limiter.allow("k", now, n).allowed:
            admitted.append((now, n))
    for i, (a, _) in enumerate(admitted):
        total = 0
        for b, n in admitted[i:]:
            total += n
            assert total <= rate * (b - a) + burst + 1e-6


@pytest.mark.parametrize("kind", KINDS)
@given(
    rate=st.floats(0.1, 100.0),
    burst=st.integers(1, 10),
    start=st.floats(0.0, 1e6),
    reqs=requests,
    fraction=st.floats(0.0, 0.999),
)
def test_retry_after_is_exact(
    kind: str,
    rate: float,
    burst: int,
    start: float,
    reqs: list[tuple[float, int]],
    fraction: float,
) -> None:
    """A refused request is refused before now + retry_after and allowed exactly then."""
    limiter = build(kind, rate, burst)
    now = start
    for dt, n in reqs:
        n = min(n, burst)
        now += dt
        d = limiter.allow("k", now, n)
        if d.allowed:
            assert d.retry_after == 0.0
            continue
        assert d.retry_after > 0
        early = now + d.retry_after * fraction
        if d.retry_after * (1 - fraction) > 1e-9 * max(1.0, now):
            assert not limiter.allow("k", early, n).allowed
        now += d.retry_after
        again = limiter.allow("k", now, n)
        assert again.allowed, (d, again)


@pytest.mark.parametrize("kind", KINDS)
@given(keys=st.lists(st.integers(0, 50), max_size=200), max_keys=st.integers(1, 10))
def test_keyed_memory_stays_within_max_keys(kind: str, keys: list[int], max_keys: int) -> None:
    """However many clients appear, at most max_keys states are kept."""
    limiter = build(kind, 1.0, 5, max_keys=max_keys)
    now = 0.0
    for key in keys:
        now += 0.01
        limiter.allow(key, now)
        assert len(limiter) <= max_keys


@pytest.mark.parametrize("kind", KINDS)
def test_idle_keys_are_forgotten_when_new_ones_arrive(kind: str) -> None:
    """A key whose limit has fully recovered is dropped when a new key arrives."""
    limiter = build(kind, 1.0, 2)
    limiter.allow("old", 0.0)
    limiter.allow("busy", 99.5)
    limiter.allow("new", 100.0)
    assert limiter.state("old") is None
    assert limiter.state("busy") is not None
    assert len(limiter) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_lru_key_is_evicted_at_capacity(kind: str) -> None:
    """At max_keys, a new key evicts the least recently used one, not a recent one."""
    limiter = build(kind, 1.0, 3, max_keys=2)
    limiter.allow("a", 0.0)
    limiter.allow("b", 0.0)
    limiter.allow("a", 0.1)  # a is now the most recent
    limiter.allow("c", 0.2)
    assert limiter.state("b") is None
    assert limiter.state("a") is not None and limiter.state("c") is not None


@pytest.mark.parametrize("kind", KINDS)
def test_keys_are_independent(kind: str) -> None:
    """One client's exhaustion does not limit another."""
    limiter = build(kind, 1.0, 2)
    assert [limiter.allow("a", 0.0).allowed for _ in range(3)] == [True, True, False]
    assert limiter.allow("b", 0.0).allowed


@given(
    rate=st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0]),
    burst=st.integers(1, 10),
    reqs=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 3)), max_size=60),
)
def test_token_bucket_and_gcra_agree(rate: float, burst: int, reqs: list[tuple[int, int]]) -> None:
    """With exact (dyadic) arithmetic the token bucket and GCRA give the same decisions."""
    bucket, gcra = TokenBucket(rate, burst), GCRA(rate, burst)
    now = 0.0
    for eighths, n in reqs:
        now += eighths / 8
        n = min(n, burst)
        a, b = bucket.allow("k", now, n), gcra.allow("k", now, n)
        assert (a.allowed, a.remaining, a.limit) == (b.allowed, b.remaining, b.limit)
        assert a.retry_after == pytest.approx(b.retry_after)
        assert a.reset_after == pytest.approx(b.reset_after)


@pytest.mark.parametrize("kind", ["token", "gcra"])
def test_bucket_decision_fields(kind: str) -> None:
    """rate 1/s, burst 3: remaining counts down, reset_after grows, the 4th waits 1 s."""
    limiter = build(kind, 1.0, 3)
    got = [limiter.allow("k", 10.0) for _ in range(4)]
    assert [d.allowed for d in got] == [True, True, True, False]
    assert [d.remaining for d in got] == [2, 1, 0, 0]
    assert [d.reset_after for d in got] == pytest.approx([1.0, 2.0, 3.0, 3.0])
    assert got[3].retry_after == pytest.approx(1.0)
    assert got[3].limit == 3
    later = limiter.allow("k", 11.5)
    assert (later.allowed, later.remaining) == (True, 0)


def test_sliding_window_weights_the_previous_window() -> None:
    """10 per 60 s: after a full window, the old count decays linearly through the next."""
    limiter = SlidingWindow(10, 60.0)
    assert all(limiter.allow("k", 0.0).allowed for _ in range(10))
    refused = limiter.allow("k", 30.0)
    assert not refused.allowed
    # the next window starts at 60 with previous = 10; one more fits once 10×(1−e/60) <= 9
    assert 30.0 + refused.retry_after == pytest.approx(66.0)
    assert limiter.allow("k", 66.0).allowed
    assert not limiter.allow("k", 66.0).allowed  # 10×0.9 + 1 = 10, and one more is 11
    assert limiter.allow("k", 200.0).remaining == 9  # idle two windows: a fresh start


@pytest.mark.parametrize("kind", KINDS)
def test_n_beyond_the_limit_is_an_error(kind: str) -> None:
    """Asking for more permits than the limit, or fewer than one, raises ValueError."""
    limiter = build(kind, 1.0, 3)
    with pytest.raises(ValueError, match="can never be allowed"):
        limiter.allow("k", 0.0, 4)
    with pytest.raises(ValueError, match="can never be allowed"):
        limiter.allow("k", 0.0, 0)


@pytest.mark.parametrize(
    ("make", "source"),
    [
        (lambda: TokenBucket(0, 3), "TokenBucket.rate"),
        (lambda: GCRA(1.0, 0), "GCRA.burst"),
        (lambda: SlidingWindow(10, float("inf")), "SlidingWindow.window"),
        (lambda: TokenBucket(1.0, 3, max_keys=0), "TokenBucket.max_keys"),
    ],
)
def test_bad_settings_are_config_errors(make: object, source: str) -> None:
    """Invalid settings raise ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        make()  # type: ignore[operator]
    assert info.value.source == source


def test_unkeyed_is_one_shared_limit() -> None:
    """Unkeyed(limiter).allow(now) applies a single limit to every caller."""
    single = Unkeyed(GCRA(1.0, 2))
    assert [single.allow(0.0).allowed for _ in range(3)] == [True, True, False]
    assert single.allow(1.0).allowed


def test_rate_limiter_acquire_raises_with_retry_after() -> None:
    """acquire() raises RateLimited carrying retry_after; after that long it succeeds."""
    clock = FakeClock()
    limiter = RateLimiter(TokenBucket(2.0, 1), clock=clock)
    assert limiter.acquire().allowed
    with pytest.raises(RateLimited) as info:
        limiter.acquire()
    assert info.value.retry_after == pytest.approx(0.5)
    clock.advance(info.value.retry_after or 0.0)
    assert limiter.acquire().allowed
    assert not limiter.try_acquire().allowed
    assert limiter.acquire(key="other").allowed


async def test_rate_limiter_decorates_sync_and_async() -> None:
    """As a decorator, each call takes a permit first; refused calls never run."""
    clock = FakeClock()
    guard = RateLimiter(GCRA(1.0, 1), clock=clock, key="svc")
    ran: list[str] = []

    @guard
    def sync_job() -> str:
        ran.append("sync")
        return "done"

    @guard
    async def async_job() -> str:
        ran.append("async")
        return "done"

    assert sync_job() == "done"
    with pytest.raises(RateLimited):
        await async_job()
    clock.advance(1.0)
    assert await async_job() == "done"
    assert ran == ["sync", "async"]


@pytest.mark.parametrize(("rate", "burst"), [(10.0, 20), (3.0, 3), (7.0, 5), (0.3, 4)])
def test_gcra_admits_its_whole_burst_at_one_instant(rate: float, burst: int) -> None:
    """A fresh key gets exactly `burst` permits at once, even when 1/rate is inexact in binary."""
    limiter = GCRA(rate, burst)
    admitted = sum(limiter.allow("k", 1000.0).allowed for _ in range(burst + 3))
    assert admitted == burst
