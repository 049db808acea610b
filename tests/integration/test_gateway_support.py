"""Shared helpers for the gateway integration tests (no tests here).

Upstreams, both real HTTP/1.1 servers on 127.0.0.1:0 (asyncio + httptools):

- ``UpstreamServer``: records what it receives (raw bytes) and can stall,
  stream large bodies and consume uploads slowly, with events the tests wait
  on. Paths: /slow never answers, /big/N sends N bytes, /upload reads only
  after ``gate`` is set; anything else echoes method, path, headers and body.
- ``Backend``: one named instance whose answer to each request is scripted by
  ``behave(seen)``: a status, ``RESET`` (close without answering), ``HANG``
  (never answer), ``STREAM`` (a head, one chunk, then a reset) or ``CUT`` (a
  small response's head and part of its body, then a reset). Every request
  is recorded in ``seen`` with its body, so tests count what reached it.

Clients and gateways:

- ``RawClient``: a socket-level client that writes exact bytes and parses
  responses, so hostile requests reach the gateway unmodified.
- ``start_gateway`` (in process), ``connect_when_listening`` (a gateway
  started as a process), ``static`` (a static upstream of some servers).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httptools
from tests.servers import Connections

from qanat.gateway.app import Gateway
from qanat.gateway.hardening import Limits
from qanat.testing import eventually

__test__ = False  # nothing to collect here

RESET, HANG, STREAM, CUT = -1, -2, -3, -4
Cleanup = Callable[[], Awaitable[None]]


class _Listening:
    """What both upstreams share: a listener on 127.0.0.1:0 and its open connections."""

    server: asyncio.Server | None
    port: int
    tracked: Connections  # accepted and not yet lost

    def __post_init__(self) -> None:
        self.server, self.port, self.tracked = None, 0, Connections()

    async def _listen(self, protocol: Callable[[], asyncio.Protocol]) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(protocol, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def transports(self) -> set[asyncio.BaseTransport]:
        """The connections open now (the live set)."""
        return self.tracked.open

    async def close(self) -> None:
        """Stop listening and abort every open connection (one accepted while closing too);
        return once each one is lost."""
        if self.server is not None:
            await self.tracked.close(self.server)


class _Tracked(asyncio.Protocol):
    """A connection that its server can abort at close."""

    def __init__(self, owner: _Listening) -> None:
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.owner.tracked.made(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.tracked.lost(self.transport)


# -- UpstreamServer: raw records, slow paths, big bodies -----------------------------------


@dataclass
class Seen:
    method: bytes
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body_length: int = 0


@dataclass
class UpstreamServer(_Listening):
    """A test upstream with slow paths and big bodies (see the module docstring)."""

    connections: int = 0
    seen: list[Seen] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    got_request: asyncio.Event = field(default_factory=asyncio.Event)
    read_paused: asyncio.Event = field(default_factory=asyncio.Event)
    write_paused: asyncio.Event = field(default_factory=asyncio.Event)
    written_before_pause: int = -1
    extra_response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def start(self) -> UpstreamServer:
        await self._listen(lambda: _UpstreamProtocol(self))
        return self


class _UpstreamProtocol(_Tracked):
    def __init__(self, up: UpstreamServer) -> None:
        super().__init__(up)
        self.up = up
        self.parser = httptools.HttpRequestParser(self)
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queued = 0
        self.paused = False
        self.drained = asyncio.Event()
        self.drained.set()
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.up.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
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


# -- Backend: scripted answers, decoded records --------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


def always(status: int) -> Callable[[Received], int]:
    return lambda seen: status


@dataclass
class Backend(_Listening):
    """One upstream instance; ``name`` is echoed in every answer as ``instance``."""

    name: str
    behave: Callable[[Received], int] = field(default=always(200))
    extra: Callable[[Received], bytes] = field(default=lambda seen: b"")  # raw header lines
    seen: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a whole request came in
    heads: asyncio.Event = field(default_factory=asyncio.Event)  # a request head came in

    async def start(self) -> Backend:
        await self._listen(lambda: _BackendProtocol(self))
        return self

    def count(self, method: str | None = None) -> int:
        return sum(1 for s in self.seen if method is None or s.method == method)


class _BackendProtocol(_Tracked):
    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.abort()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.backend.heads.set()

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        seen = Received(self.parser.get_method().decode(), self.url.decode(), self.headers,
                    b"".join(self.body))
        self.backend.seen.append(seen)
        self.backend.arrived.set()
        action = self.backend.behave(seen)
        if action == HANG:
            return
        if action == RESET:
            self.transport.abort()
            return
        payload = json.dumps({
            "instance": self.backend.name, "method": seen.method, "path": seen.path,
            "headers": seen.headers, "body_length": len(seen.body),
        }).encode()
        if action == STREAM:
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + payload)
            asyncio.get_running_loop().call_soon(self.transport.abort)
            return
        if action == CUT:  # a head promising 100 bytes more than are sent, then the reset
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n"
                                 % (len(payload) + 100))
            self.transport.write(payload)
            asyncio.get_running_loop().call_soon(self.transport.abort)
            return
        self.transport.write(
            b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
            % (action, len(payload), self.backend.extra(seen)) + payload
        )


async def backends(*names: str) -> list[Backend]:
    return [await Backend(n).start() for n in names]


# -- clients and gateways ------------------------------------------------------------------


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
        """Whether the gateway closes the connection (EOF or reset) within ``timeout``."""

        async def eof() -> bool:
            while True:
                try:
                    if not await self.reader.read(65536):
                        return True
                except ConnectionResetError:
                    return True

        try:
            return await asyncio.wait_for(eof(), timeout)
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def get(path: str, host: str = "gw.test", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def static(*servers: _Listening, **extra: object) -> dict[str, object]:
    """A static upstream over ``servers`` (``extra``: more upstream settings)."""
    return {"kind": "static", "targets": [{"url": s.url} for s in servers], **extra}


async def start_gateway(routes: list[dict[str, object]], **limits: object) -> Gateway:
    gateway = Gateway(routes, limits=Limits(**limits))  # type: ignore[arg-type]
    await gateway.start("127.0.0.1", 0)
    return gateway


async def connect_when_listening(
    port: int,
    proc: asyncio.subprocess.Process | None = None,
    log: Path | None = None,
    timeout: float = 30.0,
) -> RawClient:
    """A connection to a gateway process once ``port`` accepts one; fails early if ``proc``
    exits, and names ``log``'s tail in the failure."""

    def attempt() -> Awaitable[RawClient]:
        if proc is not None and proc.returncode is not None:
            raise AssertionError(f"the gateway exited with {proc.returncode}: {tail()}")
        return RawClient.connect(port)

    def tail() -> str:
        if log is None or not log.exists():
            return "(no log)"
        return log.read_text(errors="replace")[-2000:]

    return await eventually(attempt, timeout=timeout, interval=0.05, ignore=(OSError,),
                            what=lambda: f"a gateway listening on {port}; log tail: {tail()}")


@contextlib.asynccontextmanager
async def gateway_client(routes: list[dict[str, object]], **limits: object
                         ) -> AsyncIterator[tuple[Gateway, RawClient]]:
    """A started gateway and one client connection to it; both closed after."""
    gateway = await start_gateway(routes, **limits)
    try:
        client = await RawClient.connect(gateway.port)
        try:
            yield gateway, client
        finally:
            await client.close()
    finally:
        await gateway.aclose(timeout=1)
