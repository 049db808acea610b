"""Traffic filters in isolation: registry, identity stripping, rate limits, faults, canary."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.errors import ConfigError
from qanat.gateway import filters
from qanat.gateway.filters import Exchange, Reply, build_filter, registered
from qanat.gateway.filters_ratelimit import RateLimitConfig, RateLimitFilter
from qanat.gateway.filters_traffic import FaultConfig, FaultFilter, SubsetChooser, SubsetRule
from qanat.security import Identity, hash_api_key
from qanat.testing import FakeClock

Headers = list[tuple[bytes, bytes]]


def exchange(headers: Headers | None = None, query: bytes = b"", peer: bytes = b"10.1.1.1",
             identity: Identity | None = None) -> Exchange:
    ex = Exchange(b"GET", b"/p", query, headers or [], host=b"h", authority=b"h", peer=peer,
                  scheme=b"http", request_id=b"rid")
    if identity is not None:
        ex.state = {"identity": identity}
    return ex


class Upstream:
    """The handler after the filter: records what it was given and answers 200."""

    def __init__(self) -> None:
        self.seen: list[Exchange] = []

    async def __call__(self, ex: Exchange) -> Reply:
        self.seen.append(ex)
        return Reply(200, [(b"content-type", b"text/plain")], b"ok")


def test_builtin_filters_are_known_and_a_user_filter_wins() -> None:
    """Built-ins register on first lookup; a name the application registered keeps its factory."""
    assert {"jwt", "jwt_auth", "key_auth", "rate_limit", "fault"} <= set(registered())

    def mine(config: Any, route: str) -> Any:
        return "mine"

    filters.register_filter("rate_limit", mine)
    try:
        filters._load_builtins()  # a second load must not clobber it either
        assert build_filter("rate_limit", {}, "r", "here") == "mine"
    finally:
        filters.register_filter("rate_limit", __import__(
            "qanat.gateway.filters_ratelimit", fromlist=["x"]).rate_limit_filter)


def test_exchange_strips_identity_headers_in_any_case() -> None:
    """Client identity headers never enter an Exchange; other headers keep their order."""
    headers = [(b"a", b"1"), (b"X-Qanat-Identity-Subject", b"admin"), (b"x-consumer-id", b"7"),
               (b"x-credential-identifier", b"k"), (b"x-other", b"2")]
    assert exchange(headers).headers == [(b"a", b"1"), (b"x-other", b"2")]
    clean = [(b"a", b"1"), (b"x-forwarded-for", b"1.2.3.4")]
    assert exchange(clean).headers is clean  # nothing to strip: no copy


def test_bad_filter_config_names_the_field() -> None:
    """A bad option is a ConfigError that names the filter's place and the field."""
    with pytest.raises(ConfigError, match=r"here\.config: .*burst"):
        build_filter("rate_limit", {"rate": 1, "burst": 0}, "r", "here")
    with pytest.raises(ConfigError, match=r"rate.*limit"):
        build_filter("rate_limit", {"burst": 3}, "r", "here")
    with pytest.raises(ConfigError, match="abort, delay"):
        build_filter("fault", {}, "r", "here")


def limiter(clock: FakeClock, **config: Any) -> RateLimitFilter:
    return RateLimitFilter(RateLimitConfig.model_validate(config), "api", clock=clock)


async def test_rate_limit_admits_the_burst_then_refuses_until_refill() -> None:
    """rate 2/s burst 2: two pass with headers, the third is 429, one more after 0.5 s."""
    clock, up = FakeClock(), Upstream()
    f = limiter(clock, rate=2.0, burst=2, key="route")
    replies = [await f(exchange(), up) for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 429]
    assert dict(replies[0].headers)[b"x-ratelimit-remaining"] == b"1"
    refused = dict(replies[2].headers)
    assert refused[b"retry-after"] == b"1" and refused[b"ratelimit"] == b'"api";r=0;t=1'
    clock.advance(0.5)
    assert (await f(exchange(), up)).status == 200
    assert len(up.seen) == 3


async def test_rate_limit_keys_fall_back_to_the_client_address() -> None:
    """Per-consumer limits are separate; a request without a consumer is limited by address."""
    clock, up = FakeClock(), Upstream()
    f = limiter(clock, rate=1.0, burst=1, key="consumer")
    alice = Identity("alice", "apikey", consumer="alice")
    bob = Identity("bob", "apikey", consumer="bob")
    got = [(await f(exchange(identity=i), up)).status for i in (alice, bob, alice, None, None)]
    assert got == [200, 200, 429, 200, 429]


async def test_sliding_window_limit_per_header() -> None:
    """limit 2 per 10 s keyed by x-tenant: the third request of a tenant in a window is 429."""
    clock, up = FakeClock(), Upstream()
    f = limiter(clock, limit=2, window="10s", key="header:X-Tenant", headers=False)
    a = [(b"x-tenant", b"a")]
    got = [(await f(exchange(a), up)).status for _ in range(3)]
    assert got == [200, 200, 429]
    refused = await f(exchange(a), up)
    assert [k for k, _ in refused.headers if k.startswith((b"ratelimit", b"x-ratelimit"))] == []
    assert b"retry-after" in dict(refused.headers)
    assert (await f(exchange([(b"x-tenant", b"b")]), up)).status == 200


def draws(*values: float) -> Callable[[], float]:
    it = iter(values)
    return lambda: next(it)


async def test_fault_delays_then_aborts_by_draw() -> None:
    """Delay drawn first, abort second: each request is faulted exactly when its draw says."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    cfg = FaultConfig.model_validate({"delay": {"duration": "2s", "percentage": 50},
                                      "abort": {"status": 503, "percentage": 20}})
    f = FaultFilter(cfg, "r", rng=draws(0.4, 0.9, 0.6, 0.1, 0.6, 0.3), sleep=sleep)
    up = Upstream()
    statuses = [(await f(exchange(), up)).status for _ in range(3)]
    assert statuses == [200, 503, 200] and slept == [2.0] and len(up.seen) == 2
    assert (f.delayed, f.aborted) == (1, 1)


async def test_fault_only_with_the_header_and_capped_by_max_active() -> None:
    """Without the header nothing is drawn; beyond max_active_faults requests pass untouched."""
    cfg = FaultConfig.model_validate({"abort": {"status": 500}, "header": "x-chaos",
                                      "max_active_faults": 0})
    f = FaultFilter(cfg, "r", rng=draws())  # any draw would raise StopIteration
    up = Upstream()
    assert (await f(exchange(), up)).status == 200
    g = FaultFilter(cfg, "r", rng=draws(0.0))
    assert (await g(exchange([(b"x-chaos", b"yes")]), up)).status == 200
    assert g.overflow == 1 and g.aborted == 0


@given(st.dictionaries(st.sampled_from("abcde"), st.integers(1, 20), min_size=1),
       st.integers(1, 3))
def test_split_is_exact_in_every_cycle(weights: dict[str, int], cycles: int) -> None:
    """Over k cycles of sum(weights)/gcd picks each subset is chosen exactly k*weight/gcd times."""
    chooser = SubsetChooser(weights, [])
    g = math.gcd(*weights.values())
    n = cycles * sum(weights.values()) // g
    counts = Counter(chooser.choose([]) for _ in range(n))
    assert counts == {k: cycles * w // g for k, w in weights.items()}


def test_rules_come_before_the_split() -> None:
    """A matching header or cookie rule wins; a non-matching request follows the split."""
    rules = [SubsetRule(subset="canary", header="x-canary", regex="1|yes"),
             SubsetRule(subset="beta", cookie="beta")]
    chooser = SubsetChooser({"stable": 1}, rules)
    assert chooser.choose([(b"x-canary", b"yes")]) == "canary"
    assert chooser.choose([(b"x-canary", b"no")]) == "stable"
    assert chooser.choose([(b"cookie", b"a=1; beta=on")]) == "beta"
    assert chooser.choose([(b"cookie", b"alpha=1")]) == "stable"


async def test_key_auth_filter_forwards_identity_and_hides_the_key() -> None:
    """A valid query key becomes identity headers and state; the key leaves the query."""
    f = build_filter("key_auth", {"consumers": [
        {"name": "web", "key_sha256": hash_api_key("s3cret")}]}, "r", "here")
    up = Upstream()
    reply = await f(exchange(query=b"?a=1&apikey=s3cret"), up)
    assert reply.status == 200
    ex = up.seen[0]
    assert ex.query == b"?a=1" and ex.state is not None
    assert ex.state["identity"].consumer == "web"
    assert (b"x-consumer-username", b"web") in ex.headers
    refused = await f(exchange(query=b"?apikey=wrong"), up)
    assert refused.status == 401 and len(up.seen) == 1
