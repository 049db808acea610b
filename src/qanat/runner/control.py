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
    """The listening control socket and the requests it is answering.

    ``aclose`` stops listening, lets requests being answered finish (a
    ``down`` answers only once everything has stopped), then removes the
    socket file, so a ``qanat down`` that got its answer knows the system is gone.
    """

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._active: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a supervisor that was killed; none answers on it
        self._server = await asyncio.start_unix_server(self._on_client, path=str(self.path))

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._active.add(task)
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
                reply = await self._handler(request)
            except (ValueError, KeyError) as exc:
                reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the asking command went away (Ctrl-C): nothing to answer
        finally:
            writer.close()
            self._active.discard(task)

    @property
    def answering(self) -> int:
        """Requests being answered now."""
        return len(self._active)

    async def aclose(self, grace: float = 5.0) -> None:
        """Stop listening, finish the answers under way (at most ``grace`` s), remove the file."""
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        others = [t for t in self._active if t is not current]
        if others:
            await asyncio.wait(others, timeout=grace)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


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
