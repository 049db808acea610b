"""Per-route resilience: retry, breaker and outlier settings, and the state they drive.

Three route-model blocks live here (``config.py`` uses them):

- ``RetryConfig`` (``route.retry``): Envoy's router retry policy — named
  conditions, ``num_retries``, full-jitter backoff from 25 ms, a retry budget
  (active retries <= max(3, 20 % of active requests)) and the body-buffer
  bound that decides whether a streamed upload can be replayed.
- ``BreakerConfig`` (``upstream.breaker``): one gobreaker-style
  ``CircuitBreaker`` per upstream instance.
- ``OutlierConfig`` (``upstream.outlier_detection``): Envoy's passive health
  checking (``OutlierDetector``) over the route's instances.

``InstanceHealth`` holds the breakers and the detector of one upstream;
``retry_allowed`` is the pure decision "may this failed try be retried?".
Nothing here awaits or reads a clock: ``now`` is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from qanat.core.balance.base import EndpointLike
from qanat.core.breaker import CircuitBreaker
from qanat.core.breaker_settings import BreakerSettings
from qanat.core.duration import parse_duration
from qanat.core.outlier import CallError, OutlierDetector, OutlierSettings
from qanat.core.retry import RetryPolicy
from qanat.core.window import Counts
from qanat.http import (
    IDEMPOTENT_METHODS,
    PoolOverloaded,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)

Duration = Annotated[float, BeforeValidator(parse_duration)]
E = TypeVar("E", bound=EndpointLike)
#: The retry conditions a route may name (Envoy's ``x-envoy-retry-on`` values).
RETRY_ON = ("connect-failure", "reset", "5xx", "gateway-error", "retriable-4xx",
            "retriable-status-codes")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RetryConfig(_Model):
    """``route.retry``. Without it a route never retries (Envoy: no policy, no retry)."""

    num_retries: int = Field(default=1, ge=0, le=10)  # Envoy's default: one retry
    retry_on: list[str] = Field(default_factory=lambda: ["connect-failure", "reset",
                                                         "gateway-error"])
    retriable_status_codes: list[int] = Field(default_factory=list)
    base_interval: Duration = 0.025  # Envoy: 25 ms, full jitter
    max_interval: Duration | None = None  # Envoy: 10 x base_interval
    budget_percent: float = Field(default=20.0, ge=0, le=100)  # Envoy retry_budget
    min_retry_concurrency: int = Field(default=3, ge=0)
    max_buffered_body: int = Field(default=64 * 1024, ge=0, le=16 << 20)

    @model_validator(mode="after")
    def _valid(self) -> RetryConfig:
        unknown = [c for c in self.retry_on if c not in RETRY_ON]
        if unknown:
            raise ValueError(f"unknown retry_on {unknown}; use any of {', '.join(RETRY_ON)}")
        bad = [c for c in self.retriable_status_codes if not 100 <= c <= 599]
        if bad:
            raise ValueError(f"retriable_status_codes must be HTTP statuses, got {bad}")
        if self.retriable_status_codes and "retriable-status-codes" not in self.retry_on:
            raise ValueError("retriable_status_codes needs 'retriable-status-codes' in retry_on")
        if self.max_interval is not None and self.max_interval < self.base_interval:
            raise ValueError("max_interval must be >= base_interval")
        return self

    def policy(self) -> RetryPolicy:
        """The core ``RetryPolicy`` (attempts = 1 + num_retries)."""
        return RetryPolicy(
            max_attempts=1 + self.num_retries, base=self.base_interval, cap=self.max_interval,
            retry_on=frozenset(self.retry_on),
            retriable_status_codes=frozenset(self.retriable_status_codes),
        )


class BreakerConfig(_Model):
    """``upstream.breaker``: a circuit breaker per instance (sony/gobreaker semantics).

    Opens after ``consecutive_failures`` failed calls in a row (a 5xx, a
    connect failure, a reset or a timeout), stays open ``timeout``, then lets
    ``max_requests`` trial calls through; ``interval`` clears the closed-state
    counts periodically (0: never).
    """

    consecutive_failures: int = Field(default=5, ge=1)
    timeout: Duration = 30.0
    max_requests: int = Field(default=1, ge=1)
    interval: Duration = 0.0

    def settings(self, name: str) -> BreakerSettings:
        n = self.consecutive_failures

        def trip(counts: Counts) -> bool:
            return counts.consecutive_failures >= n

        return BreakerSettings(name=name, max_requests=self.max_requests, interval=self.interval,
                               timeout=self.timeout, ready_to_trip=trip)


class OutlierConfig(_Model):
    """``upstream.outlier_detection``: Envoy's fields and defaults (``OutlierSettings``)."""

    consecutive_5xx: int | None = Field(default=5, ge=1)
    consecutive_gateway_failure: int | None = Field(default=5, ge=1)
    interval: Duration = 10.0
    base_ejection_time: Duration = 30.0
    max_ejection_time: Duration = 300.0
    max_ejection_percent: float = Field(default=10.0, ge=0, le=100)
    success_rate_minimum_hosts: int = Field(default=5, ge=1)
    success_rate_request_volume: int = Field(default=100, ge=1)
    success_rate_stdev_factor: float = Field(default=1.9, ge=0)

    def settings(self) -> OutlierSettings:
        return OutlierSettings(**self.model_dump())


@dataclass(frozen=True, slots=True)
class InstanceState:
    """One upstream instance as the admin endpoint shows it."""

    id: str
    host: str
    port: int
    version: str
    breaker: str  # "closed", "half-open", "open", or "none" without a breaker
    breaker_retry_after: float | None  # seconds until an open breaker half-opens
    consecutive_failures: int
    ejected_until: float | None  # clock time the outlier ejection ends


class _NoBreaker:
    """The null breaker: admits everything, learns nothing."""

    def allow(self, now: float) -> int:
        return 0

    def after(self, ticket: int, success: bool, now: float) -> None:
        return None

    def after_excluded(self, ticket: int, now: float) -> None:
        return None


_NO_BREAKER = _NoBreaker()


class InstanceHealth:
    """The breakers (one per instance id) and outlier detector of one upstream.

    ``clock`` only seeds a new breaker's first window; every decision takes ``now``.
    """

    def __init__(self, breaker: BreakerConfig | None, outlier: OutlierConfig | None,
                 name: str, clock: Callable[[], float]) -> None:
        self._config = breaker
        self._name = name
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self.detector = OutlierDetector(outlier.settings()) if outlier is not None else None

    def update(self, ids: Iterable[str]) -> None:
        """The instance set changed: forget departed ids."""
        keep = set(ids)
        for gone in [i for i in self._breakers if i not in keep]:
            del self._breakers[gone]
        if self.detector is not None:
            self.detector.update(keep)

    def epoch(self, now: float) -> int:
        """Changes whenever the ejected set changes (0 without outlier detection)."""
        if self.detector is None:
            return 0
        self.detector.tick(now)
        return self.detector.epoch(now)

    def routable(self, endpoints: Sequence[E], now: float) -> list[E]:
        """``endpoints`` minus the ejected ones; all of them when fewer than half would
        remain (Envoy's panic threshold: better every host than an overloaded few)."""
        if self.detector is None:
            return list(endpoints)
        kept = self.detector.apply(endpoints, now)
        return kept if 2 * len(kept) >= len(endpoints) else list(endpoints)

    def breaker(self, instance_id: str) -> CircuitBreaker | _NoBreaker:
        if self._config is None:
            return _NO_BREAKER
        b = self._breakers.get(instance_id)
        if b is None:
            settings = self._config.settings(f"{self._name}/{instance_id}")
            b = self._breakers[instance_id] = CircuitBreaker(settings, clock=self._clock)
        return b

    def settle(self, instance_id: str, ticket: int, outcome: int | CallError | None,
               now: float) -> None:
        """Record a try: an HTTP status, a ``CallError``, or None (not the instance's fault)."""
        b = self.breaker(instance_id)
        if outcome is None:
            b.after_excluded(ticket, now)
            return
        b.after(ticket, isinstance(outcome, int) and outcome < 500, now)
        if self.detector is not None:
            self.detector.record(instance_id, outcome, now)

    def retry_after(self, ids: Iterable[str], now: float) -> float:
        """Seconds until the first of the open breakers of ``ids`` half-opens."""
        waits = [b.stats(now).retry_after for i in ids if (b := self._breakers.get(i))]
        return min((w for w in waits if w is not None), default=0.0)

    def state(self, instance_id: str, now: float) -> tuple[str, float | None, int, float | None]:
        """(breaker state, its retry_after, consecutive failures, ejection end) of one id."""
        b = self._breakers.get(instance_id)
        until = None
        if self.detector is not None and self.detector.is_ejected(instance_id, now):
            until = self.detector.stats().ejected.get(instance_id)
        if b is None:
            return ("none" if self._config is None else "closed"), None, 0, until
        s = b.stats(now)
        return s.state.value, s.retry_after, s.counts.consecutive_failures, until


def call_error(exc: UpstreamError) -> CallError | None:
    """How a transport error counts against an instance (None: it does not)."""
    if isinstance(exc, PoolOverloaded):
        return None  # our own queue is full: says nothing about the instance
    if isinstance(exc, UpstreamTimeout):
        return CallError.TIMEOUT
    if not exc.request_sent:
        return CallError.CONNECT_FAILURE
    return CallError.RESET


def retry_allowed(policy: RetryPolicy, method: bytes, replayable: bool,
                  status: int | None = None, error: UpstreamError | None = None) -> bool:
    """Whether a failed try may be tried again (attempt count and budget aside).

    The safety rule comes first: a request the upstream may have acted on
    (a response came back, or ``request_sent``) is retried only when its method
    is idempotent (RFC 9110 §9.2.2) and its body can be sent again. Then the
    condition must be named in ``retry_on``, as in Envoy's router:
    ``connect-failure`` (nothing sent), ``reset`` (connection lost or garbage),
    ``5xx`` and ``gateway-error`` (which also cover both of those and a per-try
    timeout, Envoy's 504), ``retriable-4xx`` (409) and ``retriable-status-codes``.
    A full upstream queue (``PoolOverloaded``) is never retried: retries would
    add to the overload (Envoy does not retry circuit-breaker overflow either).
    """
    idempotent = method in IDEMPOTENT_METHODS
    if status is not None:
        return idempotent and replayable and policy.retryable_status(status)
    if error is None or isinstance(error, PoolOverloaded):
        return False
    on = policy.retry_on
    broad = "5xx" in on or "gateway-error" in on
    if not error.request_sent:
        return broad or "connect-failure" in on
    if not (idempotent and replayable):
        return False
    if isinstance(error, UpstreamTimeout):
        return broad
    if isinstance(error, UpstreamReset | UpstreamProtocolError):
        return broad or "reset" in on
    return False


def remaining(deadline: float, now: float) -> float:
    """Seconds left before ``deadline`` (never negative; inf stays inf)."""
    return max(0.0, deadline - now) if math.isfinite(deadline) else math.inf


__all__ = [
    "RETRY_ON",
    "BreakerConfig",
    "InstanceHealth",
    "InstanceState",
    "OutlierConfig",
    "RetryConfig",
    "call_error",
    "remaining",
    "retry_allowed",
]
