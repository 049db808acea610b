"""The Redis limiter's fallback state machine and key builder (pure; no server needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.backends.redis_ratelimit import Fallback, route_key
from qanat.errors import ConfigError


def test_failure_switches_to_local_and_schedules_a_probe() -> None:
    """After a failure Redis is skipped until ``probe_interval`` has passed."""
    f = Fallback(probe_interval=2.0)
    assert f.use_redis(0.0)
    assert f.failed(10.0) is True
    assert (f.mode, f.use_redis(11.9), f.use_redis(12.0)) == ("local", False, True)


def test_failed_probe_pushes_the_next_one_back() -> None:
    """A probe that fails again waits a whole interval from that failure, not from the first."""
    f = Fallback(probe_interval=1.0)
    f.failed(0.0)
    assert f.failed(1.5) is False  # already local: not a new fallback
    assert not f.use_redis(2.4) and f.use_redis(2.5)


def test_success_returns_to_redis_once() -> None:
    """A success in local mode is one recovery; further successes are not."""
    f = Fallback(probe_interval=1.0)
    f.failed(0.0)
    assert f.succeeded() is True and f.succeeded() is False
    assert f.mode == "redis" and f.use_redis(0.0)


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 10)), max_size=30))
def test_redis_is_never_skipped_longer_than_the_interval(events: list[tuple[bool, float]]) -> None:
    """Whatever the history, Redis is tried again ``probe_interval`` after the last failure."""
    f, now, last_fail = Fallback(probe_interval=1.0), 0.0, None
    for ok, dt in events:
        now += dt
        if ok:
            f.succeeded()
        else:
            f.failed(now)
            last_fail = now
    assert f.use_redis(now if last_fail is None else last_fail + 1.0)


def test_route_key_partitions() -> None:
    """Keys combine route, attribute and value; unknown values give no key; long ones are hashed."""
    assert route_key("orders", "route", None) == "orders"
    assert route_key("orders", "remote_addr", "10.0.0.1") == "orders:remote_addr:10.0.0.1"
    assert route_key("orders", "header:x-tenant", "") is None
    long_key = route_key("orders", "consumer", "x" * 200)
    assert long_key is not None and len(long_key) < 100 and "sha256:" in long_key
    with pytest.raises(ConfigError, match="unknown key"):
        route_key("orders", "cookie", "x")
