"""Realism: the pool against a Starlette app served by uvicorn (h11 and httptools servers)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from qanat.http import HttpPool


async def as_json(request: Request) -> Response:
    return JSONResponse({"path": request.url.path, "q": request.query_params.get("q")})


async def stream(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(5):
            yield b"part %d;" % i

    return StreamingResponse(parts(), media_type="text/plain")


async def echo(request: Request) -> Response:
    body = b"".join([chunk async for chunk in request.stream()])
    return Response(body, headers={"x-length": str(len(body))})


async def empty(request: Request) -> Response:
    return Response(status_code=204)


APP = Starlette(
    routes=[
        Route("/json", as_json),
        Route("/stream", stream),
        Route("/echo", echo, methods=["POST"]),
        Route("/empty", empty),
    ]
)


@pytest.fixture(params=["h11", "httptools"])
async def app_port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """uvicorn serving APP on a socket bound before it starts (no readiness wait needed)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(
        APP, http=request.param, ws="none", lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield int(sock.getsockname()[1])
    server.should_exit = True
    await task
    sock.close()


async def test_against_uvicorn(app_port: int) -> None:
    """JSON, chunked stream, streamed upload, HEAD and 204 work on one kept-alive connection."""
    host = [(b"host", b"app.test")]
    async with HttpPool() as pool:

        async def call(method: bytes, target: bytes, body: object = None) -> tuple[int, bytes]:
            resp = await pool.request(method, "127.0.0.1", app_port, target, host, body, 5.0)  # type: ignore[arg-type]
            return resp.status, await resp.read()

        async def upload() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"0123456789" * 1000

        assert await call(b"GET", b"/json?q=1") == (200, b'{"path":"/json","q":"1"}')
        assert await call(b"GET", b"/stream") == (200, b"".join(b"part %d;" % i for i in range(5)))
        status, body = await call(b"POST", b"/echo", upload())
        assert (status, len(body)) == (200, 200_000)
        assert await call(b"POST", b"/echo", b"small") == (200, b"small")
        assert await call(b"HEAD", b"/json") == (200, b"")
        assert await call(b"GET", b"/empty") == (204, b"")
        assert await call(b"GET", b"/missing") == (404, b"Not Found")
        stats = pool.stats()
    assert (stats.connections_opened, stats.requests) == (1, 7)
