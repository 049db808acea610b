"""The control socket between 'qanat up' and 'qanat status|scale|down'."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from qanat.errors import BackendUnreachable
from qanat.runner import control
from qanat.testing import eventually


async def echo(req: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "got": req}


async def test_a_request_gets_the_handlers_reply(tmp_path: Path) -> None:
    """One JSON object each way: the reply is whatever the handler returned."""
    server = await control.serve(tmp_path, echo)
    try:
        reply = await control.request(tmp_path, {"cmd": "status", "n": 3})
        assert reply == {"ok": True, "got": {"cmd": "status", "n": 3}}
    finally:
        await server.aclose()
    assert not control.socket_path(tmp_path).exists()


async def test_no_supervisor_is_a_clear_error(tmp_path: Path) -> None:
    """With nothing listening, the error says no 'qanat up' runs and how to start one."""
    with pytest.raises(BackendUnreachable, match=r"no running 'qanat up'.*start one"):
        await control.request(tmp_path, {"cmd": "status"})


async def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    """A socket file left by a killed supervisor neither blocks a new one nor answers."""
    path = control.socket_path(tmp_path)
    with socket.socket(socket.AF_UNIX) as dead:  # a supervisor that died without cleaning up
        dead.bind(str(path))
    assert path.exists()
    with pytest.raises(BackendUnreachable):
        await control.request(tmp_path, {"cmd": "status"})
    second = await control.serve(tmp_path, echo)
    try:
        assert (await control.request(tmp_path, {"cmd": "x"}))["ok"]
    finally:
        await second.aclose()


async def test_malformed_requests_get_an_error_reply(tmp_path: Path) -> None:
    """A line that is not a JSON object is answered with ok: false, not a dropped connection."""
    server = await control.serve(tmp_path, echo)
    try:
        for line in (b"not json\n", b"[1, 2]\n"):
            reader, writer = await asyncio.open_unix_connection(
                str(control.socket_path(tmp_path))
            )
            writer.write(line)
            reply = json.loads(await reader.readline())
            writer.close()
            assert reply["ok"] is False and reply["error"]
    finally:
        await server.aclose()


async def test_close_lets_a_pending_answer_finish(tmp_path: Path) -> None:
    """aclose() waits for an answer under way (a 'down' answers once all stopped)."""
    release = asyncio.Event()

    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"ok": True, "done": True}

    server = await control.serve(tmp_path, slow)
    asked = asyncio.create_task(control.request(tmp_path, {"cmd": "down"}))
    await eventually(lambda: server.answering, timeout=5, what="the server answering a request")
    closing = asyncio.create_task(server.aclose())
    release.set()
    await closing
    assert (await asked) == {"ok": True, "done": True}


def test_a_long_state_dir_gets_a_short_socket_path(tmp_path: Path) -> None:
    """Unix socket paths are short (108 bytes): a deep state dir maps to a stable /tmp path."""
    deep = tmp_path / ("d" * 120)
    path = control.socket_path(deep)
    assert len(str(path)) <= 100 and path == control.socket_path(deep)
    assert path != control.socket_path(tmp_path / ("e" * 120))
    assert control.socket_path(tmp_path) == tmp_path.resolve() / "supervisor.sock"
