"""The admin endpoints and /metrics show each jwt route's token cache: hits, verifications."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.gateway.upstream_support import targets, upstreams
from tests.unit.http.upstream_servers import answer_ok

from qanat.gateway.admin import AdminServer
from qanat.gateway.app import Gateway
from qanat.gateway.metrics import GatewayMetrics

SECRET = "0123456789abcdef0123456789abcdef-hs256"
JWT = {"algorithms": ["HS256"], "keys": [{"alg": "HS256", "secret": SECRET}]}
N = 5
FAMILIES = ("qanat_gateway_jwt_cache_hits_total", "qanat_gateway_jwt_verifications_total",
            "qanat_gateway_jwt_cache_entries")


def token(sub: str = "alice") -> str:
    return jwt.encode({"sub": sub, "exp": 4_000_000_000}, SECRET, algorithm="HS256")


def routes(upstream: dict[str, Any], jwt_config: dict[str, Any] = JWT) -> list[dict[str, Any]]:
    return [
        {"name": "secure", "match": {"prefix": "/s"}, "upstream": upstream,
         "filters": [{"name": "jwt", "config": jwt_config}]},
        {"name": "plain", "match": {"prefix": "/p"}, "upstream": upstream},
    ]


async def get(port: int, path: bytes, *headers: tuple[bytes, bytes]) -> tuple[int, bytes]:
    """One request on its own connection: the status and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = b"".join(b"%s: %s\r\n" % h for h in headers)
    writer.write(b"GET %s HTTP/1.1\r\nhost: x\r\nconnection: close\r\n%s\r\n" % (path, extra))
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def bearer(value: str) -> tuple[bytes, bytes]:
    return b"authorization", b"Bearer " + value.encode()


@pytest.fixture
async def served() -> AsyncIterator[tuple[Gateway, AdminServer]]:
    """A started gateway (route ``secure`` with a jwt filter, ``plain`` without) in front of
    a real upstream, and its admin server with /metrics."""
    async with upstreams(answer_ok) as servers:
        upstream = {"kind": "static", "targets": targets(servers)}
        gw = Gateway(routes(upstream))
        metrics = GatewayMetrics(gw.stats, lambda: gw.in_flight)
        admin = AdminServer(gw, metrics=metrics)
        await gw.start("127.0.0.1", 0)
        await admin.start()
        try:
            yield gw, admin
        finally:
            await admin.aclose()
            await gw.aclose(1.0)


async def jwt_samples(admin: AdminServer) -> dict[tuple[str, str], float]:
    """(family sample name, route) -> value, for the jwt families of a scrape of /metrics."""
    status, body = await get(admin.port, b"/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name in FAMILIES:
                out[(s.name, s.labels["route"])] = s.value
    return out


async def jwt_pages(admin: AdminServer) -> dict[str, Any]:
    status, body = await get(admin.port, b"/upstreams")
    assert status == 200
    return {entry["route"]: entry["jwt_cache"] for entry in json.loads(body)}


async def test_one_token_is_verified_once_and_then_answered_from_the_cache(
    served: tuple[Gateway, AdminServer],
) -> None:
    """N requests with one token: /metrics and /upstreams say 1 verification and N-1 hits
    (by the repeated Authorization value) on the jwt route; the other route has no sample."""
    gw, admin = served
    credential = bearer(token())
    for _ in range(N):
        assert (await get(gw.port, b"/s/x", credential))[0] == 200
    assert (await get(gw.port, b"/p/x"))[0] == 200
    assert await jwt_samples(admin) == {
        ("qanat_gateway_jwt_cache_hits_total", "secure"): N - 1,
        ("qanat_gateway_jwt_verifications_total", "secure"): 1,
        ("qanat_gateway_jwt_cache_entries", "secure"): 1,
    }
    assert await jwt_pages(admin) == {
        "secure": {"entries": 1, "aliases": 1, "hits": N - 1, "alias_hits": N - 1,
                   "verifications": 1},
        "plain": None,
    }


async def test_refused_tokens_are_verifications_and_never_hits(
    served: tuple[Gateway, AdminServer],
) -> None:
    """A forged token is checked in full every time it comes (failures are not cached):
    each 401 is a verification, none a hit, and nothing is held."""
    gw, admin = served
    forged = token()[:-4] + "AAAA"
    for _ in range(3):
        assert (await get(gw.port, b"/s/x", bearer(forged)))[0] == 401
    assert await jwt_samples(admin) == {
        ("qanat_gateway_jwt_cache_hits_total", "secure"): 0,
        ("qanat_gateway_jwt_verifications_total", "secure"): 3,
        ("qanat_gateway_jwt_cache_entries", "secure"): 0,
    }


async def test_a_scrape_reads_the_filters_of_the_routes_served_now(
    served: tuple[Gateway, AdminServer],
) -> None:
    """After a reload that rebuilds the jwt filter (its config changed), the numbers are
    the new filter's, from 0; a reload that drops the jwt route drops its samples."""
    gw, admin = served
    upstream = gw.routes[0].upstream.model_dump(mode="json")
    for sub in ("alice", "bob"):
        assert (await get(gw.port, b"/s/x", bearer(token(sub))))[0] == 200
    assert (await jwt_samples(admin))[("qanat_gateway_jwt_verifications_total", "secure")] == 2

    gw.update_routes(routes(upstream, {**JWT, "leeway": 5}))
    assert (await get(gw.port, b"/s/x", bearer(token("carol"))))[0] == 200
    assert (await get(gw.port, b"/s/x", bearer(token("carol"))))[0] == 200
    assert await jwt_samples(admin) == {
        ("qanat_gateway_jwt_cache_hits_total", "secure"): 1,
        ("qanat_gateway_jwt_verifications_total", "secure"): 1,
        ("qanat_gateway_jwt_cache_entries", "secure"): 1,
    }

    gw.update_routes(routes(upstream)[1:])
    assert await jwt_samples(admin) == {}
    assert await jwt_pages(admin) == {"plain": None}
