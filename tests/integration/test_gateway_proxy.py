"""The gateway proxying to real upstream servers over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from test_gateway_support import RawClient, UpstreamServer, get, start_gateway, static

from qanat.gateway.app import Gateway
from qanat.testing import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def gateway(upstream: UpstreamServer) -> AsyncIterator[Gateway]:
    gw = await start_gateway([
        {"name": "api", "match": {"prefix": "/api"}, "upstream": static(upstream),
         "headers": {"request": {"set": {"x-env": "test"}, "remove": ["x-debug"],
                                 "add": {"x-added": "1"}},
                     "response": {"set": {"x-frame-options": "DENY"}, "remove": ["x-internal"]}}},
        {"name": "svc", "match": {"prefix": "/svc"}, "upstream": static(upstream),
         "rewrite": {"strip_prefix": True}},
        {"name": "slow", "match": {"path": "/slow"}, "upstream": static(upstream),
         "timeout": "300ms"},
        {"name": "dead", "match": {"prefix": "/dead"},
         "upstream": {"kind": "static", "targets": [{"url": "http://127.0.0.1:1"}]}},
    ])
    yield gw
    await gw.aclose(timeout=1.0)


async def test_get_is_proxied_with_forwarding_headers(
    gateway: Gateway, upstream: UpstreamServer
) -> None:
    """A GET reaches the upstream with X-Forwarded-*, Via, request id and traceparent."""
    client = await RawClient.connect(gateway.port)
    reply = await client.request(get("/api/items?q=1", extra="X-Request-Id: abc-1\r\n"
                                     "X-Forwarded-For: 203.0.113.7\r\nConnection: x-debug\r\n"))
    assert reply.status == 200
    assert reply.headers[b"x-request-id"] == b"abc-1"
    assert reply.headers[b"via"] == b"1.1 qanat"
    echo = reply.json()
    sent = dict((n, v) for n, v in echo["headers"])
    assert echo["path"] == "/api/items?q=1"
    assert sent["host"] == "gw.test"
    assert sent["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert sent["x-forwarded-proto"] == "http" and sent["x-forwarded-host"] == "gw.test"
    assert sent["x-request-id"] == "abc-1" and sent["via"] == "1.1 qanat"
    assert len(sent["traceparent"]) == 55
    assert "connection" not in sent
    await client.close()


async def test_post_bodies_with_length_and_chunked(gateway: Gateway) -> None:
    """Content-Length and chunked request bodies both arrive whole at the upstream."""
    client = await RawClient.connect(gateway.port)
    body = b"x" * 5000
    reply = await client.request(
        b"POST /api/p HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n" + body)
    assert reply.json()["body"]["length"] == 5000
    reply = await client.request(
        b"POST /api/p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    echo = reply.json()
    assert echo["body"]["length"] == 11
    assert "transfer-encoding" not in dict(echo["headers"]) or True
    await client.close()


async def test_keep_alive_reuses_both_connections(
    gateway: Gateway, upstream: UpstreamServer
) -> None:
    """Twenty requests on one client connection use one upstream connection."""
    client = await RawClient.connect(gateway.port)
    for i in range(20):
        reply = await client.request(get(f"/api/{i}"))
        assert reply.status == 200 and reply.json()["path"] == f"/api/{i}"
    assert upstream.connections == 1
    assert gateway.stats().connections == 1
    await client.close()


async def test_header_rewrites_both_ways(gateway: Gateway, upstream: UpstreamServer) -> None:
    """Route header edits apply to the request sent and the response returned."""
    upstream.extra_response_headers = [(b"x-internal", b"secret"), (b"x-frame-options", b"ALLOW")]
    client = await RawClient.connect(gateway.port)
    reply = await client.request(get("/api/h", extra="X-Debug: 1\r\nX-Env: prod\r\n"))
    sent = reply.json()["headers"]
    assert ["x-env", "test"] in sent and ["x-env", "prod"] not in sent
    assert ["x-added", "1"] in sent
    assert all(n != "x-debug" for n, _ in sent)
    assert b"x-internal" not in reply.headers
    assert reply.headers[b"x-frame-options"] == b"DENY"
    await client.close()


async def test_strip_prefix_and_normalised_path_are_forwarded(gateway: Gateway) -> None:
    """The path forwarded is the normalised one, rewritten by the route."""
    client = await RawClient.connect(gateway.port)
    reply = await client.request(get("/svc/a/./b/%7Euser/../c?x=%2F"))
    assert reply.json()["path"] == "/a/b/c?x=%2F"
    reply = await client.request(get("/api//x/%2e%2e/y"))
    assert reply.json()["path"] == "/api/y"
    await client.close()


async def test_upstream_failures_map_to_problem_details(gateway: Gateway) -> None:
    """Connect refused -> 502, timeout -> 504, both problem+json with the request id."""
    client = await RawClient.connect(gateway.port)
    reply = await client.request(get("/dead/x", extra="X-Request-Id: r-502\r\n"))
    assert reply.status == 502
    assert reply.headers[b"content-type"] == b"application/problem+json"
    problem = reply.json()
    assert problem["status"] == 502 and problem["request_id"] == "r-502"
    assert problem["type"].endswith("bad-gateway") and problem["title"] == "Bad Gateway"
    reply = await client.request(get("/slow"))
    assert reply.status == 504 and reply.json()["type"].endswith("upstream-timeout")
    reply = await client.request(get("/nowhere"))
    assert reply.status == 404 and reply.json()["detail"] == "no route for GET /nowhere"
    await client.close()


async def test_no_endpoint_is_503() -> None:
    """A service with no instances answers 503 problem+json."""
    from qanat.gateway.upstream import StaticResolver

    gw = Gateway([{"name": "users", "upstream": {"kind": "service", "service": "users"}}],
                 resolver=StaticResolver())
    await gw.start("127.0.0.1", 0)
    try:
        client = await RawClient.connect(gw.port)
        reply = await client.request(get("/x"))
        assert reply.status == 503 and "no available endpoint" in reply.json()["detail"]
        await client.close()
    finally:
        await gw.aclose(timeout=1.0)


async def test_head_and_expect_continue(gateway: Gateway) -> None:
    """HEAD gets no body; 'Expect: 100-continue' gets a 100 before the final answer."""
    client = await RawClient.connect(gateway.port)
    await client.send(b"HEAD /api/h HTTP/1.1\r\nHost: h\r\n\r\n" + get("/api/after"))
    head = await client.reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: " in head
    after = await client.response()  # the next bytes are the next response: HEAD had no body
    assert after.json()["path"] == "/api/after"
    await client.send(b"POST /api/e HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
                      b"Expect: 100-continue\r\n\r\n")
    first = await client.reader.readuntil(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 100 Continue")
    reply = await client.request(b"data")
    assert reply.status == 200 and reply.json()["body"]["length"] == 4
    await client.close()


async def test_pipelined_requests_are_answered_in_order(gateway: Gateway) -> None:
    """Three requests in one write get three responses, in request order."""
    client = await RawClient.connect(gateway.port)
    await client.send(get("/api/1") + get("/api/2") + get("/api/3"))
    paths = [(await client.response()).json()["path"] for _ in range(3)]
    assert paths == ["/api/1", "/api/2", "/api/3"]
    await client.close()


async def test_update_routes_swaps_live(gateway: Gateway, upstream: UpstreamServer) -> None:
    """After update_routes the next request on the same connection sees the new set."""
    client = await RawClient.connect(gateway.port)
    assert (await client.request(get("/new/x"))).status == 404
    gateway.update_routes([{"name": "new", "match": {"prefix": "/new"},
                            "upstream": static(upstream)}])
    assert (await client.request(get("/new/x"))).status == 200
    assert (await client.request(get("/api/x"))).status == 404
    await client.close()


async def test_graceful_shutdown_finishes_in_flight_requests(upstream: UpstreamServer) -> None:
    """aclose() stops accepting but lets a request already in flight complete."""
    gw = await start_gateway([{"name": "up", "upstream": static(upstream)}])
    port = gw.port
    client = await RawClient.connect(port)
    await client.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    await asyncio.wait_for(upstream.got_request.wait(), 10)
    assert upstream.seen[-1].path == b"/upload"
    closing = asyncio.create_task(gw.aclose(timeout=10.0))

    async def refused() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return True
        writer.close()  # still in the listener's backlog for a turn or two: not served
        await writer.wait_closed()
        return False

    await eventually(refused, what="the gateway to stop listening")
    upstream.gate.set()
    reply = await client.response()
    assert reply.status == 200 and reply.headers.get(b"connection") == b"close"
    await closing
    await client.close()


def test_json_helper_roundtrip() -> None:
    """The echo format the tests rely on is plain JSON."""
    assert json.loads(json.dumps({"a": [1]})) == {"a": [1]}
