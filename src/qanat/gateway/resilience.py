"""Per-route resilience: retry, breaker and outlier settings, and the state they drive.

Three route-model blocks live here (``config.py`` uses them):

- ``RetryConfig`` (``route.retry``): Envoy's router retry policy — named
  conditions, ``num_retries``, full-jitter backoff from 25 ms, a retry budget
  (active retries <= max(floor, budget_percent % of active requests); 100 % by
  default, as Envoy Gateway allows as many retries in flight as requests) and
  the body-buffer bound that decides whether a streamed upload can be replayed.
- ``BreakerConfig`` (``upstream.breaker``): one gobreaker-style
  ``CircuitBreaker`` per upstream instance.
- ``OutlierConfig`` (``upstream.outlier_detection``): Envoy's passive health
  checking (``OutlierDetector``) over the route's instances.

``InstanceHealth`` (``instance_health.py``, re-exported here) holds the
breakers and the detector of one upstream; ``retry_allowed`` is the pure
decision "may this failed try be retried?".
Nothing here awaits or reads a clock: ``now`` is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from qanat.core.breaker_settings import BreakerSettings
from qanat.core.duration import parse_duration
from qanat.core.outlier import CallError, OutlierSettings
from qanat.core.retry import RetryPolicy
from qanat.core.window import Counts
from qanat.gateway.instance_health import InstanceHealth, InstanceState
from qanat.http import (
    IDEMPOTENT_METHODS,
    PoolOverloaded,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)

Duration = Annotated[float, BeforeValidator(parse_duration)]
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
    # Retries in flight <= max(floor, budget_percent % of requests in flight). 100: each
    # request may have its retry in flight, so the budget never refuses one (Envoy Gateway's
    # default: max_retries 1024, as many as requests; Envoy's 20 % with a floor of 3 refused
    # the retries of a killed instance's 4th call: docs/retries.md, "The gateway's default").
    budget_percent: float = Field(default=100.0, ge=0, le=100)
    # None: the floor scales, max(3, ceil(requests in flight / instances)) (core.retry_budget)
    min_retry_concurrency: int | None = Field(default=None, ge=0)
    max_buffered_body: int = Field(default=64 * 1024, ge=0, le=16 << 20)
    # An upstream's Retry-After (RFC 9110 §10.2.3) up to this long is waited out
    # instead of the backoff; a longer one is not retried (the client gets it).
    max_retry_after: Duration = Field(default=1.0, ge=0)
    # A POST/PATCH carrying an Idempotency-Key header may be retried like a PUT.
    idempotency_key: bool = False

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
            retry_after_cap=self.max_retry_after,
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
                  status: int | None = None, error: UpstreamError | None = None, *,
                  keyed: bool = False) -> bool:
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

    ``keyed``: the request carries an ``Idempotency-Key`` the route trusts
    (``retry.idempotency_key: true``), so the upstream promises to apply it
    once however often it arrives (IETF httpapi idempotency-key draft): any
    method is then as safe to resend as an idempotent one.
    """
    idempotent = keyed or method in IDEMPOTENT_METHODS
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


def has_idempotency_key(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether the request carries a non-empty ``Idempotency-Key`` header."""
    return any(k == b"idempotency-key" and v.strip() for k, v in headers)


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
    "has_idempotency_key",
    "remaining",
    "retry_allowed",
]
