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

import bisect
from collections.abc import Callable, Iterable
from typing import Literal

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Samples = Callable[[], Iterable[tuple[list[str], float]]]
"""Reads ``(label values, value)`` pairs at scrape time."""


class ServiceMetrics:
    """The metric families of one service, in a registry of its own.

    ``qanat_http_requests_total{service,route,method,status}``;
    ``qanat_http_errors_total{service,route,method}`` (5xx and exceptions);
    ``qanat_http_request_duration_seconds`` histogram ``{service,route,method}``;
    ``qanat_http_requests_in_flight{service}``.

    Counting a request is a few dictionary updates on plain numbers — no
    ``prometheus_client`` label lookup, no lock — and the families are built
    when Prometheus scrapes (a "custom collector", as the gateway's metrics
    are). ``observe`` runs on the event loop only, so nothing races it; a
    scrape from another thread reads a snapshot.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests: dict[tuple[str, str, int], int] = {}  # (route, method, status) -> n
        self.errors: dict[tuple[str, str], int] = {}  # (route, method) -> n
        self.latency: dict[tuple[str, str], _Histogram] = {}  # (route, method) -> histogram
        self.registry.register(_RequestFamilies(self))
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

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request (and an error when ``status`` is 5xx)."""
        key = (route, method, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        hkey = (route, method)
        hist = self.latency.get(hkey)
        if hist is None:
            hist = self.latency[hkey] = _Histogram()
        # bisect_left: the first bucket whose bound is >= seconds ("le" semantics).
        hist.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hist.sum += seconds
        if status >= 500:
            self.errors[hkey] = self.errors.get(hkey, 0) + 1

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


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, the last is +Inf
        self.sum = 0.0


_BOUNDS = [*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf"]


class _RequestFamilies(Collector):
    """The request families of a ``ServiceMetrics``, built from its counts at scrape time."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m, service = self._metrics, self._metrics.service
        requests = CounterMetricFamily(
            "qanat_http_requests",
            "HTTP requests handled, by route template, method and status code.",
            labels=["service", "route", "method", "status"],
        )
        for (route, method, status), n in sorted(list(m.requests.items())):
            requests.add_metric([service, route, method, str(status)], n)
        yield requests
        errors = CounterMetricFamily(
            "qanat_http_errors",
            "HTTP requests that ended in a 5xx or an exception.",
            labels=["service", "route", "method"],
        )
        for (route, method), n in sorted(list(m.errors.items())):
            errors.add_metric([service, route, method], n)
        yield errors
        latency = HistogramMetricFamily(
            "qanat_http_request_duration_seconds",
            "Time to handle an HTTP request, by route template and method.",
            labels=["service", "route", "method"],
        )
        for (route, method), hist in sorted(list(m.latency.items())):
            cumulative, total = [], 0
            for bound, n in zip(_BOUNDS, list(hist.counts), strict=True):
                total += n
                cumulative.append((bound, total))
            latency.add_metric([service, route, method], cumulative, hist.sum)
        yield latency


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
