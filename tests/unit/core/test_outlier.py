"""Envoy outlier detection: every ejection rule, the cap, the time and its decay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.core.balance import Endpoint, RoundRobin
from qanat.core.outlier import CallError, OutlierDetector, OutlierSettings
from qanat.errors import ConfigError

T0 = 1000.0


def detector(n: int = 20, **settings: float | int | None) -> OutlierDetector:
    return OutlierDetector(OutlierSettings(**settings), hosts=[f"h{i}" for i in range(n)])  # type: ignore[arg-type]


def fail(d: OutlierDetector, host: str, times: int, outcome: int | str = 500) -> list[bool]:
    return [d.record(host, outcome, T0) for _ in range(times)]


def test_five_consecutive_5xx_eject() -> None:
    """The fifth 5xx in a row ejects the host, and only then."""
    d = detector()
    assert fail(d, "h0", 5) == [False, False, False, False, True]
    assert d.is_ejected("h0", T0) and d.ejected(T0) == {"h0"}
    assert d.stats().ejections_consecutive_5xx == 1


def test_a_success_resets_the_consecutive_count() -> None:
    """Four 5xx, a 200, four 5xx: never five in a row, so no ejection."""
    d = detector()
    fail(d, "h0", 4)
    d.record("h0", 200, T0)
    assert fail(d, "h0", 4) == [False] * 4 and not d.is_ejected("h0", T0)


def test_gateway_failures_eject_under_their_own_threshold() -> None:
    """Connect errors, timeouts and 502-504 count as gateway failures; a 500 resets that count."""
    d = detector(consecutive_5xx=None, consecutive_gateway_failure=3)
    assert fail(d, "h0", 2, CallError.CONNECT_FAILURE) == [False, False]
    d.record("h0", 500, T0)  # a 5xx that is not a gateway error
    assert fail(d, "h0", 2, "timeout") == [False, False]
    assert d.record("h0", 502, T0) is True
    assert d.stats().ejections_consecutive_gateway_failure == 1


def test_local_errors_count_as_5xx() -> None:
    """A connect failure is a 5xx for the consecutive-5xx rule (Envoy maps it to 503)."""
    d = detector(consecutive_gateway_failure=None)
    assert fail(d, "h0", 5, "connect_failure")[-1] is True


def test_unknown_outcome_is_a_clear_error() -> None:
    """A string that is not a CallError is refused, naming the allowed values."""
    with pytest.raises(ValueError, match="connect_failure, reset, timeout"):
        detector().record("h0", "exploded", T0)


def test_max_ejection_percent_caps_ejections() -> None:
    """With 20 hosts and 10 %, two hosts may be ejected; the third outlier stays in."""
    d = detector(20)
    for host in ("h0", "h1", "h2"):
        fail(d, host, 5)
    assert d.ejected(T0) == {"h0", "h1"}
    assert d.stats().ejections_overflow == 1


def test_at_least_one_host_may_always_be_ejected() -> None:
    """With 3 hosts 10 % is 0.3 hosts, yet one may be ejected; a second may not."""
    d = detector(3)
    fail(d, "h0", 5)
    fail(d, "h1", 5)
    assert d.ejected(T0) == {"h0"}


def test_zero_percent_turns_ejection_off() -> None:
    """max_ejection_percent=0 never ejects, not even one host."""
    d = detector(3, max_ejection_percent=0)
    fail(d, "h0", 5)
    assert d.ejected(T0) == set()


def test_ejection_time_grows_with_each_ejection_and_is_capped() -> None:
    """Ejections last 30, 60, 90 ... s (base x times ejected), never more than 300 s."""
    d = detector(1)
    now, durations = T0, []
    for _ in range(14):
        for _ in range(5):
            d.record("h0", 503, now)
        until = d.stats().ejected["h0"]
        durations.append(until - now)
        assert d.is_ejected("h0", until - 0.001) and not d.is_ejected("h0", until)
        now = until
    assert durations[:4] == [30.0, 60.0, 90.0, 120.0]
    assert max(durations) == 300.0 and durations[-1] == 300.0


def test_unejection_resets_consecutive_counts() -> None:
    """After an ejection ends, it takes five fresh 5xx to eject again."""
    d = detector(1)
    fail(d, "h0", 5)
    later = T0 + 30.0
    assert [d.record("h0", 500, later) for _ in range(5)] == [False] * 4 + [True]


def test_times_ejected_decays_while_healthy() -> None:
    """Each sweep interval the host spends un-ejected takes one step off the ejection time."""
    d = detector(1, interval=10.0)
    d.tick(T0)
    now = T0
    for _ in range(3):  # ejected three times: 30, 60, 90 s
        for _ in range(5):
            d.record("h0", 500, now)
        now = d.stats().ejected["h0"]
    assert d.stats().multipliers == {"h0": 3}
    sweeps = [now + 10.0 * k for k in range(1, 4)]
    for t in sweeps:  # first sweep: was ejected this interval; then two clean intervals
        d.tick(t)
    assert d.stats().multipliers == {"h0": 1}
    now = sweeps[-1]
    for _ in range(5):
        d.record("h0", 500, now)
    assert d.stats().ejected["h0"] - now == 60.0  # multiplier back up to 2


def success_rate_round(d: OutlierDetector, rates: dict[str, float], now: float) -> list[str]:
    for host, rate in rates.items():
        ok = round(rate * 200)
        for i in range(200):  # interleaved, so no consecutive-5xx ejection gets in the way
            d.record(host, 200 if i % 200 < ok else 500, now)
    return d.tick(now + 10.0)


def test_success_rate_ejects_hosts_below_mean_minus_factor_stdev() -> None:
    """Envoy's own example: rates 50,100,100,100,100 give threshold 52; the 50 % host goes."""
    d = detector(5, consecutive_5xx=None, consecutive_gateway_failure=None, max_ejection_percent=50)
    d.tick(T0)
    ejected = success_rate_round(d, {"h0": 0.5, "h1": 1, "h2": 1, "h3": 1, "h4": 1}, T0)
    assert ejected == ["h0"]
    stats = d.stats()
    assert stats.success_rate_mean == 90.0
    assert stats.success_rate_threshold == pytest.approx(90.0 - 1.9 * 20.0)
    assert stats.ejections_success_rate == 1


def test_success_rate_needs_minimum_hosts_with_volume() -> None:
    """With only four hosts over the request volume, no success-rate verdict is made."""
    d = detector(5, consecutive_5xx=None, consecutive_gateway_failure=None, max_ejection_percent=50)
    d.tick(T0)
    for _ in range(50):  # h4 stays under the volume of 100
        d.record("h4", 200, T0)
    assert success_rate_round(d, {"h0": 0.1, "h1": 1, "h2": 1, "h3": 1}, T0) == []
    assert d.stats().success_rate_mean is None


def test_sweeps_only_happen_every_interval() -> None:
    """tick between sweeps does nothing; counts of the last interval are what a sweep judges."""
    d = detector(5, consecutive_5xx=None, consecutive_gateway_failure=None, max_ejection_percent=50)
    d.tick(T0)
    for host, rate in {"h0": 0.5, "h1": 1, "h2": 1, "h3": 1, "h4": 1}.items():
        for i in range(200):
            d.record(host, 200 if i < rate * 200 else 500, T0)
    assert d.tick(T0 + 9.9) == []
    assert d.tick(T0 + 10.0) == ["h0"]


def test_apply_filters_ejected_endpoints_for_a_balancer() -> None:
    """apply leaves ejected endpoints out, epoch changes on ejection and on its end."""
    endpoints = [Endpoint(f"h{i}") for i in range(3)]
    d = detector(3)
    seen = d.epoch(T0)
    fail(d, "h1", 5)
    assert d.epoch(T0) != seen
    balancer = RoundRobin(d.apply(endpoints, T0))
    assert {balancer.pick().id for _ in range(6)} == {"h0", "h2"}  # type: ignore[union-attr]
    seen = d.epoch(T0)
    assert d.apply(endpoints, T0 + 30.0) == endpoints and d.epoch(T0 + 30.0) != seen


def test_update_forgets_departed_hosts() -> None:
    """Hosts dropped by update leave the ejected set and the host count."""
    d = detector(3)
    fail(d, "h0", 5)
    d.update(["h1", "h2"])
    assert d.ejected(T0) == set() and d.stats().hosts == 2


@given(st.lists(st.tuples(st.integers(0, 9), st.sampled_from([200, 500, 503])), max_size=300))
def test_never_more_than_the_cap_is_ejected(calls: list[tuple[int, int]]) -> None:
    """Whatever the outcomes, ejected hosts never exceed max(1, 10 % of hosts)."""
    d = detector(10)
    now = T0
    for host, status in calls:
        now += 0.5
        d.record(f"h{host}", status, now)
        d.tick(now)
        assert len(d.ejected(now)) <= 1


def test_settings_are_validated() -> None:
    """Out-of-range settings raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match=r"outlier_detection\.max_ejection_percent"):
        OutlierSettings(max_ejection_percent=150)
    with pytest.raises(ConfigError, match=r"outlier_detection\.consecutive_5xx"):
        OutlierSettings(consecutive_5xx=0)
    with pytest.raises(ConfigError, match=r"outlier_detection\.interval"):
        OutlierSettings(interval=0)


def test_settings_stay_importable_from_core_outlier() -> None:
    """The settings moved to core.outlier_settings are the same objects under core.outlier."""
    from qanat.core import outlier, outlier_settings

    assert outlier.OutlierSettings is outlier_settings.OutlierSettings
    assert outlier.OutlierStats is outlier_settings.OutlierStats
    assert outlier.CallError is outlier_settings.CallError
