"""Adaptive throttling follows the SRE book's formula exactly, with a fake clock and rng."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.core.throttle import AdaptiveThrottle
from qanat.errors import ConfigError, Overloaded, Unavailable
from qanat.testing import FakeClock


class Rng:
    """A deterministic random source that returns `value` and counts its draws."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.draws = 0

    def __call__(self) -> float:
        self.draws += 1
        return self.value


def feed(throttle: AdaptiveThrottle, now: float, accepts: int, refusals: int) -> None:
    for _ in range(accepts):
        throttle.record(True, now)
    for _ in range(refusals):
        throttle.record(False, now)


def formula(requests: int, accepts: int, k: float) -> float:
    return max(0.0, (requests - k * accepts) / (requests + 1))


@pytest.mark.parametrize(
    ("accepts", "refusals", "k"),
    [(0, 0, 2.0), (10, 0, 2.0), (5, 5, 2.0), (1, 9, 2.0), (0, 30, 2.0), (10, 20, 1.5), (3, 7, 1.0)],
)
def test_reject_probability_is_the_sre_formula(accepts: int, refusals: int, k: float) -> None:
    """reject_probability is max(0, (requests - K*accepts) / (requests + 1))."""
    throttle = AdaptiveThrottle(k=k, clock=FakeClock())
    feed(throttle, 100.0, accepts, refusals)
    assert throttle.reject_probability(100.0) == formula(accepts + refusals, accepts, k)


def test_allow_rejects_exactly_when_rng_is_below_the_probability() -> None:
    """A draw below p sheds; a draw equal to p lets the call through."""
    feed(probe := AdaptiveThrottle(), 5.0, 1, 9)  # requests 10, accepts 1: p = 8/11
    p = probe.reject_probability(5.0)
    below = AdaptiveThrottle(rng=Rng(p - 1e-12))
    at = AdaptiveThrottle(rng=Rng(p))
    feed(below, 5.0, 1, 9)
    feed(at, 5.0, 1, 9)
    assert below.allow(5.0) is False
    assert at.allow(5.0) is True


@given(accepts=st.integers(0, 50), extra=st.integers(0, 100), k=st.sampled_from([1.0, 2.0, 3.0]))
def test_never_rejects_while_requests_are_within_k_accepts(
    accepts: int, extra: int, k: float
) -> None:
    """While requests <= K * accepts nothing is shed and no random number is drawn."""
    refusals = min(extra, int(k * accepts) - accepts) if k * accepts >= accepts else 0
    rng = Rng(0.0)
    throttle = AdaptiveThrottle(k=k, rng=rng)
    feed(throttle, 1.0, accepts, refusals)
    assert throttle.allow(1.0) is True
    assert rng.draws == 0


@given(accepts=st.integers(0, 30), refusals=st.integers(0, 60), draw=st.floats(0, 0.999))
def test_allow_matches_the_formula_for_any_draw(accepts: int, refusals: int, draw: float) -> None:
    """allow() sheds iff the draw is below the formula's probability."""
    throttle = AdaptiveThrottle(rng=Rng(draw))
    feed(throttle, 1.0, accepts, refusals)
    p = formula(accepts + refusals, accepts, 2.0)
    assert throttle.allow(1.0) is (not draw < p)
    assert 0.0 <= p < 1.0


def test_a_shed_call_counts_as_a_request_not_accepted() -> None:
    """A refusal by allow() is recorded as a request the backend did not accept."""
    throttle = AdaptiveThrottle(rng=Rng(0.0))
    feed(throttle, 1.0, 0, 4)
    assert throttle.allow(1.0) is False
    stats = throttle.stats(1.0)
    assert (stats.requests, stats.accepts, stats.shed_total) == (5, 0, 1)
    assert stats.reject_probability == formula(5, 0, 2.0)


def test_window_rolls_off_old_refusals() -> None:
    """Refusals older than the window stop counting (10 s in 40 buckets by default)."""
    clock = FakeClock(start=0.0)
    throttle = AdaptiveThrottle(rng=Rng(0.0), clock=clock)
    feed(throttle, 0.0, 0, 20)
    assert throttle.reject_probability(9.9) > 0.9
    assert throttle.reject_probability(10.0) == 0.0
    assert throttle.allow(10.0) is True


def test_call_raises_overloaded_when_shedding() -> None:
    """call() raises Overloaded (an Unavailable) and does not run the function when shed."""
    throttle = AdaptiveThrottle(name="risk", rng=Rng(0.0), clock=FakeClock())
    feed(throttle, 1000.0, 0, 10)
    ran: list[int] = []
    with pytest.raises(Overloaded) as info:
        throttle.call(ran.append, 1)
    assert isinstance(info.value, Unavailable) and "'risk'" in str(info.value)
    assert ran == []


def test_call_records_outcomes_with_is_accepted() -> None:
    """A return is accepted; an exception is accepted only if is_accepted says so."""
    throttle = AdaptiveThrottle(is_accepted=lambda exc: isinstance(exc, KeyError),
                                clock=FakeClock())
    throttle.call(int, "1")
    with pytest.raises(KeyError):
        throttle.call({}.__getitem__, "k")
    with pytest.raises(ValueError):
        throttle.call(int, "x")
    stats = throttle.stats()
    assert (stats.requests, stats.accepts) == (3, 2)


async def test_decorator_on_sync_and_async_functions() -> None:
    """@throttle wraps sync and async functions and records both."""
    throttle = AdaptiveThrottle(clock=FakeClock())

    @throttle
    def double(x: int) -> int:
        return 2 * x

    @throttle
    async def triple(x: int) -> int:
        return 3 * x

    assert double(2) == 4
    assert inspect.iscoroutinefunction(triple)
    assert await triple(2) == 6
    assert throttle.stats().accepts == 2


async def test_acall_sheds_with_overloaded() -> None:
    """acall() raises Overloaded when shed and never awaits the function."""
    throttle = AdaptiveThrottle(rng=Rng(0.0), clock=FakeClock())
    feed(throttle, 1000.0, 0, 10)

    async def never() -> None:
        raise AssertionError("should not run")

    with pytest.raises(Overloaded):
        await throttle.acall(never)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"k": 0}, "k"), ({"k": float("nan")}, "k"), ({"buckets": 0}, "buckets"),
     ({"window": -1.0}, "window"), ({"window": float("inf")}, "window")],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, float], field: str) -> None:
    """Bad k, window or buckets raise ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        AdaptiveThrottle(**kwargs)  # type: ignore[arg-type]
    assert info.value.source == f"AdaptiveThrottle.{field}"
