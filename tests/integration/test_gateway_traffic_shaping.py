"""Rate limits, canary splits and fault injection through a real gateway and upstreams."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from test_gateway_support import (
    Backend,
    RawClient,
    backends,
    gateway_client,
    get,
    start_gateway,
    static,
)

from qanat.gateway.app import Gateway
from qanat.gateway.upstream import StaticResolver
from qanat.ports import Instance

pytestmark = pytest.mark.integration


@pytest.fixture
async def pair() -> AsyncIterator[list[Backend]]:
    bs = await backends("stable", "canary")
    yield bs
    for b in bs:
        await b.close()


async def test_rate_limit_answers_429_with_headers(pair: list[Backend]) -> None:
    """Three requests pass with RateLimit headers, the fourth gets 429 with Retry-After."""
    up, _ = pair
    async with gateway_client(
        [{"name": "rl", "upstream": static(up), "filters": [
            {"name": "rate_limit", "config": {"rate": 0.1, "burst": 3, "key": "route"}}]}]
    ) as (_gw, client):
        replies = [await client.request(get("/x")) for _ in range(4)]
        assert [r.status for r in replies] == [200, 200, 200, 429]
        assert [r.headers[b"x-ratelimit-remaining"] for r in replies] == [b"2", b"1", b"0", b"0"]
        assert replies[0].headers[b"ratelimit-policy"] == b'"rl";q=3;w=30'
        refused = replies[3]
        assert int(refused.headers[b"retry-after"]) == 10  # one permit per 10 s
        assert refused.headers[b"ratelimit"] == b'"rl";r=0;t=10'
        assert refused.json()["type"] == "urn:qanat:problem:rate-limited"
        assert up.count() == 3


async def test_rate_limit_per_header_value(pair: list[Backend]) -> None:
    """With key header:x-tenant each tenant has its own limit."""
    up, _ = pair
    async with gateway_client(
        [{"name": "rl", "upstream": static(up), "filters": [
            {"name": "rate_limit", "config": {"rate": 0.1, "burst": 1, "key": "header:x-tenant"}}]}]
    ) as (_gw, client):
        statuses = [(await client.request(get("/x", extra=f"X-Tenant: {t}\r\n"))).status
                    for t in ("a", "b", "a", "b")]
        assert statuses == [200, 200, 429, 429]


async def test_canary_split_is_exact_over_a_cycle(pair: list[Backend]) -> None:
    """A 90/10 split sends exactly 90 of 100 requests to stable and 10 to canary."""
    stable, canary = pair
    upstream = {"kind": "static",
                "targets": [{"url": stable.url, "version": "1.0"},
                            {"url": canary.url, "version": "1.1"}],
                "subsets": {"stable": {"version": "1.0"}, "canary": {"version": "1.1"}},
                "split": {"stable": 90, "canary": 10}}
    async with gateway_client([{"name": "c", "upstream": upstream}]) as (_gw, client):
        seen = Counter([(await client.request(get("/x"))).json()["instance"]
                        for _ in range(100)])
        assert seen == {"stable": 90, "canary": 10}


async def test_header_and_cookie_rules_pick_the_subset(pair: list[Backend]) -> None:
    """x-canary: 1 or the cookie canary=yes always reach the canary subset of a service."""
    stable, canary = pair
    resolver = StaticResolver({"shop": [
        Instance("s1", "shop", "127.0.0.1", stable.port, version="1.0"),
        Instance("c1", "shop", "127.0.0.1", canary.port, version="1.1", tags=("canary",)),
    ]})
    upstream = {"kind": "service", "service": "shop",
                "subsets": {"stable": {"version": "1.0"}, "canary": {"tags": ["canary"]}},
                "split": {"stable": 1},
                "subset_rules": [{"header": "x-canary", "exact": "1", "subset": "canary"},
                                 {"cookie": "canary", "exact": "yes", "subset": "canary"}]}
    gw = Gateway([{"name": "c", "upstream": upstream}], resolver=resolver)
    await gw.start("127.0.0.1", 0)
    client = await RawClient.connect(gw.port)
    try:
        for extra, want in [("", "stable"), ("X-Canary: 1\r\n", "canary"),
                            ("X-Canary: 2\r\n", "stable"),
                            ("Cookie: a=b; canary=yes\r\n", "canary")] * 3:
            assert (await client.request(get("/x", extra=extra))).json()["instance"] == want
    finally:
        await client.close()
        await gw.aclose(timeout=1)


async def test_fault_abort_hits_exactly_the_drawn_requests(pair: list[Backend]) -> None:
    """Abort 30 % with seed 7: exactly the requests whose draw is under 0.3 get the 503."""
    up, _ = pair
    gw = await start_gateway([{"name": "f", "upstream": static(up), "filters": [
        {"name": "fault", "config": {"abort": {"status": 503, "percentage": 30}, "seed": 7}}]}])
    draws = random.Random(7)
    expected = [503 if draws.random() * 100 < 30 else 200 for _ in range(100)]
    client = await RawClient.connect(gw.port)
    try:
        got = [(await client.request(get("/x"))).status for _ in range(100)]
        assert got == expected and 15 < expected.count(503) < 45
        assert up.count() == expected.count(200)
    finally:
        await client.close()
        await gw.aclose(timeout=1)


async def test_fault_delay_only_when_the_header_is_present(pair: list[Backend]) -> None:
    """A 100 % delay scoped to x-fault: 1 holds those requests back; others pass untouched."""
    up, _ = pair
    async with gateway_client(
        [{"name": "f", "upstream": static(up), "filters": [
        {"name": "fault", "config": {"delay": {"duration": "150ms"}, "header": "x-fault",
                "value": "1", "abort": {"status": 418,
                                        "percentage": 0}}}]}]
    ) as (_gw, client):
        started = time.monotonic()
        assert (await client.request(get("/x", extra="X-Fault: 1\r\n"))).status == 200
        assert time.monotonic() - started >= 0.15  # a delay is at least its duration
        assert (await client.request(get("/x", extra="X-Fault: 0\r\n"))).status == 200
        assert up.count() == 2
