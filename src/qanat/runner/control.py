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


async def serve(state_dir: Path, handler: Handler) -> asyncio.AbstractServer:
    """Listen on the control socket; each request line is passed to ``handler``."""
    path = socket_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
                reply = await handler(request)
            except (ValueError, KeyError) as exc:
                reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_unix_server(on_client, path=str(path))


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
    reply = json.loads(line or b"{}")
    if not isinstance(reply, dict):
        raise BackendUnreachable(f"unexpected reply from the supervisor at {path}")
    return reply
