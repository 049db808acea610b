"""Retries, timeouts, breakers and the concurrency limit against real upstream servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from test_gateway_support import (
    HANG,
    RESET,
    STREAM,
    Backend,
    RawClient,
    backends,
    gateway_client,
    get,
    start_gateway,
    static,
)

from qanat.gateway.app import Gateway
from qanat.gateway.proxy import snapshot
from qanat.testing import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def pair() -> AsyncIterator[list[Backend]]:
    bs = await backends("a", "b")
    yield bs
    for b in bs:
        await b.close()


async def _gateway(routes: list[dict[str, object]]) -> Gateway:
    return await start_gateway(routes)


def post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


async def test_get_on_503_is_retried_on_the_other_instance(pair: list[Backend]) -> None:
    """A GET answered 503 by one instance is retried once, on the other, and succeeds."""
    a, b = pair
    a.behave = lambda s: 503
    async with gateway_client(
        [{"name": "r", "upstream": static(a, b), "retry": {}}]
    ) as (_gw, client):
        for _ in range(4):
            reply = await client.request(get("/x"))
            assert reply.status == 200 and reply.json()["instance"] == "b"
        assert a.count() == 4 and b.count() == 4  # two picks per request: first try always a


async def test_without_a_retry_policy_the_503_goes_to_the_client(pair: list[Backend]) -> None:
    """No retry policy, no retry (Envoy): the upstream's 503 is passed on as is."""
    a, b = pair
    a.behave = lambda s: 503
    async with gateway_client([{"name": "r", "upstream": static(a, b)}]) as (_gw, client):
        statuses = [(await client.request(get("/x"))).status for _ in range(2)]
        assert sorted(statuses) == [200, 503] and a.count() == 1 and b.count() == 1


async def test_post_reset_after_reaching_upstream_is_not_retried(pair: list[Backend]) -> None:
    """A POST that reached the upstream and was reset is answered 502, and sent once only."""
    a, b = pair
    a.behave = b.behave = lambda s: RESET
    async with gateway_client(
        [{"name": "r", "upstream": static(a, b),
          "retry": {"num_retries": 3, "retry_on": ["reset", "5xx"]}}]
    ) as (_gw, client):
        reply = await client.request(post("/pay", b'{"amount": 5}'))
        assert reply.status == 502
        assert a.count("POST") + b.count("POST") == 1


async def test_get_reset_is_retried_and_put_body_is_resent_whole(pair: list[Backend]) -> None:
    """An idempotent PUT reset by one instance is resent, body intact, to the other."""
    a, b = pair
    a.behave = lambda s: RESET
    gw = await _gateway([{"name": "r", "upstream": static(a, b), "retry": {}}])
    client = await RawClient.connect(gw.port)
    body = b"z" * 5000
    try:
        for _ in range(2):
            answer = await client.request(
                b"PUT /doc HTTP/1.1\r\nHost: gw\r\nContent-Length: 5000\r\n\r\n" + body)
            assert answer.status == 200 and answer.json()["body_length"] == 5000
        assert all(s.body == body for s in b.seen) and b.count("PUT") == 2
    finally:
        await client.close()
        await gw.aclose(timeout=1)


async def test_post_is_retried_when_the_upstream_never_saw_it(pair: list[Backend]) -> None:
    """A POST whose first try could not connect is sent to another instance (nothing was sent)."""
    _, b = pair
    dead = {"url": "http://127.0.0.1:1"}
    async with gateway_client(
        [{"name": "r", "retry": {},
          "upstream": {"kind": "static", "targets": [dead, {"url": b.url}]}}]
    ) as (_gw, client):
        for _ in range(2):
            reply = await client.request(post("/orders", b"{}"))
            assert reply.status == 200 and reply.json()["instance"] == "b"
        assert b.count("POST") == 2


async def test_nothing_is_retried_once_the_response_streams(pair: list[Backend]) -> None:
    """A body that breaks after the head reached the client is cut, never retried."""
    a, b = pair
    a.behave = b.behave = lambda s: STREAM
    async with gateway_client(
        [{"name": "r", "upstream": static(a, b), "retry": {"num_retries": 3}}]
    ) as (_gw, client):
        await client.send(get("/big"))
        with pytest.raises(EOFError):
            await client.response()
        assert a.count() + b.count() == 1


async def test_per_try_timeout_retries_and_total_timeout_bounds_all(pair: list[Backend]) -> None:
    """A hanging instance costs one per-try timeout, then the other answers; all hanging: 504."""
    a, b = pair
    a.behave = lambda s: HANG
    routes = [{"name": "r", "upstream": static(a, b), "timeout": "2s", "per_try_timeout": "200ms",
               "retry": {"retry_on": ["gateway-error"]}}]
    async with gateway_client(routes) as (_gw, client):
        replies = [await client.request(get("/x")) for _ in range(2)]
        assert [r.json()["instance"] for r in replies] == ["b", "b"]
        b.behave = lambda s: HANG
        reply = await client.request(get("/x"))
        assert reply.status == 504
        assert reply.headers[b"content-type"] == b"application/problem+json"


async def test_breaker_opens_then_answers_503_without_calling(pair: list[Backend]) -> None:
    """After consecutive failures the breaker opens: 503 circuit-open, the instance not called."""
    a, _ = pair
    a.behave = lambda s: 500
    async with gateway_client([{"name": "r", "upstream": static(
        a, breaker={"consecutive_failures": 3, "timeout": "60s"})}]) as (gw, client):
        statuses = [(await client.request(get("/x"))).status for _ in range(3)]
        assert statuses == [500, 500, 500] and a.count() == 3
        reply = await client.request(get("/x"))
        assert reply.status == 503 and a.count() == 3  # answered without calling the instance
        assert reply.json()["type"] == "urn:qanat:problem:circuit-open"
        assert 1 <= int(reply.headers[b"retry-after"]) <= 60
        state = snapshot(gw._state[1], time.monotonic())["r"]
        assert [i.breaker for i in state.instances] == ["open"]


async def test_concurrency_limit_answers_503_when_full(pair: list[Backend]) -> None:
    """With max_concurrent 1 and one request held upstream, the next one gets 503 at once."""
    a, _ = pair
    a.behave = lambda s: HANG if s.path == "/hold" else 200
    gw = await _gateway([{"name": "r", "upstream": static(a), "max_concurrent": 1,
                          "timeout": "5s"}])
    first, second = await RawClient.connect(gw.port), await RawClient.connect(gw.port)
    try:
        await first.send(get("/hold"))
        await asyncio.wait_for(a.arrived.wait(), 5)
        reply = await second.request(get("/other"))
        assert reply.status == 503
        assert reply.json()["type"] == "urn:qanat:problem:route-overloaded"
        assert a.count() == 1
        a.transports.pop().abort()  # end the held request
        assert (await first.response()).status == 502
        assert (await second.request(get("/other"))).status == 200
    finally:
        await first.close()
        await second.close()
        await gw.aclose(timeout=1)



async def test_an_empty_retry_budget_refuses_the_retry(pair: list[Backend]) -> None:
    """With a budget of 0 % and no minimum, the 503 is passed on and nothing is retried."""
    a, b = pair
    a.behave = lambda s: 503
    async with gateway_client(
        [{"name": "r", "upstream": static(a, b),
          "retry": {"budget_percent": 0, "min_retry_concurrency": 0}}]
    ) as (gw, client):
        assert (await client.request(get("/x"))).status == 503
        assert a.count() == 1 and b.count() == 0
        state = snapshot(gw._state[1], time.monotonic())["r"]
        assert state.retry_budget is not None and state.retry_budget.refused == 1


async def test_a_try_that_never_reached_an_upstream_needs_no_retry_budget(
    pair: list[Backend],
) -> None:
    """With an empty budget (0 %, no floor), a refused connection is still retried elsewhere:
    nothing reached an upstream (Finagle's requeues). A 503 is not: see the test above."""
    _, b = pair
    dead = {"url": "http://127.0.0.1:1"}
    async with gateway_client(
        [{"name": "r", "retry": {"budget_percent": 0, "min_retry_concurrency": 0},
          "upstream": {"kind": "static", "targets": [dead, {"url": b.url}]}}]
    ) as (gw, client):
        for _ in range(4):
            reply = await client.request(get("/x"))
            assert reply.status == 200 and reply.json()["instance"] == "b"
        state = snapshot(gw._state[1], time.monotonic())["r"]
        assert state.retry_budget is not None
        assert (state.retry_budget.refused, state.retry_budget.active_retries) == (0, 0)


@pytest.mark.parametrize(("retry", "answered"), [
    ({}, [200] * 6),
    ({"budget_percent": 20}, [200] * 3 + [502] * 3),
])
async def test_six_gets_on_an_instance_that_dies_are_retried_on_the_other(
    pair: list[Backend], retry: dict[str, object], answered: list[int],
) -> None:
    """Six GETs held by instance a when it dies (its connections reset, its port closed)
    all reached it, so each retry asks the budget. The route's default (100 %: each request
    may have a retry in flight, as Envoy Gateway's max_retries of 1024) retries all six on b;
    Envoy's 20 % and a floor of max(3, 6 / 2) let three retry and answer the others 502."""
    a, b = pair
    a.behave = lambda s: HANG
    gw = await start_gateway([{"name": "r", "upstream": static(a, b), "retry": retry}])
    clients = [await RawClient.connect(gw.port) for _ in range(12)]
    try:
        for c in clients:  # round robin: every other one is held by a, b answers the rest
            await c.send(get("/x"))
        await eventually(lambda: a.count() == 6 and b.count() == 6, what="6 GETs on each")
        first = await asyncio.gather(*(c.response() for c in clients[1::2]))
        assert {r.json()["instance"] for r in first} == {"b"}
        await a.close()  # killed: its six connections reset, nothing listens on its port
        replies = await asyncio.gather(*(c.response() for c in clients[::2]))
        assert sorted(r.status for r in replies) == answered
        assert {r.json()["instance"] for r in replies if r.status == 200} == {"b"}
        refused = [r for r in replies if r.status == 502]
        assert all(b"connection closed before the response head" in r.body for r in refused)
        budget = gw.upstream_state()["r"].retry_budget
        assert budget is not None
        assert (budget.granted, budget.refused) == (answered.count(200), len(refused))
    finally:
        for c in clients:
            await c.close()
        await gw.aclose(timeout=1)


async def test_a_streamed_body_over_the_buffer_bound_is_not_resent(pair: list[Backend]) -> None:
    """A PUT streamed past max_buffered_body and reset upstream is answered 502, sent once.

    (A body that arrived whole with its head is already in memory: always replayable.)
    """
    a, b = pair
    a.behave = b.behave = lambda s: RESET
    async with gateway_client(
        [{"name": "r", "upstream": static(a, b),
          "retry": {"max_buffered_body": 1024, "retry_on": ["reset"]}}]
    ) as (_gw, client):
        await client.send(b"PUT /doc HTTP/1.1\r\nHost: gw\r\nContent-Length: 4096\r\n\r\n"
                          + b"y" * 1000)
        await asyncio.wait_for(a.heads.wait(), 10)  # the upload is streaming to a
        await client.send(b"y" * 3096)
        assert (await client.response()).status == 502
        assert a.count() + b.count() == 1


async def test_a_get_cut_on_a_kept_alive_connection_of_a_dying_instance_goes_elsewhere(
        pair: list[Backend]) -> None:
    """An instance hangs up a pooled connection mid-request and stops listening (SIGKILL):
    the pool's one stale retry is refused, the client of the pool gets the reset it met
    (sent: the instance may have seen the GET), and the route retries it on the other
    instance within its retry budget."""
    a, b = pair

    def die_on_the_second(seen: object) -> int:
        if a.count() < 2:
            return 200
        assert a.server is not None
        a.server.close()  # the listener only: the kept-alive connection is still open
        return RESET

    a.behave = die_on_the_second
    async with gateway_client(
        [{"name": "r", "upstream": static(a, b), "retry": {}}]
    ) as (gw, client):
        answers = [await client.request(get(f"/{i}")) for i in range(3)]
        budget = gw.upstream_state()["r"].retry_budget
    assert [(r.status, r.json()["instance"]) for r in answers] == [
        (200, "a"), (200, "b"), (200, "b")]
    assert a.count() == 2  # the stale try reached it; its retry could not connect
    assert budget is not None and (budget.granted, budget.refused) == (1, 0)
