"""The gateway as part of the platform, in process, against real upstream servers:
discovery through a registry, live reload from a config store, admin and metrics."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_gateway_support import RawClient, UpstreamServer, get, static

from qanat.backends import open_config_store, open_registry
from qanat.gateway.hardening import Limits
from qanat.gateway.reload import ROUTES_KEY, route_document
from qanat.gateway.topology import GatewayPlan
from qanat.gateway.workers import GatewayProcess
from qanat.ports import Instance, Registry
from qanat.testing import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def ups() -> AsyncIterator[list[UpstreamServer]]:
    servers = [await UpstreamServer().start() for _ in range(2)]
    yield servers
    for up in servers:
        await up.close()


@pytest.fixture(params=["memory", "sqlite"])
async def backends(request: pytest.FixtureRequest,
                   tmp_path: Path) -> AsyncIterator[tuple[Registry, str]]:
    """A registry to register instances in, and the URL the gateway opens it by."""
    url = (f"memory://gw-{uuid.uuid4().hex}" if request.param == "memory"
           else f"sqlite:///{tmp_path}/control.db")
    registry = await open_registry(url)
    yield registry, url
    await registry.close()


class Platform:
    """A gateway assembled as ``python -m qanat.gateway`` assembles it, on free ports."""

    def __init__(self, url: str, routes: list[dict[str, object]]) -> None:
        plan = GatewayPlan(source="test", routes=routes, registry_url=url, config_url=url,
                           port=0, admin_port=0)
        self.process = GatewayProcess(plan, Limits())
        self.store_url = url

    async def start(self) -> Platform:
        await self.process.start()
        self.gateway = self.process.gateway
        assert self.process.reloader is not None and self.process.admin is not None
        self.reloader, self.admin = self.process.reloader, self.process.admin
        self.resolver = self.process.resolver
        return self

    async def close(self) -> None:
        await self.process.aclose()

    async def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        client = await RawClient.connect(port or self.gateway.port)
        try:
            reply = await client.request(get(path))
        finally:
            await client.close()
        return reply.status, reply.body

    def endpoints(self, service: str) -> int:
        assert self.resolver is not None
        return len(self.resolver.endpoints(service))

    async def set_routes(self, routes: list[dict[str, object]]) -> int:
        store = await open_config_store(self.store_url)
        try:
            return await store.set(ROUTES_KEY, route_document(routes))
        finally:
            await store.close()


def _instance(i: int, up: UpstreamServer) -> Instance:
    return Instance(f"users-{i}", "users", "127.0.0.1", up.port)


SERVICE_ROUTE = {"name": "users", "match": {"prefix": "/api/users"},
                 "upstream": {"kind": "service", "service": "users"}}


async def test_service_route_follows_instances_joining_and_leaving(
    ups: list[UpstreamServer], backends: tuple[Registry, str]
) -> None:
    """Requests reach the registered instances, then a joiner too, and never a leaver."""
    registry, url = backends
    a, b = ups
    await registry.register(_instance(0, a))
    platform = await Platform(url, [SERVICE_ROUTE]).start()
    try:
        await eventually(lambda: not platform.gateway.not_ready(), timeout=10, what="gateway ready")
        assert (await platform.get("/__qanat/ready"))[0] == 200
        for _ in range(4):
            assert (await platform.get("/api/users/1"))[0] == 200
        assert len(a.seen) == 4 and not b.seen
        await registry.register(_instance(1, b))
        await eventually(lambda: platform.endpoints("users") == 2, timeout=10,
                         what="2 users endpoints")
        for _ in range(4):
            assert (await platform.get("/api/users/1"))[0] == 200
        assert len(b.seen) == 2  # round robin over both
        await registry.deregister("users", "users-0")
        await eventually(lambda: platform.endpoints("users") == 1, timeout=10,
                         what="1 users endpoint")
        seen_a = len(a.seen)
        for _ in range(4):
            assert (await platform.get("/api/users/1"))[0] == 200
        assert len(a.seen) == seen_a and len(b.seen) == 6
        await registry.deregister("users", "users-1")
        await eventually(lambda: platform.endpoints("users") == 0, timeout=10,
                         what="no users endpoint")
        status, body = await platform.get("/api/users/1")
        assert status == 503 and b"no-endpoint" in body
    finally:
        await platform.close()


async def test_route_change_applies_while_an_old_request_completes(
    ups: list[UpstreamServer], backends: tuple[Registry, str]
) -> None:
    """A new route set serves new requests while a long request on an old keep-alive
    connection finishes, and that connection then goes on under the new set."""
    _registry, url = backends
    old_up, new_up = ups
    old = {"name": "old", "match": {"prefix": "/old"}, "upstream": static(old_up)}
    new = {"name": "new", "match": {"prefix": "/new"}, "upstream": static(new_up)}
    platform = await Platform(url, [old]).start()
    client = await RawClient.connect(platform.gateway.port)
    try:
        await client.send(b"POST /old/upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
        await eventually(old_up.got_request.is_set, timeout=10, what="the slow request upstream")
        revision = await platform.set_routes([new])
        await eventually(lambda: platform.reloader.status()["revision"] == revision, timeout=10,
                         what=lambda: f"revision {revision}: {platform.reloader.status()}")
        assert (await platform.get("/new/x"))[0] == 200
        assert (await platform.get("/old/x"))[0] == 404
        old_up.gate.set()  # the upstream now reads the body and answers
        reply = await client.response()
        assert reply.status == 200 and reply.json()["body"]["length"] == 5
        reply = await client.request(get("/new/again"))  # same connection, new route set
        assert reply.status == 200 and reply.json()["path"] == "/new/again"
        assert old_up.connections == 1
    finally:
        await client.close()
        await platform.close()


async def test_invalid_change_is_rejected_and_the_old_routes_keep_serving(
    ups: list[UpstreamServer], backends: tuple[Registry, str]
) -> None:
    """A route set naming an unknown filter is refused; /routes reports why and the
    active revision; the old route still answers."""
    _registry, url = backends
    route = {"name": "api", "match": {"prefix": "/api"}, "upstream": static(ups[0])}
    platform = await Platform(url, [route]).start()
    try:
        good = platform.reloader.status()["revision"]
        bad_route = {**route, "filters": [{"name": "no-such-filter"}]}
        bad = await platform.set_routes([bad_route])
        await eventually(lambda: platform.reloader.status()["rejected"] == 1, timeout=10,
                         what=lambda: f"one rejected reload: {platform.reloader.status()}")
        assert (await platform.get("/api/x"))[0] == 200
        client = await RawClient.connect(platform.admin.port)
        try:
            routes = (await client.request(get("/routes"))).json()
        finally:
            await client.close()
        assert routes["revision"] == good and [r["name"] for r in routes["routes"]] == ["api"]
        assert routes["last_rejection"]["revision"] == bad
        assert "no-such-filter" in routes["last_rejection"]["reason"]
    finally:
        await platform.close()


async def test_admin_port_serves_metrics_routes_upstreams_and_stats(
    ups: list[UpstreamServer], backends: tuple[Registry, str]
) -> None:
    """/metrics counts requests per route and status; /routes, /upstreams, /stats answer."""
    registry, url = backends
    await registry.register(_instance(0, ups[0]))
    api = {"name": "api", "match": {"prefix": "/api"}, "upstream": static(ups[1])}
    platform = await Platform(url, [SERVICE_ROUTE, api]).start()
    try:
        await eventually(lambda: not platform.gateway.not_ready(), timeout=10, what="gateway ready")
        for path in ("/api/users/1", "/api/users/2", "/api/x", "/nowhere"):
            await platform.get(path)
        port = platform.admin.port
        status, text = await platform.get("/metrics", port)
        assert status == 200
        assert (b'qanat_gateway_requests_total{route="users",status="200",upstream="users"} 2.0'
                in text)
        assert b'qanat_gateway_requests_total{route="api",status="200",upstream="static"} 1.0' \
            in text
        assert b'route="<unmatched>",status="404"' in text
        assert b'qanat_gateway_upstream_endpoints{upstream="users"} 1.0' in text
        client = await RawClient.connect(port)
        try:
            ups_json = (await client.request(get("/upstreams"))).json()
            stats = (await client.request(get("/stats"))).json()
            table = await client.request(get("/routes?format=table"))
            missing = await client.request(get("/nope"))
        finally:
            await client.close()
        users = next(u for u in ups_json if u["route"] == "users")
        assert [i["id"] for i in users["instances"]] == ["users-0"]
        assert users["discovery"] == "fresh"
        assert stats["requests"] >= 4 and stats["rejected"]["404"] == 1
        assert b"users" in table.body and b"api" in table.body
        assert missing.status == 404
    finally:
        await platform.close()
