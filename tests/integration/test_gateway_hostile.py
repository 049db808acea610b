"""Hostile raw requests get the right 4xx (and a close) while a good client keeps being served."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from test_gateway_support import RawClient, UpstreamServer, get, start_gateway, static

from qanat.gateway.app import Gateway
from qanat.testing import eventually

pytestmark = pytest.mark.integration

H = b"Host: gw.test\r\n"
CASES: list[tuple[str, bytes, int]] = [
    ("CL and TE", b"POST /api/x HTTP/1.1\r\n" + H + b"Content-Length: 4\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("duplicate CL", b"POST /api/x HTTP/1.1\r\n" + H + b"Content-Length: 1\r\n"
     b"Content-Length: 2\r\n\r\nab", 400),
    ("invalid CL", b"POST /api/x HTTP/1.1\r\n" + H + b"Content-Length: 0x10\r\n\r\n", 400),
    ("TE xchunked", b"POST /api/x HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n", 400),
    ("TE chunked, identity", b"POST /api/x HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked, identity\r\n\r\n", 400),
    ("TE gzip, chunked", b"POST /api/x HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("TE in HTTP/1.0", b"POST /api/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("NUL in value", b"GET /api/x HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    ("CR in value", b"GET /api/x HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", 400),
    ("LF in value", b"GET /api/x HTTP/1.1\r\n" + H + b"X-A: a\nb\r\n\r\n", 400),
    ("space before colon", b"GET /api/x HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n", 400),
    ("obs-fold", b"GET /api/x HTTP/1.1\r\n" + H + b"X-A: b\r\n  c\r\n\r\n", 400),
    ("missing Host", b"GET /api/x HTTP/1.1\r\n\r\n", 400),
    ("duplicate Host", b"GET /api/x HTTP/1.1\r\n" + H + H + b"\r\n", 400),
    ("header block too large", b"GET /api/x HTTP/1.1\r\n" + H
     + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
    ("too many headers", b"GET /api/x HTTP/1.1\r\n" + H
     + b"".join(b"X-%d: 1\r\n" % i for i in range(40)) + b"\r\n", 431),
    ("URL too long", b"GET /api/" + b"a" * 3000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("body over limit (CL)", b"POST /api/x HTTP/1.1\r\n" + H + b"Content-Length: 9999\r\n\r\n",
     413),
    ("body over limit (chunked)", b"POST /api/x HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n" + (b"400\r\n" + b"z" * 1024 + b"\r\n") * 6, 413),
    ("encoded slash traversal", b"GET /api/%2E%2E%2Fadmin HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("encoded backslash", b"GET /api/..%5Cadmin HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("bad escape", b"GET /api/%zz HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("HTTP/2 over HTTP/1", b"GET /api/x HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("CONNECT", b"CONNECT gw.test:443 HTTP/1.1\r\nHost: gw.test:443\r\n\r\n", 501),
    ("bad Expect", b"GET /api/x HTTP/1.1\r\n" + H + b"Expect: tea\r\n\r\n", 417),
    ("asterisk-form", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("unknown method", b"BREW /api/x HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400),
]
ROUTED_AWAY = [  # normalised, these reach /admin, which has no route: 404, never the api upstream
    b"GET /api/../admin HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /api/%2e%2e/admin HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /api/.%2E/admin HTTP/1.1\r\n" + H + b"\r\n",
    b"GET //api/./..//admin HTTP/1.1\r\n" + H + b"\r\n",
]


@pytest.fixture
async def gateway(upstream: UpstreamServer) -> AsyncIterator[Gateway]:
    gw = await start_gateway(
        [{"name": "api", "match": {"prefix": "/api"}, "upstream": static(upstream)}],
        max_header_bytes=4096, max_headers=32, max_url_bytes=2048, max_body_bytes=4096,
        header_timeout=0.5, body_timeout=0.5,
    )
    yield gw
    await gw.aclose(timeout=1.0)


class GoodClient:
    """Keeps one keep-alive connection busy with valid requests, counting answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.bad: list[int] = []
        self.task: asyncio.Task[None] | None = None
        self.client: RawClient | None = None
        self.stopping = False

    async def run(self) -> None:
        self.client = client = await RawClient.connect(self.port)
        while not self.stopping:
            reply = await client.request(get(f"/api/good/{self.ok}"))
            if reply.status == 200 and reply.json()["path"] == f"/api/good/{self.ok}":
                self.ok += 1
            else:
                self.bad.append(reply.status)

    async def stop(self) -> None:
        """Stop without cancelling (3.11's wait_for can swallow a cancel): flag, then hang up."""
        self.stopping = True
        assert self.task is not None
        with contextlib.suppress(EOFError, ConnectionError):
            await asyncio.wait_for(asyncio.shield(self.task), 10)
        if self.client is not None:
            self.client.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.client.writer.wait_closed()

    async def served_more_than(self, before: int) -> None:
        """Wait until the good client got more than ``before`` answers (it must keep running)."""

        def more() -> bool:
            assert self.task is not None and not self.task.done(), self.task
            return self.ok > before

        await eventually(more, timeout=10, interval=0,
                         what=lambda: f"more than {before} good answers (bad: {self.bad})")


@pytest.fixture
async def good(gateway: Gateway) -> AsyncIterator[GoodClient]:
    g = GoodClient(gateway.port)
    g.task = asyncio.create_task(g.run())
    yield g
    await g.stop()


@pytest.mark.parametrize(("raw", "status"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
async def test_hostile_request_is_refused_and_closed(
    gateway: Gateway, upstream: UpstreamServer, good: GoodClient, raw: bytes, status: int
) -> None:
    """Each hostile request gets its status and a close; the good client is still served."""
    before = good.ok
    client = await RawClient.connect(gateway.port)
    reply = await client.request(raw)
    assert reply.status == status, reply.body
    assert reply.headers[b"content-type"] == b"application/problem+json"
    assert reply.headers[b"connection"] == b"close"
    assert await client.closed()
    await client.close()
    await good.served_more_than(before)
    assert good.bad == []
    assert all(b"admin" not in s.path for s in upstream.seen)


@pytest.mark.parametrize("raw", ROUTED_AWAY)
async def test_traversal_is_resolved_before_routing(
    gateway: Gateway, upstream: UpstreamServer, good: GoodClient, raw: bytes
) -> None:
    """Dot segments (plain or encoded) are removed first, so /api/../admin is /admin: 404."""
    client = await RawClient.connect(gateway.port)
    reply = await client.request(raw)
    assert reply.status == 404
    assert reply.json()["detail"] == "no route for GET /admin"
    await client.close()
    assert all(b"admin" not in s.path for s in upstream.seen)


async def test_slow_headers_get_408_and_close(gateway: Gateway, good: GoodClient) -> None:
    """A head that does not finish within header_timeout is answered 408 and closed."""
    before = good.ok
    client = await RawClient.connect(gateway.port)
    await client.send(b"GET /api/x HTTP/1.1\r\nHost: gw.test\r\nX-Slow: ")
    reply = await client.response(timeout=10)
    assert reply.status == 408
    assert await client.closed()
    await client.close()
    await good.served_more_than(before)


async def test_stalled_body_gets_408(gateway: Gateway) -> None:
    """A body that stops arriving is cut off with 408 after body_timeout."""
    client = await RawClient.connect(gateway.port)
    await client.send(b"POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100\r\n\r\nab")
    reply = await client.response(timeout=10)
    assert reply.status == 408
    assert await client.closed()
    await client.close()


async def test_silent_connection_is_closed_without_answer(gateway: Gateway) -> None:
    """A connection that never sends a byte is closed after header_timeout, with no reply."""
    client = await RawClient.connect(gateway.port)
    assert await client.closed(timeout=10)
    await client.close()


async def test_smuggled_second_request_is_never_forwarded(
    gateway: Gateway, upstream: UpstreamServer
) -> None:
    """After a CL+TE conflict nothing of the connection reaches the upstream."""
    client = await RawClient.connect(gateway.port)
    reply = await client.request(CASES[0][1])
    assert reply.status == 400
    assert await client.closed()
    await client.close()
    assert upstream.seen == []


async def test_connection_cap_answers_503(upstream: UpstreamServer) -> None:
    """Over max_connections a new connection gets 503 and is closed at once."""
    gw = await start_gateway([{"name": "api", "upstream": static(upstream)}], max_connections=2)
    try:
        a = await RawClient.connect(gw.port)
        b = await RawClient.connect(gw.port)
        assert (await a.request(get("/x"))).status == 200
        assert (await b.request(get("/x"))).status == 200
        c = await RawClient.connect(gw.port)
        reply = await c.response()
        assert reply.status == 503 and reply.json()["status"] == 503
        assert await c.closed()
        assert (await a.request(get("/y"))).status == 200
        assert gw.stats().refused_connections == 1
        for x in (a, b, c):
            await x.close()
    finally:
        await gw.aclose(timeout=1.0)
