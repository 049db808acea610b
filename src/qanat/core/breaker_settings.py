"""Circuit breaker settings, states and stats (see ``qanat.core.breaker``)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from qanat.core.window import Counts
from qanat.errors import ConfigError


class State(StrEnum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    HALF_OPEN = "half-open"
    OPEN = "open"



def default_ready_to_trip(counts: Counts) -> bool:
    """gobreaker's default: trip when more than 5 calls in a row failed."""
    return counts.consecutive_failures > 5


def _no(exc: BaseException) -> bool:
    return False


def _seconds(value: float, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 \
            or math.isinf(value):
        raise ConfigError(f"must be a finite number of seconds >= 0, got {value!r}",
                          source=f"BreakerSettings.{field}")
    return float(value)


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """How a ``CircuitBreaker`` behaves; zeros mean what they mean in gobreaker.

    - ``name``: passed to ``on_state_change`` and shown in errors and stats.
    - ``max_requests`` (1): trial calls admitted while half-open, and the
      consecutive successes that close it. 0 means 1.
    - ``interval`` (0.0 s): length of the closed-state counting window; 0 means
      counts are only cleared by a state change.
    - ``timeout`` (60.0 s): time spent open before half-opening. 0 means 60.
    - ``bucket_period`` (0.0 s): with an ``interval``, makes the window roll in
      buckets of this length; ``interval`` is rounded up to a multiple of it.
      0 (or a period >= interval) means a fixed window.
    - ``ready_to_trip(counts)`` (more than 5 consecutive failures): asked after
      each closed-state failure; True opens the breaker.
    - ``on_state_change(name, from_state, to_state)`` (None): called after
      each change, outside the breaker's lock. It should not raise.
    - ``is_successful(exc)`` (always False): True counts an exception as a success.
    - ``is_excluded(exc)`` (always False): True counts an exception as neither
      success nor failure, only as an exclusion; it frees its half-open slot.
    """

    name: str = ""
    max_requests: int = 1
    interval: float = 0.0
    timeout: float = 60.0
    bucket_period: float = 0.0
    ready_to_trip: Callable[[Counts], bool] = default_ready_to_trip
    on_state_change: Callable[[str, State, State], None] | None = None
    is_successful: Callable[[BaseException], bool] = _no
    is_excluded: Callable[[BaseException], bool] = _no

    def __post_init__(self) -> None:
        fix = functools.partial(object.__setattr__, self)
        if isinstance(self.max_requests, bool) or not isinstance(self.max_requests, int) \
                or self.max_requests < 0:
            raise ConfigError(f"must be a whole number >= 0, got {self.max_requests!r}",
                              source="BreakerSettings.max_requests")
        fix("max_requests", self.max_requests or 1)
        fix("timeout", _seconds(self.timeout, "timeout") or 60.0)
        interval = _seconds(self.interval, "interval")
        period = _seconds(self.bucket_period, "bucket_period")
        if interval == 0:
            period = 0.0
        elif period >= interval:
            interval = period  # gobreaker rounds up to one whole bucket: a fixed window
        elif period > 0:
            # Round up, but not past float noise: 1.0 / 0.1 is 10.000000000000002.
            interval = math.ceil(interval / period - 1e-9) * period
        fix("interval", interval)
        fix("bucket_period", period)

    @property
    def buckets(self) -> int:
        """Buckets in the closed-state window: 1 for a fixed window."""
        if self.bucket_period == 0:
            return 1
        return max(1, round(self.interval / self.bucket_period))


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A snapshot for metrics and dashboards."""

    name: str
    state: State
    counts: Counts
    generation: int
    opened_at: float | None  # clock time the breaker last opened, while it is open
    retry_after: float | None  # seconds until it half-opens, while it is open
