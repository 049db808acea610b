"""tests/servers.py: a test server closes every connection it accepted, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop
from tests.servers import Connections, StreamServer

from qanat.testing import eventually

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop,
}


def run(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(main())


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """What the client gets before the connection ends (a reset ends it too)."""
    try:
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return b""


@pytest.mark.parametrize("loop", LOOPS)
def test_closing_ends_a_connection_whose_handler_still_waits(loop: str) -> None:
    """aclose cancels a handler that never returns and closes its connection: the client sees
    the end, and the server has no connection left open."""

    async def main() -> None:
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        srv = await StreamServer(handler).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        await asyncio.wait_for(started.wait(), 10)
        await srv.aclose()
        assert cancelled.is_set()
        assert srv.connections.open == set()
        assert await read_to_end(reader) == b""
        writer.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_handler_that_returns_closes_its_connection(loop: str) -> None:
    """The writer is closed when the handler returns, even if the handler did not close it."""

    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hello")

        async with StreamServer(handler) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            assert await read_to_end(reader) == b"hello"
            await eventually(lambda: not srv.connections.open, what="the server to see it lost")
            writer.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_connection_errors_in_a_handler_end_it_quietly(loop: str) -> None:
    """A client that leaves mid-read ends the handler without a report to the loop."""

    async def main() -> None:
        reports: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reports.append(ctx))
        ended = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readexactly(10)
            finally:
                ended.set()

        async with StreamServer(handler) as srv:
            _, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(b"abc")
            writer.close()
            await asyncio.wait_for(ended.wait(), 10)
        assert reports == []

    run(loop, main)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


def test_a_connection_made_while_closing_is_aborted_on_arrival() -> None:
    """An accept that completes after close() began (same loop turn) is aborted at once."""
    connections = Connections()
    before, after = FakeTransport(), FakeTransport()
    connections.made(before)
    connections.closing = True
    connections.made(after)
    assert (before.aborted, after.aborted) == (False, True)
    connections.lost(after)
    assert connections.open == {before}


def unclosed_on(port: int) -> list[str]:
    """ResourceWarnings the garbage collector raises now for sockets on ``port``."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        gc.collect()
    found = []
    for w in seen:
        source = getattr(w, "source", None)
        if not issubclass(w.category, ResourceWarning) or source is None:
            continue
        name = getattr(source, "get_extra_info", None)
        local = name("sockname") if name is not None else None
        if local is None and hasattr(source, "getsockname"):
            with contextlib.suppress(OSError):
                local = source.getsockname()
        if isinstance(local, tuple) and local[1] == port:
            found.append(str(w.message))
    return found


@pytest.mark.parametrize("turns", range(6))
def test_a_connection_accepted_just_before_closing_is_not_leaked(turns: int) -> None:
    """Closing the server a few loop turns after a client connected, while the accept is still
    being turned into a transport (CPython gh-109564), leaves no socket behind."""
    port = 0

    async def main() -> None:
        nonlocal port

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        srv = await StreamServer(handler).start()
        port = srv.port
        connecting = asyncio.create_task(asyncio.open_connection("127.0.0.1", port))
        for _ in range(turns):
            await asyncio.sleep(0)  # land the close at each step of the connect and accept
        await srv.aclose()
        with contextlib.suppress(OSError):  # refused: the close came first
            _, writer = await connecting
            writer.close()
            await writer.wait_closed()

    run("asyncio", main)
    assert unclosed_on(port) == []
