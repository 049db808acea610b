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
