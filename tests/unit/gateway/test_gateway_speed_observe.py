"""Observed requests: the proxy notes the kind of the 5xx it makes, never an upstream's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tests.servers import StreamServer

from qanat.gateway.app import Gateway
from qanat.gateway.metrics import Outcome
from qanat.testing import eventually, free_port

# An upstream 503 whose body looks like one of our problems: it must not count as ours.
LOOKALIKE = b'{"type":"urn:qanat:problem:bad-gateway"}'


async def answer_503(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.readuntil(b"\r\n\r\n"):
        writer.write(b"HTTP/1.1 503 Busy\r\ncontent-type: application/problem+json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(LOOKALIKE), LOOKALIKE))
        await writer.drain()


@pytest.fixture
async def busy_port() -> AsyncIterator[int]:
    async with StreamServer(answer_503) as server:
        yield server.port


async def get(port: int, path: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET %s HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % path)
    data = await reader.read()
    writer.close()
    return data


async def test_error_kinds_come_from_the_proxy_not_from_upstream_bodies(busy_port: int) -> None:
    """A refused connect is noted ``bad_gateway``; an upstream's own 503 has no error kind
    and is not counted as an answer the gateway made (``rejected``)."""
    seen: list[Outcome] = []
    refused = free_port()  # nothing listens there
    routes = [
        {"name": "dead", "match": {"prefix": "/dead"},
         "upstream": {"kind": "static", "targets": [{"url": f"http://127.0.0.1:{refused}"}]}},
        {"name": "busy", "match": {"prefix": "/busy"},
         "upstream": {"kind": "static", "targets": [{"url": f"http://127.0.0.1:{busy_port}"}]}},
    ]
    gw = Gateway(routes, observers=[seen.append])
    await gw.start("127.0.0.1", 0)
    try:
        assert (await get(gw.port, b"/dead")).startswith(b"HTTP/1.1 502")
        assert (await get(gw.port, b"/busy")).startswith(b"HTTP/1.1 503")
        await eventually(lambda: len(seen) == 2, what="both outcomes")
        assert gw.stats().rejected == {502: 1}
    finally:
        await gw.aclose(1.0)
    kinds = {o.route: (o.status, o.error, o.instance != "") for o in seen}
    assert kinds == {"dead": (502, "bad_gateway", True), "busy": (503, None, True)}


async def test_a_filter_that_raises_is_answered_500_and_reported_as_500() -> None:
    """The server's own 500 for a broken filter is what observers see, in flight drops back."""
    from qanat.gateway.filters import Exchange, Handler, Reply, register_filter, unregister_filter

    async def broken(ex: Exchange, call_next: Handler) -> Reply:
        raise RuntimeError("a bug in a filter")

    register_filter("broken-for-test", lambda config, route: broken)
    seen: list[Outcome] = []
    try:
        routes = [{"name": "r", "match": {"prefix": "/"}, "filters": [{"name": "broken-for-test"}],
                   "upstream": {"kind": "static",
                                "targets": [{"url": f"http://127.0.0.1:{free_port()}"}]}}]
        gw = Gateway(routes, observers=[seen.append])
        await gw.start("127.0.0.1", 0)
        try:
            assert (await get(gw.port, b"/x")).startswith(b"HTTP/1.1 500")
            await eventually(lambda: len(seen) == 1, what="the outcome")
            assert gw.in_flight == 0
        finally:
            await gw.aclose(1.0)
    finally:
        unregister_filter("broken-for-test")
    assert [(o.route, o.status) for o in seen] == [("r", 500)]
    assert seen[0].bytes > 0  # the problem body that was written


async def test_an_observed_authenticated_request_leaves_no_reference_cycle() -> None:
    """Requests through jwt, rate_limit and the observers are freed by reference counting:
    a cycle per request (the note and its exchange pointed at each other) made the
    collector run every ~150 requests, a pause in the tail latency."""
    import base64
    import gc

    import jwt

    secret = b"cycle-test-secret-cycle-test-secret-0123"
    token = jwt.encode({"sub": "s", "exp": 4_000_000_000}, secret, algorithm="HS256")

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    seen: list[Outcome] = []
    async with StreamServer(ok) as upstream:
        routes = [{"name": "r", "match": {"prefix": "/"}, "filters": [
            {"name": "jwt", "config": {"algorithms": ["HS256"], "keys": [
                {"alg": "HS256", "secret_base64": base64.b64encode(secret).decode()}]}},
            {"name": "rate_limit", "config": {"rate": 1e6, "key": "subject"}}],
            "upstream": {"kind": "static",
                         "targets": [{"url": f"http://127.0.0.1:{upstream.port}"}]}}]
        gw = Gateway(routes, observers=[seen.append])
        await gw.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        request = (b"GET /x HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\n"
                   b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
                   b"\r\n" % token.encode())

        async def one() -> None:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            await reader.readexactly(2)

        try:
            await one()  # warm: caches, the pooled upstream connection
            gc.collect()
            gc.disable()
            try:
                for _ in range(50):
                    await one()
                await eventually(lambda: len(seen) == 51, what="every outcome")
                unreachable = gc.collect()
            finally:
                gc.enable()
        finally:
            writer.close()
            await gw.aclose(1.0)
    assert unreachable < 25, f"{unreachable} objects in cycles after 50 requests"
