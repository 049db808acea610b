"""The resiliency spec: named timeouts, retries, breakers, bulkheads and throttles.

The shape follows Dapr's resiliency spec (``policies`` of named building
blocks, ``targets`` binding them to services), so a Dapr file reads unchanged;
qanat adds ``bulkheads``, ``throttles`` and a few retry fields. Field names
are Dapr's camelCase. See ``docs/policies.md``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from qanat.core.duration import parse_duration
from qanat.core.retry import CONDITIONS
from qanat.core.window import Counts

Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetrySpec(_Spec):
    """A named retry policy (Dapr: ``policy``, ``duration``, ``maxInterval``, ``maxRetries``)."""

    policy: Literal["constant", "exponential"] = "exponential"
    duration: Duration = 0.025  # constant: the interval; exponential: the base delay
    max_interval: Duration | None = Field(default=None, alias="maxInterval")
    max_retries: int = Field(default=1, ge=-1, alias="maxRetries")  # -1: until maxElapsed
    max_elapsed: Duration | None = Field(default=None, alias="maxElapsed")
    jitter: Literal["full", "equal", "decorrelated", "none"] = "full"
    retry_on: tuple[str, ...] = Field(
        default=("connect-failure", "reset", "gateway-error", "unavailable"), alias="retryOn"
    )
    status_codes: str = Field(default="", alias="statusCodes")  # "429,500-503"
    budget_percent: float = Field(default=20.0, gt=0, le=100, alias="budgetPercent")
    # None: the budget's floor scales, max(3, calls in flight / instances) (RetryBudget)
    budget_min_concurrency: int | None = Field(default=None, ge=0, alias="budgetMinConcurrency")

    @field_validator("retry_on")
    @classmethod
    def _conditions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - CONDITIONS)
        if unknown:
            raise ValueError(f"unknown condition(s) {unknown}; allowed: {sorted(CONDITIONS)}")
        return value

    @field_validator("status_codes")
    @classmethod
    def _codes(cls, value: str) -> str:
        parse_status_codes(value)
        return value

    @model_validator(mode="after")
    def _bounded(self) -> RetrySpec:
        if self.max_retries == -1 and self.max_elapsed is None:
            raise ValueError("maxRetries: -1 (retry forever) needs maxElapsed to bound it")
        return self


class BreakerSpec(_Spec):
    """A named circuit breaker (Dapr: ``maxRequests``, ``interval``, ``timeout``, ``trip``)."""

    max_requests: int = Field(default=1, ge=0, alias="maxRequests")
    interval: Duration = 0.0
    timeout: Duration = 60.0
    bucket_period: Duration = Field(default=0.0, alias="bucketPeriod")
    trip: str = "consecutiveFailures > 5"

    @field_validator("trip")
    @classmethod
    def _trip(cls, value: str) -> str:
        parse_trip(value)
        return value


class BulkheadSpec(_Spec):
    max_concurrent: int = Field(ge=1, alias="maxConcurrent")
    max_queue: int = Field(default=0, ge=0, alias="maxQueue")
    max_wait: Duration | None = Field(default=None, alias="maxWait")


class ThrottleSpec(_Spec):
    k: float = Field(default=2.0, gt=0)
    window: Duration = 10.0


class TargetSpec(_Spec):
    """The policies bound to one target; each names an entry of ``policies``."""

    timeout: str | None = None
    per_try_timeout: str | None = Field(default=None, alias="perTryTimeout")
    retry: str | None = None
    circuit_breaker: str | None = Field(default=None, alias="circuitBreaker")
    bulkhead: str | None = None
    throttle: str | None = None
    load_balancer: str | None = Field(default=None, alias="loadBalancer")


class Targets(_Spec):
    services: dict[str, TargetSpec] = Field(default_factory=dict)
    apps: dict[str, TargetSpec] = Field(default_factory=dict)  # Dapr's name for services


class ResiliencySpec(_Spec):
    timeouts: dict[str, Duration] = Field(default_factory=dict)
    retries: dict[str, RetrySpec] = Field(default_factory=dict)
    circuit_breakers: dict[str, BreakerSpec] = Field(default_factory=dict, alias="circuitBreakers")
    bulkheads: dict[str, BulkheadSpec] = Field(default_factory=dict)
    throttles: dict[str, ThrottleSpec] = Field(default_factory=dict)
    targets: Targets = Targets()

    @model_validator(mode="before")
    @classmethod
    def _unwrap_dapr(cls, data: Any) -> Any:
        """Accept Dapr's CRD shape: ``spec: {policies: {...}, targets: {...}}``."""
        if isinstance(data, dict) and "spec" in data:
            spec = data["spec"] or {}
            return {**(spec.get("policies") or {}), "targets": spec.get("targets") or {}}
        return data

    @model_validator(mode="after")
    def _references_exist(self) -> ResiliencySpec:
        kinds: dict[str, dict[str, Any]] = {
            "timeout": self.timeouts,
            "per_try_timeout": self.timeouts,
            "retry": self.retries,
            "circuit_breaker": self.circuit_breakers,
            "bulkhead": self.bulkheads,
            "throttle": self.throttles,
        }
        for group in ("services", "apps"):
            for name, target in getattr(self.targets, group).items():
                for field, table in kinds.items():
                    ref = getattr(target, field)
                    if ref is not None and ref not in table:
                        known = ", ".join(sorted(table)) or "none defined"
                        raise ValueError(
                            f"targets.{group}.{name}: {field} {ref!r} is not defined "
                            f"(known: {known})"
                        )
        return self

    def target(self, name: str) -> TargetSpec | None:
        return self.targets.services.get(name) or self.targets.apps.get(name)


# -- trip expressions ------------------------------------------------------------------

_COUNTERS = {
    "requests": "requests",
    "totalSuccesses": "total_successes",
    "totalFailures": "total_failures",
    "totalExclusions": "total_exclusions",
    "consecutiveSuccesses": "consecutive_successes",
    "consecutiveFailures": "consecutive_failures",
}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
_TERM = re.compile(r"^\s*([A-Za-z]+)\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)?)\s*$")


def parse_trip(expr: str) -> Callable[[Counts], bool]:
    """Compile a Dapr-style trip expression, e.g. ``consecutiveFailures > 5``.

    Terms ``counter op number`` joined by ``&&`` and ``||`` (``&&`` binds
    tighter); counters: requests, totalSuccesses, totalFailures,
    totalExclusions, consecutiveSuccesses, consecutiveFailures.
    """
    alternatives: list[list[tuple[str, Callable[[float, float], bool], float]]] = []
    for alternative in expr.split("||"):
        terms = []
        for term in alternative.split("&&"):
            match = _TERM.match(term)
            if match is None or match.group(1) not in _COUNTERS:
                raise ValueError(
                    f"cannot read trip expression {expr!r} at {term.strip()!r}: use "
                    f"'counter op number' joined by && or ||; counters: {', '.join(_COUNTERS)}"
                )
            name, op, number = match.groups()
            terms.append((_COUNTERS[name], _OPS[op], float(number)))
        alternatives.append(terms)

    def ready_to_trip(counts: Counts) -> bool:
        return any(
            all(op(getattr(counts, attr), number) for attr, op, number in terms)
            for terms in alternatives
        )

    return ready_to_trip


def parse_status_codes(text: str) -> frozenset[int]:
    """``"429,500-503"`` -> {429, 500, 501, 502, 503}."""
    codes: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        try:
            lo, hi = int(low), int(high or low)
        except ValueError:
            raise ValueError(
                f"status codes: {part!r} is not a code or a range like 500-503"
            ) from None
        if not 100 <= lo <= hi <= 599:
            raise ValueError(f"status codes: {part!r} is outside 100-599")
        codes.update(range(lo, hi + 1))
    return frozenset(codes)
