"""Per-request outcomes and the gateway's Prometheus metrics.

The gateway hands every finished request to its observers as an ``Outcome``
(route, upstream, instance, status, bytes, duration ...): ``GatewayMetrics``
counts it, ``AccessLog`` writes it. Counting is a few dictionary updates on
plain ints — no ``prometheus_client`` label lookup, no lock — and the
families are built when Prometheus scrapes, as the client guide recommends
for "custom collectors" (and as ``qanat.observability.metrics`` does for
state gauges).

Families (Prometheus naming: ``_total`` counters, seconds, bounded labels —
route *names*, never paths; ``upstream`` is the service name or ``static``):

- ``qanat_gateway_requests_total{route,upstream,status}``
- ``qanat_gateway_request_duration_seconds{route,upstream}`` (histogram, until
  the last byte of the response is written)
- ``qanat_gateway_upstream_errors_total{route,upstream,kind}``; ``kind`` is
  ``bad_gateway`` (connect failure, reset, malformed answer), ``timeout``,
  ``no_endpoint``, ``overloaded`` (our upstream queue is full),
  ``circuit_open``, ``route_overloaded`` (``max_concurrent``) — the problem
  type of the 5xx the proxy answered with
- ``qanat_gateway_requests_in_flight``, ``qanat_gateway_connections``
- ``qanat_gateway_rejected_total{status}`` and
  ``qanat_gateway_refused_connections_total`` (from ``Gateway.stats()``)
- ``qanat_gateway_retries_total{route,upstream}`` and
  ``qanat_gateway_retry_overflow_total{route,upstream}``: the retries each
  route's retry budget granted and refused (Envoy's ``upstream_rq_retry`` and
  ``upstream_rq_retry_overflow``), read from the route state at scrape time
  (``add_retry_counters``); a try that never reached an instance is retried
  without asking the budget and counts in neither
- ``qanat_gateway_jwt_cache_hits_total{route}``,
  ``qanat_gateway_jwt_verifications_total{route}`` and
  ``qanat_gateway_jwt_cache_entries{route}``: each ``jwt`` route's token cache
  (``TokenCache.stats()``): tokens answered from it (by token or by the raw
  ``Authorization`` value), tokens verified in full, tokens held; read from the
  live routes' filters at scrape time (``add_jwt_cache_metrics``)
- whatever ``add_gauges`` and ``add_counters`` add (discovery endpoints ...).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from qanat.gateway.server import ServerStats
from qanat.observability.metrics import LATENCY_BUCKETS

if TYPE_CHECKING:
    from qanat.gateway.route_runtime import RouteState
    from qanat.security.jwt_cache import TokenCacheStats

UNMATCHED = "<unmatched>"  # no route (404) or a request refused before routing
INTERNAL = "<internal>"  # /__qanat/ready and /__qanat/health

Samples = Callable[[], Iterable[tuple[list[str], float]]]


class _HostPort(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("latin-1")


class Outcome:
    """One finished request, as the observers see it.

    ``started`` is wall-clock seconds (for the log's timestamp); ``duration``
    runs from routing until the last byte was written. ``instance`` is the
    upstream ``host:port`` that answered (empty when none was picked);
    ``bytes`` is the response body size (-1 when unknown: a stream cut short).

    The request's own fields may be given as the bytes the gateway holds
    (decoded as Latin-1 when read) and ``instance`` as the target itself
    (formatted when read): the metrics observer reads none of them, so a
    request costs it no decoding.
    """

    __slots__ = ("_client", "_instance", "_method", "_path", "_request_id", "bytes", "duration",
                 "error", "route", "started", "status", "upstream")

    def __init__(self, started: float, duration: float, request_id: str | bytes,
                 client: str | bytes, method: str | bytes, path: str | bytes, route: str,
                 upstream: str, instance: str | _HostPort | None, status: int, bytes: int,
                 error: str | None) -> None:
        self.started = started
        self.duration = duration
        self._request_id = request_id
        self._client = client
        self._method = method
        self._path = path
        self.route = route
        self.upstream = upstream
        self._instance = instance
        self.status = status
        self.bytes = bytes
        self.error = error  # upstream error kind, see the module docstring

    @property
    def request_id(self) -> str:
        return _text(self._request_id)

    @property
    def client(self) -> str:
        return _text(self._client)

    @property
    def method(self) -> str:
        return _text(self._method)

    @property
    def path(self) -> str:
        return _text(self._path)

    @property
    def instance(self) -> str:
        i = self._instance
        if i is None or isinstance(i, str):
            return i or ""
        return f"{i.host}:{i.port}"

    def _fields(self) -> tuple[object, ...]:
        return (self.started, self.duration, self.request_id, self.client, self.method,
                self.path, self.route, self.upstream, self.instance, self.status, self.bytes,
                self.error)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Outcome) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it replaces

    def __repr__(self) -> str:
        names = ("started", "duration", "request_id", "client", "method", "path", "route",
                 "upstream", "instance", "status", "bytes", "error")
        return "Outcome(" + ", ".join(f"{n}={v!r}" for n, v in zip(names, self._fields(),
                                                                   strict=True)) + ")"


Observer = Callable[[Outcome], None]


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # per bucket (not cumulative), the last is +Inf
        self.sum = 0.0


class GatewayMetrics:
    """Counts outcomes; ``exposition()`` renders them (and the live gauges) for /metrics.

    ``stats`` reads the server's counters; ``in_flight`` the requests being
    handled now (both called at scrape time only).
    """

    def __init__(
        self,
        stats: Callable[[], ServerStats],
        in_flight: Callable[[], int],
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> None:
        self._stats = stats
        self._in_flight = in_flight
        self._buckets = buckets
        self.requests: dict[tuple[str, str, int], int] = {}
        self.errors: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Families(self))
        self._extra: dict[str, tuple[str, list[str], Samples, bool]] = {}

    def __call__(self, o: Outcome) -> None:
        """Count one outcome (the hot path: three dictionary updates)."""
        key = (o.route, o.upstream, o.status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hkey = (o.route, o.upstream)
        hist = self.latency.get(hkey)
        if hist is None:
            hist = self.latency[hkey] = _Histogram(len(self._buckets) + 1)
        hist.counts[bisect.bisect_left(self._buckets, o.duration)] += 1
        hist.sum += o.duration
        if o.error is not None:
            ekey = (o.route, o.upstream, o.error)
            self.errors[ekey] = self.errors.get(ekey, 0) + 1

    def add_gauges(self, name: str, doc: str, labels: list[str], read: Samples) -> None:
        """Expose a gauge family read on every scrape (again with ``name``: replaced)."""
        self._extra[name] = (doc, labels, read, False)

    def add_counters(self, name: str, doc: str, labels: list[str], read: Samples) -> None:
        """Expose a counter family read on every scrape; ``name`` without ``_total``."""
        self._extra[name] = (doc, labels, read, True)

    def exposition(self) -> bytes:
        """Everything in the Prometheus text format (what ``GET /metrics`` answers)."""
        return generate_latest(self.registry)

    def families(self) -> Iterable[Metric]:
        yield from self._request_families()
        stats = self._stats()
        yield _gauge("qanat_gateway_requests_in_flight",
                     "Requests being handled now.", [], [([], self._in_flight())])
        yield _gauge("qanat_gateway_connections", "Open client connections.", [],
                     [([], stats.connections)])
        rejected = CounterMetricFamily(
            "qanat_gateway_rejected", "Error answers the gateway wrote, by status.",
            labels=["status"])
        for status, n in sorted(stats.rejected.items()):
            rejected.add_metric([str(status)], n)
        yield rejected
        yield CounterMetricFamily(
            "qanat_gateway_refused_connections",
            "Connections refused at the connection cap.", value=stats.refused_connections)
        for name, (doc, labels, read, counter) in self._extra.items():
            if counter:
                family = CounterMetricFamily(name, doc, labels=labels)
                for values, value in read():
                    family.add_metric(values, value)
                yield family
            else:
                yield _gauge(name, doc, labels, read())

    def _request_families(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "qanat_gateway_requests", "Requests answered, by route, upstream and status.",
            labels=["route", "upstream", "status"])
        for (route, upstream, status), n in sorted(self.requests.items()):
            requests.add_metric([route, upstream, str(status)], n)
        yield requests
        errors = CounterMetricFamily(
            "qanat_gateway_upstream_errors",
            "Requests that failed at the upstream, by kind.",
            labels=["route", "upstream", "kind"])
        for (route, upstream, kind), n in sorted(self.errors.items()):
            errors.add_metric([route, upstream, kind], n)
        yield errors
        latency = HistogramMetricFamily(
            "qanat_gateway_request_duration_seconds",
            "Time from routing to the last byte of the response.",
            labels=["route", "upstream"])
        bounds = [*(repr(float(b)) for b in self._buckets), "+Inf"]
        for (route, upstream), hist in sorted(self.latency.items()):
            cumulative, total = [], 0
            for bound, n in zip(bounds, hist.counts, strict=True):
                total += n
                cumulative.append((bound, total))
            latency.add_metric([route, upstream], cumulative, hist.sum)
        yield latency


def _gauge(
    name: str, doc: str, labels: list[str], samples: Iterable[tuple[list[str], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def add_retry_counters(metrics: GatewayMetrics,
                       routes: Callable[[], Mapping[str, RouteState]],
                       upstreams: Callable[[], Mapping[str, str]]) -> None:
    """Register ``qanat_gateway_retries_total`` and ``qanat_gateway_retry_overflow_total``.

    ``routes`` is ``Gateway.upstream_state`` (each route's retry budget stats);
    ``upstreams`` maps a route name to its ``upstream`` label. A route whose
    budget settings change by a reload gets a new budget, and its counters
    start again from 0 (a counter reset, as Prometheus expects of a restart).
    """

    def read(field: str) -> Samples:
        def samples() -> list[tuple[list[str], float]]:
            labels = upstreams()
            return [([name, labels.get(name, "")], getattr(state.retry_budget, field))
                    for name, state in sorted(routes().items())
                    if state.retry_budget is not None]

        return samples

    metrics.add_counters(
        "qanat_gateway_retries",
        "Retries the route's retry budget granted (Envoy's upstream_rq_retry; a try that "
        "never reached an instance is retried without the budget and is not counted).",
        ["route", "upstream"], read("granted"))
    metrics.add_counters(
        "qanat_gateway_retry_overflow",
        "Retries the route's retry budget refused; the client got the failed try's answer "
        "(Envoy's upstream_rq_retry_overflow).",
        ["route", "upstream"], read("refused"))


def add_jwt_cache_metrics(metrics: GatewayMetrics,
                          caches: Callable[[], Mapping[str, TokenCacheStats]]) -> None:
    """Register each ``jwt`` route's token cache counters and entries gauge.

    ``caches`` maps a route name to its jwt filter's ``TokenCache.stats()``,
    read at every scrape from the routes being served; routes without a jwt
    filter are not in it and have no samples. A filter that a reload rebuilds
    (its config changed) has a new cache: its counters start again from 0.
    """

    def read(value: Callable[[TokenCacheStats], int]) -> Samples:
        def samples() -> list[tuple[list[str], float]]:
            return [([name], value(stats)) for name, stats in sorted(caches().items())]

        return samples

    metrics.add_counters(
        "qanat_gateway_jwt_cache_hits",
        "Tokens the route's jwt filter answered from its cache, by token or by the repeated "
        "Authorization value (no signature check).",
        ["route"], read(lambda s: s.hits + s.alias_hits))
    metrics.add_counters(
        "qanat_gateway_jwt_verifications",
        "Tokens the route's jwt filter verified in full (cache misses: base64, JSON, "
        "signature), whether they passed or not.",
        ["route"], read(lambda s: s.misses))
    metrics.add_gauges(
        "qanat_gateway_jwt_cache_entries", "Verified tokens the route's jwt filter holds.",
        ["route"], read(lambda s: s.entries))


class _Families(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics.families()


_KINDS = {b"upstream-timeout": "timeout", b"upstream-overloaded": "overloaded"}
_SLUG = b'"type":"urn:qanat:problem:'


def error_kind(status: int, body: bytes) -> str | None:
    """The upstream error kind of a 5xx reply the proxy made itself, from its problem type.

    ``bad-gateway`` -> ``bad_gateway``, ``upstream-timeout`` -> ``timeout``,
    ``upstream-overloaded`` -> ``overloaded``, any other slug (``no-endpoint``,
    ``circuit-open``, ``route-overloaded`` ...) with ``_`` for ``-``.
    """
    if status < 500:
        return None
    start = body.find(_SLUG)
    if start < 0:
        return "error"
    start += len(_SLUG)
    slug = body[start:body.find(b'"', start)]
    return _KINDS.get(slug) or slug.decode("latin-1").replace("-", "_")


__all__ = [
    "INTERNAL",
    "UNMATCHED",
    "GatewayMetrics",
    "Observer",
    "Outcome",
    "add_jwt_cache_metrics",
    "add_retry_counters",
    "error_kind",
]
