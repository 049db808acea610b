"""Test servers that leave no connection open behind them.

Two ways a test server leaks a transport that the garbage collector finds
later, inside whichever test runs then, as ``ResourceWarning: unclosed
transport`` (failing a test that did nothing wrong):

- ``asyncio.Server.close()`` stops listening but, before Python 3.12.1, neither
  closes the connections it accepted nor waits for them (``wait_closed()``
  returns as soon as the listener is closed; ``close_clients()`` does not exist
  on 3.11). A handler still waiting when the test ends is cancelled by the
  loop's teardown before its ``writer.close()``.
- On the default (selector) loop, a connection accepted in the loop turn before
  ``close()`` is wrapped in a transport one turn later, by a task; if
  ``close()`` came in between, ``Server._attach`` fails its assertion and the
  half-built transport is dropped with its socket open (CPython gh-109564). A
  client that keeps reconnecting (gRPC's channel) hits this.

- ``Connections``: what a server accepted. ``made``/``lost`` are called from the
  protocol's ``connection_made``/``connection_lost``; ``close(server)`` stops
  accepting, lets accepts under way finish (``qanat.http.listening``), closes
  the listener, aborts every connection (one that arrives while closing is
  aborted on arrival) and returns once each one is lost, its socket closed.
- ``StreamServer``: ``asyncio.start_server`` with that bookkeeping. Each handler
  runs in a task the server owns; its writer is closed when it returns, and
  ``aclose()`` cancels and awaits the handlers still running before aborting
  their connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from qanat.http.listening import stop_accepting
from qanat.testing import eventually

__test__ = False  # nothing to collect here

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# How long closing may take: aborted connections are lost within a few loop turns.
CLOSE_DEADLINE = 10.0


class Connections:
    """The connections a test server accepted and has not yet seen lost."""

    def __init__(self) -> None:
        self.open: set[asyncio.BaseTransport] = set()
        self.closing = False

    def made(self, transport: asyncio.BaseTransport) -> None:
        """Call from ``connection_made``: track it (abort it at once while closing)."""
        self.open.add(transport)
        if self.closing:
            _abort(transport)

    def lost(self, transport: asyncio.BaseTransport) -> None:
        """Call from ``connection_lost``."""
        self.open.discard(transport)

    async def stop_accepting(self, server: asyncio.AbstractServer) -> None:
        """Accept nothing more and let the accepts under way arrive, to be aborted by ``made``
        (``qanat.http.listening.stop_accepting``: closing the listener first leaks them)."""
        self.closing = True
        await stop_accepting(server)

    async def close(self, server: asyncio.AbstractServer) -> None:
        """Stop accepting, close the listener, abort every accepted connection; return once
        each one is lost."""
        await self.stop_accepting(server)  # again after StreamServer's: uvloop accepted meanwhile
        server.close()
        for transport in list(self.open):
            _abort(transport)
        await eventually(lambda: not self.open, timeout=CLOSE_DEADLINE, interval=0,
                         what=lambda: f"the server's connections to close: {self.open}")


def _abort(transport: asyncio.BaseTransport) -> None:
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()
    else:
        transport.close()


class _TrackedStream(asyncio.StreamReaderProtocol):
    """``start_server``'s protocol, reporting to a ``StreamServer``."""

    def __init__(self, owner: StreamServer, limit: int) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(asyncio.StreamReader(limit=limit, loop=loop), owner._accepted, loop=loop)
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner.connections.made(transport)
        self._tracked = transport
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._owner.connections.lost(self._tracked)


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    """Copy bytes both ways between a client and an upstream connection until both ends
    close; then abort the upstream side (a handler's own writer is its server's to close)."""

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        dst.close()

    try:
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                             return_exceptions=True)
    finally:
        up_writer.transport.abort()


class StreamServer:
    """A stream server on ``host``:0 for a test; ``async with StreamServer(handler) as srv``.

    ``handler(reader, writer)`` serves one connection; the writer is closed when it
    returns or raises. Connection errors in a handler end it quietly (the client
    went away); other exceptions go to the loop's exception handler, as with
    ``asyncio.start_server``. ``port`` is the bound port once started.
    """

    def __init__(self, handler: StreamHandler, host: str = "127.0.0.1", *,
                 limit: int = 2**16, **listen: Any) -> None:
        self.handler = handler
        self.host = host
        self.port = 0
        self.connections = Connections()
        self._limit = limit
        self._listen = listen
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> StreamServer:
        """Listen on ``host``:0 (or on ``sock=`` when given one)."""
        loop = asyncio.get_running_loop()
        where = (None, None) if "sock" in self._listen else (self.host, 0)
        self._server = await loop.create_server(
            lambda: _TrackedStream(self, self._limit), *where, **self._listen)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def aclose(self) -> None:
        """Stop listening, cancel and await the handlers, close every connection."""
        if self._server is None:
            return
        server, self._server = self._server, None
        await self.connections.stop_accepting(server)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.connections.close(server)

    async def stop_listening(self) -> None:
        """Close the listener (new connections are refused); the accepted ones go on."""
        if self._server is not None:
            await self.connections.stop_accepting(self._server)
            self._server.close()  # the listener only: accepted connections stay open

    async def __aenter__(self) -> StreamServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Called from ``connection_made``: start the handler in a task this server owns."""
        if self.connections.closing:
            return  # already aborted by Connections.made
        task = asyncio.get_running_loop().create_task(self._run(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except Exception as exc:
            asyncio.get_running_loop().call_exception_handler({
                "message": "Unhandled exception in a test server's handler",
                "exception": exc, "transport": writer.transport,
            })
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be closing
                writer.close()
