"""stop_accepting: closing a server as it accepts leaves no socket behind (CPython gh-109564).

Runs on the default loop and on uvloop (this folder's conftest).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import pytest

from qanat.http.listening import stop_accepting
from qanat.testing import eventually


class Recorded(asyncio.Protocol):
    """Records each connection it is given and closes it at once (its server is closing)."""

    def __init__(self, made: list[asyncio.BaseTransport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)
        transport.close()


async def ended(client: socket.socket) -> str:
    """How the server ended the client's connection: 'closed' (accepted, then closed) or
    'reset' (still in the backlog when the listener closed)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(10):
            data = await loop.sock_recv(client, 16)
    except ConnectionResetError:
        return "reset"
    assert data == b""
    return "closed"


@pytest.mark.parametrize("turns", range(5))
async def test_a_connection_accepted_as_stopping_begins_reaches_its_protocol(turns: int) -> None:
    """Whichever loop turn stop_accepting begins in after a client connected, the connection
    is either accepted and handed to the protocol before it returns, or never accepted: after
    close() no half-built transport is left with its socket open."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.BaseTransport] = []
    server = await loop.create_server(lambda: Recorded(made), "127.0.0.1", 0)
    with socket.socket() as client, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.setblocking(False)
        client.connect_ex(server.sockets[0].getsockname())  # loopback: queued in the backlog
        for _ in range(turns):
            await asyncio.sleep(0)  # land the stop at each step of the accept
        await stop_accepting(server)
        handed = list(made)
        server.close()
        await server.wait_closed()
        gc.collect()  # a dropped half-built transport would warn here, and close its socket
        how = await ended(client)
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert made == handed  # nothing arrives after stop_accepting returned
    assert (how, len(handed)) in {("closed", 1), ("reset", 0)}


async def test_a_stopped_server_accepts_nothing_until_it_closes() -> None:
    """After stop_accepting on the default loop a new client waits in the backlog, unaccepted,
    and is reset when the listener closes. uvloop keeps accepting until close() (its transports
    are never half-built, so there is nothing to leak): there the client is accepted whole."""
    loop = asyncio.get_running_loop()
    selector = isinstance(loop, asyncio.SelectorEventLoop)
    made: list[asyncio.BaseTransport] = []
    server = await loop.create_server(lambda: Recorded(made), "127.0.0.1", 0)
    await stop_accepting(server)
    with socket.socket() as client:
        client.setblocking(False)
        await loop.sock_connect(client, server.sockets[0].getsockname())
        if selector:
            for _ in range(4):  # accepting would take three turns: select, build, made
                await asyncio.sleep(0)
            assert made == []
        else:
            await eventually(lambda: len(made) == 1, what="uvloop accepting the client")
        server.close()
        await server.wait_closed()
        assert await ended(client) == ("reset" if selector else "closed")


async def test_stopping_twice_is_harmless() -> None:
    """A second call (a caller's helper stopping again before it closes) is a no-op."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    await stop_accepting(server)
    await stop_accepting(server)
    server.close()
    await server.wait_closed()
    assert not server.is_serving()
