"""etcd registry details beyond the contract: deregister round trips, check output storage."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.conftest import unique_prefix

from qanat.backends.etcd import EtcdRegistry
from qanat.ports import Health, Instance

pytestmark = pytest.mark.integration


def record_calls(registry: EtcdRegistry) -> list[str]:
    """Record the name of every unary RPC the registry sends (the server stays real)."""
    sent: list[str] = []
    conn = registry._conn
    real = conn.call

    async def call(stub: str, method: str, request: Any, action: str, **kw: Any) -> Any:
        sent.append(method)
        return await real(stub, method, request, action, **kw)

    conn.call = call  # type: ignore[method-assign]
    return sent


@pytest.fixture
def url(etcd_url: str) -> str:
    return f"{etcd_url}?prefix={unique_prefix()}"


async def test_owner_deregister_is_one_lease_revoke(url: str) -> None:
    """Deregistering our own instance revokes its lease and sends no DeleteRange."""
    registry, observer = await EtcdRegistry.open(url), await EtcdRegistry.open(url)
    try:
        await registry.register(Instance("a", "svc", "127.0.0.1", 80), ttl=5)
        sent = record_calls(registry)
        await registry.deregister("svc", "a")
        assert sent == ["LeaseRevoke"]
        assert await observer.discover("svc", healthy_only=False) == []
    finally:
        await registry.close()
        await observer.close()


async def test_deregister_deletes_a_key_someone_else_re_registered(url: str) -> None:
    """When our renewal saw the id re-registered under another lease, deregister deletes it."""
    registry, other = await EtcdRegistry.open(url), await EtcdRegistry.open(url)
    try:
        await registry.register(Instance("a", "svc", "127.0.0.1", 80), ttl=5)
        await other.register(Instance("a", "svc", "127.0.0.1", 81), ttl=5)
        lease = registry._leases[("svc", "a")]
        await registry._refresh_copy(lease)  # what the next keepalive turn does
        assert lease.attached is False
        sent = record_calls(registry)
        await registry.deregister("svc", "a")
        assert sent == ["LeaseRevoke", "DeleteRange"]
        assert await other.discover("svc", healthy_only=False) == []
    finally:
        await registry.close()
        await other.close()


async def test_deregister_of_an_instance_we_do_not_own_deletes_it(url: str) -> None:
    """A client that did not register the instance removes it with DeleteRange."""
    owner, operator = await EtcdRegistry.open(url), await EtcdRegistry.open(url)
    try:
        await owner.register(Instance("a", "svc", "127.0.0.1", 80), ttl=5)
        sent = record_calls(operator)
        await operator.deregister("svc", "a")
        assert sent == ["DeleteRange"]
        assert await owner.discover("svc", healthy_only=False) == []
    finally:
        await owner.close()
        await operator.close()


async def test_set_health_output_is_stored_and_read_back(url: str) -> None:
    """The output given to set_health is kept with the instance and outputs() returns it."""
    registry = await EtcdRegistry.open(url)
    try:
        await registry.register(Instance("a", "svc", "127.0.0.1", 80), ttl=5)
        await registry.register(Instance("b", "svc", "127.0.0.1", 81), ttl=5)
        await registry.set_health("svc", "a", Health.CRITICAL, "HTTP GET /health: 503")
        assert await registry.outputs("svc") == {"a": "HTTP GET /health: 503", "b": ""}
        await registry.set_enabled("svc", "a", False)  # other updates keep the output
        assert (await registry.outputs("svc"))["a"] == "HTTP GET /health: 503"
    finally:
        await registry.close()
