"""``python -m qanat.gateway --topology``: what ``qanat up`` starts, as a real process."""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from test_gateway_support import Response, UpstreamServer, connect_when_listening, get

from qanat.backends import open_registry
from qanat.ports import Instance
from qanat.testing import eventually, free_port

pytestmark = pytest.mark.integration
SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop" / "qanat.yaml"


async def _request(port: int, path: str, timeout: float = 20.0) -> Response:
    """GET ``path`` on a new connection, once the port accepts one."""
    client = await connect_when_listening(port, timeout=timeout)
    try:
        return await client.request(get(path))
    finally:
        await client.close()


async def _until_status(port: int, path: str, status: int, timeout: float = 20.0) -> Response:
    """GET ``path`` (a new connection each time) until it answers ``status``."""
    last: list[Response] = []

    async def answered() -> Response | None:
        reply = await _request(port, path, timeout)
        last[:] = [reply]
        return reply if reply.status == status else None

    return await eventually(answered, timeout=timeout, interval=0.05,
                            what=lambda: f"{path} to answer {status}; last answer: {last}")


async def _gateway(topology: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qanat.gateway", "--topology", str(topology),
        "--access-log", "off", *args, stderr=asyncio.subprocess.PIPE)


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_topology_gateway_routes_through_the_registry(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    """The shop's topology runs: ready flips to 200, /api/users/* reaches the registered
    instance (rewritten), the admin port lists the routes, SIGTERM exits 0."""
    shutil.copy(SHOP, tmp_path / "qanat.yaml")
    registry = await open_registry(f"sqlite:///{tmp_path}/.qanat/control.db")
    port, admin = free_port(), free_port()
    proc = await _gateway(tmp_path / "qanat.yaml", "--port", str(port),
                          "--admin-port", str(admin))
    try:
        await registry.register(Instance("users-0", "users", "127.0.0.1", upstream.port))
        ready = await _until_status(port, "/__qanat/ready", 200)
        assert ready.status == 200, ready.body
        reply = await _request(port, "/api/users/7")
        assert reply.status == 200 and reply.json()["path"] == "/users/7"
        routes = (await _request(admin, "/routes")).json()
        assert [r["name"] for r in routes["routes"]] == ["users", "products"]
        assert routes["source"] == "config store" and routes["revision"] >= 1
        assert await _stop(proc) == 0
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        assert f"qanat gateway: http://127.0.0.1:{port}" in err
        # the build this test runs on: pure under make test, compiled under make test-compiled
        spec = importlib.util.find_spec("qanat.gateway.proxy")
        assert spec is not None and spec.origin is not None
        compiled = spec.origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
        assert ("| compiled |" if compiled else "| pure Python |") in err
    finally:
        await _stop(proc)
        await registry.close()


async def test_two_workers_share_the_port(tmp_path: Path) -> None:
    """With --workers 2 both processes answer on the one port; SIGTERM stops them all."""
    shutil.copy(SHOP, tmp_path / "qanat.yaml")
    port = free_port()
    proc = await _gateway(tmp_path / "qanat.yaml", "--port", str(port), "--workers", "2")
    try:
        pids: set[int] = set()

        async def both_answered() -> bool:
            reply = await _request(port, "/__qanat/health")  # a new connection each time
            if reply.status == 200:
                pids.add(reply.json()["pid"])
            return len(pids) == 2

        await eventually(both_answered, timeout=30, interval=0,
                         what=lambda: f"both workers to answer; pids so far: {pids}")
        assert proc.pid not in pids
        assert await _stop(proc) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                _signal_zero(pid)
    finally:
        await _stop(proc)


def _signal_zero(pid: int) -> None:
    os.kill(pid, 0)


async def test_bad_topology_exits_2_naming_the_file(tmp_path: Path) -> None:
    """A topology with an invalid route exits with status 2 and names the file and line."""
    bad = tmp_path / "qanat.yaml"
    bad.write_text("name: x\nservices: {}\ngateway:\n  routes:\n    - name: r\n"
                   "      upstream: {kind: nope}\n")
    proc = await _gateway(bad)
    assert await asyncio.wait_for(proc.wait(), 30) == 2
    assert proc.stderr is not None
    assert "qanat.yaml:6" in (await proc.stderr.read()).decode()
