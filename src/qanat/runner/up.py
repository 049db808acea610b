"""One run of ``qanat up``: start, show progress, serve the control socket, stop.

The sequence: refuse early when the gateway's port is taken; open the
registry (for the health column); listen on the control socket; start every
instance; show progress until all are ready (or ``ready_timeout``); print the
table and the banner; then wait for Ctrl-C, SIGTERM or ``qanat down``.

Stopping is graceful: the gateway first, then services in reverse dependency
order, each drained (deregistered, in-flight requests finished). A second
Ctrl-C or SIGTERM during the drain kills what is left (exit status 130).
A ``qanat down`` gets its answer only once everything has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

from rich.console import Console
from rich.live import Live

from qanat.backends import open_registry
from qanat.ports import Registry
from qanat.runner import control
from qanat.runner.display import banner, progress_title, status_table
from qanat.runner.supervisor import GATEWAY, Supervisor
from qanat.topology import Topology

MAX_REPLICAS = 64
SCALE_READY_TIMEOUT = 60.0  # a 'qanat scale' waits this long for the new instances
HEALTH_SETTLE = 5.0  # seconds the final table waits for first health reports
FORCED = 130  # exit status after a second Ctrl-C (128 + SIGINT, as shells report it)


class UpSession:
    """Runs one topology until asked to stop; ``run()`` returns the exit status."""

    def __init__(
        self,
        topology: Topology,
        *,
        console: Console,
        gateway_port: int | None = None,
        ready_timeout: float = 60.0,
        where: str = "",
    ) -> None:
        self.topo = topology
        self.console = console
        self.ready_timeout = ready_timeout
        self.where = where
        self.sup = Supervisor(topology, notify=self._notify, gateway_port=gateway_port)
        self.registry: Registry | None = None
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._signals = 0

    def _notify(self, name: str, message: str) -> None:
        self.console.print(f"[bold]{name}[/bold] {message}", soft_wrap=True)

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            self._stop.set()
        elif self._signals == 2:
            self.console.print("[bold]qanat[/bold] forced: killing every process")
            self.sup.kill()

    async def rows(self) -> list[dict[str, Any]]:
        """The status table's rows, health from the registry."""
        health = await self.sup.health(self.registry) if self.registry is not None else {}
        return [p.to_dict() for p in self.sup.processes(health)]

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one control-socket request (status, scale, down)."""
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "name": self.topo.name, "processes": await self.rows()}
        if cmd == "down":
            self._stop.set()
            await self._stopped.wait()
            return {"ok": True}
        if cmd == "scale":
            return await self._scale(str(req.get("service")), req.get("replicas"))
        return {"ok": False, "error": f"unknown command {cmd!r} (status, scale, down)"}

    async def _scale(self, service: str, replicas: Any) -> dict[str, Any]:
        if service not in self.topo.services:
            known = ", ".join(sorted(self.topo.services))
            return {"ok": False, "error": f"unknown service {service!r} (services: {known})"}
        if not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
            return {"ok": False, "error": f"replicas must be between 0 and {MAX_REPLICAS}"}
        if self._stop.is_set():
            return {"ok": False, "error": "the system is stopping"}
        started = await self.sup.scale(service, replicas)
        ready = await asyncio.gather(*(p.wait_ready(SCALE_READY_TIMEOUT) for p in started))
        late = [p.spec.name for p, ok in zip(started, ready, strict=True) if not ok]
        self._notify(service, f"scaled to {replicas}")
        return {"ok": True, "started": [p.spec.name for p in started], "not_ready": late}

    async def run(self) -> int:
        """Start, wait for a stop, stop. ``ConfigError``/``BackendUnreachable`` propagate
        before anything started (gateway port taken, registry unreachable)."""
        self.sup.check_gateway_port()
        self.registry = await open_registry(self.topo.backend_url("registry"))
        server = await control.serve(self.topo.state_path, self.handle)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            await self._start()
            if not self._stop.is_set():
                await self._stop.wait()
            self.console.print(
                "[bold]qanat[/bold] stopping: draining instances (Ctrl-C again to force)…"
            )
            await self.sup.stop()
        finally:
            self._stopped.set()
            await server.aclose()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            with contextlib.suppress(Exception):
                await self.registry.close(deregister=False)
        self.console.print("[bold]qanat[/bold] stopped.")
        return FORCED if self._signals >= 2 else 0

    async def _start(self) -> None:
        topo = self.topo
        self.console.print(
            f"[bold]qanat[/bold] starting [cyan]{topo.name}[/cyan] from {topo.root} "
            f"(state in {topo.state_path})"
        )
        began = time.monotonic()
        await self.sup.start()
        waiter = asyncio.create_task(self.sup.wait_ready(self.ready_timeout))
        await self._show_progress(waiter, began)
        if self._stop.is_set():
            waiter.cancel()
            return
        late = waiter.result()
        took = time.monotonic() - began
        rows = await self._settled_rows()
        self.console.print(status_table(rows, f"{topo.name}: up in {took:.1f}s"))
        if late:
            w = f" {self.where}" if self.where else ""
            self.console.print(
                f"[yellow]not ready (crashing, or slower than {self.ready_timeout:g}s):"
                f"[/yellow] {', '.join(late)}; they keep being restarted — see "
                f"'qanat logs SERVICE{w}'",
                soft_wrap=True,
            )
        gateway = [p for p in self.sup.processes() if p.group == GATEWAY]
        banner(self.console, gateway[0].url if gateway else None, self.where)

    async def _settled_rows(self, timeout: float = HEALTH_SETTLE) -> list[dict[str, Any]]:
        """The rows once every ready instance's first health report is in (or ``timeout``):
        an instance registers a moment before it reports itself passing."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.rows()
            pending = [
                r for r in rows
                if r["group"] != GATEWAY and r["status"] == "ready" and r["health"] != "passing"
            ]  # fmt: skip
            if not pending or time.monotonic() > deadline or self._stop.is_set():
                return rows
            await asyncio.sleep(0.1)  # polling the registry for a real condition

    async def _show_progress(self, waiter: asyncio.Task[list[str]], began: float) -> None:
        """Until every process is ready: a live table on a terminal, event lines otherwise."""
        stop = asyncio.create_task(self._stop.wait())
        try:
            if not self.console.is_terminal:
                await asyncio.wait([waiter, stop], return_when=asyncio.FIRST_COMPLETED)
                return

            def table() -> Any:
                rows = [p.to_dict() for p in self.sup.processes()]
                return status_table(rows, progress_title(rows, time.monotonic() - began))

            with Live(table(), console=self.console, refresh_per_second=8, transient=True) as live:
                while not waiter.done() and not stop.done():
                    await asyncio.wait([waiter, stop], timeout=0.125)  # redraw rate of the table
                    live.update(table())
        finally:
            stop.cancel()
