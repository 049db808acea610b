"""``python -m qanat.gateway``: serves a YAML route file and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# pytest runs with --import-mode=importlib: make the shared helpers next to this file importable
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gateway_support import RawClient, UpstreamServer, get

pytestmark = pytest.mark.integration


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamServer]:
    up = await UpstreamServer().start()
    yield up
    await up.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _connect_when_listening(port: int, timeout: float = 20.0) -> RawClient:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await RawClient.connect(port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)  # polling the real condition: is the port open yet


async def test_module_serves_config_and_stops_on_sigterm(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    """The CLI serves the routes in the file and exits 0 on SIGTERM."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "limits: {header_timeout: 5s, max_body_bytes: 1024}\n"
        "routes:\n"
        "  - name: api\n"
        "    match: {prefix: /api}\n"
        f"    upstream: {{kind: static, targets: [{{url: 'http://127.0.0.1:{upstream.port}'}}]}}\n"
    )
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qanat.gateway", "--config", str(config), "--port", str(port),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        client = await _connect_when_listening(port)
        reply = await client.request(get("/api/hello"))
        assert reply.status == 200 and reply.json()["path"] == "/api/hello"
        reply = await client.request(
            b"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 2048\r\n\r\n")
        assert reply.status == 413  # the file's limits apply
        await client.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_module_rejects_a_bad_file_naming_the_route(tmp_path: Path) -> None:
    """A bad route file exits with status 2 and a message naming the route and line."""
    config = tmp_path / "gateway.yaml"
    config.write_text("routes:\n  - name: users\n    upstream: {kind: consul}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qanat.gateway", "--config", str(config), "--port", "0",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"route 'users' (routes[0])" in err and f"{config}:3".encode() in err
