"""Gateway processes: one full gateway (``serve_plan``), or N of them on one port.

``serve_plan`` assembles a gateway from a ``GatewayPlan``: discovery over the
registry (``DiscoveryResolver``), live reload from the config store
(``RouteReloader``), metrics, the access log, the admin port; serves until
SIGTERM/SIGINT; then closes everything in reverse order.

``run_workers(n, argv)`` is the parent of ``--workers N``: it starts N
``python -m qanat.gateway ... --worker-index i`` processes that each bind
the public port with SO_REUSEPORT (the kernel spreads new connections over
them), forwards SIGTERM/SIGINT to them, restarts one that crashes (with
``qanat.runner.restart`` backoff), and gives up — exit 1 — after five
crashes in a row, or at once with exit 2 on a configuration error, which a
restart cannot fix. Worker *i* serves its admin endpoints on
``admin_port + i``. What each worker keeps to itself: its connections,
upstream pool, balancer positions, breaker and outlier state, metrics and
discovery cache; what they share: the routes (config store), the instances
(registry) and, with the Redis-backed filter, rate limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from qanat.gateway.accesslog import AccessLog
from qanat.gateway.admin import AdminServer
from qanat.gateway.app import Gateway
from qanat.gateway.discovery import DiscoveryResolver
from qanat.gateway.hardening import Limits
from qanat.gateway.metrics import GatewayMetrics, Observer
from qanat.gateway.reload import ROUTES_KEY, RouteReloader
from qanat.gateway.server import HttpServer
from qanat.gateway.topology import GatewayPlan
from qanat.runner.restart import RestartBackoff

log = logging.getLogger("qanat.gateway")
MAX_CRASHES = 5  # in a row, each within RestartSettings.stable_after of its start
CONFIG_ERROR = 2  # the exit status of a configuration error


async def start_reuse_port(server: HttpServer, host: str, port: int) -> None:
    """Start ``server`` with SO_REUSEPORT (stand-in until ``HttpServer.start`` takes it)."""
    from qanat.gateway.connection import HttpProtocol

    loop = asyncio.get_running_loop()
    server._server = await loop.create_server(
        lambda: HttpProtocol(server), host, port, backlog=2048, reuse_address=True,
        reuse_port=True,
    )
    server._sweeper = loop.create_task(server._sweep())


class GatewayProcess:
    """One full gateway assembled from a plan; ``start()`` then ``aclose()``.

    Attributes once started: ``gateway``, ``metrics``, ``resolver`` (None
    without ``kind: service`` routes), ``reloader`` (None without a config
    store), ``admin`` (None without an admin port).
    """

    def __init__(self, plan: GatewayPlan, limits: Limits, *, access_log: AccessLog | None = None,
                 worker: int | None = None, routes_key: str = ROUTES_KEY) -> None:
        self.plan, self.limits, self.worker, self.routes_key = plan, limits, worker, routes_key
        self.observers: list[Observer] = [] if access_log is None else [access_log]
        self.resolver: DiscoveryResolver | None = None
        self.reloader: RouteReloader | None = None
        self.admin: AdminServer | None = None
        self._closers: list[Callable[[], Any]] = []

    async def start(self) -> None:
        """Open the backends, build the gateway, load the routes, listen."""
        from qanat.backends import open_config_store, open_registry
        from qanat.runtime.discovery import DiscoveryCache

        plan, closers = self.plan, self._closers
        if plan.registry_url is not None and plan.services:
            registry = await open_registry(plan.registry_url)
            closers.append(lambda: registry.close(deregister=False))
            cache = DiscoveryCache(registry)
            closers.append(cache.close)
            self.resolver = resolver = DiscoveryResolver(cache)
            await resolver.prepare(plan.services, timeout=5.0)
        self.gateway = gateway = Gateway(plan.routes, limits=self.limits, resolver=self.resolver,
                                         observers=self.observers)
        closers.append(gateway.aclose)
        self.metrics = GatewayMetrics(gateway.stats, lambda: gateway.in_flight)
        self.observers.insert(0, self.metrics)
        if self.resolver is not None:
            _discovery_gauges(self.metrics, gateway, self.resolver)
            gateway.add_readiness_check(_ready(gateway, self.resolver))
        if plan.config_url is not None:
            store = await open_config_store(plan.config_url)
            closers.append(store.close)
            self.reloader = RouteReloader(gateway, store, key=self.routes_key, seed=plan.routes,
                                          initial_source=plan.source, prepare=self._prepare)
            await self.reloader.start()
            closers.append(self.reloader.close)
        await gateway.start(plan.host, plan.port, reuse_port=self.worker is not None)
        if self.worker is not None:
            orphan = asyncio.get_running_loop().create_task(
                watch_parent(gateway.stop, os.getppid()))
            closers.append(lambda: _cancel(orphan))
        if plan.admin_port is not None:
            self.admin = AdminServer(gateway, metrics=self.metrics, resolver=self.resolver,
                                     reload_status=self.reloader.status if self.reloader else None)
            await self.admin.start(plan.admin_host, plan.admin_port + (self.worker or 0))
            closers.append(self.admin.aclose)

    async def _prepare(self, services: list[str]) -> list[str]:
        return await self.resolver.prepare(services, 3.0) if self.resolver is not None else []

    def banner(self) -> str:
        """One line: the public URL, where the routes come from, the admin URL, the build,
        the pid."""
        plan, gateway = self.plan, self.gateway
        parts = [f"qanat gateway: http://{plan.host}:{gateway.port}",
                 f"{len(gateway.routes)} routes from "
                 + (f"config store {self.reloader.key}" if self.reloader else plan.source)]
        if self.admin is not None:
            parts.append(f"admin http://{plan.admin_host}:{self.admin.port}")
        parts.append(build())
        parts.append(f"pid {os.getpid()}")
        return " | ".join(parts)


    async def aclose(self) -> None:
        """Close everything started, newest first (the gateway drains in-flight requests)."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                await close()


async def serve_plan(
    plan: GatewayPlan,
    limits: Limits,
    *,
    access_log: AccessLog | None = None,
    worker: int | None = None,
    routes_key: str = ROUTES_KEY,
    banner: Callable[[str], None] | None = None,
) -> None:
    """Serve ``plan`` in this process until SIGTERM/SIGINT (see the module docstring)."""
    process = GatewayProcess(plan, limits, access_log=access_log, worker=worker,
                             routes_key=routes_key)
    try:
        await process.start()
        # Start-up objects (modules, routes, compiled filters) live as long as the
        # process: keep them out of every later collection (CPython's gc.freeze,
        # meant for long-running servers); requests then pay only for their own.
        gc.collect()
        gc.freeze()
        if banner is not None:
            banner(process.banner())
        await process.gateway.wait_stopped()
    finally:
        await process.aclose()


def _ready(gateway: Gateway, resolver: DiscoveryResolver) -> Callable[[], list[str]]:
    return lambda: resolver.not_ready(gateway.services())


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _discovery_gauges(metrics: GatewayMetrics, gateway: Gateway,
                      resolver: DiscoveryResolver) -> None:
    def endpoints() -> list[tuple[list[str], float]]:
        return [([s], len(resolver.endpoints(s))) for s in gateway.services()]

    metrics.add_gauges("qanat_gateway_upstream_endpoints",
                       "Routable instances of each routed service (discovery).",
                       ["upstream"], endpoints)


def run_workers(n: int, argv: list[str], *, drain: float = 10.0) -> int:
    """Run ``n`` workers with ``argv`` (this command's arguments); returns the exit status."""
    return asyncio.run(_supervise(n, argv, drain))


async def _supervise(n: int, argv: list[str], drain: float) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    procs: dict[int, asyncio.subprocess.Process] = {}
    backoffs = [RestartBackoff() for _ in range(n)]

    async def spawn(i: int) -> None:
        procs[i] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "qanat.gateway", *argv, "--worker-index", str(i))
        backoffs[i].started(time.monotonic())

    for i in range(n):
        await spawn(i)
    status = 0
    while not stop.is_set():
        waits = {asyncio.ensure_future(p.wait()): i for i, p in procs.items()}
        stopping = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([*waits, stopping], return_when=asyncio.FIRST_COMPLETED)
        for fut in [*waits, stopping]:
            fut.cancel()
        for fut in done & set(waits):
            i = waits[fut]
            code = procs[i].returncode
            delay = backoffs[i].crashed(time.monotonic())
            if stop.is_set():
                break
            if code == CONFIG_ERROR or backoffs[i].crashes >= MAX_CRASHES:
                print(f"qanat.gateway: worker {i} exited with {code}; stopping",
                      file=sys.stderr)
                status = CONFIG_ERROR if code == CONFIG_ERROR else 1
                stop.set()
                break
            print(f"qanat.gateway: worker {i} exited with {code}; restarting in "
                  f"{delay:.1f}s", file=sys.stderr)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if not stop.is_set():
                await spawn(i)
    await _stop_all(list(procs.values()), drain + 5.0)
    return status


async def _stop_all(procs: list[asyncio.subprocess.Process], timeout: float) -> None:
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(p.wait() for p in procs))
    except TimeoutError:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await asyncio.gather(*(p.wait() for p in procs))


async def watch_parent(gateway_stop: Callable[[], None], parent: int) -> None:
    """Stop this worker when its parent is gone (the parent was killed, not stopped)."""
    while True:
        await asyncio.sleep(1.0)  # no portable parent-death event; a cheap poll
        if os.getppid() != parent:
            gateway_stop()
            return



def build() -> str:
    """Which build of the hot path runs: ``compiled`` (a wheel install, mypyc) or
    ``pure Python`` (an editable install, or a wheel built without a C compiler)."""
    import qanat.gateway.proxy as hot

    return "pure Python" if (hot.__file__ or "").endswith(".py") else "compiled"


__all__ = [
    "GatewayProcess", "build", "run_workers", "serve_plan", "start_reuse_port", "watch_parent",
]
