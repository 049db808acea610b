"""Starting and stopping the benchmark's servers: free ports, readiness, cleanup.

Every child runs in its own session (process group) so ``stop`` ends it and
anything it forked (nginx's worker) together; ``Procs`` is a context manager
that stops everything it started, in reverse order, even when the run fails.
Readiness is waited on, never slept for: either the child's ``listening on
HOST:PORT`` line or a successful TCP connect, each with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out (for servers that cannot bind port 0 and tell)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    """``argv`` under ``taskset -c cpus`` when ``cpus`` is given."""
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


def wait_connectable(host: str, port: int, timeout: float = 10.0) -> None:
    """Return once ``host:port`` accepts a TCP connection; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            # a connect refusal returns at once: wait for the listener, not in a hot loop
            with selectors.DefaultSelector() as sel:
                sel.select(0.05)


class Procs:
    """The children of one benchmark run; ``with Procs() as procs:`` stops them all."""

    def __init__(self, log_dir: str) -> None:
        self._log_dir = log_dir  # each child's stderr goes to LOG_DIR/NAME.log
        self._children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.info: dict[str, list[str]] = {}

    def log(self, name: str) -> str:
        """The last lines a child wrote to stderr."""
        with contextlib.suppress(OSError), open(os.path.join(self._log_dir, f"{name}.log")) as f:
            return f.read()[-2000:]
        return ""

    def start(self, name: str, argv: Sequence[str], *, ready_line: bool = True,
              timeout: float = 20.0, env: dict[str, str] | None = None) -> str:
        """Start ``argv``; with ``ready_line`` wait for ``listening on H:P`` and return ``H:P``.

        Lines printed before that one are kept in ``info[name]``.
        """
        with open(os.path.join(self._log_dir, f"{name}.log"), "wb") as err:
            proc = subprocess.Popen(
                list(argv), stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL,
                stderr=err, start_new_session=True, env=env,
            )
        self._children.append((name, proc))
        if not ready_line:
            return ""
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while b"listening on " not in buf or not buf.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise TimeoutError(f"{name} did not say 'listening on' within {timeout}s")
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    proc.wait(5)
                    raise RuntimeError(f"{name} exited before listening:\n{self.log(name)}")
                buf += chunk
        lines = buf.decode().splitlines()
        at = next(i for i, ln in enumerate(lines) if ln.startswith("listening on "))
        self.info[name] = lines[:at]  # what the child said before it listened
        line = lines[at]
        return line.removeprefix("listening on ").strip()

    def stop(self, name: str) -> None:
        """Stop one child (and its process group)."""
        for i, (n, proc) in enumerate(self._children):
            if n == name:
                _terminate(proc)
                del self._children[i]
                return

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        while self._children:
            _terminate(self._children.pop()[1])


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


__all__ = ["Procs", "free_port", "pinned", "wait_connectable"]
