"""How ``qanat up`` ends: Ctrl-C, SIGTERM, and the supervisor itself being killed."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from tests.e2e.conftest import QANAT, ShopRun, leftover_pids

from qanat.testing import eventually_sync

pytestmark = pytest.mark.e2e


def _pids(shop: ShopRun) -> list[int]:
    pids = [int(r["pid"]) for r in shop.status() if r["pid"]]
    assert len(pids) == 5  # two users, two catalog, the gateway
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_everything_gracefully(fresh_shop: ShopRun, sig: signal.Signals) -> None:
    """Ctrl-C (SIGINT) or SIGTERM to the supervisor drains every instance and exits 0."""
    pids = _pids(fresh_shop)
    assert fresh_shop.proc is not None
    fresh_shop.proc.send_signal(sig)
    assert fresh_shop.proc.wait(timeout=60) == 0
    out = fresh_shop.output()
    assert "stopping: draining instances" in out and "qanat stopped." in out
    assert "restarting" not in out.split("stopping: draining")[1]  # no stop counted as a crash
    assert not [p for p in pids if _alive(p)]
    logs = (fresh_shop.state / "logs" / "users-0.log").read_text()
    assert "deregistered users-0" in logs  # drained, not killed


def test_killed_supervisor_leaves_no_orphans(fresh_shop: ShopRun) -> None:
    """SIGKILL to the supervisor: the kernel tells each instance, which drains and exits."""
    pids = _pids(fresh_shop)
    assert fresh_shop.proc is not None
    fresh_shop.proc.kill()
    fresh_shop.proc.wait(timeout=10)
    eventually_sync(
        lambda: not [p for p in pids if _alive(p)],
        timeout=30,
        interval=0.05,
        what="the orphaned instances to exit",
    )
    assert not leftover_pids(fresh_shop.root)
    logs = (fresh_shop.state / "logs" / "catalog-0.log").read_text()
    assert "deregistered catalog-0" in logs


def test_second_up_is_refused_and_down_returns_once_stopped(fresh_shop: ShopRun) -> None:
    """A second 'qanat up' of a running system exits 1 untouched; 'qanat down' from another
    terminal answers only when every process is gone, and 'qanat up' then exits 0."""
    pids = _pids(fresh_shop)
    second = subprocess.run(
        [str(QANAT), "up", str(fresh_shop.root), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert "already runs" in second.stderr
    assert all(r["status"] == "ready" for r in fresh_shop.status())

    result = fresh_shop.qanat("down", timeout=90)
    assert result.returncode == 0, result.stderr
    assert "stopped" in result.stdout
    assert not [p for p in pids if _alive(p)]
    assert fresh_shop.proc is not None
    assert fresh_shop.proc.wait(timeout=10) == 0
    again = fresh_shop.qanat("status")
    assert again.returncode == 1 and "no running 'qanat up'" in again.stderr
