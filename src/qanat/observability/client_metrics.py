"""Gauges and counters for a service's outgoing side: breakers, bulkheads, throttles, the pool.

Read at scrape time from the components' own ``stats()`` (their state as
data), so nothing is updated on the request path. Breaker state follows the
Prometheus "state set" pattern: one series per state, 1 for the current one.
A target's bulkhead and adaptive throttle families (``GUARD_FAMILIES``) have
series only for the targets whose policy has one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from qanat.http import PoolStats
from qanat.observability.metrics import ServiceMetrics

BREAKER_STATES = ("closed", "half-open", "open")

_Read = Callable[[Mapping[str, Any]], float | None]
"""Reads one value from a client's ``stats()``; None: the client has no such component."""


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


def _bulkhead(field: str) -> _Read:
    def read(stats: Mapping[str, Any]) -> float | None:
        bulkhead = stats.get("bulkhead")
        return None if bulkhead is None else float(getattr(bulkhead, field))

    return read


def _refused(kind: str) -> _Read:
    def read(stats: Mapping[str, Any]) -> float | None:
        if stats.get(kind) is None:
            return None
        return float(stats.get("refused", {}).get(kind, 0))

    return read


def _reject_ratio(stats: Mapping[str, Any]) -> float | None:
    throttle = stats.get("throttle")
    return None if throttle is None else float(throttle.reject_probability)


GUARD_FAMILIES: tuple[tuple[str, str, str, _Read], ...] = (
    ("gauge", "qanat_client_bulkhead_in_use",
     "Calls holding a slot of the target's bulkhead.", _bulkhead("in_flight")),
    ("gauge", "qanat_client_bulkhead_max_concurrent",
     "Slots of the target's bulkhead (its maxConcurrent).", _bulkhead("max_concurrent")),
    ("gauge", "qanat_client_bulkhead_queued",
     "Calls waiting for a slot of the target's bulkhead.", _bulkhead("queued")),
    ("gauge", "qanat_client_bulkhead_max_queue",
     "Places in the queue of the target's bulkhead (its maxQueue).", _bulkhead("max_queue")),
    ("counter", "qanat_client_bulkhead_rejected_total",
     "Attempts refused for want of a bulkhead slot (queue full, maxWait or the call's "
     "deadline passed); none was sent.", _refused("bulkhead")),
    ("counter", "qanat_client_throttle_rejected_total",
     "Attempts shed by the target's adaptive throttle; none was sent.", _refused("throttle")),
    ("gauge", "qanat_client_throttle_reject_ratio",
     "Probability (0 to 1) that the target's adaptive throttle sheds the next attempt.",
     _reject_ratio),
)  # fmt: skip
"""(type, name, help, read): each family is labelled (service, target)."""


def guard_samples(
    service: str,
    clients: Iterable[_HasStats],
    read: _Read,
) -> list[tuple[list[str], float]]:
    """(service, target) -> ``read(client.stats())``, for the clients where it is not None."""
    samples: list[tuple[list[str], float]] = []
    for client in clients:
        stats = client.stats()
        value = read(stats)
        if value is not None:
            samples.append(([service, stats["target"]], value))
    return samples


def _guard_reader(
    service: str,
    clients: Callable[[], Iterable[_HasStats]],
    read: _Read,
) -> Callable[[], list[tuple[list[str], float]]]:
    return lambda: guard_samples(service, clients(), read)


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
    for kind, name, doc, read in GUARD_FAMILIES:
        add = metrics.add_gauges if kind == "gauge" else metrics.add_counters
        add(name, doc, ["service", "target"], _guard_reader(service, clients, read))

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
