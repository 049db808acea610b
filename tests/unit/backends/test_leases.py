"""Lease details the contract suite cannot drive: expiry under a fake clock, lost leases."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.contract.helpers import DEADLINE

from qanat.backends.memory import MemoryRegistry
from qanat.backends.sqlite import SqliteRegistry
from qanat.backends.sqlite_db import SqliteDb
from qanat.ports import Health, Instance, Registry
from qanat.testing import FakeClock, eventually


@pytest.fixture(params=["memory", "sqlite"])
async def clocked(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Registry, FakeClock]]:
    """A registry whose leases run on a fake clock (wall-clock based for sqlite)."""
    clock = FakeClock(start=time.time())
    if request.param == "memory":
        registry: Registry = MemoryRegistry(clock=clock)
    else:
        registry = SqliteRegistry(await SqliteDb.connect(f"sqlite:///{tmp_path}/c.db"), clock=clock)
    yield registry, clock
    await registry.close()


async def test_expired_lease_hides_instance_at_once(clocked: tuple[Registry, FakeClock]) -> None:
    """Once the clock passes a lease's expiry, discover and services no longer show it."""
    registry, clock = clocked
    await registry.register(Instance("a", "svc", "127.0.0.1", 80), ttl=60)
    await registry.register(Instance("b", "svc", "127.0.0.1", 81), ttl=600)
    clock.advance(61)
    assert [i.id for i in await registry.discover("svc")] == ["b"]
    clock.advance(600)
    assert await registry.services() == []


async def test_lost_lease_is_regranted_by_the_owner_with_its_state(
    clocked: tuple[Registry, FakeClock],
) -> None:
    """A lease that expired under a live owner (a stall) is re-granted, keeping health/enabled."""
    registry, clock = clocked
    await registry.register(Instance("a", "svc", "127.0.0.1", 80), ttl=1)
    await registry.set_health("svc", "a", Health.WARNING)
    await registry.set_enabled("svc", "a", False)

    async def state() -> list[tuple[str, Health, bool]]:
        return [
            (i.id, i.health, i.enabled) for i in await registry.discover("svc", healthy_only=False)
        ]

    clock.advance(5)  # a stall: the lease has expired
    assert await state() == []

    async def back() -> bool:
        return await state() == [("a", Health.WARNING, False)]

    await eventually(back, timeout=DEADLINE, what="re-registration by the keepalive")
