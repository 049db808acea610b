"""The proxy's bookkeeping when a request is cancelled mid-way (client gone, shutdown).

The proxy sends through a real pool to real local instances (``upstream_support``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.unit.gateway.upstream_support import Script, targets, upstreams
from tests.unit.http.upstream_servers import Upstream, response, until_client_closes

from qanat.gateway.config import parse_routes
from qanat.gateway.filters import Exchange
from qanat.gateway.proxy import Proxy, RouteRuntime
from qanat.gateway.routing import compile_routes
from qanat.gateway.upstream import Pick
from qanat.gateway.upstream import Upstream as UpstreamSet
from qanat.http import HttpPool
from qanat.testing import FakeClock


def runtime(clock: FakeClock, server: Upstream, *, breaker: bool = True,
            **route: Any) -> RouteRuntime:
    upstream: dict[str, Any] = {"kind": "static", "targets": targets([server])}
    if breaker:
        upstream["breaker"] = {"consecutive_failures": 1, "timeout": "5s"}
    cfg = {"name": "r", "upstream": upstream, **route}
    table = compile_routes(parse_routes([cfg]))
    r = table.routes[0]
    instances = UpstreamSet(r.config.upstream, None, "r", clock=clock)
    return RouteRuntime(r, instances, r.config.timeout, None)  # type: ignore[arg-type]


def exchange(rt: RouteRuntime) -> Exchange:
    return Exchange(b"GET", b"/", b"", [], host=b"h", authority=b"h", peer=b"1.1.1.1",
                    scheme=b"http", request_id=b"rid", route=rt)


async def test_a_cancelled_trial_frees_the_half_open_slot() -> None:
    """A half-open breaker's only trial, cancelled, does not leave the instance refused forever."""
    clock = FakeClock()
    async with upstreams(until_client_closes) as [server], HttpPool() as pool:
        rt = runtime(clock, server)
        first = rt.upstream.choose([], [], clock())
        assert isinstance(first, Pick)
        rt.upstream.settle(first, 503, 0.0, clock())  # opens the breaker
        clock.advance(6)  # half-open
        trial = asyncio.ensure_future(Proxy(pool, clock)(exchange(rt)))
        await server.wait_until(lambda: len(server.received) == 1)  # sent, unanswered
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        assert isinstance(rt.upstream.choose([], [], clock()), Pick)


async def test_a_retry_cancelled_in_its_backoff_gives_back_its_budget() -> None:
    """Cancelled while waiting to retry, the request leaves no retry counted as active."""
    clock = FakeClock()
    slept: list[float] = []
    async with upstreams(Script([response(503, b"")])) as [server], HttpPool() as pool:
        rt = runtime(clock, server, breaker=False, retry={"retry_on": ["5xx"]})

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            assert rt.budget.stats().active_retries == 1
            raise asyncio.CancelledError

        proxy = Proxy(pool, clock, sleep=sleep, rng=lambda: 0.5)
        with pytest.raises(asyncio.CancelledError):
            await proxy(exchange(rt))
    assert len(slept) == 1 and len(server.received) == 1
    stats = rt.budget.stats()
    assert (stats.active_requests, stats.active_retries) == (0, 0)


def _targets(n: int) -> dict[str, Any]:
    urls = [{"url": f"http://10.0.0.{i}:80"} for i in range(1, n + 1)]
    return {"kind": "static", "targets": urls}


def _granted(retry: dict[str, Any], requests: int, asked: int) -> int:
    """Retries the route's budget grants of ``asked``, with ``requests`` in flight over 2
    instances (``Proxy._backoff``, the proxy's only question to the budget)."""
    clock = FakeClock()
    cfg = {"name": "r", "upstream": _targets(2), "retry": retry}
    r = compile_routes(parse_routes([cfg])).routes[0]
    rt = RouteRuntime(r, UpstreamSet(r.config.upstream, None, "r", clock=clock), 10.0,
                      None)  # type: ignore[arg-type]
    assert rt.retry is not None
    proxy = Proxy(HttpPool(), clock, rng=lambda: 0.0)  # never sends: only _backoff is asked
    for _ in range(requests):
        rt.budget.request_started()
    delays = [proxy._backoff(rt, rt.retry, 1, 0.0, 10.0, 0.0) for _ in range(asked)]
    return sum(d is not None for d in delays)


@pytest.mark.parametrize(("floor", "granted"), [(None, 6), (3, 3)])
def test_the_retry_budget_floor_scales_with_requests_per_instance(
    floor: int | None, granted: int
) -> None:
    """12 requests in flight over 2 instances: by default 6 may retry at once (12 / 2);
    an explicit ``min_retry_concurrency`` is used as is (Envoy's fixed floor)."""
    retry: dict[str, Any] = {"budget_percent": 0}
    if floor is not None:
        retry["min_retry_concurrency"] = floor
    assert _granted(retry, 12, 8) == granted


@pytest.mark.parametrize("requests", [1, 4, 6, 12])
def test_by_default_every_request_in_flight_may_have_its_retry(requests: int) -> None:
    """The route's default budget is 100 %: as many retries in flight as requests (Envoy
    Gateway's max_retries of 1024, its max_requests), so no retry is refused; Envoy's 20 %
    (budget_percent: 20) holds the same requests to its floor of max(3, requests / 2)."""
    assert _granted({}, requests, requests) == requests
    assert _granted({"budget_percent": 20}, requests, requests) == min(
        requests, max(3, -(-requests // 2)))
