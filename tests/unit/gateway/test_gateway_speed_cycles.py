"""A closed client connection is freed by reference counting, not left to the cyclic GC."""

from __future__ import annotations

import asyncio
import gc

from tests.servers import StreamServer

from qanat.gateway.app import Gateway
from qanat.testing import eventually


async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.readuntil(b"\r\n\r\n"):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()


async def test_closed_connections_leave_no_protocol_or_parser_in_a_cycle() -> None:
    """The parser holds the protocol's bound methods and the protocol the parser (and the
    transport): without breaking that on connection_lost, every connection that closed
    (clients without keep-alive, health checkers) left 14 objects for the collector."""
    async with StreamServer(ok) as upstream:
        gw = Gateway([{"name": "r", "match": {"prefix": "/"}, "upstream": {
            "kind": "static", "targets": [{"url": f"http://127.0.0.1:{upstream.port}"}]}}])
        await gw.start("127.0.0.1", 0)

        async def one(close: bool) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n%s\r\n"
                         % (b"connection: close\r\n" if close else b""))
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            await reader.readexactly(2)
            writer.close()  # a keep-alive client hanging up, or after the gateway's close
            await writer.wait_closed()

        try:
            await one(False)  # warm: the pooled upstream connection
            await eventually(lambda: not gw.server.connections, what="the warm-up closed")
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for i in range(20):
                    await one(close=i % 2 == 0)
                await eventually(lambda: not gw.server.connections, what="every connection lost")
                gc.collect()
                kinds = {type(o).__name__ for o in gc.garbage}
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
        finally:
            await gw.aclose(1.0)
    assert not kinds & {"HttpProtocol", "HttpRequestParser"}, kinds
