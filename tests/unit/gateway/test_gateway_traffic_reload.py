"""Route state across ``update_routes``: kept when the route is unchanged, closed when dropped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import pytest
from tests.unit.gateway.upstream_support import Script, targets, upstreams

from qanat.gateway.app import Gateway
from qanat.gateway.filters import Exchange, Handler, Reply, register_filter, unregister_filter
from qanat.gateway.filters_ratelimit import RateLimitConfig, RateLimitFilter
from qanat.gateway.observe import Note
from qanat.gateway.proxy import Proxy
from qanat.gateway.route_runtime import RouteRuntime, RouteState
from qanat.gateway.upstream import Pick
from qanat.http import HttpPool
from qanat.testing import FakeClock, eventually

TARGETS = [{"url": f"http://10.0.0.{i}:80"} for i in (1, 2, 3)]


def route(name: str = "r", **extra: Any) -> dict[str, Any]:
    upstream = {"kind": "static", "targets": TARGETS, **extra.pop("upstream", {})}
    return {"name": name, "match": {"prefix": f"/{name}"}, "upstream": upstream, **extra}


BREAKER = {"breaker": {"consecutive_failures": 1, "timeout": "30s"}}
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


@pytest.fixture
async def clock() -> FakeClock:
    return FakeClock(start=0.0)


@pytest.fixture
async def make(clock: FakeClock) -> AsyncIterator[Any]:
    made: list[Gateway] = []

    def build(routes: list[dict[str, Any]], **kw: Any) -> Gateway:
        gw = Gateway(routes, clock=clock, **kw)
        made.append(gw)
        return gw

    yield build
    for gw in made:
        await gw.aclose()


def runtime(gw: Gateway, name: str = "r") -> RouteRuntime:
    return next(rt for rt in gw._state[1] if rt.route.name == name)


def fail(rt: RouteRuntime, clock: FakeClock, target: str | None = None) -> str:
    """One try answered 503, on ``target`` when given."""
    while True:
        choice = rt.upstream.choose([], [], clock())
        assert isinstance(choice, Pick)
        if target is None or choice.target.id == target:
            rt.upstream.settle(choice, 503, 0.0, clock())
            return choice.target.id
        rt.upstream.settle(choice, 200, 0.0, clock())


def breakers(gw: Gateway, name: str = "r") -> dict[str, str]:
    return {i.id: i.breaker for i in gw.upstream_state()[name].instances}


async def test_an_open_breaker_stays_open_across_a_reload(make: Any, clock: FakeClock) -> None:
    """Changing another route, or this route's timeout, keeps this route's breakers."""
    gw = make([route(upstream=BREAKER), route("s")])
    bad = fail(runtime(gw), clock)
    before = runtime(gw).upstream
    gw.update_routes([route(upstream=BREAKER, timeout="5s"), route("t")])
    assert runtime(gw).upstream is before
    assert breakers(gw)[bad] == "open"
    picked = {c.target.id for _ in range(6)
              if isinstance(c := runtime(gw).upstream.choose([], [], clock()), Pick)}
    assert bad not in picked


async def test_a_changed_upstream_starts_afresh(make: Any, clock: FakeClock) -> None:
    """A route whose upstream spec changed gets new breakers (its settings may differ)."""
    gw = make([route(upstream=BREAKER)])
    bad = fail(runtime(gw), clock)
    gw.update_routes([route(upstream={"breaker": {"consecutive_failures": 2}})])
    assert breakers(gw)[bad] == "closed"


async def test_a_renamed_route_starts_afresh(make: Any, clock: FakeClock) -> None:
    """State follows the route's name: a route under a new name has none of the old state."""
    gw = make([route(upstream=BREAKER)])
    fail(runtime(gw), clock)
    gw.update_routes([route("other", upstream=BREAKER)])
    assert set(breakers(gw, "other").values()) == {"closed"}


async def test_an_outlier_ejection_survives_a_reload(make: Any, clock: FakeClock) -> None:
    """An instance ejected by outlier detection stays ejected after an unrelated change."""
    od = {"outlier_detection": {"consecutive_5xx": 2, "max_ejection_percent": 50}}
    gw = make([route(upstream=od)])
    victim = "http://10.0.0.2:80"
    for _ in range(2):
        fail(runtime(gw), clock, victim)
    gw.update_routes([route(upstream=od, headers={"request": {"set": {"x-v": "2"}}})])
    state = {i.id: i for i in gw.upstream_state()["r"].instances}
    assert state[victim].ejected_for == pytest.approx(30.0)


async def test_balancer_position_continues_across_a_reload(make: Any, clock: FakeClock) -> None:
    """Round robin goes on where it was instead of starting over at the first target."""
    gw = make([route()])
    order = []
    for _ in range(2):
        c = runtime(gw).upstream.choose([], [], clock())
        assert isinstance(c, Pick)
        order.append(c.target.id)
        gw.update_routes([route(timeout="9s")])
    c = runtime(gw).upstream.choose([], [], clock())
    assert isinstance(c, Pick)
    assert [*order, c.target.id] == [t["url"] for t in TARGETS]


async def test_retry_budget_and_in_flight_carry_over(make: Any, clock: FakeClock) -> None:
    """Same budget settings keep the budget; the in-flight count is always shared."""
    gw = make([route(retry={}, max_concurrent=5)])
    old = runtime(gw)
    old.budget.request_started()
    old.load.in_flight = 3
    gw.update_routes([route(retry={"num_retries": 2}, max_concurrent=4)])
    new = runtime(gw)
    assert new.budget is old.budget and new.load.in_flight == 3
    state = gw.upstream_state()["r"]
    assert state.retry_budget is not None and state.retry_budget.active_requests == 1
    gw.update_routes([route(retry={"budget_percent": 50}, max_concurrent=4)])
    assert runtime(gw).budget is not old.budget and runtime(gw).load is old.load


async def test_breakers_use_the_gateways_clock(make: Any, clock: FakeClock) -> None:
    """The breaker's interval window runs on the injected clock, not on time.monotonic."""
    cfg = {"breaker": {"consecutive_failures": 2, "interval": "10s"}}
    gw = make([route(upstream={**cfg, "targets": TARGETS[:1]})])
    fail(runtime(gw), clock)
    clock.advance(11)  # the closed-state counts clear every interval
    fail(runtime(gw), clock)
    assert breakers(gw) == {TARGETS[0]["url"]: "closed"}


async def test_upstream_state_is_typed(make: Any) -> None:
    """upstream_state() maps every route name to its RouteState."""
    gw = make([route(), route("s", retry={})])
    states = gw.upstream_state()
    assert set(states) == {"r", "s"} and all(isinstance(s, RouteState) for s in states.values())
    assert states["r"].retry_budget is None and states["s"].retry_budget is not None


class Closable:
    """A filter that owns a resource: records whether it was closed."""

    made: ClassVar[list[Closable]] = []

    def __init__(self, config: Mapping[str, Any], route: str) -> None:
        self.config = dict(config)
        self.closed = 0
        Closable.made.append(self)

    async def __call__(self, ex: Exchange, call_next: Handler) -> Reply:
        return await call_next(ex)

    async def aclose(self) -> None:
        self.closed += 1


@pytest.fixture
def closable() -> Any:
    Closable.made = []
    register_filter("closable", Closable)
    yield Closable
    unregister_filter("closable")


async def test_dropped_filters_are_closed_and_kept_ones_are_not(
    make: Any, closable: Any
) -> None:
    """A reload closes the filters it drops; an unchanged filter stays, the same object."""
    f1 = {"name": "closable", "config": {"n": 1}}
    gw = make([route(filters=[f1]), route("s", filters=[f1])])
    kept, dropped = Closable.made
    gw.update_routes([route(filters=[f1]), route("s", filters=[{**f1, "config": {"n": 2}}])])
    assert runtime(gw).filters == (kept,)
    await eventually(lambda: dropped.closed == 1, interval=0, what="the dropped filter closed")
    assert kept.closed == 0
    await gw.aclose()
    assert [f.closed for f in Closable.made] == [1, 1, 1]


async def test_filters_retired_outside_a_loop_are_closed_by_aclose(closable: Any) -> None:
    """Routes swapped before the loop runs leave their dropped filters for aclose()."""
    gw = Gateway([route(filters=[{"name": "closable"}])])
    gw.update_routes([route()])
    assert Closable.made[0].closed == 0
    await gw.aclose()
    assert Closable.made[0].closed == 1


async def test_a_closed_rate_limiter_never_reopens_redis(clock: FakeClock) -> None:
    """After aclose a straggling request is checked by the local limiter, without Redis."""
    cfg = RateLimitConfig.model_validate(
        {"rate": 1, "burst": 1, "key": "route", "redis": {"url": "redis://127.0.0.1:1/0"}})
    f = RateLimitFilter(cfg, "r", clock=clock)
    await f.aclose()
    first, second = await f.decide(None), await f.decide(None)
    assert (first.allowed, second.allowed) == (True, False)
    assert f.stats() is None  # no Redis client was made


async def test_the_note_holds_the_target_tried_and_a_refusal_notes_nothing(
    clock: FakeClock,
) -> None:
    """An observed request's note (``exchange.note``) gets the instance the proxy sent it to;
    refused by open breakers it gets no instance, and the error kind ``circuit_open``."""
    async with upstreams(Script([NO_CONTENT]), len(TARGETS)) as servers, HttpPool() as pool:
        gw = Gateway([route(upstream={**BREAKER, "targets": targets(servers)})], clock=clock,
                     observers=[])
        try:
            rt = runtime(gw)

            def sent() -> list[str]:
                return [f"127.0.0.1:{s.port}" for s in servers for _ in s.received]

            async def observed() -> Note:
                note = Note()
                ex = Exchange(b"GET", b"/r", b"", [], host=b"h", authority=b"h", peer=b"p",
                              scheme=b"http", request_id=b"rid", route=rt)
                ex.note = note
                reply = await Proxy(pool, clock)(ex)
                if reply.release is not None:
                    await reply.release()
                return note

            for _ in TARGETS:
                fail(rt, clock)
            note = await observed()
            assert (note.target, note.error, sent()) == (None, "circuit_open", [])
            clock.advance(31)  # half-open: the first target offered gets the trial
            note = await observed()
            assert note.target is not None
            assert sent() == [f"{note.target.host}:{note.target.port}"]
            assert note.error is None
        finally:
            await gw.aclose()


async def test_a_new_runtime_takes_its_budget_from_the_route(make: Any) -> None:
    """Without a carried budget, the route's budget settings apply (0 % and 0: no retry)."""
    gw = make([route(retry={"budget_percent": 0, "min_retry_concurrency": 0})])
    rt = runtime(gw)
    rebuilt = RouteRuntime(rt.route, rt.upstream, rt.timeout, rt.handler)
    rebuilt.budget.request_started()
    assert not rebuilt.budget.try_retry()
    default = RouteRuntime(runtime(make([route(retry={})])).route, rt.upstream, 1.0, rt.handler)
    default.budget.request_started()
    assert default.budget.try_retry()  # Envoy's floor: 3 retries at once
