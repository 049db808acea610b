"""The breakers and outlier detector of one upstream, and what they show the admin page.

``InstanceHealth`` keeps one ``qanat.core.breaker.CircuitBreaker`` per
instance (gobreaker semantics; a null breaker when none is configured) and
one ``qanat.core.outlier.OutlierDetector`` (Envoy's outlier detection) for
the upstream. Pure: every decision takes ``now``; the clock only seeds a new
breaker's first window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from qanat.core.balance.base import EndpointLike
from qanat.core.breaker import CircuitBreaker
from qanat.core.outlier import CallError, OutlierDetector

if TYPE_CHECKING:
    from qanat.gateway.resilience import BreakerConfig, OutlierConfig

E = TypeVar("E", bound=EndpointLike)


class _Described(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def version(self) -> str: ...


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
    ejected_for: float | None = None  # seconds left of the ejection


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

    def state(self, target: _Described, now: float) -> InstanceState:
        """``target``'s breaker state, failures in a row and outlier ejection (read-only)."""
        b = self._breakers.get(target.id)
        until = None
        if self.detector is not None and self.detector.is_ejected(target.id, now):
            until = self.detector.stats().ejected.get(target.id)
        left = None if until is None else max(0.0, until - now)
        if b is None:
            name = "none" if self._config is None else "closed"
            return InstanceState(target.id, target.host, target.port, target.version, name,
                                 None, 0, until, left)
        s = b.stats(now)
        return InstanceState(target.id, target.host, target.port, target.version,
                             s.state.value, s.retry_after, s.counts.consecutive_failures,
                             until, left)


__all__ = ["InstanceHealth", "InstanceState"]
