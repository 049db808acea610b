"""The service client's per-instance protection: breakers, outlier ejection, in-flight slots."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from tests.unit.http.upstream_servers import Exchange, Received, response
from tests.unit.runtime.client_support import (
    NEVER_TRIP,
    NO_OUTLIERS,
    harness,
    instance,
    reset,
    retrying,
    sequence,
    settings,
    status,
)

from qanat.core.balance import LeastRequest, PeakEwmaP2C
from qanat.core.breaker import BreakerSettings
from qanat.core.outlier import OutlierSettings
from qanat.errors import CircuitOpenError, Timeout
from qanat.http import UpstreamError

TRIP_AT_3 = BreakerSettings(timeout=10.0, ready_to_trip=lambda c: c.consecutive_failures >= 3)


async def test_breaker_opens_per_instance_and_the_client_avoids_that_instance() -> None:
    """After 3 failures in a row u0's breaker opens; every later call goes to u1 only."""
    conf = settings(breaker=TRIP_AT_3, outlier=NO_OUTLIERS, retry=retrying(1))
    async with harness(status(500), status(200), client_settings=conf) as h:
        for _ in range(6):  # round robin: u0 gets calls 1, 3, 5
            await h.client.get("/x")
        assert h.client.stats()["breakers"] == {"u0": "open", "u1": "closed"}
        before = h.counts()[0]
        for _ in range(10):
            got = await h.client.get("/x")
            assert (got.status, got.instance) == (200, "u1")
        assert h.counts()[0] == before == 3


async def test_open_breaker_half_opens_after_its_timeout_and_a_success_closes_it() -> None:
    """Once the breaker timeout has passed (fake clock) u0 gets a trial call again."""
    flaky = sequence(500, 500, 500, 200)
    conf = settings(breaker=TRIP_AT_3, outlier=NO_OUTLIERS, retry=retrying(1))
    async with harness(flaky, client_settings=conf) as h:
        for _ in range(3):
            assert (await h.client.get("/x")).status == 500
        with pytest.raises(CircuitOpenError):
            await h.client.get("/x")
        h.clock.advance(10.5)
        assert (await h.client.get("/x")).status == 200
        assert h.client.stats()["breakers"] == {"u0": "closed"}


async def test_every_breaker_open_raises_circuit_open_without_sending() -> None:
    """When both instances' breakers are open the call fails fast with ``CircuitOpenError``."""
    trip_at_1 = BreakerSettings(timeout=30.0, ready_to_trip=lambda c: c.consecutive_failures >= 1)
    conf = settings(breaker=trip_at_1, outlier=NO_OUTLIERS, retry=retrying(1))
    async with harness(status(500), status(500), client_settings=conf) as h:
        await h.client.get("/x")
        await h.client.get("/x")
        with pytest.raises(CircuitOpenError) as caught:
            await h.client.get("/x")
        assert caught.value.retry_after == 30.0
        assert h.received() == 2


async def test_retry_after_breaker_opens_keeps_the_last_response() -> None:
    """A retry that finds every breaker open ends the call with the last real answer."""
    trip_at_1 = BreakerSettings(timeout=30.0, ready_to_trip=lambda c: c.consecutive_failures >= 1)
    conf = settings(breaker=trip_at_1, outlier=NO_OUTLIERS)
    async with harness(status(503), client_settings=conf) as h:
        got = await h.client.get("/x")
        assert (got.status, got.attempts) == (503, 1)


async def test_outlier_ejection_removes_and_then_restores_an_instance() -> None:
    """Five gateway errors eject u0 for 30 s (fake clock); afterwards it gets calls again."""
    conf = settings(breaker=NEVER_TRIP, retry=retrying(1))
    async with harness(status(502), status(200), client_settings=conf) as h:
        for _ in range(10):  # u0 gets 5 of them, all 502
            await h.client.get("/x")
        assert h.client.stats()["ejected"] == ["u0"]
        for _ in range(10):
            assert (await h.client.get("/x")).instance == "u1"
        assert h.counts()[0] == 5
        h.clock.advance(30.0)
        assert h.client.stats()["ejected"] == []
        answered = {(await h.client.get("/x")).instance for _ in range(4)}
        assert answered == {"u0", "u1"}


async def test_connect_failures_eject_a_dead_instance() -> None:
    """A dead instance's refused connections count as gateway failures and eject it."""
    conf = settings(breaker=NEVER_TRIP)
    async with harness(status(200), status(200), dead=1, client_settings=conf) as h:
        for _ in range(30):
            assert (await h.client.get("/x")).status == 200
        assert h.client.stats()["ejected"] == ["d0"]


async def test_ejecting_the_only_instance_still_routes_to_it() -> None:
    """With one instance ejected nothing would remain, so it is used anyway (panic threshold)."""
    conf = settings(breaker=NEVER_TRIP, retry=retrying(1),
                    outlier=OutlierSettings(consecutive_5xx=2))
    async with harness(status(500), client_settings=conf) as h:
        for _ in range(4):
            assert (await h.client.get("/x")).status == 500
        assert h.client.stats()["ejected"] == ["u0"]
        assert h.received() == 4


@pytest.mark.parametrize("balancer", ["p2c_ewma", "least_request"])
async def test_every_pick_is_closed_exactly_once_on_every_path(balancer: str) -> None:
    """Success, 5xx retries, resets, dead instances and breaker refusals leave no slot taken."""
    trip_at_2 = BreakerSettings(timeout=60.0, ready_to_trip=lambda c: c.consecutive_failures >= 2)
    conf = settings(load_balancer=balancer, breaker=trip_at_2, outlier=NO_OUTLIERS)
    async with harness(status(200), status(503), reset, dead=1, client_settings=conf) as h:
        for n in range(40):
            # a call may still end in an error: its last attempt reset or hit the dead one
            with contextlib.suppress(UpstreamError, CircuitOpenError):
                await h.client.request("GET" if n % 2 else "POST", "/x")
        lb = h.client.balancer
        assert isinstance(lb, PeakEwmaP2C | LeastRequest)
        counts = lb.in_flight if isinstance(lb, PeakEwmaP2C) else lb.active
        assert [counts(i) for i in ("u0", "u1", "u2", "d0")] == [0, 0, 0, 0]
        assert h.client.stats()["breakers"]["u1"] == "open"


async def test_cancelled_call_releases_its_slot_and_its_half_open_trial() -> None:
    """A call cancelled mid-flight neither leaks the balancer slot nor the breaker's trial."""
    trip_at_1 = BreakerSettings(timeout=5.0, ready_to_trip=lambda c: c.consecutive_failures >= 1)
    conf = settings(load_balancer="least_request", breaker=trip_at_1, outlier=NO_OUTLIERS,
                    retry=retrying(1))
    arrived = asyncio.Event()
    answers = ["500", "hold", "200"]

    async def handler(req: Received, ex: Exchange) -> None:
        what = answers.pop(0)
        if what == "hold":
            arrived.set()
            await ex.reader.read()  # until the client gives up on the connection
            ex.close()
            return
        await ex.send(response(int(what)))

    async with harness(handler, client_settings=conf) as h:
        assert (await h.client.get("/x")).status == 500  # opens the breaker
        h.clock.advance(6)  # half-open: one trial call allowed
        call = asyncio.create_task(h.client.get("/x"))
        async with asyncio.timeout(5):
            await arrived.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        lb = h.client.balancer
        assert isinstance(lb, LeastRequest)
        assert lb.active("u0") == 0
        assert (await h.client.get("/x")).status == 200  # the trial slot was given back


async def test_slow_body_is_bounded_by_the_deadline() -> None:
    """A server that sends the head and then stalls the body fails the call with a Timeout."""

    async def stall(req: Received, ex: Exchange) -> None:
        await ex.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await ex.reader.read()
        ex.close()

    conf = settings(timeout=0.2, retry=retrying(1))
    async with harness(stall, client_settings=conf) as h:
        with pytest.raises(Timeout, match="body"):
            await h.client.get("/x")


async def test_per_try_timeout_bounds_one_attempt_and_the_next_goes_elsewhere() -> None:
    """With retry on ``timeout``, a stalled head is abandoned after the per-try timeout."""
    from qanat.core.retry import RetryPolicy

    async def never(req: Received, ex: Exchange) -> None:
        await ex.reader.read()
        ex.close()

    retry = RetryPolicy(max_attempts=2, retry_on=frozenset({"timeout"}))
    conf = settings(per_try_timeout=0.05, retry=retry)
    async with harness(never, status(200), client_settings=conf) as h:
        for _ in range(2):
            got = await h.client.get("/x")
            assert (got.status, got.instance) == (200, "u1")


async def test_discovery_change_during_a_call_is_harmless() -> None:
    """An instance that leaves while its call is in flight still answers; new calls go elsewhere."""
    gate, arrived = asyncio.Event(), asyncio.Event()

    async def held(req: Received, ex: Exchange) -> None:
        arrived.set()
        await gate.wait()
        await ex.send(response(200, b"old"))

    async with harness(held, status(200), client_settings=settings(
            load_balancer="least_request")) as h:
        await h.registry.deregister("users", "u1")
        await h.wait_instances({"u0"})
        call = asyncio.create_task(h.client.get("/x"))
        async with asyncio.timeout(5):
            await arrived.wait()
        await h.registry.deregister("users", "u0")
        await h.registry.register(instance("u1", h.upstreams[1].port))
        await h.wait_instances({"u1"})
        nxt = await h.client.get("/y")
        assert nxt.instance == "u1"
        gate.set()
        got = await call
        assert (got.status, got.content, got.instance) == (200, b"old", "u0")
        assert set(h.client.stats()["breakers"]) == {"u1"}
        lb = h.client.balancer
        assert isinstance(lb, LeastRequest)
        assert lb.active("u1") == 0


async def test_consistent_hash_retry_moves_to_another_instance() -> None:
    """A hash ring always offers the same node for a key; a retry still reaches another one."""
    conf = settings(load_balancer="consistent_hash", breaker=NEVER_TRIP, outlier=NO_OUTLIERS)
    async with harness(status(503), status(503), status(503), client_settings=conf) as h:
        got = await h.client.get("/x", key="user-7")
        assert got.attempts == 3
        assert sorted(h.counts()) == [1, 1, 1]
