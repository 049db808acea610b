"""Shared helpers for the gateway integration tests (no tests here).

- ``UpstreamServer``: a real HTTP/1.1 upstream on 127.0.0.1:0 (asyncio +
  httptools) that records what it receives and can stall, stream large
  bodies and consume uploads slowly, with events the tests wait on.
- ``RawClient``: a socket-level client that writes exact bytes and parses
  responses, so hostile requests reach the gateway unmodified.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httptools

from qanat.gateway.app import Gateway
from qanat.gateway.hardening import Limits

__test__ = False  # nothing to collect here


@dataclass
class Seen:
    method: bytes
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body_length: int = 0


@dataclass
class UpstreamServer:
    """A test upstream. Paths: /slow (never answers), /big/N (N bytes), /upload
    (counts and hashes the body, reading only after ``gate`` is set), anything
    else echoes method, path, headers and body as JSON."""

    connections: int = 0
    seen: list[Seen] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    got_request: asyncio.Event = field(default_factory=asyncio.Event)
    read_paused: asyncio.Event = field(default_factory=asyncio.Event)
    write_paused: asyncio.Event = field(default_factory=asyncio.Event)
    written_before_pause: int = -1
    extra_response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0
    transports: set[asyncio.Transport] = field(default_factory=set)

    async def start(self) -> UpstreamServer:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _UpstreamProtocol(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for t in list(self.transports):
                t.abort()
            await self.server.wait_closed()


class _UpstreamProtocol(asyncio.Protocol):
    def __init__(self, up: UpstreamServer) -> None:
        self.up = up
        self.parser = httptools.HttpRequestParser(self)
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queued = 0
        self.paused = False
        self.drained = asyncio.Event()
        self.drained.set()
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.up.connections += 1
        self.up.transports.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.up.transports.discard(self.transport)
        for t in self.tasks:
            t.cancel()
        self.drained.set()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        seen = Seen(self.parser.get_method(), self.url, self.headers)
        self.up.seen.append(seen)
        self.up.got_request.set()
        task = asyncio.get_running_loop().create_task(self.handle(seen))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_body(self, chunk: bytes) -> None:
        self.queue.put_nowait(chunk)
        self.queued += len(chunk)
        if self.queued > 256 * 1024 and not self.paused:
            self.paused = True
            self.transport.pause_reading()
            self.up.read_paused.set()

    def on_message_complete(self) -> None:
        self.queue.put_nowait(None)

    def pause_writing(self) -> None:
        self.drained.clear()
        self.up.write_paused.set()

    def resume_writing(self) -> None:
        self.drained.set()

    async def body(self) -> bytes:
        digest = hashlib.sha256()
        total = 0
        while (chunk := await self.queue.get()) is not None:
            self.queued -= len(chunk)
            if self.paused and self.queued < 64 * 1024:
                self.paused = False
                self.transport.resume_reading()
            digest.update(chunk)
            total += len(chunk)
        return json.dumps({"length": total, "sha256": digest.hexdigest()}).encode()

    async def handle(self, seen: Seen) -> None:
        path = seen.path.split(b"?")[0]
        if path == b"/slow":
            await asyncio.Event().wait()
        if path.startswith(b"/big/"):
            await self.send_big(int(path[5:]))
            return
        if path == b"/upload":
            await self.up.gate.wait()
        summary = await self.body()
        seen.body_length = json.loads(summary)["length"]
        payload = json.dumps({
            "method": seen.method.decode(), "path": seen.path.decode(),
            "headers": [[n.decode(), v.decode("latin-1")] for n, v in seen.headers],
            "body": json.loads(summary),
        }).encode()
        extra = b"".join(n + b": " + v + b"\r\n" for n, v in self.up.extra_response_headers)
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + extra
            + b"content-length: %d\r\n\r\n" % len(payload)
            + (b"" if seen.method == b"HEAD" else payload)
        )

    async def send_big(self, size: int) -> None:
        await self.body()
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        block = bytes(range(256)) * 256  # 64 KiB
        sent = 0
        while sent < size:
            n = min(len(block), size - sent)
            self.transport.write(block[:n])
            sent += n
            if not self.drained.is_set():
                if self.up.written_before_pause < 0:
                    self.up.written_before_pause = sent
                await self.drained.wait()


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.body)  # type: ignore[no-any-return]


class RawClient:
    """Writes raw bytes to the gateway and parses the responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._responses: list[Response] = []
        self._parser = httptools.HttpResponseParser(self)
        self._eof = False

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    def on_message_begin(self) -> None:
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, chunk: bytes) -> None:
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        self._responses.append(
            Response(self._parser.get_status_code(), self._headers, b"".join(self._body))
        )

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def response(self, timeout: float = 10.0) -> Response:
        """The next complete response (skipping 1xx); raises EOFError if the connection closed."""
        async def read() -> Response:
            while True:
                while self._responses:
                    r = self._responses.pop(0)
                    if r.status >= 200:
                        return r
                data = await self.reader.read(65536)
                if not data:
                    self._eof = True
                    raise EOFError("the gateway closed the connection")
                self._parser.feed_data(data)

        return await asyncio.wait_for(read(), timeout)

    async def request(self, raw: bytes, timeout: float = 10.0) -> Response:
        await self.send(raw)
        return await self.response(timeout)

    async def closed(self, timeout: float = 10.0) -> bool:
        """Whether the gateway closes the connection (EOF) within ``timeout``."""
        async def wait_eof() -> bool:
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionResetError:
                    return True
                if not data:
                    return True
        try:
            return await asyncio.wait_for(wait_eof(), timeout)
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def get(path: str, host: str = "gw.test", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def static(up: UpstreamServer) -> dict[str, object]:
    return {"kind": "static", "targets": [{"url": f"http://127.0.0.1:{up.port}"}]}


async def start_gateway(routes: list[dict[str, object]], **limits: object) -> Gateway:
    gateway = Gateway(routes, limits=Limits(**limits))  # type: ignore[arg-type]
    await gateway.start("127.0.0.1", 0)
    return gateway


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, checking on every loop turn, or fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.001)


Cleanup = Callable[[], Awaitable[None]]
