"""Gauges and counters for a service's outgoing side: breaker states and pool statistics.

Read at scrape time from the components' own ``stats()`` (their state as
data), so nothing is updated on the request path. Breaker state follows the
Prometheus "state set" pattern: one series per state, 1 for the current one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from qanat.http import PoolStats
from qanat.observability.metrics import ServiceMetrics

BREAKER_STATES = ("closed", "half-open", "open")


class _HasStats(Protocol):
    def stats(self) -> Mapping[str, Any]: ...


def breaker_samples(service: str, clients: Iterable[_HasStats]) -> list[tuple[list[str], float]]:
    """``qanat_client_breaker_state`` samples: (service, target, instance, state) -> 0 or 1."""
    samples: list[tuple[list[str], float]] = []
    for client in clients:
        stats = client.stats()
        for instance, state in sorted(stats.get("breakers", {}).items()):
            for candidate in BREAKER_STATES:
                value = 1.0 if str(state) == candidate else 0.0
                samples.append(([service, stats["target"], instance, candidate], value))
    return samples


def add_client_metrics(
    metrics: ServiceMetrics,
    clients: Callable[[], Iterable[_HasStats]],
    pool: Callable[[], PoolStats],
) -> None:
    """Register the outgoing-call families on ``metrics`` (see docs/observability.md)."""
    service = metrics.service
    metrics.add_gauges(
        "qanat_client_breaker_state",
        "Circuit breaker state per target instance: 1 for the current state, 0 otherwise.",
        ["service", "target", "instance", "state"],
        lambda: breaker_samples(service, clients()),
    )

    def connections() -> list[tuple[list[str], float]]:
        s = pool()
        return [([service, "idle"], s.idle), ([service, "in_use"], s.in_use)]

    metrics.add_gauges(
        "qanat_client_pool_connections",
        "Upstream connections held by the pool, by state (idle, in_use).",
        ["service", "state"],
        connections,
    )
    metrics.add_gauges(
        "qanat_client_pool_pending_requests",
        "Requests waiting for a pooled connection.",
        ["service"],
        lambda: [([service], pool().pending)],
    )
    metrics.add_counters(
        "qanat_client_pool_connections_opened_total",
        "TCP connections the pool opened.",
        ["service"],
        lambda: [([service], pool().connections_opened)],
    )
    metrics.add_counters(
        "qanat_client_pool_requests_total",
        "Requests sent through the pool, by whether they reused a kept-alive connection.",
        ["service", "reused"],
        lambda: _requests(service, pool()),
    )


def _requests(service: str, s: PoolStats) -> list[tuple[list[str], float]]:
    return [([service, "true"], s.reused), ([service, "false"], s.requests - s.reused)]
