"""Consistent hashing: minimal disruption, stability, weights and bounded loads."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qanat.core.balance import ConsistentHash, Endpoint
from qanat.errors import ConfigError

node_ids = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12),
    min_size=1,
    max_size=16,
    unique=True,
)


def keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}/{i}" for i in range(n)]


def owners(ring: ConsistentHash[Endpoint], ks: list[str]) -> dict[str, str]:
    return {k: ring.owner(k).id for k in ks}  # type: ignore[union-attr]


@settings(max_examples=25, deadline=None)
@given(node_ids, st.text(min_size=1, max_size=8))
def test_adding_a_node_moves_few_keys_and_only_to_it(ids: list[str], prefix: str) -> None:
    """Adding node n+1 moves at most 1.25/(n+1) of keys, and every moved key goes to it."""
    nodes = [Endpoint(i) for i in ids]
    ring = ConsistentHash(nodes)
    ks = keys(prefix, 20_000)
    before = owners(ring, ks)
    ring.update([*nodes, Endpoint("the-new-node")])
    after = owners(ring, ks)
    moved = [k for k in ks if before[k] != after[k]]
    assert all(after[k] == "the-new-node" for k in moved)
    assert len(moved) <= 1.25 * len(ks) / (len(nodes) + 1)


@settings(max_examples=25, deadline=None)
@given(node_ids.filter(lambda ids: len(ids) >= 2), st.data())
def test_removing_a_node_moves_only_its_keys(ids: list[str], data: st.DataObject) -> None:
    """Removing a node moves exactly the keys it owned; every other key stays put."""
    nodes = [Endpoint(i) for i in ids]
    gone = data.draw(st.sampled_from(nodes))
    ring = ConsistentHash(nodes)
    ks = keys("k", 3_000)
    before = owners(ring, ks)
    ring.update([n for n in nodes if n is not gone])
    after = owners(ring, ks)
    assert {k for k in ks if before[k] != after[k]} == {k for k in ks if before[k] == gone.id}


def test_placement_depends_only_on_the_set_not_order_or_history() -> None:
    """Two rings with the same endpoints, built in different orders and histories, agree."""
    nodes = [Endpoint(f"n{i}") for i in range(8)]
    a = ConsistentHash(nodes)
    b = ConsistentHash(list(reversed(nodes[2:])))
    b.update(list(reversed(nodes)))
    ks = keys("same", 2_000)
    assert owners(a, ks) == owners(b, ks)


def test_same_key_same_endpoint_and_pick_equals_owner() -> None:
    """Without bounded loads, pick(key) is the ring owner and never changes between calls."""
    ring = ConsistentHash([Endpoint(f"n{i}") for i in range(5)])
    for k in keys("user", 200):
        assert ring.pick(k) == ring.pick(k) == ring.owner(k)


def test_weights_scale_the_share_of_keys() -> None:
    """An endpoint with weight 3 gets about three times the keys of a weight-1 endpoint."""
    ring = ConsistentHash([Endpoint("heavy", 3), Endpoint("light", 1)])
    counts = Counter(owners(ring, keys("w", 20_000)).values())
    assert 2.5 < counts["heavy"] / counts["light"] < 3.6


def test_none_key_is_random_and_inactive_nodes_are_skipped() -> None:
    """A None key spreads over the active endpoints only; an empty ring gives None."""
    ring = ConsistentHash(
        [Endpoint("a"), Endpoint("b"), Endpoint("off", active=False)], rng=random.Random(3)
    )
    assert {ring.pick().id for _ in range(200)} == {"a", "b"}  # type: ignore[union-attr]
    ring.update([])
    assert ring.pick("k") is None and ring.owner("k") is None


@settings(max_examples=30, deadline=None)
@given(
    st.integers(min_value=1, max_value=12),
    st.sampled_from([0.1, 0.25, 0.5, 1.0]),
    st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=300),
    st.lists(st.booleans(), max_size=300),
)
def test_bounded_loads_never_exceed_the_cap(
    n: int, eps: float, key_ids: list[int], finish: list[bool]
) -> None:
    """With bounded loads, a pick never leaves its endpoint above ceil((1+eps) * m / n)."""
    nodes = [Endpoint(f"n{i}") for i in range(n)]
    ring = ConsistentHash(nodes, epsilon=eps, replicas=64)
    in_flight: list[Endpoint] = []
    for step, key in enumerate(key_ids):
        chosen = ring.pick(f"key-{key}")
        assert chosen is not None
        in_flight.append(chosen)
        loads = ring.loads()
        m = sum(loads.values())
        assert m == len(in_flight)
        assert loads[chosen.id] <= math.ceil((1 + eps) * m / n)
        if step < len(finish) and finish[step]:
            ring.done(in_flight.pop(0), True, 0.01, 0.0)
    for endpoint in in_flight:
        ring.done(endpoint, True, 0.01, 0.0)
    assert set(ring.loads().values()) == {0}


def test_bounded_loads_keep_keys_home_when_there_is_room() -> None:
    """Under light load, a bounded-load pick is the key's ring owner."""
    ring = ConsistentHash([Endpoint(f"n{i}") for i in range(4)], epsilon=0.25)
    for k in keys("home", 50):
        chosen = ring.pick(k)
        assert chosen == ring.owner(k)
        ring.done(chosen, True, 0.0, 0.0)  # type: ignore[arg-type]


def test_bad_options_are_config_errors() -> None:
    """Zero replicas, a non-positive epsilon and an oversized ring are refused with ConfigError."""
    with pytest.raises(ConfigError, match="replicas"):
        ConsistentHash(replicas=0)
    with pytest.raises(ConfigError, match="epsilon"):
        ConsistentHash(epsilon=0)
    with pytest.raises(ConfigError, match="max_points"):
        ConsistentHash([Endpoint("big", 10)], replicas=100, max_points=999)


def test_raising_a_weight_moves_keys_only_to_that_endpoint() -> None:
    """Doubling one endpoint's weight only adds its points: keys move to it and nowhere else."""
    nodes = [Endpoint(f"n{i}") for i in range(5)]
    ring = ConsistentHash(nodes)
    ks = keys("grow", 5_000)
    before = owners(ring, ks)
    ring.update([*nodes[:4], Endpoint("n4", 2)])
    after = owners(ring, ks)
    moved = {k for k in ks if before[k] != after[k]}
    assert moved and all(after[k] == "n4" for k in moved)
