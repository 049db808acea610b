"""A policy as a decorator: a call its bulkhead turns away teaches breaker and throttle nothing."""

from __future__ import annotations

import asyncio

import pytest

from qanat import Overloaded, load_policies
from qanat.policy import Policies
from qanat.testing import FakeClock

SPEC = {
    "circuitBreakers": {"cb": {"trip": "consecutiveFailures > 5"}},
    "bulkheads": {"one": {"maxConcurrent": 1}},
    "throttles": {"sre": {"k": 2}},
    "targets": {"services": {"users": {"circuitBreaker": "cb", "bulkhead": "one",
                                       "throttle": "sre"}}},
}


async def test_a_bulkhead_refusal_counts_neither_as_success_nor_as_accept() -> None:
    """Refused for want of a slot, the call never ran: no breaker success, no throttle accept."""
    clock = FakeClock()
    policy = Policies(load_policies(SPEC).spec, clock=clock).for_target("users")
    held, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        held.set()
        await release.wait()

    first = asyncio.create_task(policy.call(hold))
    await held.wait()
    for _ in range(4):
        with pytest.raises(Overloaded):
            await policy.call(hold)
    assert policy.throttle is not None and policy.breaker is not None
    assert policy.throttle.stats(clock()).requests == 0
    counts = policy.breaker.stats(clock()).counts
    assert (counts.total_successes, counts.total_exclusions) == (0, 4)
    release.set()
    await first
    assert policy.throttle.stats(clock()).accepts == 1
    assert policy.breaker.stats(clock()).counts.total_successes == 1
