"""Entry point of one service instance process: ``python -m qanat.runner.instance``.

The supervisor opens the listening socket and passes its file descriptor, so
a port is never raced between choosing and binding. Everything the service
needs to find the platform arrives in ``QANAT_*`` environment variables (see
``qanat.runner.env``); ``qanat.Service`` reads them.

On SIGTERM (or Ctrl-C) the instance shuts down in this order:

1. drain every ``qanat.Service`` in the process: not ready, deregistered;
2. wait ``PROPAGATION_DELAY`` for watchers (gateway, clients) to notice,
   as a Kubernetes preStop hook does — the listener still accepts meanwhile;
3. close the listener (new connections are refused at once) and let
   in-flight requests finish, for at most ``--drain-timeout`` seconds;
4. the app's lifespan shutdown, then exit with status 0.

A second signal skips whatever is left of the waiting and exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Generator
from types import FrameType
from typing import Any

import uvicorn

PROPAGATION_DELAY = 0.3  # seconds for watchers to see the deregistration (sqlite wakes < 0.1 s)
log = logging.getLogger("qanat.instance")


class DrainingServer(uvicorn.Server):
    """uvicorn, with deregistration before the listener closes."""

    def __init__(
        self, config: uvicorn.Config, *, propagation_delay: float = PROPAGATION_DELAY
    ) -> None:
        super().__init__(config)
        self.propagation_delay = propagation_delay
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        for sock in sockets or ():
            log.info("listening on %s", sock.getsockname())
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Install our handler; unlike uvicorn's, do not re-raise the signal after a clean
        shutdown, so a drained instance exits 0 rather than dying of its SIGTERM."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self.should_exit or self._loop is None:
            self.should_exit = self.force_exit = True  # second signal: stop waiting
            return
        # A signal handler runs between two bytecodes of the loop's thread: schedule, do not run.
        self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        from qanat.runtime.service import running_services

        services = running_services()
        # Each drain() bounds its own deregistration; a failure must not block the exit.
        await asyncio.gather(*(s.drain() for s in services), return_exceptions=True)
        if services and not self.force_exit:
            log.info("draining: waiting %.2fs for watchers before closing", self.propagation_delay)
            await asyncio.sleep(self.propagation_delay)  # like a Kubernetes preStop delay
        self.should_exit = True  # uvicorn's main loop now closes the listener and drains


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qanat.runner.instance")
    parser.add_argument("--app", required=True, help="'package.module:attribute' of the ASGI app")
    parser.add_argument("--fd", type=int, required=True, help="listening socket inherited")
    parser.add_argument("--root", required=True, help="directory the app is imported from")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--propagation-delay", type=float, default=PROPAGATION_DELAY)
    args = parser.parse_args(argv)

    sys.path.insert(0, args.root)
    # The socket object owns the inherited fd itself (uvicorn's fd= would dup it and leave
    # the original open, so the port would keep accepting into a backlog nobody reads).
    listener = socket.socket(fileno=args.fd)
    options: dict[str, Any] = {
        "loop": "auto",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "timeout_graceful_shutdown": max(1, round(args.drain_timeout)),
        "server_header": False,
    }
    server = DrainingServer(
        uvicorn.Config(args.app, **options), propagation_delay=args.propagation_delay
    )
    server.run(sockets=[listener])
    if server.force_exit:
        sys.exit(1)  # interrupted before the drain finished


if __name__ == "__main__":
    main()
