"""Prometheus metrics for a service: requests, errors and latency per route.

Names follow Prometheus conventions (``_total`` counters, seconds, bounded
labels): the route label is the route *template* (``/users/{id}``), never the
raw path, so cardinality stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The metric families of one service, in a registry of its own."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "qanat_http_requests_total",
            "HTTP requests handled, by route template, method and status code.",
            ["service", "route", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "qanat_http_errors_total",
            "HTTP requests that ended in a 5xx or an exception.",
            ["service", "route", "method"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "qanat_http_request_duration_seconds",
            "Time to handle an HTTP request, by route template and method.",
            ["service", "route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "qanat_http_requests_in_flight",
            "HTTP requests being handled now.",
            ["service"],
            registry=self.registry,
        )
        self.service = service

    def add_gauges(
        self,
        name: str,
        doc: str,
        labels: list[str],
        read: Callable[[], Iterable[tuple[list[str], float]]],
    ) -> None:
        """Expose a gauge family read on every scrape (breaker states, pool statistics)."""
        self.registry.register(_ReadOnScrape(name, doc, labels, read))


class _ReadOnScrape(Collector):
    def __init__(
        self,
        name: str,
        doc: str,
        labels: list[str],
        read: Callable[[], Iterable[tuple[list[str], float]]],
    ) -> None:
        self._name, self._doc, self._labels, self._read = name, doc, labels, read

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self._name, self._doc, labels=self._labels)
        for label_values, value in self._read():
            family.add_metric(label_values, value)
        yield family

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self._name, self._doc, labels=self._labels)]
