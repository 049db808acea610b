"""Upstream choice (breakers, outlier ejection, subsets) and the retry decision, pure."""

from __future__ import annotations

from typing import Any

import pytest

from qanat.core.retry import RetryPolicy
from qanat.errors import ConfigError
from qanat.gateway.config import RouteConfig, parse_routes
from qanat.gateway.resilience import RetryConfig, retry_allowed
from qanat.gateway.upstream import Pick, Refusal, StaticResolver, Upstream
from qanat.http import ConnectError, PoolOverloaded, UpstreamReset, UpstreamTimeout
from qanat.ports import Instance
from qanat.testing import FakeClock


def route(upstream: dict[str, Any], **extra: Any) -> RouteConfig:
    return parse_routes([{"name": "r", "upstream": upstream, **extra}])[0]


def static(n: int, **extra: Any) -> dict[str, Any]:
    targets = [{"url": f"http://10.0.0.{i}:80"} for i in range(1, n + 1)]
    return {"kind": "static", "targets": targets, **extra}


def make(upstream: dict[str, Any], clock: FakeClock, resolver: Any = None) -> Upstream:
    return Upstream(route(upstream).upstream, resolver, "r", clock=clock)


def pick(up: Upstream, clock: FakeClock, tried: tuple[str, ...] = (),
         headers: list[tuple[bytes, bytes]] | None = None) -> Pick:
    choice = up.choose(headers or [], list(tried), clock())
    assert isinstance(choice, Pick), choice
    return choice


def test_a_retry_prefers_an_instance_not_tried_yet() -> None:
    """With tried=[x], choose never returns x while another instance is available."""
    clock = FakeClock()
    up = make(static(3), clock)
    for _ in range(9):
        first = pick(up, clock)
        again = pick(up, clock, (first.target.id,))
        assert again.target.id != first.target.id
        up.settle(first, 503, 0.01, clock())
        up.settle(again, 200, 0.01, clock())


def test_breaker_opens_after_consecutive_failures_and_half_opens() -> None:
    """N failures open the instance's breaker (circuit-open refusal); after timeout, one trial."""
    clock = FakeClock()
    up = make(static(1, breaker={"consecutive_failures": 3, "timeout": "10s"}), clock)
    for _ in range(3):
        up.settle(pick(up, clock), 500, 0.0, clock())
    refusal = up.choose([], [], clock())
    assert isinstance(refusal, Refusal) and refusal.reason == "circuit-open"
    assert refusal.retry_after == pytest.approx(10.0)
    clock.advance(10.5)
    trial = pick(up, clock)
    assert isinstance(up.choose([], [], clock()), Refusal)  # half-open: one trial at a time
    up.settle(trial, 200, 0.0, clock())
    assert [s.breaker for s in up.state(clock())] == ["closed"]


def test_an_open_breaker_sends_traffic_to_the_other_instances() -> None:
    """While one instance's breaker is open every pick goes to the others."""
    clock = FakeClock()
    up = make(static(3, breaker={"consecutive_failures": 1}), clock)
    bad = pick(up, clock)
    up.settle(bad, 502, 0.0, clock())
    ids = set()
    for _ in range(12):
        p = pick(up, clock)
        ids.add(p.target.id)
        up.settle(p, 200, 0.0, clock())
    assert bad.target.id not in ids and len(ids) == 2


def test_client_errors_and_own_overload_do_not_trip_the_breaker() -> None:
    """4xx count as successes and a full local queue (outcome None) as nothing."""
    clock = FakeClock()
    up = make(static(1, breaker={"consecutive_failures": 2}), clock)
    for outcome in (404, None, 429, None, None):
        up.settle(pick(up, clock), outcome, 0.0, clock())
    assert [s.breaker for s in up.state(clock())] == ["closed"]


def test_outlier_detection_ejects_and_the_panic_threshold_keeps_all() -> None:
    """5 consecutive 5xx eject an instance for 30 s; below half routable, all are used (panic)."""
    clock = FakeClock()
    up = make(static(4, outlier_detection={"max_ejection_percent": 100}), clock)
    victim = "http://10.0.0.1:80"
    for _ in range(5):
        up.settle(Pick(_target(up, victim), 0, None), 503, 0.0, clock())
    chosen = {pick(up, clock).target.id for _ in range(12)}
    assert victim not in chosen and len(chosen) == 3
    state = {s.id: s for s in up.state(clock())}
    assert state[victim].ejected_until == pytest.approx(clock() + 30)
    for other in ("http://10.0.0.2:80", "http://10.0.0.3:80"):
        for _ in range(5):
            up.settle(Pick(_target(up, other), 0, None), 503, 0.0, clock())
    # three of four ejected: under half would remain, so every instance is used (Envoy's panic)
    assert {pick(up, clock).target.id for _ in range(12)} == {s.id for s in up.state(clock())}
    clock.advance(31)
    assert victim in {pick(up, clock).target.id for _ in range(12)}


def _target(up: Upstream, target_id: str) -> Any:
    return next(t for t in up._targets if t.id == target_id)


def test_subsets_by_version_and_tag_with_fallback() -> None:
    """A rule routes to its subset; an empty subset borrows every instance unless told not to."""
    clock = FakeClock()
    resolver = StaticResolver({"svc": [
        Instance("a", "svc", "10.0.0.1", 80, version="1"),
        Instance("b", "svc", "10.0.0.2", 80, version="2", tags=("canary",)),
    ]})
    spec = {"kind": "service", "service": "svc",
            "subsets": {"v2": {"version": "2", "tags": ["canary"]}, "v3": {"version": "3"}},
            "subset_rules": [{"header": "x-v", "exact": "2", "subset": "v2"},
                             {"header": "x-v", "exact": "3", "subset": "v3"}]}
    up = make(spec, clock, resolver)
    assert {pick(up, clock, headers=[(b"x-v", b"2")]).target.id for _ in range(5)} == {"b"}
    assert {pick(up, clock, headers=[(b"x-v", b"3")]).target.id for _ in range(5)} == {"a", "b"}
    strict = make({**spec, "subset_fallback": False}, clock, resolver)
    refusal = strict.choose([(b"x-v", b"3")], [], clock())
    assert isinstance(refusal, Refusal) and refusal.reason == "no-endpoint"
    assert "subset 'v3'" in refusal.detail


def test_subsets_need_a_resolver_with_instances() -> None:
    """A service upstream with subsets over an endpoints-only resolver is a ConfigError."""

    class Endpoints:
        def endpoints(self, service: str) -> list[tuple[str, str, int, int]]:
            return []

    spec = {"kind": "service", "service": "svc", "subsets": {"v": {"version": "1"}}}
    with pytest.raises(ConfigError, match="instances"):
        make(spec, FakeClock(), Endpoints())


@pytest.mark.parametrize(("bad", "words"), [
    ({"retry": {"retry_on": ["sometimes"]}}, "unknown retry_on"),
    ({"retry": {"retriable_status_codes": [409]}}, "retriable-status-codes"),
    ({"retry": {"base_interval": "1s", "max_interval": "10ms"}}, "max_interval"),
    ({"max_concurrent": 0}, "max_concurrent"),
    ({"upstream": static(1, split={"x": 1})}, "unknown subset"),
    ({"upstream": static(1, subsets={"x": {}})}, "version or tags"),
    ({"upstream": static(1, subsets={"x": {"version": "1"}}, split={"x": 0})}, "all be 0"),
    ({"upstream": static(1, breaker={"consecutive_failures": 0})}, "consecutive_failures"),
])
def test_bad_traffic_config_is_a_config_error(bad: dict[str, Any], words: str) -> None:
    """Each malformed retry, limit, subset or breaker setting names the problem."""
    raw = {"name": "r", "upstream": static(1), **bad}
    with pytest.raises(ConfigError, match=words):
        parse_routes([raw])


GET, POST, PUT = b"GET", b"POST", b"PUT"
POLICY = RetryConfig(retry_on=["connect-failure", "reset", "gateway-error",
                               "retriable-status-codes"],
                     retriable_status_codes=[409]).policy()


def reset(sent: bool = True) -> UpstreamReset:
    return UpstreamReset("reset", request_sent=sent)


@pytest.mark.parametrize(("method", "replayable", "status", "error", "ok"), [
    (GET, True, 503, None, True),  # gateway-error
    (GET, True, 500, None, False),  # a 500 is not a gateway error
    (GET, True, 409, None, True),  # retriable-status-codes
    (POST, True, 503, None, False),  # reached the upstream, not idempotent
    (PUT, False, 503, None, False),  # the streamed body cannot be sent again
    (POST, False, None, ConnectError("refused"), True),  # nothing was sent
    (POST, True, None, reset(), False),  # reached the upstream
    (GET, True, None, reset(), True),
    (GET, False, None, reset(), False),
    (GET, True, None, UpstreamTimeout("slow", request_sent=True), True),  # per-try = 504
    (GET, True, None, PoolOverloaded("full"), False),  # never add to overload
])
def test_retry_allowed(method: bytes, replayable: bool, status: int | None,
                       error: Exception | None, ok: bool) -> None:
    """Only safe tries with a named condition are retried (Envoy conditions, RFC 9110)."""
    assert retry_allowed(POLICY, method, replayable, status, error) is ok  # type: ignore[arg-type]


def test_reset_condition_alone_does_not_cover_timeouts() -> None:
    """retry_on [reset] retries a reset GET but not a per-try timeout (that needs 5xx/gateway)."""
    policy = RetryPolicy(retry_on=frozenset({"reset"}))
    assert retry_allowed(policy, GET, True, error=reset())
    assert not retry_allowed(policy, GET, True, error=UpstreamTimeout("t", request_sent=True))
    assert not retry_allowed(policy, GET, True, status=503)


def test_a_deregistered_instance_still_counts_in_the_spread_of_its_failed_calls() -> None:
    """When an instance dies and leaves discovery, the calls it held fail and retry: the
    retry budget's floor divides by the instances they were spread over, the dead one too."""
    from qanat.core.retry import RetryBudget

    class Shrinking:
        def __init__(self) -> None:
            self.live = [("a", "10.0.0.1", 80, 1), ("b", "10.0.0.2", 80, 1)]

        def endpoints(self, service: str) -> list[tuple[str, str, int, int]]:
            return self.live

    clock = FakeClock()
    resolver = Shrinking()
    up = make({"kind": "service", "service": "svc"}, clock, resolver)
    pick(up, clock)  # the instance list is read on a pick
    assert (up.size, up.spread("a"), up.spread("b")) == (2, 2, 2)
    resolver.live = resolver.live[1:]  # "a" was killed and deregistered
    pick(up, clock)
    assert (up.size, up.spread("a"), up.spread("b")) == (1, 2, 1)
    budget = RetryBudget()  # the scaling floor: max(3, ceil(active / hosts))
    for _ in range(8):
        budget.request_started()
    granted = sum(budget.try_retry(up.spread("a")) for _ in range(5))
    assert granted == 4  # ceil(8 / 2): the share "a" held; by the survivors alone it was 3
