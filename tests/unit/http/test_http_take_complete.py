"""``UpstreamResponse.take_complete``: a body that came whole is taken without waiting."""

from __future__ import annotations

import asyncio

from upstream_servers import Exchange, Received, Upstream

from qanat.http import HttpPool
from qanat.testing import eventually

H = [(b"host", b"test")]


async def test_a_body_that_arrived_whole_is_taken_and_the_response_released() -> None:
    """Once the whole body is in, ``take_complete`` returns it, then the body is gone."""

    async def handler(req: Received, ex: Exchange) -> None:
        await ex.send(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")

    async with Upstream(handler) as up, HttpPool() as pool:
        resp = await pool.request(b"GET", "127.0.0.1", up.port, b"/", H, timeout=5.0)
        await eventually(lambda: resp.complete)
        assert resp.take_complete(5) == b"hello"
        assert resp.take_complete(5) is None  # released: nothing left to take
        again = await pool.request(b"GET", "127.0.0.1", up.port, b"/", H, timeout=5.0)
        assert await again.read() == b"hello"
        assert pool.stats().reused == 1


async def test_an_unfinished_or_too_large_body_is_left_to_stream() -> None:
    """A body still arriving, or over ``max_bytes``, is not taken: it still reads whole."""
    release = asyncio.Event()

    async def handler(req: Received, ex: Exchange) -> None:
        await ex.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
        await release.wait()
        await ex.send(b"world")

    async with Upstream(handler) as up, HttpPool() as pool:
        resp = await pool.request(b"GET", "127.0.0.1", up.port, b"/", H, timeout=5.0)
        assert resp.take_complete(1 << 20) is None
        release.set()
        await eventually(lambda: resp.complete)
        assert resp.take_complete(9) is None  # 10 bytes: over the limit
        assert await resp.read() == b"helloworld"
