"""The proxy's bookkeeping when a request is cancelled mid-way (client gone, shutdown)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from qanat.gateway.config import parse_routes
from qanat.gateway.filters import Exchange
from qanat.gateway.proxy import Proxy, RouteRuntime
from qanat.gateway.routing import compile_routes
from qanat.gateway.upstream import Pick, Upstream
from qanat.http import UpstreamResponse
from qanat.testing import FakeClock


class StubPool:
    """Stands in for HttpPool (our own client, not a server): each call runs ``answer``."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls = 0

    async def request(self, **kwargs: Any) -> UpstreamResponse:
        self.calls += 1
        result: UpstreamResponse = await self.answer()
        return result


def runtime(clock: FakeClock, *, breaker: bool = True, **route: Any) -> RouteRuntime:
    upstream: dict[str, Any] = {"kind": "static", "targets": [{"url": "http://10.0.0.1:80"}]}
    if breaker:
        upstream["breaker"] = {"consecutive_failures": 1, "timeout": "5s"}
    cfg = {"name": "r", "upstream": upstream, **route}
    table = compile_routes(parse_routes([cfg]))
    r = table.routes[0]
    upstream = Upstream(r.config.upstream, None, "r", clock=clock)
    return RouteRuntime(r, upstream, r.config.timeout, None)  # type: ignore[arg-type]


def exchange(rt: RouteRuntime) -> Exchange:
    return Exchange(b"GET", b"/", b"", [], host=b"h", authority=b"h", peer=b"1.1.1.1",
                    scheme=b"http", request_id=b"rid", route=rt)


async def test_a_cancelled_trial_frees_the_half_open_slot() -> None:
    """A half-open breaker's only trial, cancelled, does not leave the instance refused forever."""
    clock = FakeClock()
    rt = runtime(clock)
    first = rt.upstream.choose([], [], clock())
    assert isinstance(first, Pick)
    rt.upstream.settle(first, 503, 0.0, clock())  # opens the breaker
    clock.advance(6)  # half-open

    async def cancelled() -> UpstreamResponse:
        raise asyncio.CancelledError

    proxy = Proxy(StubPool(cancelled), clock)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await proxy(exchange(rt))
    assert isinstance(rt.upstream.choose([], [], clock()), Pick)


async def test_a_retry_cancelled_in_its_backoff_gives_back_its_budget() -> None:
    """Cancelled while waiting to retry, the request leaves no retry counted as active."""
    clock = FakeClock()
    rt = runtime(clock, breaker=False, retry={"retry_on": ["5xx"]})

    class Response:
        status = 503
        complete = True
        headers: ClassVar[list[tuple[bytes, bytes]]] = []

        async def aclose(self) -> None:
            return None

    async def answer() -> Any:
        return Response()

    async def sleep(seconds: float) -> None:
        assert rt.budget.stats().active_retries == 1
        raise asyncio.CancelledError

    proxy = Proxy(StubPool(answer), clock, sleep=sleep, rng=lambda: 0.5)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await proxy(exchange(rt))
    stats = rt.budget.stats()
    assert (stats.active_requests, stats.active_retries) == (0, 0)


def _targets(n: int) -> dict[str, Any]:
    targets = [{"url": f"http://10.0.0.{i}:80"} for i in range(1, n + 1)]
    return {"kind": "static", "targets": targets}


@pytest.mark.parametrize(("floor", "granted"), [(None, 6), (3, 3)])
def test_the_retry_budget_floor_scales_with_requests_per_instance(
    floor: int | None, granted: int
) -> None:
    """12 requests in flight over 2 instances: by default 6 may retry at once (12 / 2);
    an explicit ``min_retry_concurrency`` is used as is (Envoy's fixed floor)."""
    clock = FakeClock()
    retry: dict[str, Any] = {"budget_percent": 0}
    if floor is not None:
        retry["min_retry_concurrency"] = floor
    cfg = {"name": "r", "upstream": _targets(2), "retry": retry}
    r = compile_routes(parse_routes([cfg])).routes[0]
    rt = RouteRuntime(r, Upstream(r.config.upstream, None, "r", clock=clock), 10.0,
                      None)  # type: ignore[arg-type]
    assert rt.retry is not None
    proxy = Proxy(StubPool(None), clock, rng=lambda: 0.0)  # type: ignore[arg-type]
    for _ in range(12):
        rt.budget.request_started()
    delays = [proxy._backoff(rt, rt.retry, 1, 0.0, 10.0, 0.0) for _ in range(8)]
    assert sum(d is not None for d in delays) == granted
