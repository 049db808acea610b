"""One supervised OS process: spawn, wait for readiness, restart with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from qanat.runner.guard import guarded
from qanat.runner.probe import http_status
from qanat.runner.restart import RestartBackoff

CRASH_LOOP = 3  # crashes before ever being ready: stop waiting for it (it keeps restarting)
LOG_TAIL_LINES = 3  # lines of a crashed process's log shown with the crash message


class Status(StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass
class ProcessSpec:
    """What to run. ``argv`` may contain ``{fd}`` and ``{port}``, filled at each start."""

    name: str  # e.g. "users-0" or "gateway"
    group: str  # e.g. "users"
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port, chosen once and kept across restarts when possible
    pass_socket: bool = True  # open the listening socket here and hand it over
    ready_path: str = "/ready"
    drain_timeout: float = 10.0


Notify = Callable[[str, str], None]  # (process name, message)


@dataclass
class Supervised:
    spec: ProcessSpec
    notify: Notify
    status: Status = Status.STOPPED
    pid: int | None = None
    restarts: int = 0
    started_at: float = 0.0
    last_exit: int | None = None
    backoff: RestartBackoff = field(default_factory=RestartBackoff)
    _proc: asyncio.subprocess.Process | None = None
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _was_ready: bool = False  # ready at least once: the next ready is a recovery
    _crash_loop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.port}"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"supervise {self.spec.name}")

    def stopping(self) -> bool:
        """True once ``stop()`` was called: an exit is then not a crash."""
        return self._stopping

    def crash_looping(self) -> bool:
        """True once it crashed ``CRASH_LOOP`` times without ever becoming ready."""
        return self._crash_loop.is_set()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until ready; False after ``timeout`` or as soon as it is crash-looping."""
        waits = [asyncio.create_task(e.wait()) for e in (self._ready, self._crash_loop)]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self._ready.is_set()

    async def _run(self) -> None:
        while not self.stopping():
            try:
                await self._spawn()
            except OSError as exc:
                self.status = Status.FAILED
                self.notify(self.spec.name, f"cannot start: {exc}")
                return
            assert self._proc is not None
            probe = asyncio.create_task(self._probe_until_ready())
            code = await self._proc.wait()
            probe.cancel()
            self._ready.clear()
            self.last_exit = code
            self.pid = None
            if self.stopping():
                break
            delay = self.backoff.crashed(time.monotonic())
            self.status = Status.RESTARTING
            self.restarts += 1
            if self.restarts >= CRASH_LOOP and not self._was_ready:
                self._crash_loop.set()
            # An exit status is the program's own failure (a traceback); a signal came from outside.
            lines = log_tail(self.spec.log_path) if code > 0 else []
            tail = "".join(f"\n    | {line}" for line in lines)
            self.notify(
                self.spec.name,
                f"exited with {_describe_exit(code)}; restarting in {delay:g}s "
                f"(restart {self.restarts}, log: {self.spec.log_path}){tail}",
            )
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(delay)  # real backoff between restarts, not a test wait
        self.status = Status.STOPPED

    async def _spawn(self) -> None:
        spec = self.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        sock = listen(spec.host, spec.port) if spec.pass_socket else None
        if sock is not None:
            spec.port = sock.getsockname()[1]
        elif spec.port == 0:
            spec.port = free_port(spec.host)  # the child binds it itself: a small race remains
        fill = {"fd": str(sock.fileno()) if sock else "", "port": str(spec.port)}
        # Guarded: the child gets SIGTERM from the kernel if this supervisor dies (guard.py).
        argv = guarded([a.format(**fill) for a in spec.argv])
        env = {**os.environ, **spec.env, "QANAT_PORT": str(spec.port)}
        log = spec.log_path.open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                pass_fds=(sock.fileno(),) if sock else (),
                start_new_session=True,  # Ctrl-C in the terminal reaches only the supervisor
            )
        finally:
            log.close()
            if sock is not None:
                sock.close()  # the child holds it now; a dead child refuses connections at once
        self.pid = self._proc.pid
        self.started_at = time.monotonic()
        self.backoff.started(self.started_at)
        self.status = Status.STARTING

    async def _probe_until_ready(self) -> None:
        while True:
            code = await http_status(self.spec.host, self.spec.port, self.spec.ready_path, 1.0)
            if code == 200:
                self.status = Status.READY
                self._ready.set()
                took = time.monotonic() - self.started_at
                again = " again" if self._was_ready else ""
                self._was_ready = True
                self.notify(self.spec.name, f"ready{again} at {self.url} ({took:.1f}s)")
                return
            await asyncio.sleep(0.05)  # polling interval of the readiness probe

    async def stop(self, *, kill_after: float | None = None) -> None:
        """SIGTERM, wait for the drain, then SIGKILL whatever is left."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            self.status = Status.STOPPING
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            grace = kill_after if kill_after is not None else self.spec.drain_timeout + 5.0
            try:
                async with asyncio.timeout(grace):
                    await proc.wait()
            except TimeoutError:
                self.notify(self.spec.name, f"did not stop within {grace:g}s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc is not None and proc.returncode is not None:
            self.last_exit = proc.returncode
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.status = Status.STOPPED
        self.pid = None


    def kill(self) -> None:
        """SIGKILL the process now (a second Ctrl-C); ``stop()`` then returns at once."""
        self._stopping = True
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()


def free_port(host: str) -> int:
    """A port that was free a moment ago (for children that must bind their own socket)."""
    with listen(host, 0) as sock:
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, width: int = 200) -> list[str]:
    """The last non-empty ``lines`` of a log file, each cut to ``width`` characters."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 8192))
            text = fh.read().decode(errors="replace")
    except OSError:
        return []
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return [line if len(line) <= width else line[: width - 1] + "…" for line in kept]


def listen(host: str, port: int, *, fallback: bool = True) -> socket.socket:
    """A listening, inheritable socket on ``host:port`` (another free port if that one is
    taken and ``fallback``: an instance restarted after its port was taken takes a new one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        if port == 0 or not fallback:
            sock.close()
            raise
        sock.bind((host, 0))  # the old port was taken meanwhile: take another
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"code {code}"


def python() -> str:
    """The interpreter to run instances with: the one running the supervisor."""
    return sys.executable
