"""Closing a listening asyncio server without leaking the connection it was accepting.

The race (CPython gh-109564, fixed in 3.12.1): on asyncio's selector loop a
server accepts in a reader callback on its listening socket, then wraps each
accepted socket in its transport one loop turn later, in a task. The
transport's constructor attaches itself to the server, and ``Server._attach``
asserts the server is still open. A ``Server.close()`` landing between the
accept and that task therefore fails the assertion: the half-built transport
is dropped with its socket open, and no protocol ever hears of the connection.
The client waits on a socket nobody answers; the garbage collector later
reports ``ResourceWarning: unclosed`` inside whatever runs then. A client that
keeps reconnecting (gRPC's channel, a load test) lands in that window sooner
or later.

The sidestep: stop watching the listening sockets first, so nothing new is
accepted while the server stays open, then let two loop turns pass (one for
the accepts under way to build their transports, one for the
``connection_made`` each schedules). Every connection accepted so far has then
reached its protocol, which sees its server closing and closes it; only then
is ``close()`` safe. uvloop has no such window (it builds the transport in the
accept itself) but calls ``connection_made`` a turn later, so the two turns are
taken on every loop: a connection accepted just before reaches its protocol
while its owner still looks for connections to wait on.

This is a leaf of the package: asyncio only, shared by the gateway's server,
the runner's control socket and the test servers.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events


async def stop_accepting(server: asyncio.AbstractServer) -> None:
    """Stop ``server`` accepting and let the accepts under way reach their protocols.

    Call it, then ``server.close()``. When it returns, every connection accepted
    before it began has had ``connection_made`` called (a protocol that refuses
    connections while its owner is closing has closed it by then) and, on the
    selector loop, the listening sockets are still open but no longer accepted
    from. (uvloop keeps accepting until ``close()``; its transports are never
    half-built.) Calling it again is harmless: two more loop turns.
    """
    loop = asyncio.get_running_loop()
    if isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        for sock in getattr(server, "sockets", ()):
            loop.remove_reader(sock.fileno())
    await asyncio.sleep(0)  # the accepts under way build their transports ...
    await asyncio.sleep(0)  # ... and their connection_made runs
