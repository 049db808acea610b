"""Real HTTP/1.1 servers on 127.0.0.1:0 for the upstream client's tests.

``Upstream`` is a small scriptable server written on asyncio streams: it
reads each request (head and body, Content-Length or chunked), records it,
and lets the test's handler answer with raw bytes, hold the answer, close or
reset. It is deliberately independent of the client under test (its own
parser), so the two cannot share a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from tests.servers import StreamServer

from qanat.testing import free_port


@dataclass
class Received:
    """One request as the server read it (header names lower-cased)."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connection: int  # 1 for the first accepted connection, then 2, ...

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


@dataclass
class Exchange:
    """The handler's side of one request: write raw bytes, or end the connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    keep_open: bool = True

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        """Close after this exchange (FIN), without any ``Connection: close`` hint."""
        self.keep_open = False

    def reset(self) -> None:
        """Abort the connection now (RST)."""
        self.keep_open = False
        self.writer.transport.abort()


Handler = Callable[[Received, Exchange], Awaitable[None]]


async def until_client_closes(req: Received, ex: Exchange) -> None:
    """Never answer; return when the client closes the connection."""
    await ex.reader.read()
    ex.close()


def response(status: int = 200, body: bytes = b"ok", *headers: tuple[bytes, bytes]) -> bytes:
    """A Content-Length response with ``headers`` added."""
    lines = b"".join(b"%s: %s\r\n" % h for h in headers)
    return b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%s\r\n%s" % (status, len(body), lines, body)


async def answer_ok(req: Received, ex: Exchange) -> None:
    """Default handler: 200 with the request target as the body."""
    await ex.send(response(200, req.target))


@dataclass
class Upstream:
    """A scriptable HTTP/1.1 server; use as ``async with Upstream(handler) as up``."""

    handler: Handler = answer_ok
    accepted: int = 0
    closed: int = 0  # connections that ended (either side)
    received: list[Received] = field(default_factory=list)
    _server: StreamServer | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    port: int = 0

    async def __aenter__(self) -> Upstream:
        self._server = await StreamServer(self._serve, limit=1 << 20).start()
        self.port = self._server.port
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop listening; end every connection, including handlers still running."""
        assert self._server is not None
        await self._server.aclose()

    async def stop_listening(self) -> None:
        """Refuse new connections; the open ones are served on."""
        assert self._server is not None
        await self._server.stop_listening()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds, re-checking after every server event."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection (the StreamServer closes the writer when this returns)."""
        self.accepted += 1
        number = self.accepted
        self._notify()
        try:
            while True:
                req = await read_request(reader, number)
                if req is None:
                    break
                self.received.append(req)
                self._notify()
                ex = Exchange(reader, writer)
                await self.handler(req, ex)
                if not ex.keep_open:
                    break
        finally:
            writer.close()
            self.closed += 1
            self._notify()


async def read_request(reader: asyncio.StreamReader, connection: int) -> Received | None:
    """Read one request; None at a clean EOF between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    lines = head[:-4].split(b"\r\n")
    method, target, version = lines[0].split(b" ")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    fields = dict(headers)
    if fields.get(b"transfer-encoding") == b"chunked":
        body = await read_chunked(reader)
    else:
        body = await reader.readexactly(int(fields.get(b"content-length", b"0")))
    return Received(method, target, version, headers, body, connection)


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Decode a chunked body (RFC 9112 §7.1), trailers ignored."""
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


@contextlib.asynccontextmanager
async def silent_port() -> AsyncIterator[int]:
    """A port where nothing listens (``qanat.testing.free_port``)."""
    yield free_port()
