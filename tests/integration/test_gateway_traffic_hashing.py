"""Consistent hashing and the admin view of breakers, against real upstream servers."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest
from test_gateway_support import Backend, RawClient, backends, get, static

from qanat.gateway.admin import AdminServer
from qanat.gateway.app import Gateway
from qanat.gateway.upstream import StaticResolver
from qanat.ports import Instance
from qanat.testing import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def trio() -> AsyncIterator[list[Backend]]:
    bs = await backends("a", "b", "c")
    yield bs
    for b in bs:
        await b.close()


async def ask(client: RawClient, user: str, header: str = "x-user-id") -> str:
    reply = await client.request(get("/x", extra=f"{header}: {user}\r\n"))
    assert reply.status == 200
    name: str = reply.json()["instance"]
    return name


async def test_one_user_always_reaches_one_instance(trio: list[Backend]) -> None:
    """Every request carrying the same x-user-id reaches the same upstream; users spread."""
    gw = Gateway([{"name": "r", "upstream": static(*trio, balancer="consistent_hash",
                                                   hash_on={"header": "x-user-id"})}])
    await gw.start("127.0.0.1", 0)
    client = await RawClient.connect(gw.port)
    try:
        homes: dict[str, set[str]] = {}
        for _ in range(3):
            for i in range(30):
                homes.setdefault(f"user-{i}", set()).add(await ask(client, f"user-{i}"))
        assert all(len(h) == 1 for h in homes.values())
        assert Counter(next(iter(h)) for h in homes.values()).keys() == {"a", "b", "c"}
    finally:
        await client.close()
        await gw.aclose(timeout=1)


async def test_an_instance_leaving_moves_only_its_users(trio: list[Backend]) -> None:
    """When discovery drops one instance, only the sessions it held move (cookie hashing)."""
    def instances(bs: list[Backend]) -> list[Instance]:
        return [Instance(b.name, "svc", "127.0.0.1", b.port) for b in bs]

    resolver = StaticResolver({"svc": instances(trio)})
    gw = Gateway([{"name": "r", "upstream": {
        "kind": "service", "service": "svc", "balancer": "consistent_hash",
        "hash_on": {"cookie": "session"}}}], resolver=resolver)
    await gw.start("127.0.0.1", 0)
    client = await RawClient.connect(gw.port)
    try:
        users = [f"s{i}" for i in range(40)]
        before = {u: await ask(client, f"theme=dark; session={u}", "cookie") for u in users}
        resolver.set("svc", instances(trio[:2]))
        after = {u: await ask(client, f"session={u}", "cookie") for u in users}
        moved = {u for u in users if before[u] != after[u]}
        assert moved == {u for u in users if before[u] == "c"}
        assert moved and all(after[u] in ("a", "b") for u in moved)
    finally:
        await client.close()
        await gw.aclose(timeout=1)


async def test_client_address_hashing_pins_a_client(trio: list[Backend]) -> None:
    """source: client_address sends every connection from one address to one instance."""
    gw = Gateway([{"name": "r", "upstream": static(*trio, balancer="consistent_hash",
                                                   hash_on={"source": "client_address"})}])
    await gw.start("127.0.0.1", 0)
    try:
        seen = set()
        for _ in range(6):  # new connections, new source ports, one address
            client = await RawClient.connect(gw.port)
            try:
                seen.add((await client.request(get("/x"))).json()["instance"])
            finally:
                await client.close()
        assert len(seen) == 1 and sum(b.count() for b in trio) == 6
    finally:
        await gw.aclose(timeout=1)


async def test_admin_upstreams_shows_breaker_and_ejection_per_instance(
    trio: list[Backend],
) -> None:
    """After an instance fails, /upstreams shows its breaker open and its ejection, per row."""
    a, b, c = trio
    a.behave = lambda seen: 503
    route = {"name": "r", "upstream": static(
        a, b, c, breaker={"consecutive_failures": 2, "timeout": "60s"},
        outlier_detection={"consecutive_5xx": 2, "max_ejection_percent": 50})}
    gw = Gateway([route])
    await gw.start("127.0.0.1", 0)
    admin = AdminServer(gw)
    await admin.start("127.0.0.1", 0)
    client = await RawClient.connect(gw.port)
    try:

        async def a_tried_twice() -> bool:  # round robin: a comes up within a few requests
            await client.request(get("/x"))
            return a.count() >= 2

        await eventually(a_tried_twice, interval=0, what="two requests to reach a")
        view = await RawClient.connect(admin.port)
        try:
            page = (await view.request(get("/upstreams"))).json()
            table = await view.request(get("/upstreams?format=table"))
        finally:
            await view.close()
        rows = {row["id"]: row for row in page[0]["instances"]}
        assert rows[a.url]["breaker"] == "open"  # gobreaker clears the counts as it opens
        assert rows[a.url]["ejected"] is True and 0 < rows[a.url]["ejected_for"] <= 30
        assert 0 < rows[a.url]["breaker_retry_after"] <= 60
        for other in (b, c):
            assert (rows[other.url]["breaker"], rows[other.url]["ejected"]) == ("closed", False)
        assert page[0]["traffic"]["route"] == "r"
        assert b"open" in table.body
    finally:
        await client.close()
        await admin.aclose()
        await gw.aclose(timeout=1)
