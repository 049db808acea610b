"""Phase 4 of ``benchmarks/discovery.py``: the SQLite backend at scale.

- One lease renewal transaction (what every keepalive does every TTL/3) with
  10, 1,000 and 10,000 leases in the file, timed on a connection of our own
  so the thread hop is left out; best of several rounds of 200 renewals.
- A watcher in another process follows a service of 1,000 instances; we
  read its CPU time (``time.process_time``) around 40 changes to *another*
  service and 40 changes to the watched one, spaced over two poll intervals,
  and subtract what it spends idle over the same time.
"""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
import time
import uuid

from discovery_children import Child
from discovery_report import Scale
from qanat.backends import open_registry
from qanat.ports import Health, Instance, Registry

PHASE_TIMEOUT = 60.0

RENEWALS = 200  # renewal transactions per round
SPACING = 0.060  # between two changes in the wake phase: over two SQLite poll intervals


async def fill(registry: Registry, service: str, first: int, count: int) -> None:
    """Register ``count`` long-lived instances (TTL 1 h: no renewal during the run)."""
    gate = asyncio.Semaphore(64)

    async def one(n: int) -> None:
        async with gate:
            await registry.register(Instance(f"i{n:05d}", service, "127.0.0.1", 9000), ttl=3600)

    await asyncio.gather(*(one(n) for n in range(first, first + count)))


def renewal_us(path: str, leases: list[object], rounds: int) -> float:
    """Microseconds per renewal transaction, best round, on a connection of our own."""
    from qanat.backends import sqlite_registry

    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    conn.execute("PRAGMA synchronous = NORMAL")  # as the backend's own connections
    rng = random.Random(7)
    best = math.inf
    try:
        for _ in range(rounds):
            picks = [rng.choice(leases) for _ in range(RENEWALS)]
            start = time.perf_counter_ns()
            for lease in picks:
                conn.execute("BEGIN IMMEDIATE")
                sqlite_registry._renew(conn, lease, time.time())  # type: ignore[arg-type]
                conn.execute("COMMIT")
            best = min(best, (time.perf_counter_ns() - start) / RENEWALS / 1000)
    finally:
        conn.close()
    return best


async def measure_scale(url: str, quick: bool) -> Scale:
    """Renewal cost by lease count; a watcher's CPU per change elsewhere and in its service."""
    path = url.removeprefix("sqlite:///")
    registry = await open_registry(url)
    counts = [10, 1_000] if quick else [10, 1_000, 10_000]
    service, changes, big = f"scale-{uuid.uuid4().hex[:8]}", 20 if quick else 40, 1_000
    try:
        renewals, have = {}, 0
        for count in counts:
            await fill(registry, service, have, count - have)
            have = count
            leases = list(registry._leases.values())  # type: ignore[attr-defined]
            renewals[count] = renewal_us(path, leases, 3 if quick else 5)
        for n in range(big, have):  # the watched service: exactly `big` instances
            await registry.deregister(service, f"i{n:05d}")
        await registry.register(Instance("o1", f"{service}-other", "127.0.0.1", 9000), ttl=3600)
        watcher = await Child.start("_watchcpu", url, service)
        try:
            idle, other, own, seen = await wake_costs(registry, watcher, service, big, changes)
        finally:
            await watcher.stop()
    finally:
        await registry.close()
    return Scale(renewals, big, changes, idle, other, own, seen)


async def wake_costs(
    registry: Registry, watcher: Child, service: str, size: int, changes: int
) -> tuple[float, float, float, int]:
    """Watcher CPU: idle per second, per change elsewhere, per change to its own service."""

    async def ask() -> tuple[float, int, int]:
        await watcher.send("cpu")
        cpu, snapshots, last = (await watcher.line(PHASE_TIMEOUT)).split()
        return float(cpu), int(snapshots), int(last)

    deadline = time.monotonic() + PHASE_TIMEOUT
    while (await ask())[2] != size:  # its first snapshot has the whole service
        if time.monotonic() > deadline:
            raise RuntimeError("the watcher never saw the whole service")
        await asyncio.sleep(0.05)  # pacing the questions, not waiting for an effect

    async def phase(target: str | None) -> tuple[float, int]:
        cpu0, snaps0, _ = await ask()
        for n in range(changes):
            await asyncio.sleep(SPACING)  # pacing: each change lands in its own poll
            if target is not None:
                health = Health.WARNING if n % 2 == 0 else Health.PASSING
                iid = "o1" if target.endswith("-other") else "i00000"
                await registry.set_health(target, iid, health, "bench")
        await asyncio.sleep(SPACING)  # the last change's poll
        cpu1, snaps1, _ = await ask()
        return (cpu1 - cpu0) * 1000, snaps1 - snaps0

    idle_ms, _ = await phase(None)
    other_ms, _ = await phase(f"{service}-other")
    own_ms, own_seen = await phase(service)
    seconds = (changes + 1) * SPACING
    return (
        idle_ms / seconds,
        (other_ms - idle_ms) / changes,
        (own_ms - idle_ms) / changes,
        own_seen,
    )
