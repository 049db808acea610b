"""nginx smooth weighted round robin, weighted random and plain round robin."""

from __future__ import annotations

import random
from collections import Counter
from functools import reduce
from math import gcd

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qanat.core.balance import Endpoint, RoundRobin, SmoothWeightedRoundRobin, WeightedRandom
from qanat.errors import ConfigError

weights = st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=8)


def nginx(endpoints: list[Endpoint], current: dict[str, int], picks: int) -> list[str]:
    """nginx's loop written the way nginx writes it, as the oracle."""
    out = []
    live = [e for e in endpoints if e.active and e.weight > 0]
    for _ in range(picks):
        total, best = 0, None
        for e in live:
            current[e.id] = current.get(e.id, 0) + e.weight
            total += e.weight
            if best is None or current[e.id] > current[best.id]:
                best = e
        assert best is not None
        current[best.id] -= total
        out.append(best.id)
    return out


def ids(balancer: SmoothWeightedRoundRobin[Endpoint], n: int) -> list[str]:
    return [e.id for e in (balancer.pick() for _ in range(n)) if e is not None]


def test_swrr_nginx_example() -> None:
    """Weights a=5, b=1, c=1 give nginx's documented sequence a a b a c a a, repeated."""
    swrr = SmoothWeightedRoundRobin([Endpoint("a", 5), Endpoint("b", 1), Endpoint("c", 1)])
    assert "".join(ids(swrr, 14)) == "aabacaa" * 2


def test_swrr_ties_go_to_the_first_listed() -> None:
    """Equal current weights pick the endpoint listed first, as nginx's strict '>' does."""
    swrr = SmoothWeightedRoundRobin([Endpoint("x", 2), Endpoint("y", 2), Endpoint("z", 1)])
    assert ids(swrr, 5) == nginx(list(swrr._endpoints), {}, 5) == ["x", "y", "z", "x", "y"]


@given(weights)
def test_swrr_exact_share_every_cycle(ws: list[int]) -> None:
    """In every cycle of sum/gcd picks each endpoint is picked exactly weight/gcd times."""
    endpoints = [Endpoint(f"e{i}", w) for i, w in enumerate(ws)]
    g = reduce(gcd, ws)
    cycle = sum(ws) // g
    seq = ids(SmoothWeightedRoundRobin(endpoints), cycle * 3)
    for start in range(0, cycle * 3, cycle):
        assert Counter(seq[start : start + cycle]) == {e.id: e.weight // g for e in endpoints}


@given(weights, st.integers(min_value=0, max_value=200))
def test_swrr_matches_nginx_loop(ws: list[int], picks: int) -> None:
    """The precomputed sequence equals nginx's O(n) loop pick for pick."""
    endpoints = [Endpoint(f"e{i}", w) for i, w in enumerate(ws)]
    assert ids(SmoothWeightedRoundRobin(endpoints), picks) == nginx(endpoints, {}, picks)


@given(weights, st.integers(min_value=0, max_value=60), st.data())
def test_swrr_update_keeps_current_weights(ws: list[int], before: int, data: st.DataObject) -> None:
    """Update keeps staying endpoints' current weights; picks then follow nginx from there."""
    endpoints = [Endpoint(f"e{i}", w) for i, w in enumerate(ws)]
    swrr = SmoothWeightedRoundRobin(endpoints)
    current: dict[str, int] = {}
    assert ids(swrr, before) == nginx(endpoints, current, before)
    assert swrr.current_weights() == {e.id: current.get(e.id, 0) for e in endpoints}
    stay = data.draw(st.lists(st.sampled_from(endpoints), unique=True, min_size=1))
    added = [Endpoint(f"new{i}", w) for i, w in enumerate(data.draw(weights))]
    new = stay + added
    swrr.update(new)
    kept = {e.id: current.get(e.id, 0) for e in stay}
    assert swrr.current_weights() == {**kept, **{e.id: 0 for e in added}}
    assert ids(swrr, 80) == nginx(new, {**kept}, 80)


@pytest.mark.parametrize("max_cycle", [1, 3])
def test_swrr_falls_back_to_live_loop_beyond_max_cycle(max_cycle: int) -> None:
    """A cycle longer than max_cycle is served by nginx's live loop, with the same sequence."""
    endpoints = [Endpoint("a", 5), Endpoint("b", 3), Endpoint("c", 2)]
    swrr = SmoothWeightedRoundRobin(endpoints, max_cycle=max_cycle)
    assert swrr._seq == []
    assert ids(swrr, 50) == nginx(endpoints, {}, 50)


def test_inactive_and_zero_weight_endpoints_are_never_picked() -> None:
    """These balancers skip inactive and weight-0 endpoints, and give None when none is left."""
    endpoints = [Endpoint("up", 1), Endpoint("down", 5, active=False), Endpoint("drained", 0)]
    for balancer in (
        RoundRobin(endpoints),
        SmoothWeightedRoundRobin(endpoints),
        WeightedRandom(endpoints, rng=random.Random(1)),
    ):
        assert {balancer.pick().id for _ in range(50)} == {"up"}  # type: ignore[union-attr]
        balancer.update([Endpoint("down", 1, active=False)])
        assert balancer.pick() is None


def test_negative_weight_and_duplicate_ids_are_config_errors() -> None:
    """A negative weight or a repeated id is refused with a ConfigError naming the endpoint."""
    with pytest.raises(ConfigError, match="'bad' has weight -1"):
        SmoothWeightedRoundRobin([Endpoint("bad", -1)])
    with pytest.raises(ConfigError, match="'twice' appears twice"):
        RoundRobin([Endpoint("twice"), Endpoint("twice")])


def test_round_robin_cycles_and_continues_after_update() -> None:
    """Round robin visits endpoints in order and, after update, continues after the last pick."""
    rr = RoundRobin([Endpoint("a"), Endpoint("b"), Endpoint("c")])
    assert [rr.pick().id for _ in range(4)] == ["a", "b", "c", "a"]  # type: ignore[union-attr]
    rr.update([Endpoint("a"), Endpoint("c"), Endpoint("d")])
    assert [rr.pick().id for _ in range(3)] == ["c", "d", "a"]  # type: ignore[union-attr]


@settings(max_examples=20)
@given(weights, st.integers(min_value=0, max_value=2**32))
def test_weighted_random_follows_weights(ws: list[int], seed: int) -> None:
    """Weighted random picks each endpoint with frequency close to weight / total."""
    endpoints = [Endpoint(f"e{i}", w) for i, w in enumerate(ws)]
    picker = WeightedRandom(endpoints, rng=random.Random(seed))
    n = 20_000
    counts = Counter(picker.pick().id for _ in range(n))  # type: ignore[union-attr]
    total = sum(ws)
    for e in endpoints:
        p = e.weight / total
        sigma = (n * p * (1 - p)) ** 0.5
        assert abs(counts[e.id] - n * p) <= 5 * sigma + 1  # 5 sigma: a false alarm ~ 1 in 10^6
