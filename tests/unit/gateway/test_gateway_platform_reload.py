"""Live route reload: the route document, seeding from the topology, apply and reject."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.backends.memory import MemoryConfigStore
from qanat.errors import ConfigError
from qanat.gateway.app import Gateway
from qanat.gateway.reload import (
    ROUTES_KEY,
    RouteReloader,
    parse_route_document,
    route_document,
    routes_digest,
)
from qanat.testing import eventually


def _route(name: str, prefix: str = "/") -> dict[str, Any]:
    return {"name": name, "match": {"prefix": prefix},
            "upstream": {"kind": "static", "targets": [{"url": "http://127.0.0.1:9"}]}}


def test_document_may_be_a_mapping_or_a_bare_list() -> None:
    """Both ``routes: [...]`` and a bare YAML/JSON list parse to the same routes."""
    as_map = parse_route_document(route_document([_route("a"), _route("b", "/b")]), "k")
    as_list = parse_route_document(json.dumps([_route("a"), _route("b", "/b")]), "k")
    assert [r.name for r in as_map] == [r.name for r in as_list] == ["a", "b"]


def test_document_errors_name_the_route_and_line() -> None:
    """A bad field is reported with the route's name and its line in the document."""
    text = "routes:\n  - name: a\n    upstream: {kind: consul}\n"
    with pytest.raises(ConfigError, match=r"(?s)route .a. \(routes\[0\]\).*src:3"):
        parse_route_document(text, "src")


@pytest.mark.parametrize("text", ["routes: {a: 1}", "nope: []", "42", "routes: [\n"])
def test_document_of_the_wrong_shape_is_refused(text: str) -> None:
    """Anything but a route list (or invalid YAML) is a ConfigError naming the source."""
    with pytest.raises(ConfigError, match="src"):
        parse_route_document(text, "src")


@given(st.permutations(["name", "match", "upstream", "timeout"]))
def test_digest_ignores_key_order(order: list[str]) -> None:
    """The seed fingerprint does not change when a route's keys are reordered."""
    route = {**_route("a"), "timeout": "5s"}
    shuffled = {k: route[k] for k in order}
    assert routes_digest([shuffled]) == routes_digest([route])


def test_digest_changes_with_the_routes() -> None:
    """Any edit of the routes gives another fingerprint."""
    assert routes_digest([_route("a")]) != routes_digest([_route("a", "/x")])


async def _reloader(store: MemoryConfigStore, seed: list[dict[str, Any]],
                    gateway: Gateway | None = None) -> tuple[Gateway, RouteReloader]:
    gateway = gateway or Gateway(seed)
    reloader = RouteReloader(gateway, store, seed=seed)
    await reloader.start()
    return gateway, reloader


async def test_absent_key_is_seeded_from_the_topology() -> None:
    """On first start the topology's routes are written to the key and served from it."""
    store = MemoryConfigStore()
    _, reloader = await _reloader(store, [_route("a")])
    try:
        entry = await store.get(ROUTES_KEY)
        assert entry is not None
        assert [r.name for r in parse_route_document(entry.value, "k")] == ["a"]
        assert reloader.status()["source"] == "config store"
        assert reloader.status()["revision"] == entry.revision
    finally:
        await reloader.close()


async def test_stored_set_survives_a_restart_with_the_same_topology() -> None:
    """A live edit is kept when the gateway restarts with an unchanged topology file."""
    store = MemoryConfigStore()
    _, first = await _reloader(store, [_route("a")])
    await first.close()
    await store.set(ROUTES_KEY, route_document([_route("live")]))
    gateway, second = await _reloader(store, [_route("a")])
    try:
        assert [r.name for r in gateway.routes] == ["live"]
    finally:
        await second.close()


async def test_edited_topology_wins_over_the_stored_set() -> None:
    """When the topology's routes changed since they seeded the key, the file is written."""
    store = MemoryConfigStore()
    _, first = await _reloader(store, [_route("a")])
    await first.close()
    await store.set(ROUTES_KEY, route_document([_route("live")]))
    gateway, second = await _reloader(store, [_route("edited")])
    try:
        assert [r.name for r in gateway.routes] == ["edited"]
    finally:
        await second.close()


async def test_pre_provisioned_key_is_adopted() -> None:
    """A key an operator wrote before the first start is served, not overwritten."""
    store = MemoryConfigStore()
    await store.set(ROUTES_KEY, route_document([_route("ops")]))
    gateway, reloader = await _reloader(store, [_route("a")], Gateway([_route("a")]))
    try:
        assert [r.name for r in gateway.routes] == ["ops"]
    finally:
        await reloader.close()


async def test_watched_change_is_applied_and_a_bad_one_rejected() -> None:
    """A valid change swaps the routes; an invalid one is recorded and the set stays."""
    store = MemoryConfigStore()
    gateway, reloader = await _reloader(store, [_route("a")])
    try:
        await store.set(ROUTES_KEY, route_document([_route("a"), _route("b", "/b")]))
        await eventually(lambda: len(gateway.routes) == 2, interval=0.001, what="two routes")
        bad = await store.set(ROUTES_KEY, route_document([_route("c"), _route("c")]))
        await eventually(lambda: reloader.status()["rejected"] == 1, interval=0.001,
                         what=lambda: f"one rejected change: {reloader.status()}")
        status = reloader.status()
        assert status["last_rejection"]["revision"] == bad
        assert "duplicate route name" in status["last_rejection"]["reason"]
        assert [r.name for r in gateway.routes] == ["a", "b"]
        assert status["revision"] == bad - 1
    finally:
        await reloader.close()


async def test_deleting_the_key_keeps_the_routes() -> None:
    """A deleted key is logged as a rejection; the routes being served stay."""
    store = MemoryConfigStore()
    gateway, reloader = await _reloader(store, [_route("a")])
    try:
        await store.delete(ROUTES_KEY)
        await eventually(lambda: reloader.status()["rejected"] == 1, interval=0.001,
                         what=lambda: f"one rejected change: {reloader.status()}")
        assert "deleted" in reloader.status()["last_rejection"]["reason"]
        assert [r.name for r in gateway.routes] == ["a"]
    finally:
        await reloader.close()
