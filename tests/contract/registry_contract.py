"""The ``Registry`` contract: what every discovery backend must do.

Subclass ``RegistryContract`` in a ``test_*.py`` module, name the subclass
``Test...`` and implement ``make_registry`` (a fresh, empty namespace on each
call). Implement ``make_second_registry`` to run the tests that need another
client of the same store (cross-client watch, lease expiry after a crash).
Override ``crash`` if the backend cannot stop its keepalives through
``close(deregister=False)``, and ``ttl`` if its shortest lease is longer.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.contract.helpers import DEADLINE, Collector

from qanat.errors import ConfigError, NotFound
from qanat.ports import Health, Instance, Registry

Snapshots = list[list[Instance]]


def inst(iid: str, service: str = "orders", port: int = 8000, **fields: Any) -> Instance:
    """A test instance on localhost."""
    return Instance(id=iid, service=service, address="127.0.0.1", port=port, **fields)


def ids(instances: list[Instance]) -> list[str]:
    """The ids of ``instances``, in order."""
    return [i.id for i in instances]


class RegistryContract:
    """Behaviour every ``Registry`` backend shares; subclasses provide the backend."""

    ttl: float = 1.0
    """Lease TTL for expiry tests: short, so they finish quickly."""

    async def make_registry(self) -> Registry:
        """A client of a fresh, empty namespace."""
        raise NotImplementedError

    async def make_second_registry(self, first: Registry) -> Registry:
        """Another client of the same namespace as ``first`` (another process, in effect)."""
        pytest.skip("this backend has no second client")

    async def crash(self, registry: Registry) -> None:
        """Stop ``registry``'s keepalives without deregistering, as a killed process would."""
        closer: Any = registry
        await closer.close(deregister=False)

    @pytest.fixture
    async def registry(self) -> AsyncIterator[Registry]:
        reg = await self.make_registry()
        yield reg
        await reg.close()

    @pytest.fixture
    async def other(self, registry: Registry) -> AsyncIterator[Registry]:
        reg = await self.make_second_registry(registry)
        yield reg
        await reg.close()

    # -- register / discover / deregister ---------------------------------

    async def test_register_then_discover_round_trips_every_field(self, registry: Registry) -> None:
        """A registered instance comes back from discover with every field intact."""
        original = inst(
            "o-1",
            tags=("blue", "v2"),
            metadata={"region": "eu", "owner": "team-a"},
            weight=3,
            version="2.1.0",
            zone="eu-1a",
        )
        await registry.register(original, ttl=30)
        assert await registry.discover("orders") == [original]

    async def test_discover_sorts_by_id(self, registry: Registry) -> None:
        """discover returns instances sorted by id, whatever the registration order."""
        names = [f"o-{n}" for n in range(8)]
        for n, iid in enumerate(random.sample(names, len(names))):
            await registry.register(inst(iid, port=9000 + n), ttl=30)
        assert ids(await registry.discover("orders")) == sorted(names)

    async def test_discover_unknown_service_is_empty(self, registry: Registry) -> None:
        """An unknown service has no instances (not an error)."""
        assert await registry.discover("nobody") == []

    async def test_services_are_separate(self, registry: Registry) -> None:
        """Instances of one service never show up under another."""
        await registry.register(inst("a", service="orders"), ttl=30)
        await registry.register(inst("b", service="payments"), ttl=30)
        assert ids(await registry.discover("orders")) == ["a"]
        assert ids(await registry.discover("payments")) == ["b"]

    async def test_deregister_removes_and_ignores_unknown(self, registry: Registry) -> None:
        """deregister removes one instance; deregistering an unknown one is a no-op."""
        await registry.register(inst("a"), ttl=30)
        await registry.register(inst("b"), ttl=30)
        await registry.deregister("orders", "a")
        await registry.deregister("orders", "never-was")
        await registry.deregister("nobody", "x")
        assert ids(await registry.discover("orders")) == ["b"]

    async def test_register_again_replaces(self, registry: Registry) -> None:
        """Registering the same id again replaces the instance instead of adding one."""
        await registry.register(inst("a", port=8000), ttl=30)
        await registry.register(inst("a", port=8001, version="2"), ttl=30)
        assert await registry.discover("orders") == [inst("a", port=8001, version="2")]

    async def test_services_lists_live_services_sorted(self, registry: Registry) -> None:
        """services() lists services with at least one instance, sorted."""
        assert await registry.services() == []
        for service in ("payments", "orders", "users"):
            await registry.register(inst("x", service=service), ttl=30)
        await registry.deregister("users", "x")
        assert await registry.services() == ["orders", "payments"]

    # -- health and enabled -----------------------------------------------

    async def test_healthy_only_filters_critical(self, registry: Registry) -> None:
        """Critical instances are left out by default and included with healthy_only=False."""
        for iid in ("a", "b", "c"):
            await registry.register(inst(iid), ttl=30)
        await registry.set_health("orders", "b", Health.CRITICAL, "connection refused")
        await registry.set_health("orders", "c", Health.WARNING)
        assert ids(await registry.discover("orders")) == ["a", "c"]
        everything = await registry.discover("orders", healthy_only=False)
        assert [(i.id, i.health) for i in everything] == [
            ("a", Health.PASSING),
            ("b", Health.CRITICAL),
            ("c", Health.WARNING),
        ]

    async def test_health_and_enabled_are_separate_facts(self, registry: Registry) -> None:
        """A passing check does not re-enable a disabled instance, nor enabling heal it."""
        await registry.register(inst("a"), ttl=30)
        await registry.set_enabled("orders", "a", False)
        await registry.set_health("orders", "a", Health.PASSING)
        assert await registry.discover("orders") == []
        await registry.set_health("orders", "a", Health.CRITICAL)
        await registry.set_enabled("orders", "a", True)
        assert await registry.discover("orders") == []
        [a] = await registry.discover("orders", healthy_only=False)
        assert (a.enabled, a.health, a.routable) == (True, Health.CRITICAL, False)
        await registry.set_health("orders", "a", Health.PASSING)
        assert ids(await registry.discover("orders")) == ["a"]

    async def test_set_health_of_unknown_instance_raises_not_found(
        self, registry: Registry
    ) -> None:
        """set_health and set_enabled on an unregistered instance raise NotFound."""
        with pytest.raises(NotFound, match="ghost"):
            await registry.set_health("orders", "ghost", Health.PASSING)
        with pytest.raises(NotFound, match="ghost"):
            await registry.set_enabled("orders", "ghost", False)

    # -- bad input ----------------------------------------------------------

    @pytest.mark.parametrize("ttl", [0, -1, 0.5, float("nan"), float("inf")])
    async def test_bad_ttl_is_a_config_error(self, registry: Registry, ttl: float) -> None:
        """A TTL that is not a finite number of at least one second is refused clearly."""
        with pytest.raises(ConfigError, match="ttl"):
            await registry.register(inst("a"), ttl=ttl)

    @pytest.mark.parametrize(
        "bad",
        [inst(""), inst("a", service=""), inst("a/b"), inst("a", port=0), inst("a", port=70000)],
    )
    async def test_bad_instance_is_a_config_error(self, registry: Registry, bad: Instance) -> None:
        """An instance with an empty or slashed name or an impossible port is refused clearly."""
        with pytest.raises(ConfigError):
            await registry.register(bad, ttl=30)
        assert await registry.services() == []

    # -- watch ----------------------------------------------------------------

    async def test_watch_starts_with_current_state_and_follows_changes(
        self, registry: Registry
    ) -> None:
        """watch yields the current snapshot, then a complete snapshot after each change."""
        await registry.register(inst("a"), ttl=30)
        watch = Collector(registry.watch("orders"))
        try:
            await watch.wait_for(lambda s: len(s) >= 1)
            assert ids(watch.items[0]) == ["a"]

            async def step(expect: list[tuple[str, Health, bool]]) -> None:
                def seen(snaps: Snapshots) -> bool:
                    return [(i.id, i.health, i.enabled) for i in snaps[-1]] == expect

                await watch.wait_for(seen)

            passing, critical = Health.PASSING, Health.CRITICAL
            await registry.register(inst("b"), ttl=30)
            await step([("a", passing, True), ("b", passing, True)])
            await registry.set_health("orders", "a", critical)
            await step([("a", critical, True), ("b", passing, True)])
            await registry.set_enabled("orders", "b", False)
            await step([("a", critical, True), ("b", passing, False)])
            await registry.deregister("orders", "a")
            await step([("b", passing, False)])
            await registry.register(inst("z", service="payments"), ttl=30)
            await registry.deregister("orders", "b")
            await step([])
            assert all(s for s in watch.items[:-1]), "no empty snapshot before the last"
            assert all(i.service == "orders" for s in watch.items for i in s)
        finally:
            await watch.close()

    async def test_watch_of_empty_service_yields_empty_snapshot_first(
        self, registry: Registry
    ) -> None:
        """Watching a service with no instances first yields an empty snapshot."""
        watch = Collector(registry.watch("nobody"))
        try:
            assert (await watch.wait_for(lambda s: len(s) >= 1))[0] == []
        finally:
            await watch.close()

    async def test_watch_sees_changes_from_another_client(
        self, registry: Registry, other: Registry
    ) -> None:
        """A registration made through another client reaches this client's watch."""
        watch = Collector(registry.watch("orders"))
        try:
            await watch.wait_for(lambda s: len(s) >= 1)
            await other.register(inst("remote"), ttl=30)
            await watch.wait_for(lambda s: ids(s[-1]) == ["remote"])
            await other.set_health("orders", "remote", Health.CRITICAL)
            await watch.wait_for(lambda s: s[-1][0].health is Health.CRITICAL)
            assert [i.health for i in await registry.discover("orders", healthy_only=False)] == [
                Health.CRITICAL
            ]
        finally:
            await watch.close()

    # -- leases ---------------------------------------------------------------

    async def test_keepalive_keeps_instance_past_its_ttl(self, registry: Registry) -> None:
        """A registered instance stays, unchanged, for several TTLs while its owner lives."""
        await registry.register(inst("a"), ttl=self.ttl)
        watch = Collector(registry.watch("orders"))
        try:
            await watch.wait_for(lambda s: len(s) >= 1)
            await watch.stays(lambda s: [ids(x) for x in s] == [["a"]], seconds=3 * self.ttl)
            assert ids(await registry.discover("orders")) == ["a"]
        finally:
            await watch.close()

    async def test_crashed_owner_instance_expires_and_watch_sees_it(
        self, registry: Registry, other: Registry
    ) -> None:
        """When the owner stops renewing (a crash), the instance expires and watchers see it go."""
        await registry.register(inst("survivor"), ttl=30)
        await other.register(inst("doomed"), ttl=self.ttl)
        watch = Collector(registry.watch("orders"))
        try:
            await watch.wait_for(lambda s: len(s) >= 1 and ids(s[-1]) == ["doomed", "survivor"])
            await self.crash(other)
            await watch.wait_for(lambda s: ids(s[-1]) == ["survivor"], timeout=DEADLINE)
            assert ids(await registry.discover("orders")) == ["survivor"]
        finally:
            await watch.close()

    async def test_close_deregisters_what_it_registered(
        self, registry: Registry, other: Registry
    ) -> None:
        """close() removes the closing client's instances at once, not after the TTL."""
        await other.register(inst("leaving"), ttl=30)
        await registry.register(inst("staying"), ttl=30)
        watch = Collector(registry.watch("orders"))
        try:
            await watch.wait_for(lambda s: len(s) >= 1 and ids(s[-1]) == ["leaving", "staying"])
            await other.close()
            await other.close()  # idempotent
            await watch.wait_for(lambda s: ids(s[-1]) == ["staying"], timeout=DEADLINE)
        finally:
            await watch.close()

    async def test_deregister_by_another_client_is_not_undone(
        self, registry: Registry, other: Registry
    ) -> None:
        """A deregister from another client (an operator) is not undone by the owner's keepalive."""
        await other.register(inst("a"), ttl=self.ttl)
        await registry.deregister("orders", "a")
        watch = Collector(registry.watch("orders"))
        try:
            await watch.wait_for(lambda s: len(s) >= 1)
            await watch.stays(lambda s: all(x == [] for x in s), seconds=2 * self.ttl)
        finally:
            await watch.close()
