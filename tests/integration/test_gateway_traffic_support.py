"""Helpers for the gateway traffic tests (no tests here).

``Backend``: a real HTTP/1.1 upstream instance on 127.0.0.1:0 (asyncio +
httptools) whose answer to each request is scripted by ``behave(seen)``:
a status, ``RESET`` (close the socket without answering), ``HANG`` (never
answer) or ``STREAM`` (a head, one chunk, then a reset). Every request it
receives is recorded in ``seen``, with its body, so tests can count exactly
what reached the upstream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools

__test__ = False

RESET, HANG, STREAM = -1, -2, -3


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


def always(status: int) -> Callable[[Seen], int]:
    return lambda seen: status


@dataclass
class Backend:
    """One upstream instance; ``name`` is echoed in every answer as ``instance``."""

    name: str
    behave: Callable[[Seen], int] = field(default=always(200))
    extra: Callable[[Seen], bytes] = field(default=lambda seen: b"")  # raw header lines
    seen: list[Seen] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a whole request came in
    heads: asyncio.Event = field(default_factory=asyncio.Event)  # a request head came in
    server: asyncio.Server | None = None
    port: int = 0
    transports: set[asyncio.Transport] = field(default_factory=set)

    async def start(self) -> Backend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Protocol(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, method: str | None = None) -> int:
        return sum(1 for s in self.seen if method is None or s.method == method)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for t in list(self.transports):
                t.abort()
            await self.server.wait_closed()


class _Protocol(asyncio.Protocol):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.backend.transports.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend.transports.discard(self.transport)

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
        seen = Seen(self.parser.get_method().decode(), self.url.decode(), self.headers,
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
        self.transport.write(
            b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
            % (action, len(payload), self.backend.extra(seen)) + payload
        )


async def backends(*names: str) -> list[Backend]:
    return [await Backend(n).start() for n in names]


def static(*bs: Backend, **extra: object) -> dict[str, object]:
    return {"kind": "static", "targets": [{"url": b.url} for b in bs], **extra}
