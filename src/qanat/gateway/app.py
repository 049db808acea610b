"""The gateway assembled: route table + filters + proxy + hardened server.

::

    gateway = Gateway(routes)            # RouteConfig objects or plain mappings
    await gateway.start("0.0.0.0", 8080)  # or: await gateway.serve(host, port)
    gateway.update_routes(new_routes)     # atomic swap, or ConfigError and no change
    await gateway.aclose()                # graceful: drain in-flight, then close

Per request: split the target, normalise the path (``normalize.py``), match
(``routing.py``), run the route's filter chain around the proxy. The route
set and everything compiled from it live in one tuple that ``update_routes``
replaces in a single assignment, so a request sees the old set or the new
one, never a mix.

Platform hooks (used by ``python -m qanat.gateway``): ``/__qanat/ready`` and
``/__qanat/health`` are answered on the public port before routing (the
``/__qanat/`` prefix is reserved); ``add_readiness_check`` adds reasons not to
be ready; with ``observers`` every finished request becomes an ``Outcome``
(``metrics.py``) handed to each observer once its last byte is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from qanat.gateway import admin
from qanat.gateway.config import RouteConfig, ServiceUpstream, parse_routes
from qanat.gateway.filters import Exchange, Filter, Handler, Reply
from qanat.gateway.hardening import Limits, RequestRejected, split_target
from qanat.gateway.headers import request_id_for
from qanat.gateway.metrics import Observer
from qanat.gateway.normalize import normalize_path
from qanat.gateway.observe import INTERNAL_PREFIX, Note, Observed
from qanat.gateway.problem import problem
from qanat.gateway.proxy import Proxy
from qanat.gateway.request import Request
from qanat.gateway.route_runtime import (
    RouteRuntime,
    RouteState,
    close_filters,
    closes,
    compile_runtimes,
    snapshot,
)
from qanat.gateway.routing import RouteTable, compile_routes, route_host
from qanat.gateway.server import HttpServer, ServerStats
from qanat.gateway.upstream import Resolver, Upstream
from qanat.http import HttpPool

RouteInput = RouteConfig | Mapping[str, Any]
ReadinessCheck = Callable[[], list[str]]


class Gateway:
    """An API gateway serving ``routes``; see the module docstring for the life cycle.

    ``pool`` defaults to a new ``HttpPool`` that the gateway owns and closes;
    ``resolver`` resolves ``kind: service`` upstreams (discovery). With
    ``observers`` (a list, which may be appended to later) each request's
    ``Outcome`` is reported; without, the request path does no bookkeeping.
    """

    def __init__(
        self,
        routes: Sequence[RouteInput],
        *,
        limits: Limits | None = None,
        resolver: Resolver | None = None,
        pool: HttpPool | None = None,
        scheme: str = "http",
        clock: Callable[[], float] = time.monotonic,
        observers: list[Observer] | None = None,
    ) -> None:
        self._own_pool = pool is None
        self.pool = pool if pool is not None else HttpPool()
        self._resolver = resolver
        self._clock = clock
        self.observers = observers
        self._proxy: Handler = Proxy(self.pool, clock)  # it notes what observers need
        self._closing: set[asyncio.Task[None]] = set()  # retired filters being closed
        self._retired: list[Filter] = []  # retired with no event loop running: closed later
        self._state: tuple[RouteTable, tuple[RouteRuntime, ...], tuple[str, ...]] = (
            self._compile(routes, ()))
        self._observed = Observed(observers, clock) if observers is not None else None
        self.server = HttpServer(self.handle, limits, scheme=scheme.encode(), clock=clock,
                                 observer=self._observed)
        self._stop: asyncio.Event | None = None
        self._checks: list[ReadinessCheck] = []
        self._closed = False

    # -- routes -----------------------------------------------------------------

    @property
    def routes(self) -> tuple[RouteConfig, ...]:
        """The route set being served, in declaration order."""
        return tuple(r.config for r in self._state[0].routes)

    def update_routes(self, routes: Sequence[RouteInput]) -> None:
        """Swap in a new route set atomically; on ConfigError the old set keeps serving.

        A route whose name and ``upstream`` are unchanged keeps its breakers,
        ejections and balancer state; unchanged filters are kept too (see
        ``route_runtime``). Filters the new set drops are closed (``aclose``).
        """
        self._state = self._compile(routes, self._state[1])

    def route_filters(self) -> list[tuple[str, tuple[Filter, ...]]]:
        """Per route being served, in order: its name and its live filter instances."""
        return [(rt.route.name, rt.filters) for rt in self._state[1]]

    def upstream_state(self) -> dict[str, RouteState]:
        """Per route name: its traffic state (breakers, ejections, retry budget, in-flight)."""
        return snapshot(self._state[1], self._clock())

    def services(self) -> list[str]:
        """The services the active routes send to (``kind: service``), sorted."""
        return sorted({r.upstream.service for r in self.routes
                       if isinstance(r.upstream, ServiceUpstream)})

    def _compile(
        self, routes: Sequence[RouteInput], previous: Sequence[RouteRuntime]
    ) -> tuple[RouteTable, tuple[RouteRuntime, ...], tuple[str, ...]]:
        table = compile_routes(parse_routes(routes))
        def make_upstream(cfg: RouteConfig, where: str) -> Upstream:
            return Upstream(cfg.upstream, self._resolver, where, clock=self._clock)

        runtimes, labels, retired = compile_runtimes(table, previous, make_upstream, self._proxy)
        if closes(retired):
            self._retire(retired)
        return table, runtimes, labels

    def _retire(self, filters: list[Filter]) -> None:
        """Close filters the new route set dropped, in a task the gateway owns.

        A request still running on the old set may use one meanwhile; a closed
        filter must cope (the rate limiter falls back to its local limit).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop: close them in aclose()
            self._retired.extend(filters)
            return
        task = loop.create_task(close_filters(filters))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def in_flight(self) -> int:
        """Requests being handled now (counted only with observers)."""
        return self._observed.in_flight if self._observed is not None else 0

    # -- readiness --------------------------------------------------------------

    def add_readiness_check(self, check: ReadinessCheck) -> None:
        """Add ``check() -> reasons``; ``/__qanat/ready`` is 200 only when all are empty."""
        self._checks.append(check)

    def not_ready(self) -> list[str]:
        """Why the gateway should not get traffic now (empty: ready)."""
        reasons = ["shutting down"] if self.server.draining else []
        for check in self._checks:
            reasons.extend(check())
        return reasons

    # -- per request ------------------------------------------------------------

    def handle(self, req: Request) -> Awaitable[Reply]:
        """Route one request and run its filter chain around the proxy.

        A plain function: what it answers itself (a 404, an admin page) is a
        ``Reply``, which awaits to itself; else the route's handler's awaitable.
        """
        table, runtimes, labels = self._state
        try:
            authority, path, query = split_target(req.target)
            path = normalize_path(path)
        except RequestRejected as exc:
            return problem(exc.status, exc.detail, request_id_for(req.headers), close=True)
        if path.startswith(INTERNAL_PREFIX):
            return admin.internal_reply(self, req.method, path, request_id_for(req.headers))
        if authority is None:
            authority = req.head.host
        found = table.match(route_host(authority), path, req.method, req.headers)
        request_id = request_id_for(req.headers)
        if found is None:
            return problem(404, f"no route for {req.method.decode()} {path.decode()}",
                           request_id)
        route, params = found
        rt = runtimes[route.index]
        body = req.body
        headers = req.headers
        payload: Any = body
        if body is not None and body.done and body.error is None:
            payload = body.take_all()  # it all arrived with the head: send it in one write
            if req.head.chunked:
                headers = [*headers, (b"content-length", b"%d" % len(payload))]
        ex = Exchange(
            req.method, path, query, headers,
            host=route_host(authority), authority=authority, peer=req.peer,
            scheme=req.scheme, request_id=request_id, connection=req.head.connection,
            body=payload, route=rt, params=params,
        )
        note: Note | None = req.note
        if note is not None:
            note.ex, note.upstream = ex, labels[route.index]
            ex.note = note
        return rt.handler(ex)

    # -- life cycle -------------------------------------------------------------

    async def start(
        self, host: str = "127.0.0.1", port: int = 8080, *, reuse_port: bool = False
    ) -> None:
        """Bind and start serving; returns once listening (see ``port``).

        ``reuse_port`` sets SO_REUSEPORT so several worker processes can bind
        the same port and the kernel spreads connections over them.
        """
        if not reuse_port:
            await self.server.start(host, port)
        elif "reuse_port" in inspect.signature(self.server.start).parameters:
            start: Any = self.server.start
            await start(host, port, reuse_port=True)
        else:
            from qanat.gateway.workers import start_reuse_port  # stand-in, see there

            await start_reuse_port(self.server, host, port)

    @property
    def port(self) -> int:
        return self.server.port

    def stats(self) -> ServerStats:
        return self.server.stats()

    async def aclose(self, timeout: float | None = None) -> None:
        """Graceful shutdown: stop accepting, let in-flight requests finish, close; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.server.shutdown(timeout)
        if self._closing:
            await asyncio.gather(*self._closing)
        retired, self._retired = self._retired, []
        await close_filters([*retired, *(f for rt in self._state[1] for f in rt.filters)])
        if self._own_pool:
            await self.pool.aclose()

    def stop(self) -> None:
        """Ask ``serve`` to shut down (what SIGTERM and SIGINT do)."""
        if self._stop is not None:
            self._stop.set()

    async def serve(
        self, host: str = "127.0.0.1", port: int = 8080, *, reuse_port: bool = False
    ) -> None:
        """Serve until SIGTERM/SIGINT (or ``stop()``), then shut down gracefully."""
        await self.start(host, port, reuse_port=reuse_port)
        await self.wait_stopped()

    async def wait_stopped(self) -> None:
        """After ``start``: wait for SIGTERM/SIGINT (or ``stop()``), then ``aclose``."""
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # not available off the main thread or on Windows: stop() still works
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await self.aclose()


__all__ = ["Gateway", "ReadinessCheck"]
