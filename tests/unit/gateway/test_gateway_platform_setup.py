"""Gateway plans from a topology or a route file, the discovery resolver, admin tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from qanat.backends.memory import MemoryRegistry
from qanat.errors import ConfigError
from qanat.gateway.admin import render_table
from qanat.gateway.app import Gateway
from qanat.gateway.discovery import DiscoveryResolver
from qanat.gateway.topology import plan_from_file, plan_from_topology
from qanat.ports import Health, Instance
from qanat.runtime.discovery import DiscoveryCache
from qanat.testing import eventually

SHOP = Path(__file__).resolve().parents[3] / "examples" / "shop" / "qanat.yaml"


def test_shop_topology_gives_a_gateway_plan() -> None:
    """The shop's qanat.yaml validates: its routes, backends and gateway port become a plan."""
    plan = plan_from_topology(SHOP)
    assert [r["name"] for r in plan.routes] == ["users", "products"]
    assert plan.services == ["catalog", "users"]
    state = SHOP.parent.resolve() / ".qanat"
    assert plan.registry_url == f"sqlite:///{state}/control.db"
    assert plan.config_url == plan.registry_url  # config defaults to the registry's URL
    assert (plan.port, plan.admin_port, plan.workers) == (8080, None, 1)


def test_command_line_values_override_the_topology() -> None:
    """Flags given on the command line replace the file's values; None keeps them."""
    plan = plan_from_topology(SHOP.parent, port=9000, admin_port=9901, workers=None,
                              registry_url="memory://x")
    assert (plan.port, plan.admin_port, plan.workers) == (9000, 9901, 1)
    assert plan.registry_url == "memory://x"


def test_topology_without_routes_is_refused(tmp_path: Path) -> None:
    """A topology with no gateway routes cannot run a gateway; the error names the file."""
    (tmp_path / "qanat.yaml").write_text("name: empty\n")
    with pytest.raises(ConfigError, match="no gateway routes"):
        plan_from_topology(tmp_path)


def test_route_file_with_service_routes_needs_a_registry(tmp_path: Path) -> None:
    """``--config`` with a kind: service route and no --registry is a clear error."""
    path = tmp_path / "gw.yaml"
    path.write_text("routes:\n  - name: u\n    upstream: {kind: service, service: users}\n")
    with pytest.raises(ConfigError, match="--registry"):
        plan_from_file(path)
    plan = plan_from_file(path, registry_url="memory://")
    assert plan.services == ["users"] and plan.config_url is None


def _instance(i: int, health: Health = Health.PASSING, enabled: bool = True) -> Instance:
    return Instance(f"users-{i}", "users", "127.0.0.1", 9000 + i, health=health,
                    enabled=enabled)


async def test_resolver_follows_the_registry_and_reuses_unchanged_lists() -> None:
    """Endpoints follow joins, health and leaves; an unchanged snapshot is the same list."""
    registry = MemoryRegistry()
    cache = DiscoveryCache(registry)
    resolver = DiscoveryResolver(cache)
    try:
        await registry.register(_instance(1))
        assert await resolver.prepare(["users"]) == []
        first = resolver.endpoints("users")
        assert [e[0] for e in first] == ["users-1"]
        assert resolver.endpoints("users") is first
        await registry.register(_instance(2))
        await registry.register(_instance(3))

        async def until_endpoints(*ids: str) -> None:
            await eventually(lambda: [e[0] for e in resolver.endpoints("users")] == list(ids),
                             interval=0.001,
                             what=lambda: f"endpoints {ids}, not {resolver.endpoints('users')}")

        await until_endpoints("users-1", "users-2", "users-3")
        await registry.set_health("users", "users-2", Health.CRITICAL)
        await until_endpoints("users-1", "users-3")
        await registry.deregister("users", "users-1")
        await until_endpoints("users-3")
        # 1 healthy of 2 enabled is not below the 50 % protection threshold ...
        await registry.set_enabled("users", "users-3", False)
        # ... 0 of 1 is: panic mode serves every enabled instance, critical or not
        await until_endpoints("users-2")
        assert resolver.describe("users")["panic"] is True
    finally:
        await cache.close()
        await registry.close()


async def test_readiness_waits_for_every_routed_service() -> None:
    """Until discovery has a snapshot of each routed service, readiness says why not."""
    registry = MemoryRegistry()
    cache = DiscoveryCache(registry)
    resolver = DiscoveryResolver(cache)
    route = {"name": "u", "upstream": {"kind": "service", "service": "users"}}
    gateway = Gateway([route], resolver=resolver)
    gateway.add_readiness_check(lambda: resolver.not_ready(gateway.services()))
    try:
        reasons = gateway.not_ready()  # no await since the route was loaded: no snapshot yet
        assert reasons and "users" in reasons[0]
        await eventually(lambda: not gateway.not_ready(), interval=0.001,
                         what=lambda: f"the gateway ready: {gateway.not_ready()}")
    finally:
        await gateway.aclose()
        await cache.close()
        await registry.close()


def test_table_renders_rows_and_key_values() -> None:
    """``?format=table``: lists of mappings become aligned columns, scalars key: value lines."""
    text = render_table({"revision": 3, "routes": [{"name": "a", "n": 1}, {"name": "bb"}]})
    lines = text.splitlines()
    assert lines[0] == "revision: 3"
    assert lines[1].split() == ["name", "n"]
    assert lines[2].split() == ["a", "1"] and lines[3].split() == ["bb"]
    assert lines[1].rindex("n") == lines[2].index("1")  # columns line up
