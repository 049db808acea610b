"""Outlier detection's settings and statistics (Envoy's ``OutlierDetection`` fields).

Re-exported by ``qanat.core.outlier``, where the detector lives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from qanat.errors import ConfigError


class CallError(StrEnum):
    """A call that got no HTTP status, mapped to the status Envoy's router would answer."""

    CONNECT_FAILURE = "connect_failure"  # counts as 503: a 5xx and a gateway failure
    RESET = "reset"  # 503
    TIMEOUT = "timeout"  # 504


@dataclass(frozen=True, slots=True)
class OutlierSettings:
    """Envoy's ``OutlierDetection`` fields and defaults; times in seconds.

    ``None`` turns a consecutive rule off; ``max_ejection_percent=0`` turns
    ejection off. Unlike Envoy (whose ``enforcing_consecutive_gateway_failure``
    defaults to 0 %), every rule here is enforced when set.
    """

    consecutive_5xx: int | None = 5  # 5xx in a row, connect errors included
    consecutive_gateway_failure: int | None = 5  # 502/503/504 in a row, connect errors included
    interval: float = 10.0  # between success-rate sweeps (and backoff decay)
    base_ejection_time: float = 30.0  # ejection = base x multiplier ...
    max_ejection_time: float = 300.0  # ... capped here (never below base)
    max_ejection_percent: float = 10.0  # of hosts; one host may always be ejected
    success_rate_minimum_hosts: int = 5  # hosts with enough volume to compare at all
    success_rate_request_volume: int = 100  # requests in the interval to be compared
    success_rate_stdev_factor: float = 1.9  # eject below mean - factor x stdev (Envoy: 1900/1000)

    def __post_init__(self) -> None:
        for name, (ok, allowed) in _RULES.items():
            value = getattr(self, name)
            if value is None and name.startswith("consecutive"):
                continue  # the rule is off
            if isinstance(value, bool) or not isinstance(value, int | float) or not ok(value):
                raise ConfigError(
                    f"must be {allowed}, got {value!r}", source=f"outlier_detection.{name}"
                )


def _count(value: float) -> bool:
    return isinstance(value, int) and value >= 1


_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "consecutive_5xx": (_count, "an integer >= 1, or None to turn the rule off"),
    "consecutive_gateway_failure": (_count, "an integer >= 1, or None to turn the rule off"),
    "interval": (lambda v: v > 0, "a number of seconds > 0"),
    "base_ejection_time": (lambda v: v > 0, "a number of seconds > 0"),
    "max_ejection_time": (lambda v: v >= 0, "a number of seconds >= 0"),
    "max_ejection_percent": (lambda v: 0 <= v <= 100, "a percentage from 0 to 100"),
    "success_rate_minimum_hosts": (_count, "an integer >= 1"),
    "success_rate_request_volume": (_count, "an integer >= 1"),
    "success_rate_stdev_factor": (lambda v: v >= 0, "a number >= 0"),
}


@dataclass(frozen=True, slots=True)
class OutlierStats:
    """What the detector knows, for metrics and the dashboard (Envoy's counter names)."""

    hosts: int
    ejected: Mapping[str, float]  # id -> time the ejection ends
    multipliers: Mapping[str, int]  # id -> ejection-time multiplier, where not 0
    ejections_total: int
    ejections_consecutive_5xx: int
    ejections_consecutive_gateway_failure: int
    ejections_success_rate: int
    ejections_overflow: int  # outliers left in place by max_ejection_percent
    success_rate_mean: float | None  # of the last sweep, percent; None if not computed
    success_rate_threshold: float | None


__all__ = ["CallError", "OutlierSettings", "OutlierStats"]
