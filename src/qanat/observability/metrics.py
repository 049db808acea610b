"""Prometheus metrics for a service: requests, errors and latency per route, and state gauges.

Names follow the Prometheus conventions (``_total`` counters, base units —
seconds —, HELP and TYPE for every family, bounded labels): the route label
is the route *template* (``/users/{id}``), never the raw path, and a request
that matched no route is labelled ``<unmatched>``. Each ``ServiceMetrics`` has
a registry of its own, so two services in one process (tests) do not clash.

State that already exists as data — breaker states, pool statistics — is not
copied into metric objects on every change: it is read when Prometheus
scrapes (``add_gauges``, ``add_counters``), as the Prometheus client guide
recommends for "custom collectors".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Samples = Callable[[], Iterable[tuple[list[str], float]]]
"""Reads ``(label values, value)`` pairs at scrape time."""


class ServiceMetrics:
    """The metric families of one service, in a registry of its own.

    ``requests``: ``qanat_http_requests_total{service,route,method,status}``;
    ``errors``: ``qanat_http_errors_total{service,route,method}`` (5xx and
    exceptions); ``latency``: ``qanat_http_request_duration_seconds``
    histogram ``{service,route,method}``; ``in_flight``:
    ``qanat_http_requests_in_flight{service}``.
    """

    def __init__(self, service: str) -> None:
        self.service = service
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
        # The request path only moves a plain counter; the gauge reads it when scraped
        # (set_function), instead of taking the gauge's lock twice per request.
        self.in_flight_now = Level()
        self.in_flight.labels(service).set_function(self.in_flight_now.get)
        # Label children by (route, method, status): labels() costs a lock and a tuple per call.
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request (and an error when ``status`` is 5xx)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(self.service, route, method, str(status)),
                self.latency.labels(self.service, route, method),
                self.errors.labels(self.service, route, method) if status >= 500 else None,
            )
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def add_gauges(self, name: str, doc: str, labels: list[str], read: Samples) -> None:
        """Expose a gauge family read on every scrape (breaker states, pool statistics)."""
        self.registry.register(_ReadOnScrape("gauge", name, doc, labels, read))

    def add_counters(self, name: str, doc: str, labels: list[str], read: Samples) -> None:
        """Expose a counter family read on every scrape; ``name`` must end in ``_total``."""
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total (Prometheus naming)")
        self.registry.register(_ReadOnScrape("counter", name, doc, labels, read))

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format, as ``/metrics`` serves it."""
        return generate_latest(self.registry)


class Level:
    """A number of things in progress: ``inc``/``dec`` on the event loop, ``get`` at scrape.

    Unlocked on purpose: the middleware moves it from the event-loop thread only,
    and a scrape reading a value one request old is harmless.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1

    def get(self) -> float:
        return float(self.value)


class _ReadOnScrape(Collector):
    def __init__(
        self,
        kind: Literal["gauge", "counter"],
        name: str,
        doc: str,
        labels: list[str],
        read: Samples,
    ) -> None:
        self._kind, self._name, self._doc, self._labels, self._read = kind, name, doc, labels, read

    def _family(self) -> GaugeMetricFamily | CounterMetricFamily:
        if self._kind == "gauge":
            return GaugeMetricFamily(self._name, self._doc, labels=self._labels)
        return CounterMetricFamily(
            self._name.removesuffix("_total"), self._doc, labels=self._labels
        )

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for label_values, value in self._read():
            family.add_metric(label_values, value)
        yield family

    def describe(self) -> Iterable[Metric]:
        return [self._family()]
