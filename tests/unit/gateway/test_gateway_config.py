"""Route model validation, gateway YAML files, filters, and atomic route swaps."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any

import pytest

from qanat.errors import ConfigError
from qanat.gateway.app import Gateway
from qanat.gateway.config import RouteConfig, load_gateway_file, parse_routes
from qanat.gateway.filters import (
    Exchange,
    Handler,
    Reply,
    chain,
    register_filter,
    unregister_filter,
)
from qanat.gateway.upstream import StaticResolver, Upstream
from qanat.ports import Health, Instance

UP = {"kind": "static", "targets": [{"url": "http://127.0.0.1:9", "weight": 2}]}


def _route(**kw: Any) -> dict[str, Any]:
    return {"name": "r", "upstream": UP, **kw}


@pytest.mark.parametrize(
    ("route", "fragment"),
    [
        (_route(upstream={"kind": "dns", "name": "x"}), "upstream"),
        (_route(upstream={"kind": "static", "targets": [{"url": "https://x:1"}]}), "https"),
        (_route(upstream={"kind": "static", "targets": []}), "targets"),
        (_route(match={"prefix": "/a", "path": "/b"}), "one of path, prefix, pattern"),
        (_route(match={"prefix": "a"}), "must start with '/'"),
        (_route(match={"methods": ["get"]}), "upper-case"),
        (_route(match={"host": "exa mple.com"}), "host name"),
        (_route(match={"headers": [{"name": "x", "regex": "("}]}), "regular expression"),
        (_route(match={"headers": [{"name": "x", "exact": "1", "present": True}]}), "exactly one"),
        (_route(rewrite={"strip_prefix": True}, match={"path": "/x"}), "strip_prefix"),
        (_route(timeout="5s", per_try_timeout="10s"), "per_try_timeout"),
        (_route(timeout="soon"), "duration"),
        (_route(headers={"request": {"set": {"x": "a\nb"}}}), "control"),
        (_route(surprise=1), "unknown field"),
    ],
)
def test_invalid_routes_are_config_errors_naming_route_and_field(
    route: dict[str, Any], fragment: str
) -> None:
    """Each invalid field is reported with the route's name and a hint."""
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_routes([route])
    assert "route 'r' (routes[0])" in str(info.value)


def test_durations_and_defaults() -> None:
    """Durations accept '250ms'; a route defaults to prefix '/' and a 15 s timeout."""
    (cfg,) = parse_routes([_route(per_try_timeout="250ms")])
    assert cfg.per_try_timeout == 0.25 and cfg.timeout == 15.0
    assert cfg.match.prefix is None and cfg.match.path is None


def test_gateway_file_errors_carry_the_line(tmp_path: Path) -> None:
    """A bad field in a YAML file is reported as file:line with the route name."""
    path = tmp_path / "gw.yaml"
    path.write_text(
        "routes:\n"
        "  - name: ok\n"
        "    upstream: {kind: static, targets: [{url: 'http://127.0.0.1:1'}]}\n"
        "  - name: users\n"
        "    upstream:\n"
        "      kind: consul\n"
    )
    with pytest.raises(ConfigError) as info:
        load_gateway_file(path)
    message = str(info.value)
    assert "route 'users' (routes[1])" in message
    assert f"{path}:5" in message


def test_gateway_file_loads_routes_and_limits(tmp_path: Path) -> None:
    """A valid file yields its routes and the raw limits mapping."""
    path = tmp_path / "gw.yaml"
    path.write_text("limits: {max_body_bytes: 10}\nroutes:\n"
                    "  - {name: a, upstream: {kind: service, service: users}}\n")
    routes, limits = load_gateway_file(path)
    assert [r.name for r in routes] == ["a"] and limits == {"max_body_bytes": 10}


async def test_update_routes_is_atomic_and_keeps_old_set_on_error() -> None:
    """A bad route set raises ConfigError and leaves the served set untouched."""
    gw = Gateway([_route(name="one")])
    try:
        with pytest.raises(ConfigError, match="duplicate route name"):
            gw.update_routes([_route(name="two"), _route(name="two")])
        assert [r.name for r in gw.routes] == ["one"]
        with pytest.raises(ConfigError, match="unknown filter 'nope'"):
            gw.update_routes([_route(name="two", filters=[{"name": "nope"}])])
        assert [r.name for r in gw.routes] == ["one"]
        gw.update_routes([_route(name="two")])
        assert [r.name for r in gw.routes] == ["two"]
    finally:
        await gw.pool.aclose()


async def test_service_upstream_needs_a_resolver() -> None:
    """kind: service without a resolver is a ConfigError saying how to fix it."""
    with pytest.raises(ConfigError, match="needs a resolver"):
        Gateway([_route(upstream={"kind": "service", "service": "users"})])


def test_service_upstream_picks_only_routable_instances() -> None:
    """A service upstream resolves per pick and never returns critical or disabled ones."""
    resolver = StaticResolver({"users": [
        Instance("u1", "users", "10.0.0.1", 80),
        Instance("u2", "users", "10.0.0.2", 80, health=Health.CRITICAL),
        Instance("u3", "users", "10.0.0.3", 80, enabled=False),
    ]})
    (cfg,) = parse_routes([_route(upstream={"kind": "service", "service": "users"})])
    upstream = Upstream(cfg.upstream, resolver, "r")
    assert {upstream.pick().id for _ in range(4)} == {"u1"}  # type: ignore[union-attr]
    resolver.set("users", [])
    assert upstream.pick() is None


def test_static_round_robin_cycles_targets() -> None:
    """Static targets are used in turn by the round-robin balancer."""
    (cfg,) = parse_routes([_route(upstream={"kind": "static", "targets": [
        {"url": "http://10.0.0.1:80"}, {"url": "http://10.0.0.2:81"}]})])
    upstream = Upstream(cfg.upstream, None, "r")
    picks = [upstream.pick() for _ in range(4)]
    assert [(p.host, p.port) for p in picks if p] == [("10.0.0.1", 80), ("10.0.0.2", 81)] * 2


async def test_filters_share_one_signature_and_run_in_order() -> None:
    """Filters wrap the handler outermost-first and may edit the reply on the way back."""
    seen: list[str] = []

    def make(tag: str) -> Any:
        async def f(ex: Exchange, call_next: Handler) -> Reply:
            seen.append(f"in-{tag}")
            reply = await call_next(ex)
            reply.headers.append((b"x-filter", tag.encode()))
            seen.append(f"out-{tag}")
            return reply
        return f

    async def inner(ex: Exchange) -> Reply:
        seen.append("proxy")
        return Reply(200, [])

    handler = chain([make("a"), make("b")], inner)
    ex = Exchange(b"GET", b"/", b"", [], host=b"h", authority=b"h", peer=b"p",
                  scheme=b"http", request_id=b"r")
    reply = await handler(ex)
    assert seen == ["in-a", "in-b", "proxy", "out-b", "out-a"]
    assert reply.headers == [(b"x-filter", b"b"), (b"x-filter", b"a")]


async def test_registered_filter_factory_gets_its_config() -> None:
    """A registered filter name is built from the route's config; bad config is rejected."""
    def factory(config: Mapping[str, Any], route: str) -> Any:
        if "status" not in config:
            raise ConfigError("'status' is required")

        def deny(ex: Exchange, call_next: Handler) -> Awaitable[Reply]:
            async def answer() -> Reply:
                return Reply(int(config["status"]), [(b"x-route", route.encode())])
            return answer()
        return deny

    register_filter("deny", factory)
    try:
        with pytest.raises(ConfigError, match=r"filters\[0\].config: 'status' is required"):
            Gateway([_route(filters=[{"name": "deny"}])])
        gw = Gateway([_route(filters=[{"name": "deny", "config": {"status": 403}}])])
        await gw.pool.aclose()
    finally:
        unregister_filter("deny")


def test_route_config_is_frozen() -> None:
    """A parsed route cannot be mutated behind the compiled table's back."""
    (cfg,) = parse_routes([_route()])
    assert isinstance(cfg, RouteConfig)
    with pytest.raises(Exception, match="frozen"):
        cfg.name = "x"  # type: ignore[misc]
