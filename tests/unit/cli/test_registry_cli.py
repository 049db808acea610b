"""``qanat registry``: listing through CliRunner, and the watch commands as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qanat.backends.sqlite import SqliteConfigStore, SqliteRegistry
from qanat.cli import app
from qanat.ports import Health, Instance

runner = CliRunner()
QANAT = str(Path(sys.executable).with_name("qanat"))
DEADLINE = 10.0


@pytest.fixture
def backend(tmp_path: Path) -> str:
    """The URL of a fresh control database."""
    return f"sqlite:///{tmp_path}/control.db"


def populate(url: str) -> None:
    """Register three instances (one critical, one disabled) that outlive this call."""

    async def go() -> None:
        registry = await SqliteRegistry.open(url)
        await registry.register(Instance("o-1", "orders", "127.0.0.1", 8001, version="2"), ttl=300)
        await registry.register(Instance("o-2", "orders", "127.0.0.1", 8002), ttl=300)
        await registry.register(Instance("p-1", "payments", "10.0.0.5", 9000), ttl=300)
        await registry.set_health("orders", "o-2", Health.CRITICAL)
        await registry.set_enabled("payments", "p-1", False)
        await registry.close(deregister=False)

    asyncio.run(go())


def test_ls_without_service_summarises_every_service(backend: str) -> None:
    """ls lists each service with its instance and routable counts."""
    populate(backend)
    result = runner.invoke(app, ["registry", "ls", "--backend", backend, "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert sorted(data) == ["orders", "payments"]
    assert [(i["id"], i["routable"]) for i in data["orders"]] == [("o-1", True), ("o-2", False)]
    table = runner.invoke(app, ["registry", "ls", "--backend", backend]).stdout
    assert "orders" in table and "payments" in table


def test_ls_service_shows_health_and_enabled(backend: str) -> None:
    """ls SERVICE shows every instance with health and enabled; --routable hides the rest."""
    populate(backend)
    result = runner.invoke(app, ["registry", "ls", "orders", "--backend", backend])
    assert result.exit_code == 0
    assert "o-1" in result.stdout and "critical" in result.stdout
    routable = runner.invoke(
        app, ["registry", "ls", "orders", "--routable", "--json", "--backend", backend]
    )
    assert [i["id"] for i in json.loads(routable.stdout)] == ["o-1"]
    assert json.loads(routable.stdout)[0]["url"] == "http://127.0.0.1:8001"


async def start(*args: str, backend: str) -> asyncio.subprocess.Process:
    """Start ``qanat ARGS --backend URL --json`` as its own process."""
    return await asyncio.create_subprocess_exec(
        QANAT,
        *args,
        "--backend",
        backend,
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120"},
    )


async def line(proc: asyncio.subprocess.Process) -> dict[str, object]:
    """The next JSON line the process prints."""
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), DEADLINE)
    assert raw, "the process ended early"
    data: dict[str, object] = json.loads(raw)
    return data


async def interrupt(proc: asyncio.subprocess.Process) -> tuple[int, bytes]:
    """Send Ctrl-C (SIGINT); return the exit code and what went to stderr."""
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode is not None
    return proc.returncode, err


async def test_registry_watch_prints_snapshots_and_stops_on_ctrl_c(backend: str) -> None:
    """registry watch prints the current snapshot, one per change, and exits cleanly on Ctrl-C."""
    registry = await SqliteRegistry.open(backend)
    proc = await start("registry", "watch", "orders", backend=backend)
    try:
        assert (await line(proc))["instances"] == []
        await registry.register(Instance("o-1", "orders", "127.0.0.1", 8001), ttl=30)
        snapshot = await line(proc)
        assert [i["id"] for i in snapshot["instances"]] == ["o-1"]  # type: ignore[attr-defined]
        code, err = await interrupt(proc)
        assert code == 130 and b"Traceback" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await registry.close()


async def test_config_watch_prefix_follows_changes_and_stops_on_ctrl_c(backend: str) -> None:
    """config watch --prefix prints each change under the prefix and exits cleanly on Ctrl-C."""
    store = await SqliteConfigStore.open(backend)
    start_revision = await store.set("flags/probe", "x") + 1
    proc = await start(
        "config",
        "watch",
        "flags/",
        "--prefix",
        "--from-revision",
        str(start_revision),
        backend=backend,
    )
    try:
        await store.set("flags/dark-mode", "on")
        await store.set("other", "ignored")
        await store.delete("flags/dark-mode")
        first, second = await line(proc), await line(proc)
        assert (first["key"], first["type"], first["new_value"]) == (
            "flags/dark-mode",
            "added",
            "on",
        )
        assert (second["type"], second["old_value"]) == ("deleted", "on")
        code, err = await interrupt(proc)
        assert code == 130 and b"Traceback" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await store.close()
