"""Load-aware balancers: P2C over peak EWMA, Envoy's least request; the shared protocol."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qanat.core.balance import (
    BALANCERS,
    Balancer,
    Endpoint,
    LeastRequest,
    PeakEwmaP2C,
    make_balancer,
)
from qanat.errors import ConfigError
from qanat.ports import Instance
from qanat.testing import FakeClock


def test_p2c_prefers_the_faster_endpoint() -> None:
    """Under skewed latencies (10 ms vs 200 ms), nearly all traffic goes to the fast endpoint."""
    clock = FakeClock()
    p2c = PeakEwmaP2C([Endpoint("fast"), Endpoint("slow")], clock=clock, rng=random.Random(7))
    latency = {"fast": 0.010, "slow": 0.200}
    counts: Counter[str] = Counter()
    for _ in range(2_000):
        chosen = p2c.pick()
        assert chosen is not None
        counts[chosen.id] += 1
        clock.advance(0.005)
        p2c.done(chosen, True, latency[chosen.id], clock())
    assert counts["fast"] > 0.95 * 2_000


def test_p2c_in_flight_breaks_ties_between_equal_latencies() -> None:
    """With equal estimates, the endpoint with fewer requests in flight is chosen."""
    p2c = PeakEwmaP2C([Endpoint("a"), Endpoint("b")], clock=FakeClock(), rng=random.Random(1))
    first = p2c.pick()
    second = p2c.pick()
    assert first is not None and second is not None and first.id != second.id


def test_ewma_peaks_at_once_and_decays_with_the_time_constant() -> None:
    """A higher latency replaces the estimate; a lower one after tau blends with weight 1 - 1/e."""
    clock = FakeClock(start=0.0)
    p2c = PeakEwmaP2C([Endpoint("a")], decay=5.0, default_latency=0.010, clock=clock)
    p2c.report("a", True, 0.500, now=1.0)
    assert p2c.estimate("a", now=1.0) == 0.500  # the peak, at once
    assert p2c.estimate("a", now=6.0) == pytest.approx(0.500 / math.e)  # idle: decays to 0
    p2c.report("a", True, 0.100, now=6.0)  # one time constant later
    assert p2c.estimate("a", now=6.0) == pytest.approx(0.500 / math.e + 0.100 * (1 - 1 / math.e))


@settings(max_examples=40)
@given(st.lists(st.sampled_from(["pick", "done"]), max_size=200), st.integers(0, 2**32))
def test_in_flight_returns_to_zero_after_done(ops: list[str], seed: int) -> None:
    """Whatever the interleaving, in-flight counts equal open picks and end at zero."""
    nodes = [Endpoint(f"n{i}") for i in range(4)]
    p2c = PeakEwmaP2C(nodes, clock=FakeClock(), rng=random.Random(seed))
    least = LeastRequest(nodes, rng=random.Random(seed))
    open_: list[tuple[Balancer[Endpoint], Endpoint]] = []
    for op in ops:
        if op == "pick":
            pair: tuple[Balancer[Endpoint], Balancer[Endpoint]] = (p2c, least)
            for picker in pair:
                chosen = picker.pick()
                assert chosen is not None
                open_.append((picker, chosen))
        elif open_:
            balancer, endpoint = open_.pop(0)
            balancer.done(endpoint, True, 0.01, 1000.0)
        for n in nodes:
            assert p2c.in_flight(n.id) == sum(1 for b, e in open_ if b is p2c and e == n)
            assert least.active(n.id) == sum(1 for b, e in open_ if b is least and e == n)
    for balancer, endpoint in open_:
        balancer.done(endpoint, True, 0.01, 1000.0)
    assert all(p2c.in_flight(n.id) == 0 and least.active(n.id) == 0 for n in nodes)


def test_done_for_a_removed_endpoint_is_harmless() -> None:
    """Closing a pick after its endpoint was removed neither fails nor goes negative."""
    p2c = PeakEwmaP2C([Endpoint("a"), Endpoint("b")], clock=FakeClock())
    chosen = p2c.pick()
    assert chosen is not None
    p2c.update([Endpoint("c")])
    p2c.done(chosen, False, 1.0, 1000.0)
    p2c.done(chosen, False, 1.0, 1000.0)
    assert p2c.in_flight(chosen.id) == 0


def test_update_keeps_estimates_and_counts_of_staying_endpoints() -> None:
    """A staying endpoint keeps its latency estimate and in-flight count across update."""
    clock = FakeClock(start=0.0)
    p2c = PeakEwmaP2C([Endpoint("a")], clock=clock)
    p2c.report("a", True, 0.9, now=0.0)
    assert p2c.pick() is not None
    p2c.update([Endpoint("a"), Endpoint("b")])
    assert p2c.estimate("a", now=0.0) == 0.9 and p2c.in_flight("a") == 1
    assert p2c.estimate("b", now=0.0) == 0.030  # new endpoints start at default_latency


def test_least_request_picks_the_idle_endpoint() -> None:
    """With equal weights, the endpoint with fewer active requests wins when both are drawn."""
    least = LeastRequest([Endpoint("a"), Endpoint("b")], choice_count=10, rng=random.Random(2))
    busy = least.pick()
    assert busy is not None
    for _ in range(20):
        chosen = least.pick()
        assert chosen is not None and chosen != busy
        least.done(chosen, True, 0.0, 0.0)


def test_weighted_least_request_follows_weights_when_idle() -> None:
    """Unequal weights with no load: EDF picks each endpoint in proportion to its weight."""
    least = LeastRequest([Endpoint("a", 3), Endpoint("b", 1)])
    counts: Counter[str] = Counter()
    for _ in range(400):
        chosen = least.pick()
        assert chosen is not None
        counts[chosen.id] += 1
        least.done(chosen, True, 0.0, 0.0)
    assert counts == {"a": 300, "b": 100}


def test_weighted_least_request_shifts_away_from_busy_endpoints() -> None:
    """An endpoint holding many active requests gets a smaller share than its weight."""
    least = LeastRequest([Endpoint("a", 2), Endpoint("b", 1)])
    stuck = [e for e in (least.pick() for _ in range(30)) if e is not None and e.id == "a"]
    counts: Counter[str] = Counter()
    for _ in range(300):
        chosen = least.pick()
        assert chosen is not None
        counts[chosen.id] += 1
        least.done(chosen, True, 0.0, 0.0)
    assert stuck and counts["a"] < 2 * counts["b"]


def test_instances_from_discovery_are_endpoints() -> None:
    """qanat.ports.Instance works as an endpoint; non-routable instances are skipped."""
    up = Instance(id="i1", service="s", address="127.0.0.1", port=8001)
    off = Instance(id="i2", service="s", address="127.0.0.1", port=8002, enabled=False)
    for name in BALANCERS:
        balancer: Balancer[Instance] = make_balancer(name)
        balancer.update([up, off])
        assert {balancer.pick("k") for _ in range(20)} == {up}


def test_make_balancer_rejects_unknown_names_and_options() -> None:
    """Unknown names and options raise ConfigError listing what is allowed."""
    with pytest.raises(ConfigError, match="use one of: round_robin, smooth_weighted"):
        make_balancer("fastest")
    with pytest.raises(ConfigError, match="allowed: decay, default_latency, clock, rng"):
        make_balancer("p2c_ewma", decy=5)
    assert isinstance(make_balancer("least_request", choice_count=3), LeastRequest)


def test_cancel_gives_back_the_slot_without_learning() -> None:
    """cancel() returns an unused pick's in-flight slot and leaves the latency estimate alone."""
    from qanat.core.balance import Endpoint, LeastRequest, PeakEwmaP2C

    p2c: PeakEwmaP2C[Endpoint] = PeakEwmaP2C(
        [Endpoint("a")], default_latency=0.05, clock=lambda: 0.0
    )
    picked = p2c.pick()
    assert picked is not None and p2c.in_flight("a") == 1
    before = p2c.estimate("a", 0.0)
    p2c.cancel(picked)
    assert p2c.in_flight("a") == 0
    assert p2c.estimate("a", 0.0) == before
    least: LeastRequest[Endpoint] = LeastRequest([Endpoint("a")])
    chosen = least.pick()
    assert chosen is not None and least.active("a") == 1
    least.cancel(chosen)
    assert least.active("a") == 0
