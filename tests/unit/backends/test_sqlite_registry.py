"""SQLite registry internals that decide its cost: the expiry index, per-service wakes, decoding."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from tests.contract.helpers import DEADLINE, Collector

from qanat.backends import sqlite_registry_ops as ops
from qanat.backends.sqlite import SqliteRegistry
from qanat.backends.sqlite_db import ChangeFeed, SqliteDb
from qanat.ports import Health, Instance


def url_of(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/control.db"


async def put(db: SqliteDb, inst: Instance, ttl: float, now: float) -> None:
    """Register ``inst`` with the registry's own SQL, outside any registry object."""
    await db.write(lambda c: ops.put(c, inst=inst, ttl=ttl, old=None, now=now, touched=set()))


async def test_purge_uses_the_expiry_index(tmp_path: Path) -> None:
    """The purge every renewal runs searches an index on expires_at instead of scanning leases."""
    registry = await SqliteRegistry.open(url_of(tmp_path))
    await registry.register(Instance("a", "svc", "127.0.0.1", 80))
    await registry.close()
    conn = sqlite3.connect(tmp_path / "control.db")
    try:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN DELETE FROM registry_leases WHERE expires_at <= ?", (0.0,)
        ).fetchall()
    finally:
        conn.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "registry_leases_expires" in details, details
    assert "SCAN" not in details, details


async def test_purge_removes_only_expired_instances_and_stamps_their_service(
    tmp_path: Path,
) -> None:
    """An expired lease's instance is deleted and its service (only) is stamped as changed."""
    db = await SqliteDb.connect(url_of(tmp_path))
    now = time.time()
    try:
        await put(db, Instance("old", "a", "h", 1), 1, now)
        await put(db, Instance("new", "b", "h", 1), 60, now)
        touched: set[str] = set()
        await db.write(lambda c: ops.purge(c, now + 2, touched))
        assert touched == {"a"}
        assert await db.read(lambda c: ops.services(c, now)) == ["b"]
        _, moved = await db.read(lambda c: ops.changed_since(2, c))
        assert moved == ["a"]
    finally:
        await db.close()


async def test_watch_read_skips_rereading_an_unchanged_service(tmp_path: Path) -> None:
    """watch_read returns None while the service's stamp has not moved, a snapshot once it has."""
    db = await SqliteDb.connect(url_of(tmp_path))
    now = time.time()
    state = ops.WatchState()
    try:
        for service in ("watched", "other"):
            await put(db, Instance("i", service, "h", 1), 60, now)
        first = await db.read(lambda c: ops.watch_read(c, "watched", now, state, False))
        assert first is not None and [i.id for i in first] == ["i"]
        change = ops.with_health(Health.WARNING)
        await db.write(
            lambda c: ops.update(
                c,
                service="other",
                instance_id="i",
                change=change,
                output="x",
                now=now,
                touched=set(),
            )
        )
        assert await db.read(lambda c: ops.watch_read(c, "watched", now, state, False)) is None
        forced = await db.read(lambda c: ops.watch_read(c, "watched", now, state, True))
        assert forced == first
    finally:
        await db.close()


async def test_feed_wakes_only_the_watchers_of_the_changed_service(tmp_path: Path) -> None:
    """A change by another client wakes this client's watchers of that service and no other."""
    db = await SqliteDb.connect(url_of(tmp_path))
    writer = await SqliteRegistry.open(url_of(tmp_path))
    feed = ChangeFeed(db, ops.COUNTER, changed=ops.changed_since)
    watched, other = feed.subscribe("watched"), feed.subscribe("other")
    try:
        # The first poll wakes everyone (a watcher may have read just before it).
        async with asyncio.timeout(DEADLINE):
            await watched.wait()
            await other.wait()
        watched.clear()
        other.clear()
        await writer.register(Instance("o", "other", "127.0.0.1", 80))
        async with asyncio.timeout(DEADLINE):
            await other.wait()
        assert not watched.is_set()
    finally:
        feed.unsubscribe(watched, "watched")
        feed.unsubscribe(other, "other")
        await feed.close()
        await writer.close()
        await db.close()


async def test_local_write_wakes_only_watchers_of_its_service(tmp_path: Path) -> None:
    """A client's own write wakes its watchers of the written service at once, and no others."""
    registry = await SqliteRegistry.open(url_of(tmp_path))
    try:
        watched = registry._feed.subscribe("watched")
        other = registry._feed.subscribe("other")
        async with asyncio.timeout(DEADLINE):  # the feed's first poll wakes both
            await watched.wait()
            await other.wait()
        watched.clear()
        other.clear()
        await registry.register(Instance("o", "other", "127.0.0.1", 80))
        assert other.is_set()  # at once: no poll needed
        assert not watched.is_set()
    finally:
        await registry.close()


async def test_watch_decodes_only_changed_instances(tmp_path: Path) -> None:
    """After one instance changes, the next snapshot reuses the other instances' objects."""
    registry = await SqliteRegistry.open(url_of(tmp_path))
    for n in range(3):
        await registry.register(Instance(f"i{n}", "svc", "127.0.0.1", 80 + n))
    watch = Collector(registry.watch("svc"))
    try:
        first = (await watch.wait_for(lambda s: len(s) >= 1))[0]
        await registry.set_health("svc", "i1", Health.WARNING, "slow")
        second = (await watch.wait_for(lambda s: len(s) >= 2))[1]
        assert second[0] is first[0] and second[2] is first[2]
        assert second[1] is not first[1] and second[1].health is Health.WARNING
    finally:
        await watch.close()
        await registry.close()


async def test_a_change_to_another_service_yields_nothing(tmp_path: Path) -> None:
    """Writes to other services (from another client) never produce a snapshot of this one."""
    url = url_of(tmp_path)
    registry, other = await SqliteRegistry.open(url), await SqliteRegistry.open(url)
    await registry.register(Instance("w", "watched", "127.0.0.1", 80))
    watch = Collector(registry.watch("watched"))
    try:
        await watch.wait_for(lambda s: len(s) == 1)
        await other.register(Instance("x", "elsewhere", "127.0.0.1", 81))
        await other.set_health("elsewhere", "x", Health.CRITICAL, "down")
        await other.register(Instance("w2", "watched", "127.0.0.1", 82))  # a marker change
        snaps = await watch.wait_for(lambda s: len(s) >= 2)
        assert [[i.id for i in snap] for snap in snaps] == [["w"], ["w", "w2"]]
    finally:
        await watch.close()
        await other.close()
        await registry.close()


async def test_outputs_returns_the_last_check_output(tmp_path: Path) -> None:
    """outputs() shows what set_health recorded as the check output, per live instance."""
    registry = await SqliteRegistry.open(url_of(tmp_path))
    try:
        await registry.register(Instance("a", "svc", "127.0.0.1", 80))
        await registry.register(Instance("b", "svc", "127.0.0.1", 81))
        await registry.set_health("svc", "a", Health.WARNING, "HTTP GET /health: 429")
        assert await registry.outputs("svc") == {"a": "HTTP GET /health: 429", "b": ""}
    finally:
        await registry.close()
