"""Probes on the public port and the admin endpoints on their own port.

On the public port, before routing (``/__qanat/`` is reserved):

- ``GET /__qanat/ready``: 200 ``{"status": "ready", ...}`` once the routes are
  loaded and discovery has a first snapshot of every routed service; 503
  ``{"status": "not ready", "reasons": [...]}`` before, and while draining.
- ``GET /__qanat/health``: 200 while the process serves (503 while draining),
  with its ``pid``: the liveness probe.

On the admin port (``--admin-port``, bound to 127.0.0.1 by default: it shows
the whole configuration), JSON unless ``?format=table``:

- ``GET /routes``: the active route set, where it came from and its revision,
  the last rejected change;
- ``GET /upstreams``: per route, its instances as discovery sees them (health,
  enabled, panic), each with its circuit breaker (state, failures in a row,
  seconds until half-open) and outlier ejection (seconds left), and the
  route's ``traffic``: in-flight, overflow, and its ``retry_budget``
  (``active_requests``, ``active_retries``, ``granted`` and ``refused``:
  Envoy's ``upstream_rq_retry`` and ``upstream_rq_retry_overflow``), and its
  ``jwt_cache`` (None without a ``jwt`` filter): ``entries``, ``aliases``,
  ``hits`` (all answered from the cache), ``alias_hits`` (of those, by the raw
  ``Authorization`` value) and ``verifications`` (tokens checked in full);
- ``GET /stats``: connections, requests, in-flight, rejections by status;
- ``GET /metrics``: Prometheus text format (``metrics.py``), with the retry
  budgets' counters (``qanat_gateway_retries_total``,
  ``qanat_gateway_retry_overflow_total``) and the jwt token caches'
  (``qanat_gateway_jwt_cache_hits_total``, ``qanat_gateway_jwt_verifications_total``,
  ``qanat_gateway_jwt_cache_entries``) registered here, from the gateway served.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qanat.gateway.config import ServiceUpstream
from qanat.gateway.filters import Reply
from qanat.gateway.filters_auth import AuthFilter
from qanat.gateway.hardening import Limits, RequestRejected, split_target
from qanat.gateway.instance_health import InstanceState
from qanat.gateway.metrics import add_jwt_cache_metrics, add_retry_counters
from qanat.gateway.problem import problem
from qanat.gateway.request import Request
from qanat.gateway.server import HttpServer
from qanat.security.jwt_cache import TokenCacheStats

if TYPE_CHECKING:
    from qanat.gateway.app import Gateway
    from qanat.gateway.discovery import DiscoveryResolver
    from qanat.gateway.metrics import GatewayMetrics

_JSON = b"application/json"
_STARTED = time.time()


def _json(status: int, data: Any, request_id: bytes = b"", *, table: bool = False) -> Reply:
    if table:
        body, kind = render_table(data).encode(), b"text/plain; charset=utf-8"
    else:
        body, kind = json.dumps(data, indent=1, default=str).encode() + b"\n", _JSON
    headers = [(b"content-type", kind), (b"cache-control", b"no-store")]
    if request_id:
        headers.append((b"x-request-id", request_id))
    return Reply(status, headers, body)


def internal_reply(gateway: Gateway, method: bytes, path: bytes, request_id: bytes) -> Reply:
    """The answer to a ``/__qanat/...`` request on the public port."""
    if method not in (b"GET", b"HEAD"):
        reply = problem(405, "the /__qanat/ probes answer GET and HEAD", request_id)
        reply.headers.append((b"allow", b"GET, HEAD"))
        return reply
    if path == b"/__qanat/ready":
        reasons = gateway.not_ready()
        if reasons:
            return _json(503, {"status": "not ready", "reasons": reasons}, request_id)
        return _json(200, {"status": "ready", "routes": len(gateway.routes),
                           "pid": os.getpid()}, request_id)
    if path == b"/__qanat/health":
        if gateway.server.draining:
            return _json(503, {"status": "draining", "pid": os.getpid()}, request_id)
        return _json(200, {"status": "ok", "pid": os.getpid()}, request_id)
    return problem(404, f"no such probe {path.decode('latin-1')!r} "
                   "(try /__qanat/ready or /__qanat/health)", request_id)


class AdminServer:
    """The admin endpoints for one gateway process, on a port of their own.

    ``reload_status`` and ``resolver`` are optional: a gateway run from a
    file has no config store, one without ``kind: service`` routes may have
    no discovery.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        metrics: GatewayMetrics | None = None,
        resolver: DiscoveryResolver | None = None,
        reload_status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.gateway = gateway
        self.metrics = metrics
        self.resolver = resolver
        self.reload_status = reload_status
        self.server = HttpServer(self.handle, Limits(max_connections=64, max_body_bytes=1))
        if metrics is not None:
            add_retry_counters(metrics, gateway.upstream_state, self._upstream_labels)
            add_jwt_cache_metrics(metrics, self.jwt_caches)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        await self.server.start(host, port)

    @property
    def port(self) -> int:
        return self.server.port

    async def aclose(self) -> None:
        await self.server.shutdown(1.0)

    async def handle(self, req: Request) -> Reply:
        """Answer one admin request."""
        try:
            _, path, query = split_target(req.target)
        except RequestRejected as exc:
            return problem(exc.status, exc.detail, b"", close=True)
        if req.method not in (b"GET", b"HEAD"):
            return problem(405, "the admin endpoints are read-only (GET)", b"")
        table = b"format=table" in query
        if path == b"/metrics":
            body = self.metrics.exposition() if self.metrics is not None else b""
            return Reply(200, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
                         body)
        pages: dict[bytes, Callable[[], Any]] = {
            b"/routes": self.routes, b"/upstreams": self.upstreams, b"/stats": self.stats,
            b"/": lambda: {"endpoints": ["/routes", "/upstreams", "/stats", "/metrics"]},
        }
        page = pages.get(path.rstrip(b"/") or b"/")
        if page is None:
            return problem(404, f"no admin endpoint {path.decode('latin-1')!r}; "
                           "try /routes, /upstreams, /stats or /metrics", b"")
        return _json(200, page(), table=table)

    def _upstream_labels(self) -> dict[str, str]:
        """Route name -> the ``upstream`` label of its metrics (service name or static)."""
        return {r.name: r.upstream.service if isinstance(r.upstream, ServiceUpstream)
                else "static" for r in self.gateway.routes}

    def jwt_caches(self) -> dict[str, TokenCacheStats]:
        """Route name -> its jwt filter's token cache stats, for the routes being served
        now (summed if a route has several); routes without a jwt filter are left out."""
        out: dict[str, TokenCacheStats] = {}
        for name, filters in self.gateway.route_filters():
            for f in filters:
                if isinstance(f, AuthFilter) and f.token_cache is not None:
                    stats = f.token_cache.stats()
                    before = out.get(name)
                    out[name] = stats if before is None else _add(before, stats)
        return out

    def routes(self) -> dict[str, Any]:
        """The active routes, their source and revision, the last rejection."""
        status = self.reload_status() if self.reload_status is not None else {}
        return {
            **status,
            "routes": [r.model_dump(mode="json", exclude_defaults=True)
                       for r in self.gateway.routes],
        }

    def upstreams(self) -> list[dict[str, Any]]:
        """Per route: its instances (discovery or static), each with its breaker and
        outlier-ejection state, and the route's traffic state (retry budget, in-flight)."""
        out = []
        runtime = self.gateway.upstream_state()
        caches = self.jwt_caches()
        for route in self.gateway.routes:
            spec = route.upstream
            entry: dict[str, Any] = {"route": route.name, "balancer": spec.balancer}
            if isinstance(spec, ServiceUpstream):
                entry["upstream"] = spec.service
                if self.resolver is not None:
                    entry.update(self.resolver.describe(spec.service))
            else:
                entry["upstream"] = "static"
                entry["instances"] = [{"id": t.url, "address": t.url, "weight": t.weight}
                                      for t in spec.targets]
            state = runtime.get(route.name)
            if state is not None:
                _merge_instances(entry, state.instances)
                entry["traffic"] = _plain(state)
            cache = caches.get(route.name)
            entry["jwt_cache"] = None if cache is None else {
                "entries": cache.entries, "aliases": cache.aliases,
                "hits": cache.hits + cache.alias_hits, "alias_hits": cache.alias_hits,
                "verifications": cache.misses}
            out.append(entry)
        return out

    def stats(self) -> dict[str, Any]:
        """Server counters, in-flight requests and this process."""
        stats = dataclasses.asdict(self.gateway.stats())
        stats["rejected"] = {str(k): v for k, v in stats["rejected"].items()}
        return {"pid": os.getpid(), "uptime_s": round(time.time() - _STARTED, 3),
                "in_flight": self.gateway.in_flight, **stats}


def render_table(data: Any) -> str:
    """A plain-text table: a list of mappings as rows, a mapping as key/value lines."""
    if isinstance(data, dict):
        rows = [d for d in data.values() if isinstance(d, list)]
        head = [f"{k}: {_cell(v)}" for k, v in data.items() if not isinstance(v, list)]
        return "\n".join(head + [render_table(r) for r in rows]) + "\n"
    if isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
        cols = list(dict.fromkeys(k for d in data for k in d))
        cells = [[_cell(d.get(c, "")) for c in cols] for d in data]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
        lines = [[c.ljust(w) for c, w in zip(cols, widths, strict=True)]]
        lines += [[v.ljust(w) for v, w in zip(r, widths, strict=True)] for r in cells]
        return "\n".join("  ".join(line).rstrip() for line in lines)
    return _cell(data)


def _merge_instances(entry: dict[str, Any], states: Sequence[InstanceState]) -> None:
    """Add each instance's breaker and ejection to its row; rows for instances only
    the route runtime knows (discovery not attached) are appended."""
    rows = entry.setdefault("instances", [])
    by_id = {row.get("id"): row for row in rows}
    for s in states:
        row = by_id.get(s.id)
        if row is None:
            row = {"id": s.id, "address": f"{s.host}:{s.port}", "version": s.version}
            rows.append(row)
        row.update(breaker=s.breaker, consecutive_failures=s.consecutive_failures,
                   breaker_retry_after=s.breaker_retry_after,
                   ejected=s.ejected_for is not None, ejected_for=s.ejected_for)


def _add(a: TokenCacheStats, b: TokenCacheStats) -> TokenCacheStats:
    return TokenCacheStats(a.entries + b.entries, a.aliases + b.aliases, a.hits + b.hits,
                           a.alias_hits + b.alias_hits, a.misses + b.misses)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _cell(value: Any) -> str:
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"), default=str)
    return "-" if value is None else str(value)


__all__ = ["AdminServer", "internal_reply", "render_table"]
