"""``python -m qanat.gateway``: serves a YAML route file and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
from test_gateway_support import UpstreamServer, connect_when_listening, get

from qanat.testing import free_port

pytestmark = pytest.mark.integration


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
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qanat.gateway", "--config", str(config), "--port", str(port),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        client = await connect_when_listening(port, proc)
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
