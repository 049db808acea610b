"""Instances die with their supervisor: the parent-death signal set by the guard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qanat.runner.guard import guarded
from qanat.testing import eventually_sync

# A parent that starts a guarded child (which records its pid, then waits for a signal)
# and then waits forever itself, to be killed by the test.
PARENT = """
import subprocess, sys, time
from qanat.runner.guard import guarded
child = [sys.executable, "-c", sys.argv[2]]
subprocess.Popen(guarded(child), start_new_session=True)
time.sleep(600)
"""
CHILD = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: (open({out!r} + ".term", "w").close(), sys.exit(0)))
with open({out!r}, "w") as f: f.write(str(os.getpid()))
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_child_gets_sigterm_when_its_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL to the parent: the guarded child, in its own session, still gets SIGTERM."""
    out = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, "x", CHILD.format(out=str(out))])
    try:
        eventually_sync(out.exists, timeout=20, interval=0.02, what="the child to start")
        pid = int(out.read_text())
        assert os.getpgid(pid) != os.getpgid(parent.pid)  # not reachable by a group signal
        parent.kill()
        parent.wait()
        term = Path(str(out) + ".term")
        eventually_sync(term.exists, timeout=10, interval=0.02, what="the child to get SIGTERM")
    finally:
        parent.kill()
        parent.wait()


def test_guarded_keeps_the_command_and_its_pid_contract() -> None:
    """The wrapped command ends with the original argv, after this pid and the signal number."""
    argv = ["/bin/true", "--flag"]
    wrapped = guarded(argv, sig=signal.SIGINT)
    if sys.platform.startswith("linux"):
        assert wrapped[-4:] == [str(os.getpid()), str(int(signal.SIGINT)), *argv]
        assert subprocess.run(wrapped, timeout=10).returncode == 0  # it does exec the command
    else:
        assert wrapped == argv


def test_elsewhere_than_linux_the_command_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a parent-death signal in the kernel, the command runs as given."""
    monkeypatch.setattr(sys, "platform", "darwin")
    assert guarded(["/bin/true"]) == ["/bin/true"]
