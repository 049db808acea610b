"""Balancers: one pick (+ done) over 100 endpoints, against the naive versions.

The peers are the seed article's balancers written plainly in Python, the way
the article writes them in Go: nginx's O(n) smooth-WRR loop over every
server, a ring that collects and sorts its points on every pick, a round
robin that filters the active servers on every call. Where the article has
no version, the peer is what a Python user would reach for (``random.choices``,
a linear scan for the least busy endpoint).

Run: ``.venv/bin/python benchmarks/primitives.py`` (all families) or this file alone.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import Case, markdown_table, measure
from qanat.core.balance import (
    Balancer,
    ConsistentHash,
    Endpoint,
    LeastRequest,
    PeakEwmaP2C,
    RoundRobin,
    SmoothWeightedRoundRobin,
    WeightedRandom,
)

N = 100
ENDPOINTS = [Endpoint(f"10.0.{i // 250}.{i % 250}:8080", 1 + i % 10) for i in range(N)]
EQUAL = [Endpoint(e.id) for e in ENDPOINTS]


class NaiveRoundRobin:
    """The seed's RoundRobinLoadBalancer: filter active servers, then index (O(n))."""

    def __init__(self, servers: list[Endpoint]) -> None:
        self.servers, self.current = servers, 0

    def select(self) -> Endpoint | None:
        active = [s for s in self.servers if s.active]
        if not active:
            return None
        server = active[self.current % len(active)]
        self.current += 1
        return server


class NaiveSmoothWeighted:
    """The seed's WeightedRoundRobinLoadBalancer: nginx's loop over every server (O(n))."""

    def __init__(self, servers: list[Endpoint]) -> None:
        self.servers = servers
        self.current = [0] * len(servers)

    def select(self) -> Endpoint | None:
        total, best = 0, -1
        for i, server in enumerate(self.servers):
            if not server.active:
                continue
            self.current[i] += server.weight
            total += server.weight
            if best < 0 or self.current[i] > self.current[best]:
                best = i
        if best < 0:
            return None
        self.current[best] -= total
        return self.servers[best]


def fnv32a(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


class NaiveRing:
    """The seed's ConsistentHashLoadBalancer: collect and sort the ring on every pick."""

    def __init__(self, servers: list[Endpoint], replicas: int = 50) -> None:
        self.ring = {fnv32a(f"{s.id}:{i}"): s for s in servers for i in range(replicas)}

    def select(self, key: str) -> Endpoint:
        keys = sorted(self.ring)
        index = bisect_left(keys, fnv32a(key))
        return self.ring[keys[index if index < len(keys) else 0]]


def least_scan(servers: list[Endpoint], active: dict[str, int]) -> Endpoint:
    """Least connections by a linear scan over every server (O(n))."""
    best = min(servers, key=lambda s: active[s.id])
    active[best.id] += 1
    return best


class NaiveLeastLoaded:
    """Pick the lowest decayed-EWMA x (in-flight + 1) by scanning every server (O(n))."""

    def __init__(self, servers: list[Endpoint]) -> None:
        self.servers = servers
        self.state = {s.id: [0.030, 0.0, 0] for s in servers}  # ewma, stamp, in flight

    def select(self, now: float = 1000.0) -> Endpoint:
        def load(s: Endpoint) -> float:
            ewma, stamp, in_flight = self.state[s.id]
            return ewma * math.exp(-(now - stamp) / 10.0) * (in_flight + 1)

        best = min(self.servers, key=load)
        self.state[best.id][2] += 1
        return best


def closed(balancer: Balancer[Endpoint], keyed: bool = False) -> Callable[[], object]:
    """One request's worth of balancer work: pick, then done."""
    keys = itertools.cycle([f"user-{i}" for i in range(1000)])

    def call() -> object:
        endpoint = balancer.pick(next(keys) if keyed else None)
        balancer.done(endpoint, True, 0.004, 1000.0)  # type: ignore[arg-type]
        return endpoint

    return call


def cases() -> list[Case]:
    rng = random.Random(0)
    keys = itertools.cycle([f"user-{i}" for i in range(1000)])
    naive_ring = NaiveRing(EQUAL)
    weights = [e.weight for e in ENDPOINTS]
    scan_counts = {e.id: 0 for e in EQUAL}
    family = "balancer"
    return [
        Case(family, "RoundRobin pick, 100 endpoints", closed(RoundRobin(EQUAL)),
             "seed round robin (filters every call)", NaiveRoundRobin(EQUAL).select),
        Case(family, "SmoothWeightedRoundRobin pick, 100 endpoints",
             closed(SmoothWeightedRoundRobin(ENDPOINTS)),
             "seed/nginx SWRR loop over 100", NaiveSmoothWeighted(ENDPOINTS).select),
        Case(family, "WeightedRandom pick, 100 endpoints",
             closed(WeightedRandom(ENDPOINTS, rng=rng)),
             "random.choices(weights=...)", lambda: rng.choices(ENDPOINTS, weights)[0]),
        Case(family, "ConsistentHash pick, 100 x 512 points",
             closed(ConsistentHash(EQUAL), keyed=True)),
        # The peer sorts 5,000 points per call, so this round is short (300 calls)
        # and the peer's garbage cools our caches: the row above is our steady state.
        Case(family, "ConsistentHash pick, vs a ring sorted per pick",
             closed(ConsistentHash(EQUAL), keyed=True),
             "seed ring, 100 x 50 points, sorted per pick",
             lambda: naive_ring.select(next(keys)), number=300),
        Case(family, "ConsistentHash bounded loads (eps 0.25) pick+done",
             closed(ConsistentHash(EQUAL, epsilon=0.25), keyed=True)),
        Case(family, "PeakEwmaP2C pick+done, 100 endpoints",
             closed(PeakEwmaP2C(EQUAL, rng=rng)),
             "least EWMA load, scanning all 100", NaiveLeastLoaded(EQUAL).select),
        Case(family, "LeastRequest pick+done, equal weights",
             closed(LeastRequest(EQUAL, rng=rng)),
             "least-busy linear scan over 100", lambda: least_scan(EQUAL, scan_counts)),
        Case(family, "LeastRequest pick+done, weights 1-10 (EDF)",
             closed(LeastRequest(ENDPOINTS, rng=rng))),
    ]  # fmt: skip


if __name__ == "__main__":
    print(markdown_table(measure(case) for case in cases()))
