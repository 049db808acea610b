"""What the gateway holds per compiled route, and how it survives a live reload.

A ``RouteRuntime`` is one route's compiled form: the ``Route`` (matching,
rewrites), its ``Upstream`` (balancers, breakers, outlier ejections), its
filter chain, and its traffic state (retry policy and budget, concurrency
count). ``compile_runtimes`` builds them for a new route set; given the set
being replaced it **carries state over**, so a reload does not reset
protection:

- same route name and an equal ``upstream`` spec: the same ``Upstream``
  object (open breakers stay open, ejected instances stay ejected, balancer
  positions, ring loads and EWMAs are kept);
- same name and equal ``filters``: the same filter objects (rate-limit
  counters, the Redis client, fault counters);
- same name and equal retry budget settings: the same ``RetryBudget``; same
  name: the same ``Load`` (in-flight count and overflow), so requests still
  running on the old set count against ``max_concurrent`` on the new one.

Filters of the old set that are not carried over and own resources (an
``aclose()`` method, e.g. the Redis rate-limit client) are returned as
*retired*: the gateway closes them (``close_filters``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import InitVar, dataclass, field

from qanat.core.retry import BudgetStats, RetryBudget, RetryPolicy
from qanat.gateway.config import RouteConfig, ServiceUpstream
from qanat.gateway.filters import Filter, Handler, build_filter, chain
from qanat.gateway.instance_health import InstanceState
from qanat.gateway.routing import Route, RouteTable
from qanat.gateway.upstream import Upstream

log = logging.getLogger("qanat.gateway")


@dataclass(frozen=True, slots=True)
class RouteState:
    """One route's traffic state, read-only, for the admin endpoint and metrics."""

    route: str
    in_flight: int  # counted only with max_concurrent
    max_concurrent: int | None
    overflow: int  # requests answered 503 because the route was full
    retry_budget: BudgetStats | None  # None without a retry policy
    instances: tuple[InstanceState, ...]


@dataclass(eq=False, slots=True)
class Load:
    """A route's in-flight count (with ``max_concurrent``) and its overflow count."""

    in_flight: int = 0
    overflow: int = 0


@dataclass(eq=False, slots=True)
class RouteRuntime:
    """What the gateway holds per compiled route: the route, its upstream, its handler,
    its filters, and the traffic state built from ``route.config`` (retry policy and
    budget, concurrency count). ``load`` and ``carried_budget`` may be handed over from
    the route set being replaced (see the module docstring)."""

    route: Route
    upstream: Upstream
    timeout: float  # one try, until the response head (min of per_try_timeout, timeout)
    handler: Handler
    filters: tuple[Filter, ...] = ()
    load: Load = field(default_factory=Load)
    carried_budget: InitVar[RetryBudget | None] = None  # None: a new one from the settings
    budget: RetryBudget = field(init=False)
    total_timeout: float = field(init=False)
    retry: RetryPolicy | None = field(init=False)
    max_buffered_body: int = field(init=False)
    max_concurrent: int | None = field(init=False)
    buffer_response_bytes: int = field(init=False)
    max_retry_after: float = field(init=False)
    idempotency_key: bool = field(init=False)

    def __post_init__(self, carried_budget: RetryBudget | None) -> None:
        cfg = self.route.config
        self.budget = carried_budget if carried_budget is not None else _new_budget(cfg)
        self.total_timeout = cfg.timeout
        r = cfg.retry
        self.retry = r.policy() if r is not None else None
        self.max_buffered_body = r.max_buffered_body if r is not None else 0
        self.max_retry_after = r.max_retry_after if r is not None else 0.0
        self.idempotency_key = r.idempotency_key if r is not None else False
        self.max_concurrent = cfg.max_concurrent
        self.buffer_response_bytes = cfg.buffer_response_bytes

    def state(self, now: float) -> RouteState:
        """A snapshot of this route's traffic state at ``now``."""
        return RouteState(self.route.name, self.load.in_flight, self.max_concurrent,
                          self.load.overflow,
                          self.budget.stats() if self.retry is not None else None,
                          self.upstream.state(now))


def snapshot(runtimes: Iterable[RouteRuntime], now: float) -> dict[str, RouteState]:
    """Every route's ``RouteState`` by route name (what ``Gateway.upstream_state()`` shows)."""
    return {rt.route.name: rt.state(now) for rt in runtimes}


def _budget_settings(cfg: RouteConfig) -> tuple[float, int | None] | None:
    r = cfg.retry
    return None if r is None else (r.budget_percent, r.min_retry_concurrency)


def _new_budget(cfg: RouteConfig) -> RetryBudget:
    settings = _budget_settings(cfg)
    return RetryBudget(*settings) if settings is not None else RetryBudget()


def compile_runtimes(
    table: RouteTable,
    previous: Sequence[RouteRuntime],
    make_upstream: Callable[[RouteConfig, str], Upstream],
    proxy: Handler,
) -> tuple[tuple[RouteRuntime, ...], tuple[str, ...], list[Filter]]:
    """Runtimes and metric labels for ``table``, carrying state over from ``previous``.

    Returns ``(runtimes, upstream labels, retired filters)``; the retired ones
    are the old set's filters that nothing in the new set uses. Builds
    everything before touching anything, so a ``ConfigError`` leaves
    ``previous`` as it was.
    """
    old = {rt.route.name: rt for rt in previous}
    runtimes: list[RouteRuntime] = []
    labels: list[str] = []
    for route in table.routes:
        cfg = route.config
        where = f"route {cfg.name!r} (routes[{route.index}])"
        before = old.get(cfg.name)
        prev_cfg = before.route.config if before is not None else None
        if before is not None and prev_cfg is not None and prev_cfg.upstream == cfg.upstream:
            upstream = before.upstream
        else:
            upstream = make_upstream(cfg, where)
        if before is not None and prev_cfg is not None and prev_cfg.filters == cfg.filters:
            filters = before.filters
        else:
            filters = tuple(build_filter(f.name, f.config, cfg.name, f"{where}.filters[{i}]")
                            for i, f in enumerate(cfg.filters))
        same_budget = prev_cfg is not None and _budget_settings(prev_cfg) == _budget_settings(cfg)
        budget = before.budget if before is not None and same_budget else None
        load = before.load if before is not None else Load()
        handler = chain(list(filters), proxy) if filters else proxy
        timeout = min(cfg.timeout, cfg.per_try_timeout or cfg.timeout)
        runtimes.append(RouteRuntime(route, upstream, timeout, handler, filters, load, budget))
        spec = cfg.upstream
        labels.append(spec.service if isinstance(spec, ServiceUpstream) else "static")
    kept = {id(f) for rt in runtimes for f in rt.filters}
    retired = [f for rt in previous for f in rt.filters if id(f) not in kept]
    return tuple(runtimes), tuple(labels), retired


async def close_filters(filters: Iterable[Filter]) -> None:
    """``await f.aclose()`` for every filter that has one; a failure is logged, not raised."""
    for f in filters:
        aclose = getattr(f, "aclose", None)
        if not callable(aclose):
            continue
        try:
            result = aclose()
            if inspect.isawaitable(result):
                await result
        except Exception:  # one broken filter must not keep the others open
            log.warning("closing filter %r failed", f, exc_info=True)


def closes(filters: Iterable[Filter]) -> bool:
    """Whether any of ``filters`` owns resources (has ``aclose``)."""
    return any(callable(getattr(f, "aclose", None)) for f in filters)


__all__ = ["Load", "RouteRuntime", "RouteState", "close_filters", "closes",
           "compile_runtimes", "snapshot"]
