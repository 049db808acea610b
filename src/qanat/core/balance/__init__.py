"""Load balancers: pure, O(log n) or better per pick, one calling convention.

``pick(key)`` returns an endpoint (or None); ``done(endpoint, success,
latency, now)`` closes each pick exactly once; ``update(endpoints)`` swaps the
endpoint set and keeps the state of those that stay. See ``base`` for the
contract and ``docs/load-balancing.md`` for examples and defaults.
"""

from __future__ import annotations

import inspect
from typing import Any

from qanat.core.balance.base import Balancer, Endpoint, EndpointLike
from qanat.core.balance.hashring import ConsistentHash
from qanat.core.balance.least import LeastRequest
from qanat.core.balance.p2c import PeakEwmaP2C
from qanat.core.balance.roundrobin import RoundRobin
from qanat.core.balance.weighted import SmoothWeightedRoundRobin, WeightedRandom
from qanat.errors import ConfigError

BALANCERS: dict[str, type[Any]] = {
    "round_robin": RoundRobin,
    "smooth_weighted": SmoothWeightedRoundRobin,
    "random": WeightedRandom,
    "consistent_hash": ConsistentHash,
    "p2c_ewma": PeakEwmaP2C,
    "least_request": LeastRequest,
}


def make_balancer(name: str, **options: Any) -> Balancer[Any]:
    """A balancer by its configuration name, e.g. ``make_balancer("p2c_ewma", decay=5.0)``.

    Names: round_robin, smooth_weighted, random, consistent_hash, p2c_ewma,
    least_request. An unknown name or option raises ``ConfigError`` listing
    the allowed ones. Endpoints arrive later through ``update``.
    """
    cls = BALANCERS.get(name)
    if cls is None:
        raise ConfigError(
            f"unknown load balancer {name!r}; use one of: {', '.join(BALANCERS)}",
            source="load_balancer",
        )
    allowed = [
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {name!r}; "
            f"allowed: {', '.join(allowed) or 'none'}",
            source=f"load_balancer.{name}",
        )
    balancer: Balancer[Any] = cls(**options)
    return balancer


__all__ = [
    "BALANCERS",
    "Balancer",
    "ConsistentHash",
    "Endpoint",
    "EndpointLike",
    "LeastRequest",
    "PeakEwmaP2C",
    "RoundRobin",
    "SmoothWeightedRoundRobin",
    "WeightedRandom",
    "make_balancer",
]
