"""Fixtures that run the example shop with the real CLI, as a person would.

``shop`` (one per test module) copies ``examples/shop`` into a temporary
directory (so runs never share ``.qanat/``), runs ``qanat up DIR --port P`` on
a free port as a subprocess, and waits until it printed its table and
banner. ``fresh_shop`` is the same for one test (one that kills the
supervisor). Teardown always runs: ``qanat down``, then SIGKILL for the
supervisor and for any process still running from that directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qanat.testing import eventually_sync, free_port

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "shop"
QANAT = Path(sys.executable).parent / "qanat"
START_DEADLINE = 90.0  # seconds for the whole shop to start on a busy 2-core machine


class ShopRun:
    """One ``qanat up`` of a private copy of the shop."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.state = root / ".qanat"
        self.out_path = root / "qanat-up.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def start(self) -> None:
        with self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(QANAT), "up", str(self.root), "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "COLUMNS": "160"},
            )

        def started() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"qanat up exited with {self.proc.returncode}:\n{self.output()}")
            return "Ctrl-C stops everything" in self.output()

        eventually_sync(started, timeout=START_DEADLINE, interval=0.05,
                        what=lambda: f"qanat up to start; output so far:\n{self.output()}")

    def qanat(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``qanat ARGS -d ROOT`` and return its result (any exit status)."""
        return subprocess.run(
            [str(QANAT), *args, "-d", str(self.root)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "COLUMNS": "160"},
        )

    def status(self) -> list[dict[str, Any]]:
        """``qanat status --json``: one dict per process."""
        result = self.qanat("status", "--json", timeout=30)
        assert result.returncode == 0, result.stderr
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows

    def instance(self, name: str) -> dict[str, Any]:
        return next(r for r in self.status() if r["name"] == name)

    def stop(self) -> None:
        """``qanat down``; then kill the supervisor and every process left from this copy."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.qanat("down", timeout=60)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in leftover_pids(self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def leftover_pids(root: Path) -> list[int]:
    """Processes whose command line names ``root`` (instances, gateway, supervisor)."""
    needle = str(root).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry.name))
    return pids


def _copy_shop(dest: Path) -> Path:
    root = dest / "shop"
    shutil.copytree(SHOP, root, ignore=shutil.ignore_patterns(".qanat", "__pycache__"))
    return root


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopRun]:
    """The shop running under ``qanat up`` for every test of a module."""
    run = ShopRun(_copy_shop(tmp_path_factory.mktemp("e2e")), free_port())
    try:
        run.start()
        yield run
    finally:
        run.stop()


@pytest.fixture
def fresh_shop(tmp_path: Path) -> Iterator[ShopRun]:
    """The shop running under ``qanat up`` for one test only."""
    run = ShopRun(_copy_shop(tmp_path), free_port())
    try:
        run.start()
        yield run
    finally:
        run.stop()
