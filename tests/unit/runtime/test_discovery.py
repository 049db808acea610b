"""The discovery cache: dict lookups, one shared watch, last-known-good, protection threshold."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.backends import open_registry
from qanat.backends.memory import MemoryRegistry
from qanat.errors import BackendUnreachable, ConfigError, Timeout
from qanat.ports import Health, Instance
from qanat.runtime._tasks import cancel_and_wait
from qanat.runtime.discovery import DiscoveryCache, select
from qanat.runtime.health import HealthChecker


class FlakyRegistry(MemoryRegistry):
    """The real memory registry, whose watches can be broken and healed on demand.

    It counts ``watch`` calls and live watch streams, and signals each call, so
    tests wait on what really happened instead of sleeping.
    """

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls: Counter[str] = Counter()
        self.live = 0
        self.called = asyncio.Condition()
        self._queues: set[asyncio.Queue[list[Instance] | Exception]] = set()

    async def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        self.calls[service] += 1
        async with self.called:
            self.called.notify_all()
        if self.down:
            raise BackendUnreachable("registry down")
        queue: asyncio.Queue[list[Instance] | Exception] = asyncio.Queue()
        pump = asyncio.create_task(self._pump(service, queue))
        self._queues.add(queue)
        self.live += 1
        try:
            while not isinstance(item := await queue.get(), Exception):
                yield item
            raise item
        finally:
            self.live -= 1
            self._queues.discard(queue)
            await cancel_and_wait([pump])

    async def _pump(self, service: str, queue: asyncio.Queue[list[Instance] | Exception]) -> None:
        async for snapshot in super().watch(service):
            queue.put_nowait(snapshot)

    def fail(self) -> None:
        """Break every open watch and refuse new ones."""
        self.down = True
        for queue in self._queues:
            queue.put_nowait(BackendUnreachable("registry down"))

    async def wait_calls(self, service: str, n: int, timeout: float = 5.0) -> None:
        """Wait until ``watch(service)`` has been called ``n`` times."""
        async with asyncio.timeout(timeout), self.called:
            await self.called.wait_for(lambda: self.calls[service] >= n)


def inst(iid: str, health: Health = Health.PASSING, enabled: bool = True) -> Instance:
    return Instance(
        id=iid, service="api", address="127.0.0.1", port=9000, health=health, enabled=enabled
    )


@contextlib.asynccontextmanager
async def cache_on(registry: MemoryRegistry, **kwargs: float) -> AsyncIterator[DiscoveryCache]:
    cache = DiscoveryCache(registry, backoff_base=0.01, backoff_cap=0.05, **kwargs)
    try:
        yield cache
    finally:
        await cache.close()
        await registry.close()


def changes(cache: DiscoveryCache, service: str) -> asyncio.Queue[tuple[str, ...]]:
    """A queue of the instance ids the cache announces for ``service``."""
    queue: asyncio.Queue[tuple[str, ...]] = asyncio.Queue()
    cache.on_change(service, lambda found: queue.put_nowait(tuple(i.id for i in found)))
    return queue


async def next_change(queue: asyncio.Queue[tuple[str, ...]]) -> tuple[str, ...]:
    async with asyncio.timeout(5):
        return await queue.get()


# --- pure selection ---------------------------------------------------------------------------

snapshots = st.lists(
    st.builds(inst, st.uuids().map(str), st.sampled_from(list(Health)), st.booleans()),
    max_size=12,
).map(tuple)


@given(snapshots, st.floats(0, 1))
def test_select_obeys_protection_threshold(snapshot: tuple[Instance, ...], t: float) -> None:
    """Routable instances unless their share of enabled ones is below t; then every enabled one."""
    chosen, panic = select(snapshot, t)
    enabled = [i for i in snapshot if i.enabled]
    routable = [i for i in enabled if i.routable]
    assert panic == (bool(enabled) and len(routable) < t * len(enabled))
    assert list(chosen) == (enabled if panic else routable)
    assert all(i.enabled for i in chosen)


def test_select_with_threshold_zero_never_panics() -> None:
    """A threshold of 0 turns protection off, even when every instance is critical."""
    assert select((inst("a", Health.CRITICAL),), 0.0) == ((), False)


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "0.5"])
def test_bad_threshold_is_config_error(bad: object) -> None:
    """A threshold outside [0, 1] (or not a number) is refused with ConfigError."""
    with pytest.raises(ConfigError, match="protection_threshold"):
        DiscoveryCache(MemoryRegistry(), protection_threshold=bad)  # type: ignore[arg-type]


# --- the cache --------------------------------------------------------------------------------


async def test_lookup_is_a_synchronous_read_of_routable_instances() -> None:
    """After wait_ready, instances() returns the routable instances without awaiting."""
    registry = MemoryRegistry()
    for iid in ("a", "b", "c"):
        await registry.register(inst(iid))
    await registry.set_health("api", "b", Health.CRITICAL)
    async with cache_on(registry) as cache:
        assert cache.instances("api") == ()  # first touch starts the watch
        await cache.wait_ready("api", timeout=5)
        found = cache.instances("api")
        assert isinstance(found, tuple)
        assert [i.id for i in found] == ["a", "c"]
        assert cache.status("api").state == "fresh"


async def test_changes_reach_subscribers() -> None:
    """on_change gets the current instances, then every changed set, as the registry changes."""
    registry = MemoryRegistry()
    await registry.register(inst("a"))
    async with cache_on(registry) as cache:
        seen = changes(cache, "api")
        assert await next_change(seen) == ("a",)
        await registry.register(inst("b"))
        assert await next_change(seen) == ("a", "b")
        await registry.set_enabled("api", "a", False)
        assert await next_change(seen) == ("b",)


async def test_one_watch_serves_many_concurrent_first_lookups() -> None:
    """A hundred concurrent first lookups share one registry watch and see the same answer."""
    registry = FlakyRegistry()
    await registry.register(inst("a"))
    async with cache_on(registry) as cache:
        results = await asyncio.gather(*(cache.get("api") for _ in range(100)))
        assert registry.calls["api"] == 1
        assert {tuple(i.id for i in r) for r in results} == {("a",)}


async def test_serves_last_known_good_while_registry_is_down() -> None:
    """When the watch fails the cache keeps the last snapshot, reports stale, and recovers."""
    registry = FlakyRegistry()
    await registry.register(inst("a"))
    async with cache_on(registry) as cache:
        seen = changes(cache, "api")
        assert await next_change(seen) == ("a",)
        registry.fail()
        await registry.wait_calls("api", 3)  # the failure, then at least one failed reconnect
        status = cache.status("api")
        assert status.state == "stale"
        assert status.last_error is not None and "registry down" in status.last_error
        assert [i.id for i in cache.instances("api")] == ["a"]
        await registry.register(inst("b"))  # happens during the outage
        registry.down = False
        assert await next_change(seen) == ("a", "b")
        assert cache.status("api").state == "fresh"


async def test_wait_ready_times_out_with_the_last_error() -> None:
    """If the registry never answers, wait_ready raises Timeout naming the error seen."""
    registry = FlakyRegistry()
    registry.down = True
    async with cache_on(registry) as cache:
        with pytest.raises(Timeout, match="registry down"):
            await cache.wait_ready("api", timeout=0.3)
        assert cache.status("api").state == "unknown"


async def test_protection_threshold_serves_all_enabled_when_too_few_are_healthy() -> None:
    """With 1 of 4 healthy (below 50 %) the cache returns all enabled instances, flagged panic."""
    registry = MemoryRegistry()
    for iid in ("a", "b", "c", "d", "e"):
        await registry.register(inst(iid))
    for iid in ("b", "c", "d"):
        await registry.set_health("api", iid, Health.CRITICAL)
    await registry.set_enabled("api", "e", False)
    async with cache_on(registry) as cache:
        found = await cache.get("api")
        assert [i.id for i in found] == ["a", "b", "c", "d"]
        assert cache.status("api").panic
        cache.set_protection_threshold("api", 0.0)
        assert [i.id for i in cache.instances("api")] == ["a"]
        assert not cache.status("api").panic


async def test_per_service_threshold_overrides_the_default() -> None:
    """A threshold given for one service applies to it and not to the others."""
    registry = MemoryRegistry()
    for service in ("api", "db"):
        for iid in ("x", "y"):
            await registry.register(Instance(id=iid, service=service, address="h", port=1))
        await registry.set_health(service, "y", Health.CRITICAL)
    async with cache_on(registry, protection_threshold=0.0) as cache:
        cache.set_protection_threshold("db", 0.6)
        assert [i.id for i in await cache.get("api")] == ["x"]
        assert [i.id for i in await cache.get("db")] == ["x", "y"]


async def test_a_failing_listener_does_not_starve_the_others() -> None:
    """A subscriber that raises is logged and the next subscriber still hears the change."""
    registry = MemoryRegistry()
    await registry.register(inst("a"))
    async with cache_on(registry) as cache:
        cache.on_change("api", lambda found: 1 / 0)
        seen = changes(cache, "api")
        assert await next_change(seen) == ("a",)


async def test_close_ends_every_watch() -> None:
    """close() cancels and awaits every watch, so no stream is left open."""
    registry = FlakyRegistry()
    await registry.register(inst("a"))
    cache = DiscoveryCache(registry)
    await asyncio.gather(cache.get("api"), cache.get("other"))
    assert registry.live == 2
    await cache.close()
    assert registry.live == 0
    await registry.close()


async def test_health_results_show_in_the_cache() -> None:
    """A health checker's critical verdict reaches the cache, which then stops serving it."""
    registry = MemoryRegistry()
    for iid in ("a", "b", "c"):
        await registry.register(inst(iid))

    async def probe(url: str, timeout: float) -> tuple[Health, str]:
        return (Health.CRITICAL, "500") if url.endswith("/b") else (Health.PASSING, "200")

    checker = HealthChecker(registry, probe=probe)
    for iid in ("a", "b", "c"):
        checker.add_http(inst(iid), path=f"/{iid}")
    async with cache_on(registry) as cache:
        seen = changes(cache, "api")
        assert await next_change(seen) == ("a", "b", "c")
        await checker.run_once()
        assert await next_change(seen) == ("a", "c")
        await checker.close()


async def test_cache_on_the_sqlite_registry(tmp_path: Path) -> None:
    """The cache follows another process's registrations in the embedded SQLite registry."""
    url = f"sqlite:///{tmp_path}/control.db"
    registry, other = await open_registry(url), await open_registry(url)
    cache = DiscoveryCache(registry)
    try:
        seen = changes(cache, "api")
        assert await next_change(seen) == ()
        await other.register(inst("a"))
        assert await next_change(seen) == ("a",)
        await other.deregister("api", "a")
        assert await next_change(seen) == ()
    finally:
        await cache.close()
        await other.close()
        await registry.close()
