"""Retry waits and safety: an upstream's Retry-After, and writes with an Idempotency-Key.

The proxy talks to real instances (``upstream_support``) through a real pool."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import pytest
from tests.unit.gateway.upstream_support import Script, targets, upstreams
from tests.unit.http.upstream_servers import Upstream, response

from qanat.gateway.config import parse_routes
from qanat.gateway.filters import Exchange
from qanat.gateway.proxy import Proxy
from qanat.gateway.resilience import RetryConfig, has_idempotency_key, retry_allowed
from qanat.gateway.route_runtime import RouteRuntime
from qanat.gateway.routing import compile_routes
from qanat.gateway.upstream import Upstream as UpstreamSet
from qanat.http import HttpPool
from qanat.testing import FakeClock

WALL = 1_700_000_000.0


def runtime(clock: FakeClock, servers: list[Upstream], **route: Any) -> RouteRuntime:
    cfg = {"name": "r", "upstream": {"kind": "static", "targets": targets(servers)}, **route}
    r = compile_routes(parse_routes([cfg])).routes[0]
    upstream = UpstreamSet(r.config.upstream, None, "r", clock=clock)
    return RouteRuntime(r, upstream, r.config.timeout, None)  # type: ignore[arg-type]


def exchange(rt: RouteRuntime, method: bytes = b"GET",
             headers: list[tuple[bytes, bytes]] | None = None) -> Exchange:
    return Exchange(method, b"/", b"", headers or [], host=b"h", authority=b"h",
                    peer=b"1.1.1.1", scheme=b"http", request_id=b"rid", route=rt,
                    body=b"{}" if method != b"GET" else None)


@contextlib.asynccontextmanager
async def scripted(clock: FakeClock, *answers: bytes, **route: Any
                   ) -> AsyncIterator[tuple[RouteRuntime, Script]]:
    """A route over two real instances that answer from one script."""
    script = Script(list(answers))
    async with upstreams(script, 2) as servers:
        yield runtime(clock, servers, **route), script


async def run(rt: RouteRuntime, clock: FakeClock,
              ex: Exchange | None = None) -> tuple[int, list[float]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    async with HttpPool() as pool:
        proxy = Proxy(pool, clock, sleep=sleep, rng=lambda: 0.5, wall=lambda: WALL)
        reply = await proxy(ex or exchange(rt))
        if reply.release is not None:
            await reply.release()
    return reply.status, waits


OK = response(200, b"{}")


def unavailable(*headers: tuple[bytes, bytes]) -> bytes:
    return response(503, b"", *headers)


@pytest.mark.parametrize(("value", "wait"), [(b"1", 1.0), (b"0", 0.0),
                                             (formatdate(WALL + 1, usegmt=True).encode(), 1.0)])
async def test_retry_after_replaces_the_backoff(value: bytes, wait: float) -> None:
    """A 503 with Retry-After (seconds or an HTTP-date) is retried after exactly that long."""
    clock = FakeClock()
    async with scripted(clock, unavailable((b"Retry-After", value)), OK,
                        retry={"retry_on": ["5xx"]}) as (rt, script):
        status, waits = await run(rt, clock)
    assert (status, waits, len(script.calls)) == (200, [pytest.approx(wait)], 2)


async def test_without_retry_after_the_jittered_backoff_is_used() -> None:
    """No Retry-After: the wait is Envoy's full jitter, 0.5 x 25 ms with this rng."""
    clock = FakeClock()
    async with scripted(clock, unavailable(), OK, retry={"retry_on": ["5xx"]}) as (rt, _):
        status, waits = await run(rt, clock)
    assert (status, waits) == (200, [pytest.approx(0.0125)])


async def test_a_retry_after_over_the_cap_is_passed_to_the_client() -> None:
    """Retry-After above max_retry_after: no retry, the client gets the 503 and its header."""
    clock = FakeClock()
    async with scripted(clock, unavailable((b"retry-after", b"3")), OK,
                        retry={"retry_on": ["5xx"], "max_retry_after": "2s"}) as (rt, script):
        status, waits = await run(rt, clock)
    assert (status, waits, len(script.calls)) == (503, [], 1)
    async with scripted(clock, unavailable((b"retry-after", b"3")), OK,
                        retry={"retry_on": ["5xx"], "max_retry_after": "3s"}) as (rt, _):
        status, waits = await run(rt, clock)
    assert (status, waits) == (200, [3.0])


async def test_a_retry_after_past_the_route_timeout_is_not_waited() -> None:
    """A wait that would end after the route's timeout is not started."""
    clock = FakeClock()
    async with scripted(clock, unavailable((b"retry-after", b"5")), OK, timeout="2s",
                        retry={"retry_on": ["5xx"], "max_retry_after": "10s"}) as (rt, script):
        status, waits = await run(rt, clock)
    assert (status, waits, len(script.calls)) == (503, [], 1)


async def test_an_unparseable_retry_after_falls_back_to_the_backoff() -> None:
    """A Retry-After that is neither seconds nor an HTTP-date is ignored."""
    clock = FakeClock()
    async with scripted(clock, unavailable((b"retry-after", b"soon")), OK,
                        retry={"retry_on": ["5xx"]}) as (rt, _):
        status, waits = await run(rt, clock)
    assert (status, waits) == (200, [pytest.approx(0.0125)])


@pytest.mark.parametrize(("allow", "key", "retried"), [
    (True, b"order-42", True), (False, b"order-42", False), (True, None, False),
    (True, b"  ", False),
])
async def test_a_keyed_post_is_retried_only_when_the_route_allows(
    allow: bool, key: bytes | None, retried: bool
) -> None:
    """POST + Idempotency-Key is retried on a 503 only with retry.idempotency_key: true."""
    clock = FakeClock()
    headers = [(b"idempotency-key", key)] if key is not None else []
    async with scripted(clock, unavailable(), OK,
                        retry={"retry_on": ["5xx"], "idempotency_key": allow}) as (rt, script):
        status, _ = await run(rt, clock, exchange(rt, b"POST", headers))
    assert (status, len(script.calls)) == ((200, 2) if retried else (503, 1))
    if retried:
        assert [c.body for c in script.calls] == [b"{}", b"{}"]


def test_the_key_makes_any_method_retryable_but_not_a_streamed_body() -> None:
    """keyed=True lifts the method rule only: an unreplayable body still is not resent."""
    policy = RetryConfig(retry_on=["5xx"]).policy()
    assert not retry_allowed(policy, b"PATCH", True, 503)
    assert retry_allowed(policy, b"PATCH", True, 503, keyed=True)
    assert not retry_allowed(policy, b"PATCH", False, 503, keyed=True)
    assert has_idempotency_key([(b"idempotency-key", b"k")])
    assert not has_idempotency_key([(b"x-idempotency-key", b"k")])
