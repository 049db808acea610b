"""The supervisor's control socket: ``qanat status|scale|down`` talk to a running ``qanat up``.

One JSON object per line each way over a Unix socket in the state directory.
Requests: ``{"cmd": "status"}``, ``{"cmd": "scale", "service": S, "replicas": N}``,
``{"cmd": "down"}``. Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from qanat.errors import BackendUnreachable
from qanat.http.listening import stop_accepting

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_MAX_UNIX_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


def socket_path(state_dir: Path) -> Path:
    """Where the supervisor of ``state_dir`` listens (a short /tmp path if that one is too long)."""
    path = state_dir.resolve() / "supervisor.sock"
    if len(str(path)) <= _MAX_UNIX_PATH:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"qanat-{digest}.sock"


class ControlServer:
    """The listening control socket and the connections it accepted.

    ``aclose`` stops accepting, lets requests being answered finish (a ``down``
    answers only once everything has stopped) for a grace period, cancels the
    handlers still running after it, closes every connection, then removes the
    socket file, so a ``qanat down`` that got its answer knows the system is gone.
    """

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}  # each accepted
        self._answering = 0
        self._closing = False

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a supervisor that was killed; none answers on it
        self._server = await asyncio.start_unix_server(self._accepted, path=str(self.path))

    @property
    def answering(self) -> int:
        """Requests being answered now (read, reply not yet written)."""
        return self._answering

    @property
    def connections(self) -> int:
        """Connections accepted and not yet closed."""
        return len(self._connections)

    async def aclose(self, grace: float = 5.0) -> None:
        """Stop accepting; give the answers under way ``grace`` s, then cancel them; return
        once every accepted connection is closed, and remove the socket file."""
        self._closing = True
        if self._server is not None:
            server, self._server = self._server, None
            await stop_accepting(server)  # CPython gh-109564
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        current = asyncio.current_task()  # a handler may close the server: never wait on it
        while others := self._connections.keys() - {current}:
            _, late = await asyncio.wait(others, timeout=max(0.0, deadline - loop.time()))
            writers = [self._connections[task] for task in late]
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            for writer in writers:  # a task cancelled before its first step closed nothing
                writer.transport.abort()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Called from ``connection_made``: the connection is served by a task this server owns."""
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._connections[task] = writer
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        del self._connections[task]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one request, then close; a connection accepted while closing is just closed."""
        try:
            if not self._closing:
                await self._answer(reader, writer)
            writer.close()  # after the reply is flushed
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.transport.abort()  # the asking command went away (Ctrl-C): nothing to answer
        except asyncio.CancelledError:
            writer.transport.abort()  # still running after the grace: the reply may never drain
            raise
        except Exception as exc:
            writer.transport.abort()
            asyncio.get_running_loop().call_exception_handler({
                "message": "the control socket's handler failed",
                "exception": exc, "transport": writer.transport,
            })
        finally:
            with contextlib.suppress(OSError):  # the error a lost connection ended with
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        self._answering += 1
        try:
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
                reply = await self._handler(request)
            except (ValueError, KeyError) as exc:
                reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            self._answering -= 1


async def serve(state_dir: Path, handler: Handler) -> ControlServer:
    """Listen on the control socket of ``state_dir``; each request is passed to ``handler``."""
    server = ControlServer(socket_path(state_dir), handler)
    await server.start()
    return server


async def request(
    state_dir: Path, payload: dict[str, Any], timeout: float = 30.0
) -> dict[str, Any]:
    """Send one request to the supervisor of ``state_dir``; BackendUnreachable if none runs."""
    path = socket_path(state_dir)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                writer.write(json.dumps(payload).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except (FileNotFoundError, ConnectionRefusedError):
        raise BackendUnreachable(
            f"no running 'qanat up' for {state_dir} (no supervisor at {path}); "
            "start one with 'qanat up'"
        ) from None
    except TimeoutError:
        raise BackendUnreachable(
            f"the supervisor at {path} did not answer in {timeout:g}s"
        ) from None
    if not line:
        raise BackendUnreachable(f"the supervisor at {path} closed the connection unanswered")
    reply = json.loads(line)
    if not isinstance(reply, dict):
        raise BackendUnreachable(f"unexpected reply from the supervisor at {path}")
    return reply
