"""Fixtures for tests against real servers (etcd here; Redis in ``tests/conftest.py``).

- ``etcd_url`` (session): the shared etcd on 127.0.0.1:2379, started by
  ``scripts/etcd.sh`` when it does not answer. If it still cannot be reached the
  test fails under CI (``CI`` is set) and is skipped on a developer's machine.
- ``private_etcd``: an etcd of the test's own, on free ports with its data in a
  tmp dir, that the test may ``stop()`` (SIGKILL, like a crash) and ``start()``
  again (optionally with a fresh data dir). Teardown always kills it.
- ``upstream``: a started ``UpstreamServer`` (``test_gateway_support``), closed
  at teardown.

This folder is put on ``sys.path`` here, so that test modules import the
shared ``test_gateway_support`` by name (pytest runs with
``--import-mode=importlib``, which does not add test folders to the path).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parents[1]
for _path in (_ROOT, _HERE):  # ``tests.contract`` and ``test_gateway_support`` importable
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from test_gateway_support import UpstreamServer  # noqa: E402  (needs the path above)

from qanat.testing import eventually, free_port  # noqa: E402

ETCD_SCRIPT = _ROOT / "scripts" / "etcd.sh"
SHARED_HOST, SHARED_PORT = "127.0.0.1", 2379
START_DEADLINE = 30.0


def etcd_healthy(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Whether an etcd answers ``GET /health`` with ``"health":"true"`` on ``host:port``."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=timeout) as reply:
            return b'"health":"true"' in reply.read()
    except OSError:
        return False


def unique_prefix() -> str:
    """A key namespace no other test uses."""
    return f"/qanat-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def etcd_url() -> str:
    """``etcd://127.0.0.1:2379`` once an etcd answers there (see the module docstring)."""
    if not etcd_healthy(SHARED_PORT):
        ran = subprocess.run(
            ["bash", str(ETCD_SCRIPT)], capture_output=True, text=True, timeout=600, check=False
        )
        if ran.returncode != 0 or not etcd_healthy(SHARED_PORT):
            why = f"etcd is not reachable on {SHARED_HOST}:{SHARED_PORT}; scripts/etcd.sh said:\n"
            why += ran.stderr[-2000:]
            if os.environ.get("CI"):
                pytest.fail(why)
            pytest.skip(why)
    return f"etcd://{SHARED_HOST}:{SHARED_PORT}"


class PrivateEtcd:
    """A single-member etcd owned by one test: start, kill, start again."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "etcd.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def url(self, prefix: str | None = None, **options: object) -> str:
        """An ``etcd://`` URL for this server, with a fresh namespace unless ``prefix`` is given."""
        query = {"prefix": prefix or unique_prefix(), **options}
        return f"etcd://{self.endpoint}?" + "&".join(f"{k}={v}" for k, v in query.items())

    async def start(self, *, fresh: bool = False) -> None:
        """Start the server (wiping its data first when ``fresh``); wait until it is healthy."""
        assert self.process is None, "already running"
        if fresh:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.process = process = self._spawn()

        def healthy() -> Awaitable[bool]:
            if process.poll() is not None:
                raise AssertionError(f"private etcd exited with {process.returncode}: {tail()}")
            return asyncio.to_thread(etcd_healthy, self.client_port, timeout=0.5)

        def tail() -> str:
            return self.log_path.read_text(errors="replace")[-2000:]

        try:
            await eventually(healthy, timeout=START_DEADLINE, interval=0.05,
                             what=lambda: f"private etcd to become healthy; log tail:\n{tail()}")
        except AssertionError:
            self.stop()
            raise

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        client, peer = f"http://{self.endpoint}", f"http://127.0.0.1:{self.peer_port}"
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [
                    self.binary,
                    "--name=private",
                    f"--data-dir={self.data_dir}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=private={peer}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """Kill the server with SIGKILL (a crash, not a clean shutdown) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None


@pytest.fixture
async def private_etcd(etcd_url: str, tmp_path: Path) -> AsyncIterator[PrivateEtcd]:
    """A started private etcd (see ``PrivateEtcd``); killed at teardown whatever happened."""
    binary = shutil.which("etcd")
    if binary is None:
        message = "the etcd binary is not on PATH (scripts/etcd.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = PrivateEtcd(binary, tmp_path)
    try:
        await server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def shared_etcd_url(etcd_url: str) -> Iterator[str]:
    """The shared etcd with a fresh key namespace for this test."""
    yield f"{etcd_url}?prefix={unique_prefix()}"


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamServer]:
    """A started ``UpstreamServer``; closed (every connection aborted) at teardown."""
    up = await UpstreamServer().start()
    yield up
    await up.close()
