"""Back-pressure both ways with large bodies, and an answer that arrives mid-upload."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

from tests.servers import StreamServer

from qanat.http import HttpPool
from qanat.testing import eventually

H = [(b"host", b"test")]
MiB = 1 << 20
READ_MAX = 256 * 1024  # what one data_received can deliver (asyncio and uvloop read size)

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(serve: Serve, rcvbuf: int | None = None) -> AsyncIterator[int]:
    """Serve on a free port; on exit wait for every connection handler to finish (one that
    raised fails the test), then close the server.

    With ``rcvbuf`` accepted sockets get a small fixed receive buffer (no
    autotuning), so the kernel cannot hide a missing back-pressure.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.1", 0))
    handlers: list[asyncio.Task[None]] = []
    failures: list[Exception] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        try:
            await serve(reader, writer)
        except Exception as exc:  # StreamServer would only report it
            failures.append(exc)

    async with StreamServer(handle, sock=sock) as server:
        yield server.port
        await asyncio.wait_for(asyncio.gather(*handlers), 10)
    if failures:
        raise failures[0]


async def test_large_response_body_is_bounded_in_memory() -> None:
    """A consumer that lags pauses the socket: buffered body stays under the high-water mark."""
    total, written = 32 * MiB, 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        piece = b"z" * MiB
        while written < total:
            writer.write(piece)
            written += len(piece)
            await writer.drain()
        await reader.read()
        writer.close()

    high = 64 * 1024
    async with raw_server(serve) as port, HttpPool(read_high_water=high) as pool:
        resp = await pool.request(b"GET", "127.0.0.1", port, b"/", H, timeout=5)
        # Do not consume; let the server push until far more than the bound was offered.
        await eventually(lambda: written >= 4 * MiB)
        assert resp.buffered <= high + READ_MAX
        received = 0
        async for chunk in resp.iter_chunks():
            received += len(chunk)
            assert resp.buffered <= high + READ_MAX
            await asyncio.sleep(0)  # a consumer slower than the socket
        assert received == total
        assert pool.stats().idle == 1  # fully read: back in the pool


async def test_large_upload_waits_for_the_socket() -> None:
    """A streamed upload never runs more than the socket buffers ahead of the reader."""
    total, chunk_size, bound = 32 * MiB, 64 * 1024, 8 * MiB
    produced = consumed = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal consumed
        await reader.readuntil(b"\r\n\r\n")
        while consumed < total:
            consumed += len(await reader.readexactly(min(chunk_size, total - consumed)))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        piece = b"u" * chunk_size
        while produced < total:
            assert produced - consumed <= bound, "the upload ran ahead of the socket"
            produced += chunk_size
            yield piece

    async with raw_server(serve, rcvbuf=64 * 1024) as port, HttpPool() as pool:
        headers = [*H, (b"content-length", b"%d" % total)]
        resp = await pool.request(b"PUT", "127.0.0.1", port, b"/", headers, body(), timeout=30)
        assert (resp.status, consumed) == (200, total)


async def test_answer_before_upload_ends_stops_sending() -> None:
    """An early final response (413) is returned, the upload stops, the connection closes."""
    produced, eof = 0, asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(65536)
        writer.write(b"HTTP/1.1 413 Too Large\r\ncontent-length: 0\r\n\r\n")
        while await reader.read(65536):  # keep draining so no RST races the answer
            pass
        eof.set()
        writer.close()

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 1
            yield b"x" * 65536

    async with raw_server(serve, rcvbuf=64 * 1024) as port, HttpPool() as pool:
        resp = await pool.request(b"POST", "127.0.0.1", port, b"/", H, endless(), timeout=5)
        assert resp.status == 413
        await asyncio.wait_for(eof.wait(), 5)  # we closed: a half-sent body cannot be reused
        stopped_at = produced
        assert pool.stats().open == 0
        assert produced == stopped_at
