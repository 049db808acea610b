"""The client applies a target's bulkhead and adaptive throttle to each attempt, in policy order."""

from __future__ import annotations

import asyncio

import pytest
from tests.unit.http.upstream_servers import Exchange, Received, response
from tests.unit.runtime.client_support import (
    NEVER_TRIP,
    NO_OUTLIERS,
    harness,
    retrying,
    sequence,
    settings,
    status,
)

from qanat.core.balance import LeastRequest
from qanat.core.breaker import BreakerSettings
from qanat.core.throttle import AdaptiveThrottle
from qanat.errors import CircuitOpenError, Overloaded, Unavailable
from qanat.http import UpstreamReset
from qanat.policy import load_policies
from qanat.runtime.bulkhead import Bulkhead
from qanat.runtime.client import settings_from_policy
from qanat.testing import eventually

ALWAYS_SHED = 0.0  # an rng that returns 0 sheds whenever the reject probability is above 0


class Gate:
    """A handler that holds every request until ``open`` is set, then answers 200."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.arrived = 0

    async def __call__(self, req: Received, ex: Exchange) -> None:
        self.arrived += 1
        await self.open.wait()
        await ex.send(response(200, b"ok"))


# -- bulkhead --------------------------------------------------------------------------


async def test_a_full_bulkhead_refuses_at_once_without_sending() -> None:
    """One slot, no queue: a second concurrent call is ``Overloaded`` and never reaches the wire."""
    gate, bulkhead = Gate(), Bulkhead(1, name="users")
    async with harness(gate, client_settings=settings(bulkhead=bulkhead)) as h:
        first = asyncio.create_task(h.client.get("/a"))
        await eventually(lambda: gate.arrived == 1, what="the first call at the upstream")
        with pytest.raises(Overloaded) as caught:
            await h.client.get("/b")
        assert isinstance(caught.value, Unavailable)
        assert "users: GET /b was not sent" in str(caught.value)
        assert "max_concurrent=1" in str(caught.value)
        assert h.received() == 1
        gate.open.set()
        assert (await first).status == 200
        assert (await h.client.get("/c")).status == 200  # the slot came back
        stats = h.client.stats()["bulkhead"]
        assert (stats.in_flight, stats.admitted, stats.rejected) == (0, 2, 1)
        assert h.client.stats()["breakers"] == {"u0": "closed"}


async def test_a_queued_call_holds_no_pick_and_is_sent_when_a_slot_frees() -> None:
    """While a call waits in the bulkhead queue its instance pick is handed back; then it runs."""
    gate, bulkhead = Gate(), Bulkhead(1, max_queue=1, name="users")
    conf = settings(bulkhead=bulkhead, load_balancer="least_request")
    async with harness(gate, client_settings=conf) as h:
        lb = h.client.balancer
        assert isinstance(lb, LeastRequest)
        first = asyncio.create_task(h.client.get("/a"))
        await eventually(lambda: gate.arrived == 1, what="the first call at the upstream")
        second = asyncio.create_task(h.client.get("/b"))
        await eventually(lambda: bulkhead.stats().queued == 1, what="the second call queued")
        assert lb.active("u0") == 1  # only the call that holds the slot
        gate.open.set()
        assert [(await first).status, (await second).status] == [200, 200]
        assert [r.target for r in h.upstreams[0].received] == [b"/a", b"/b"]
        assert lb.active("u0") == 0
        assert bulkhead.stats().in_flight == bulkhead.stats().queued == 0


async def test_a_queued_call_that_outlives_its_deadline_is_overloaded_and_unsent() -> None:
    """No slot before the call's deadline: ``Overloaded`` naming the deadline; the queue empties."""
    gate, bulkhead = Gate(), Bulkhead(1, max_queue=1, name="users")
    async with harness(gate, client_settings=settings(bulkhead=bulkhead)) as h:
        first = asyncio.create_task(h.client.get("/a"))
        await eventually(lambda: gate.arrived == 1, what="the first call at the upstream")
        with pytest.raises(Overloaded, match=r"before the call's deadline.*GET /b was not sent"):
            await h.client.get("/b", timeout=0.05)
        assert bulkhead.stats().queued == 0 and h.received() == 1
        gate.open.set()
        assert (await first).status == 200


async def test_cancelling_a_queued_call_leaks_no_slot() -> None:
    """A caller cancelled while queued leaves the queue; the bulkhead ends empty."""
    gate, bulkhead = Gate(), Bulkhead(1, max_queue=1, name="users")
    async with harness(gate, client_settings=settings(bulkhead=bulkhead)) as h:
        first = asyncio.create_task(h.client.get("/a"))
        await eventually(lambda: gate.arrived == 1, what="the first call at the upstream")
        second = asyncio.create_task(h.client.get("/b"))
        await eventually(lambda: bulkhead.stats().queued == 1, what="the second call queued")
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        gate.open.set()
        assert (await first).status == 200
        assert (await h.client.get("/c")).status == 200
        stats = bulkhead.stats()
        assert (stats.in_flight, stats.queued, stats.cancelled, stats.admitted) == (0, 0, 1, 2)
        assert h.client.budget.stats().active_requests == 0


async def test_the_slot_is_given_back_when_the_attempt_fails() -> None:
    """A reset connection raises as before, and the bulkhead slot is free afterwards."""

    async def reset(req: Received, ex: Exchange) -> None:
        ex.reset()

    bulkhead = Bulkhead(1, name="users")
    conf = settings(bulkhead=bulkhead, retry=retrying(1), outlier=NO_OUTLIERS)
    async with harness(reset, client_settings=conf) as h:
        for _ in range(3):
            with pytest.raises(UpstreamReset):
                await h.client.post("/x", json={})
        assert bulkhead.stats().in_flight == 0 and bulkhead.stats().admitted == 3


async def test_each_retry_takes_its_own_slot() -> None:
    """The bulkhead sits inside the retry: a 503 then a 200 take the one slot twice, in turn."""
    bulkhead = Bulkhead(1, name="users")
    async with harness(sequence(503, 200), client_settings=settings(bulkhead=bulkhead)) as h:
        got = await h.client.get("/x")
        assert (got.status, got.attempts) == (200, 2)
        assert (bulkhead.stats().admitted, bulkhead.stats().in_flight) == (2, 0)


async def test_an_open_breaker_refuses_before_the_bulkhead_is_asked() -> None:
    """Breaker before bulkhead: with every breaker open the call costs no bulkhead slot."""
    trip_at_1 = BreakerSettings(timeout=30.0, ready_to_trip=lambda c: c.consecutive_failures >= 1)
    bulkhead = Bulkhead(1, name="users")
    conf = settings(bulkhead=bulkhead, breaker=trip_at_1, retry=retrying(1), outlier=NO_OUTLIERS)
    async with harness(status(500), client_settings=conf) as h:
        assert (await h.client.get("/x")).status == 500
        with pytest.raises(CircuitOpenError):
            await h.client.get("/x")
        assert (bulkhead.stats().admitted, bulkhead.stats().rejected) == (1, 0)


# -- adaptive throttle -------------------------------------------------------------------


@pytest.mark.parametrize("code", [503, 500, 429])
async def test_the_throttle_sheds_locally_once_the_backend_refuses(code: int) -> None:
    """After one refusal (5xx or 429) the next call is shed with ``Overloaded``, unsent."""
    th = AdaptiveThrottle("users", rng=lambda: ALWAYS_SHED)
    async with harness(status(code), client_settings=settings(throttle=th, retry=retrying(1))) as h:
        assert (await h.client.get("/x")).status == code
        shed = r"users: shed by adaptive throttling.*now 0\.67.*GET /y"
        with pytest.raises(Overloaded, match=shed):
            await h.client.get("/y")
        assert h.received() == 1
        stats = h.client.stats()["throttle"]
        assert (stats.requests, stats.accepts, stats.shed_total) == (2, 0, 1)


async def test_answers_below_500_count_as_accepted() -> None:
    """A 404 is an answer: the throttle never sheds calls the backend answers."""
    th = AdaptiveThrottle("users", rng=lambda: ALWAYS_SHED)
    async with harness(status(404), client_settings=settings(throttle=th)) as h:
        for _ in range(20):
            assert (await h.client.get("/x")).status == 404
        stats = th.stats(h.clock())
        assert (stats.requests, stats.accepts, stats.shed_total) == (20, 20, 0)


async def test_the_throttle_lets_through_k_times_what_the_backend_accepts() -> None:
    """20 accepted, then refusals: with K = 2, sending goes on until 40 requests, then sheds."""
    th = AdaptiveThrottle("users", rng=lambda: ALWAYS_SHED)
    answers = sequence(*([200] * 20), 503)
    conf = settings(throttle=th, retry=retrying(1), breaker=NEVER_TRIP, outlier=NO_OUTLIERS)
    async with harness(answers, client_settings=conf) as h:
        sent = 0
        while True:
            try:
                await h.client.get("/x")
            except Overloaded:
                break
            sent += 1
        assert sent == 20 + 21  # refusals are sent while requests <= 2 x accepts (40)
        assert h.received() == sent


async def test_the_throttle_forgets_after_its_window_and_sends_again() -> None:
    """Shedding is learned over the trailing window: once it has passed, calls go out again."""
    th = AdaptiveThrottle("users", window=10.0, rng=lambda: ALWAYS_SHED)
    answers = sequence(503, 200)
    async with harness(answers, client_settings=settings(throttle=th, retry=retrying(1))) as h:
        assert (await h.client.get("/x")).status == 503
        with pytest.raises(Overloaded):
            await h.client.get("/x")
        h.clock.advance(10.5)
        assert (await h.client.get("/x")).status == 200
        assert h.received() == 2


async def test_a_shed_retry_leaves_the_last_answer_standing() -> None:
    """Throttle inside retry: a retry the throttle sheds ends the call with the 503 it had."""
    th = AdaptiveThrottle("users", rng=lambda: ALWAYS_SHED)
    async with harness(status(503), client_settings=settings(throttle=th)) as h:
        got = await h.client.get("/x")
        assert (got.status, got.attempts) == (503, 1)
        assert th.stats(h.clock()).shed_total == 1


async def test_a_shed_retry_is_noted_on_the_raised_error() -> None:
    """When the last outcome is an error, the shed retry is noted on it."""

    async def reset(req: Received, ex: Exchange) -> None:
        ex.reset()

    th = AdaptiveThrottle("users", rng=lambda: ALWAYS_SHED)
    async with harness(reset, client_settings=settings(throttle=th, outlier=NO_OUTLIERS)) as h:
        with pytest.raises(UpstreamReset) as caught:
            await h.client.get("/x")
        assert any("retry not sent" in n and "adaptive" in n for n in caught.value.__notes__)


async def test_excluded_attempts_teach_the_throttle_nothing() -> None:
    """An invalid request never reaches an instance: the throttle does not count it."""
    from qanat.http import InvalidRequest

    th = AdaptiveThrottle("users", rng=lambda: ALWAYS_SHED)
    bulkhead = Bulkhead(1, name="users")
    async with harness(status(200), client_settings=settings(throttle=th, bulkhead=bulkhead)) as h:
        for _ in range(5):
            with pytest.raises(InvalidRequest):
                await h.client.get("/x", headers={"x-evil": "a\r\nb: 1"})
        assert th.stats(h.clock()).requests == 0
        assert bulkhead.stats().in_flight == 0


# -- from qanat.yaml policies --------------------------------------------------------------


SPEC = {
    "bulkheads": {"one": {"maxConcurrent": 1}},
    "throttles": {"sre": {"k": 2, "window": "10s"}},
    "targets": {"services": {"users": {"bulkhead": "one", "throttle": "sre"}}},
}


def test_settings_from_policy_carry_the_policys_bulkhead_and_throttle() -> None:
    """The client gets the policy's own bulkhead and throttle, shared with its decorator."""
    policies = load_policies(SPEC)
    policy = policies.for_target("users")
    s = settings_from_policy(policy)
    assert s.bulkhead is policy.bulkhead and s.throttle is policy.throttle
    assert s.bulkhead is not None and s.bulkhead.stats().max_concurrent == 1
    plain = settings_from_policy(policies.for_target("catalog"))
    assert plain.bulkhead is None and plain.throttle is None


async def test_a_policy_bulkhead_bounds_the_client_and_the_decorator_together() -> None:
    """One slot for the target in this process: a decorated call holding it refuses the client."""
    policy = load_policies(SPEC).for_target("users")
    conf = settings(bulkhead=policy.bulkhead, throttle=policy.throttle)
    held, release = asyncio.Event(), asyncio.Event()

    @policy
    async def hold() -> None:
        held.set()
        await release.wait()

    async with harness(status(200), client_settings=conf) as h:
        task = asyncio.create_task(hold())
        await held.wait()
        with pytest.raises(Overloaded, match="users"):
            await h.client.get("/x")
        release.set()
        await task
        assert (await h.client.get("/x")).status == 200
        assert h.received() == 1


def test_stats_report_no_guard_when_the_target_has_none() -> None:
    """Without bulkhead and throttle the stats say so (None), for metrics to skip them."""
    from qanat.runtime.client import ServiceClient

    stats = ServiceClient("users").stats()
    assert stats["bulkhead"] is None and stats["throttle"] is None
