"""SIGTERM on a real instance process: deregister, then close the listener, then drain, exit 0.

The instance runs as ``qanat up`` runs it: ``python -m qanat.runner.instance``
on a listening socket opened here and handed over by file descriptor, with
its ``QANAT_*`` environment, registering in a SQLite registry file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from qanat.backends import open_registry
from qanat.ports import Registry
from qanat.runner.env import InstanceEnv
from qanat.testing import eventually

pytestmark = pytest.mark.integration

DEADLINE = 20.0  # seconds any awaited condition may take on a loaded machine

APP = textwrap.dedent(
    """
    import asyncio, os, pathlib
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    import qanat

    HERE = pathlib.Path(os.environ["DRAIN_TEST_DIR"])

    async def slow(request):
        (HERE / "started").touch()
        while not (HERE / "release").exists():  # held open until the test releases it
            await asyncio.sleep(0.01)
        return JSONResponse({"done": True})

    app = Starlette(routes=[Route("/slow", slow)])
    service = qanat.Service(app, "slowpoke")
    """
)


@dataclass
class Instance:
    proc: asyncio.subprocess.Process
    port: int
    registry: Registry
    dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def accepts(port: int) -> bool:
    """Whether a TCP connection to the port is accepted now (refused: the listener is closed)."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


@pytest.fixture
async def instance(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Instance]:
    """The instance process, its listener already open; killed at teardown if still running.

    Its propagation delay (deregistered -> listener closed) is 1 s, or the test's
    indirect parameter."""
    delay = getattr(request, "param", 1.0)
    (tmp_path / "drain_app.py").write_text(APP)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    registry_url = f"sqlite:///{tmp_path}/control.db"
    env = InstanceEnv(
        service="slowpoke",
        instance_id="slowpoke-0",
        host="127.0.0.1",
        port=port,
        registry=registry_url,
        config=registry_url,
        events=f"sqlite:///{tmp_path}/events.db",
        database_url="",
        tags=("blue",),
        ttl=5.0,
        state_dir=str(tmp_path / "state"),
    )
    log = tmp_path / "instance.log"
    argv = [
        sys.executable, "-m", "qanat.runner.instance", "--app", "drain_app:app",
        "--fd", str(listener.fileno()), "--root", str(tmp_path),
        "--drain-timeout", "15",
        # A wide window between deregistering and closing, so the test can observe it.
        "--propagation-delay", str(delay),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **env.to_env(), "DRAIN_TEST_DIR": str(tmp_path)},
            pass_fds=(listener.fileno(),),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    listener.close()  # the child holds the only copy now: its close is the real close
    registry = await open_registry(registry_url)
    try:
        yield Instance(proc, port, registry, tmp_path, log)
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), DEADLINE)
        await registry.close()


async def registered(instance: Instance) -> bool:
    return bool(await instance.registry.discover("slowpoke", healthy_only=False))


async def until_ready(client: httpx.AsyncClient, instance: Instance) -> None:
    """Wait until the instance answers /ready with 200 (refused connections: not yet)."""

    async def ready() -> bool:
        return (await client.get("/ready")).status_code == 200

    await eventually(ready, timeout=DEADLINE, ignore=(httpx.TransportError,),
                     what=lambda: f"instance ready; its log:\n{instance.output()[-2000:]}")


async def test_sigterm_deregisters_before_closing_and_finishes_in_flight(
    instance: Instance,
) -> None:
    """SIGTERM: deregistered while the listener still accepts, then refused, the slow
    request in flight completes with 200, and the process exits 0."""
    base = f"http://127.0.0.1:{instance.port}"
    async with httpx.AsyncClient(base_url=base, timeout=DEADLINE) as client:
        await until_ready(client, instance)
        [inst] = await instance.registry.discover("slowpoke")
        assert (inst.id, inst.port, inst.tags) == ("slowpoke-0", instance.port, ("blue",))

        slow = asyncio.create_task(client.get("/slow"))
        await eventually((instance.dir / "started").exists, timeout=DEADLINE,
                         what="the slow request to start")
        instance.proc.send_signal(signal.SIGTERM)

        gone_while_open = False  # seen: deregistered while the listener still accepted

        async def listener_closed() -> bool:
            nonlocal gone_while_open
            open_now = await accepts(instance.port)
            is_registered = await registered(instance)
            if not open_now:
                assert not is_registered, "the listener closed while still registered"
                return True
            gone_while_open = gone_while_open or not is_registered
            assert not slow.done(), "the in-flight request ended before the drain"
            return False

        await eventually(listener_closed, timeout=DEADLINE, interval=0,
                         what="the listener to close after SIGTERM")
        assert gone_while_open, "never saw the instance deregistered while still accepting"

        assert instance.proc.returncode is None, "exited before the in-flight request finished"
        (instance.dir / "release").touch()
        response = await slow
    assert response.status_code == 200
    assert response.json() == {"done": True}
    assert await asyncio.wait_for(instance.proc.wait(), DEADLINE) == 0, instance.output()


@pytest.mark.parametrize("instance", [0.1], indirect=True)  # no window to observe here
async def test_drain_is_logged_in_order_as_json(instance: Instance) -> None:
    """The instance's JSON log shows the deregistration before uvicorn's shutdown."""
    base = f"http://127.0.0.1:{instance.port}"
    async with httpx.AsyncClient(base_url=base, timeout=DEADLINE) as client:
        await until_ready(client, instance)
    instance.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(instance.proc.wait(), DEADLINE) == 0, instance.output()
    lines = [json.loads(line) for line in instance.output().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    deregistered = next(i for i, e in enumerate(events) if e.startswith("deregistered"))
    shutting_down = events.index("Shutting down")
    assert deregistered < shutting_down
    assert all(line["service"] == "slowpoke" for line in lines)
    assert not await registered(instance)
