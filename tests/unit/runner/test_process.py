"""One supervised process: readiness, crash restarts, graceful and forced stops, crash loops."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from qanat.runner.probe import http_status
from qanat.runner.process import CRASH_LOOP, ProcessSpec, Status, Supervised, log_tail
from qanat.runner.restart import RestartBackoff, RestartSettings
from qanat.testing import eventually

FAKE = Path(__file__).parent / "fake_instance.py"
FAST = RestartSettings(base=0.01, cap=0.05)  # restart delays short enough for a unit test


class Notes(list[tuple[str, str]]):
    def __call__(self, name: str, message: str) -> None:
        self.append((name, message))

    def text(self) -> str:
        return "\n".join(f"{n} {m}" for n, m in self)


def make(tmp_path: Path, notes: Notes, mode: str = "serve", **kw: object) -> Supervised:
    spec = ProcessSpec(
        name="fake-0",
        group="fake",
        argv=[sys.executable, str(FAKE), "--fd", "{fd}"],
        env={"FAKE_MODE": mode},
        log_path=tmp_path / "logs" / "fake-0.log",
        drain_timeout=5.0,
        **kw,  # type: ignore[arg-type]
    )
    return Supervised(spec, notes, backoff=RestartBackoff(FAST))


async def test_ready_after_the_probe_answers_200(tmp_path: Path) -> None:
    """The process is ready once GET /ready answers 200 on the port handed over, and says so."""
    notes = Notes()
    proc = make(tmp_path, notes)
    proc.start()
    try:
        assert await proc.wait_ready(15)
        assert proc.status is Status.READY and proc.spec.port > 0
        assert await http_status("127.0.0.1", proc.spec.port, "/ready", 2) == 200
        assert notes == [("fake-0", notes[0][1])]
        assert notes[0][1].startswith(f"ready at {proc.url} (")
    finally:
        await proc.stop()


async def test_crash_is_restarted_on_the_same_port_and_reported(tmp_path: Path) -> None:
    """SIGKILL: the supervisor says it exited and restarts it on the same port, ready again."""
    notes = Notes()
    proc = make(tmp_path, notes)
    proc.start()
    try:
        assert await proc.wait_ready(15)
        port, pid = proc.spec.port, proc.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: proc.restarts == 1 and proc.status is Status.READY,
                         timeout=15, interval=0.02,
                         what=lambda: f"one restart, ready ({proc.restarts}, {proc.status})")
        assert proc.spec.port == port and proc.pid not in (None, pid)
        assert proc.last_exit == -signal.SIGKILL
        text = notes.text()
        assert "fake-0 exited with signal SIGKILL; restarting in 0.01s (restart 1" in text
        assert f"fake-0 ready again at {proc.url}" in text
    finally:
        await proc.stop()


async def test_stop_is_a_sigterm_and_not_a_crash(tmp_path: Path) -> None:
    """stop() sends SIGTERM, waits for the exit, and nothing is restarted or reported."""
    notes = Notes()
    proc = make(tmp_path, notes, mode="slow-term")
    proc.start()
    assert await proc.wait_ready(15)
    await proc.stop()
    assert proc.status is Status.STOPPED and proc.pid is None
    assert proc.restarts == 0
    assert "got SIGTERM" in proc.spec.log_path.read_text()
    assert not [m for _, m in notes if "exited" in m]


async def test_stop_kills_what_does_not_stop_in_time(tmp_path: Path) -> None:
    """A process that ignores SIGTERM is killed after the grace period, and that is said."""
    notes = Notes()
    proc = make(tmp_path, notes, mode="ignore-term")
    proc.start()
    assert await proc.wait_ready(15)
    pid = proc.pid
    assert pid is not None
    await proc.stop(kill_after=0.3)
    assert proc.status is Status.STOPPED
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "did not stop within 0.3s; killing it" in notes.text()


async def test_kill_ends_the_process_at_once(tmp_path: Path) -> None:
    """kill() (the second Ctrl-C) SIGKILLs a draining process; stop() then returns."""
    notes = Notes()
    proc = make(tmp_path, notes, mode="ignore-term")
    proc.start()
    assert await proc.wait_ready(15)
    pid = proc.pid
    assert pid is not None
    stopping = asyncio.create_task(proc.stop(kill_after=60))
    await eventually(lambda: proc.status is Status.STOPPING, timeout=15, interval=0.02,
                     what=lambda: f"status STOPPING, not {proc.status}")
    proc.kill()
    async with asyncio.timeout(10):  # far below the 60 s grace stop() would have given it
        await stopping
    assert proc.status is Status.STOPPED and proc.last_exit == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "killing it" not in notes.text()


async def test_a_crash_loop_stops_the_wait_and_shows_the_log(tmp_path: Path) -> None:
    """A process that never gets ready ends wait_ready early; each crash shows its last log line."""
    notes = Notes()
    proc = make(tmp_path, notes, mode="crash")
    proc.start()
    try:
        assert not await proc.wait_ready(60)
        assert proc.crash_looping() and proc.restarts >= CRASH_LOOP
        assert "exited with code 1" in notes.text()
        assert "    | boom" in notes.text()
    finally:
        await proc.stop()
    assert proc.status is Status.STOPPED


def test_log_tail_keeps_the_last_non_empty_lines_cut_to_width(tmp_path: Path) -> None:
    """log_tail returns the last lines that have text, each at most ``width`` characters."""
    log = tmp_path / "x.log"
    log.write_text("one\n\ntwo\n" + "x" * 50 + "\n\n")
    assert log_tail(log, lines=2, width=10) == ["two", "x" * 9 + "…"]
    assert log_tail(tmp_path / "missing.log") == []
