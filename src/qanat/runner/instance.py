"""Entry point of one service instance process: ``python -m qanat.runner.instance``.

The supervisor opens the listening socket and passes its file descriptor, so
a port is never raced between choosing and binding. Everything the service
needs to find the platform arrives in ``QANAT_*`` environment variables (see
``qanat.runner.env``); ``qanat.Service`` reads them.

On SIGTERM the instance first drains (not ready, deregistered), waits a
moment for watchers to see that, and only then lets uvicorn close the
listener and finish in-flight requests — so callers stop choosing it before
it stops accepting. A second SIGTERM or Ctrl-C exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from types import FrameType
from typing import Any

import uvicorn

PROPAGATION_DELAY = 0.3  # seconds for watchers to see the deregistration (sqlite wakes < 0.1 s)


class DrainingServer(uvicorn.Server):
    """uvicorn, with deregistration before the listener closes."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self.should_exit:
            super().handle_exit(sig, frame)  # second signal: uvicorn forces the exit
            return
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(self._begin_drain, sig, frame)

    def _begin_drain(self, sig: int, frame: FrameType | None) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain(sig, frame))

    async def _drain(self, sig: int, frame: FrameType | None) -> None:
        from qanat.runtime.service import running_services

        services = running_services()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*(s.drain() for s in services), return_exceptions=True)
        if services:
            await asyncio.sleep(PROPAGATION_DELAY)  # like a Kubernetes preStop delay
        super().handle_exit(sig, frame)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qanat.runner.instance")
    parser.add_argument("--app", required=True, help="'package.module:attribute' of the ASGI app")
    parser.add_argument("--fd", type=int, required=True, help="listening socket inherited")
    parser.add_argument("--root", required=True, help="directory the app is imported from")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)

    sys.path.insert(0, args.root)
    options: dict[str, Any] = {
        "fd": args.fd,
        "loop": "auto",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "timeout_graceful_shutdown": int(max(1, args.drain_timeout)),
        "server_header": False,
    }
    DrainingServer(uvicorn.Config(args.app, **options)).run()


if __name__ == "__main__":
    main()
