"""The service client against real HTTP servers: balancing, retry safety, backoff, budgets."""

from __future__ import annotations

import asyncio

import pytest
from tests.unit.http.upstream_servers import Exchange, Received, response
from tests.unit.runtime.client_support import (
    harness,
    reset,
    retrying,
    sequence,
    settings,
    status,
)

from qanat.core.retry import RetryBudget
from qanat.errors import ConfigError, NoEndpoints
from qanat.http import UpstreamReset
from qanat.runtime.client import ServiceClient


async def test_round_robin_spreads_calls_evenly_over_instances() -> None:
    """With round robin, 30 calls over 3 instances give each exactly 10."""
    async with harness(status(200), status(200), status(200)) as h:
        for _ in range(30):
            assert (await h.client.get("/users/1")).status == 200
        assert h.counts() == [10, 10, 10]


async def test_default_balancer_reaches_every_instance() -> None:
    """The default p2c balancer sends traffic to each of 3 instances over 90 calls."""
    async with harness(status(200), status(200), status(200),
                       client_settings=settings(load_balancer="p2c_ewma")) as h:
        seen = {(await h.client.get("/")).instance for _ in range(90)}
        assert seen == {"u0", "u1", "u2"}
        assert all(n > 0 for n in h.counts())


async def test_response_carries_status_headers_body_and_provenance() -> None:
    """A response exposes status, headers, body, JSON, the instance and the attempt count."""

    async def handler(req: Received, ex: Exchange) -> None:
        await ex.send(response(201, b'{"id": 7}', (b"X-Thing", b"yes")))

    async with harness(handler) as h:
        got = await h.client.post("/users", json={"name": "ada"})
        assert (got.status, got.json(), got.header("x-thing"), got.ok) == (201, {"id": 7}, "yes",
                                                                           True)
        assert (got.instance, got.attempts) == ("u0", 1)
        sent = h.upstreams[0].received[0]
        assert sent.body == b'{"name":"ada"}'
        assert sent.header(b"content-type") == b"application/json"


async def test_query_parameters_are_encoded_into_the_target() -> None:
    """``params`` are URL-encoded and appended, with '&' when the path already has a query."""
    async with harness(status(200)) as h:
        await h.client.get("/search?x=1", params={"q": "a b", "n": 2})
        assert h.upstreams[0].received[0].target == b"/search?x=1&q=a+b&n=2"


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
async def test_connect_failure_is_retried_on_another_instance_for_any_method(method: str) -> None:
    """A dead instance refuses the connection; the call goes to the live one, any method."""
    async with harness(status(200), dead=1) as h:
        for _ in range(4):  # round robin: at least one call's first pick is the dead one
            got = await h.client.request(method, "/x")
            assert (got.status, got.instance) == (200, "u0")
        assert h.received() == 4
        assert len(h.sleeps) >= 1  # the call that picked the dead instance first retried


async def test_post_reset_after_it_was_sent_is_not_retried() -> None:
    """A POST the server read and then reset may have taken effect: raised, not repeated."""
    async with harness(reset, reset) as h:
        with pytest.raises(UpstreamReset):
            await h.client.post("/orders", json={"n": 1})
        assert h.received() == 1


async def test_get_reset_after_it_was_sent_is_retried() -> None:
    """An idempotent GET whose connection was reset is retried (Envoy's ``reset`` condition)."""
    async with harness(reset, status(200)) as h:
        got = await h.client.get("/x")
        assert got.status == 200
        assert got.attempts in (1, 2)  # the first pick may have been the healthy one
        assert h.counts()[0] in (0, 1) and h.counts()[1] == 1


async def test_post_with_idempotency_key_is_retried_on_503() -> None:
    """A keyed POST that got 503 is sent again, with the same key, and its 200 returned."""
    async with harness(sequence(503, 200)) as h:
        got = await h.client.post("/orders", json={"n": 1}, idempotency_key="order-42")
        assert (got.status, got.attempts) == (200, 2)
        keys = [r.header(b"idempotency-key") for r in h.upstreams[0].received]
        assert keys == [b"order-42", b"order-42"]


async def test_idempotency_key_given_as_a_header_also_makes_a_write_retryable() -> None:
    """An ``Idempotency-Key`` passed in ``headers`` counts like the keyword argument."""
    async with harness(sequence(503, 200)) as h:
        got = await h.client.post("/orders", headers={"Idempotency-Key": "k1"})
        assert (got.status, got.attempts) == (200, 2)


async def test_post_without_key_on_503_is_not_retried() -> None:
    """A POST without an idempotency key returns its 503: repeating it could apply it twice."""
    async with harness(sequence(503, 200)) as h:
        got = await h.client.post("/orders", json={})
        assert (got.status, got.attempts) == (503, 1)
        assert h.received() == 1


async def test_get_on_503_is_retried_but_500_is_not() -> None:
    """With the default ``retry_on`` a 503 is retried and a 500 returned as is."""
    async with harness(sequence(503, 200)) as h:
        assert (await h.client.get("/x")).attempts == 2
    async with harness(sequence(500, 200)) as h:
        got = await h.client.get("/x")
        assert (got.status, got.attempts) == (500, 1)


async def test_retry_after_seconds_replaces_the_backoff() -> None:
    """A 503 with ``Retry-After: 2`` makes the client wait exactly 2 s before the retry."""
    answers = [response(503, b"busy", (b"Retry-After", b"2")), response(200)]

    async def handler(req: Received, ex: Exchange) -> None:
        await ex.send(answers.pop(0))

    async with harness(handler) as h:
        got = await h.client.get("/x")
        assert (got.status, h.sleeps) == (200, [2.0])


async def test_retry_after_beyond_the_deadline_returns_the_503() -> None:
    """A ``Retry-After`` longer than the time left ends the call with the 503, without waiting."""
    async with harness(status(503, (b"Retry-After", b"60"))) as h:
        got = await h.client.get("/x", timeout=5.0)
        assert (got.status, got.attempts, h.sleeps) == (503, 1, [])


async def test_backoff_is_jittered_exponential() -> None:
    """Waits follow full jitter: rng 0.5 × 25 ms × 2^(n-1) for retries 1 and 2."""
    async with harness(status(503)) as h:
        got = await h.client.get("/x")
        assert (got.status, got.attempts) == (503, 3)
        assert h.sleeps == pytest.approx([0.0125, 0.025])


async def test_retries_stop_at_max_attempts() -> None:
    """An always-failing GET is tried exactly ``max_attempts`` times."""
    async with harness(status(502), client_settings=settings(retry=retrying(5))) as h:
        got = await h.client.get("/x")
        assert (got.status, got.attempts, h.received()) == (502, 5, 5)


async def test_spent_retry_budget_refuses_the_retry_and_counts_it() -> None:
    """With no retry budget the first failure is final and the refusal is counted."""
    budget = RetryBudget(percent=0, min_retry_concurrency=0)
    async with harness(status(503), budget=budget) as h:
        got = await h.client.get("/x")
        assert (got.status, got.attempts) == (503, 1)
        stats = budget.stats()
        assert (stats.refused, stats.active_requests, stats.active_retries) == (1, 0, 0)


async def test_budget_holds_a_retry_until_its_attempt_ends() -> None:
    """While one call's retry attempt is in flight a second call's retry is refused (budget 1)."""
    budget = RetryBudget(percent=0, min_retry_concurrency=1)
    gate, holding = asyncio.Event(), asyncio.Event()
    seen_a = 0

    async def handler(req: Received, ex: Exchange) -> None:
        nonlocal seen_a
        if req.target == b"/a":
            seen_a += 1
            if seen_a == 2:  # call A's retry: hold it until the test lets go
                holding.set()
                await gate.wait()
                await ex.send(response(200))
                return
        await ex.send(response(503))

    async with harness(handler, budget=budget,
                       client_settings=settings(retry=retrying(2))) as h:
        first = asyncio.create_task(h.client.get("/a"))
        async with asyncio.timeout(5):
            await holding.wait()
        assert budget.stats().active_retries == 1
        second = await h.client.get("/b")
        assert (second.status, second.attempts) == (503, 1)
        gate.set()
        assert (await first).status == 200
        stats = budget.stats()
        assert (stats.refused, stats.active_requests, stats.active_retries) == (1, 0, 0)


async def test_connect_failure_retry_with_one_dead_instance_reuses_it() -> None:
    """With a single instance, a retry goes back to it rather than failing with NoEndpoints."""
    async with harness(sequence(503, 200)) as h:
        got = await h.client.get("/x")
        assert (got.status, got.attempts, got.instance) == (200, 2, "u0")


async def test_no_instances_raises_no_endpoints() -> None:
    """A target with no registered instance fails fast with ``NoEndpoints``."""
    async with harness() as h:
        with pytest.raises(NoEndpoints, match="users"):
            await h.client.get("/x")


async def test_unbound_client_raises_no_endpoints_explaining_how_to_start_it() -> None:
    """A client used before ``bind`` says so instead of failing on a missing attribute."""
    client = ServiceClient("users")
    with pytest.raises(NoEndpoints, match="bind"):
        await client.get("/x")
    assert not client.has_endpoints()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "users/1"}, "must start with '/'"),
        ({"path": "/x", "json": {}, "content": b"x"}, "not both"),
        ({"path": "/x", "timeout": 0}, "timeout must be"),
        ({"path": "/x", "headers": {"x-name": "żółw"}}, "ISO-8859-1"),
    ],
)
async def test_malformed_calls_raise_config_error_before_sending(
    kwargs: dict[str, object], match: str
) -> None:
    """Bad arguments are refused with a ``ConfigError`` naming the problem; nothing is sent."""
    async with harness(status(200)) as h:
        path = kwargs.pop("path")
        with pytest.raises(ConfigError, match=match):
            await h.client.request("GET", str(path), **kwargs)  # type: ignore[arg-type]
        assert h.received() == 0


async def test_header_injection_is_refused_and_does_not_hurt_the_instance() -> None:
    """A CR/LF in a header value raises at once: no retry, no outlier or breaker failure."""
    from qanat.http import InvalidRequest

    async with harness(status(200)) as h:
        for _ in range(10):
            with pytest.raises(InvalidRequest):
                await h.client.get("/x", headers={"x-evil": "a\r\nx-injected: 1"})
        assert h.received() == 0
        assert h.client.stats()["ejected"] == []
        assert h.client.stats()["breakers"] == {"u0": "closed"}
        assert (await h.client.get("/x")).status == 200


async def test_a_configured_retriable_4xx_status_is_retried() -> None:
    """A status listed in ``retriable_status_codes`` (here 404) is retried like a 503."""
    from qanat.core.retry import RetryPolicy

    retry = RetryPolicy(max_attempts=2, retry_on=frozenset({"retriable-status-codes"}),
                        retriable_status_codes=frozenset({404}))
    async with harness(sequence(404, 200), client_settings=settings(retry=retry)) as h:
        got = await h.client.get("/x")
        assert (got.status, got.attempts) == (200, 2)


async def test_success_is_never_retried_and_leaves_the_budget_idle() -> None:
    """A 200 returns after one attempt, with no wait and no retry reserved."""
    budget = RetryBudget()
    async with harness(status(200), budget=budget) as h:
        got = await h.client.get("/x")
        assert (got.status, got.attempts, h.sleeps) == (200, 1, [])
        assert budget.stats() == type(budget.stats())(0, 0, 0)
