"""The gateway's HTTP/1.1 server: one ``asyncio.Protocol`` per connection on httptools.

Connection lifecycle and limits (defaults in ``hardening.Limits``):

- A new connection must complete a request head within ``header_timeout``;
  after a response it may idle ``idle_timeout`` before it is closed. A head
  that starts but does not finish in time gets 408 and a close; a body that
  stalls longer than ``body_timeout`` (while we are reading it) gets 408.
- Requests are read one after another; pipelined requests queue (at most
  ``max_pipelined`` before reading pauses) and are answered strictly in order.
- Any framing or validation error is answered (4xx/5xx problem+json) after the
  responses already owed, then the connection closes: the position of the
  next request in the byte stream can no longer be trusted.
- Over ``max_connections`` a new connection gets 503 and is closed at once.
- Bodies stream both ways with back-pressure (``RequestBody`` pauses reading
  from the client; ``pause_writing`` from the transport pauses copying the
  upstream body).

Deadlines are plain floats checked by one sweep task per server, so the hot
path arms a timer with one assignment instead of a loop timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from qanat.gateway.connection import HttpProtocol
from qanat.gateway.hardening import Limits
from qanat.gateway.request import App, RequestObserver
from qanat.http.listening import stop_accepting


@dataclass(frozen=True, slots=True)
class ServerStats:
    """A snapshot for metrics: open connections, requests answered, rejections by status."""

    connections: int
    requests: int
    rejected: dict[int, int]
    refused_connections: int
    body_pauses: int  # times reading from a client paused because its body was not consumed
    body_peak_bytes: int  # most request-body bytes ever buffered for one request


class HttpServer:
    """Serves ``app`` over HTTP/1.1 with the given ``limits``.

    ``start`` binds and returns; ``shutdown`` stops accepting, lets in-flight
    requests finish within a deadline, then closes everything.
    """

    def __init__(
        self,
        app: App,
        limits: Limits | None = None,
        *,
        scheme: bytes = b"http",
        clock: Callable[[], float] = time.monotonic,
        observer: RequestObserver | None = None,
    ) -> None:
        self.app = app
        self.observer = observer
        self.limits = limits or Limits()
        self.scheme = scheme
        self.clock = clock
        self.connections: set[HttpProtocol] = set()
        self.draining = False
        self.requests = 0
        self.rejected: dict[int, int] = {}
        self.refused = 0
        self.body_pauses = 0
        self.body_peak = 0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._empty = asyncio.Event()
        lim = self.limits
        self._tick = min(0.5, lim.header_timeout / 4, lim.idle_timeout / 4, lim.body_timeout / 4)

    async def start(self, host: str, port: int) -> None:
        """Bind and start accepting connections."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(self), host, port, backlog=2048, reuse_address=True
        )
        self._sweeper = loop.create_task(self._sweep())

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    def stats(self) -> ServerStats:
        return ServerStats(len(self.connections), self.requests, dict(self.rejected),
                           self.refused, self.body_pauses, self.body_peak)

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting; close idle connections; give in-flight ones ``timeout``."""
        deadline = self.limits.shutdown_timeout if timeout is None else timeout
        self.draining = True
        if self._server is not None:
            await stop_accepting(self._server)
            self._server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        if self.connections:
            self._empty.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), deadline)
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            await self._server.wait_closed()

    def forget(self, conn: HttpProtocol) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._empty.set()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            now = self.clock()
            for conn in list(self.connections):
                if conn.deadline and now >= conn.deadline:
                    conn.on_deadline()
                elif self.draining:
                    conn.close_if_idle()
