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
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qanat.gateway.config import RouteConfig, parse_routes
from qanat.gateway.filters import Exchange, Reply, build_filter, chain
from qanat.gateway.hardening import Limits, RequestRejected, split_target
from qanat.gateway.headers import request_id_for
from qanat.gateway.normalize import normalize_path
from qanat.gateway.problem import problem
from qanat.gateway.proxy import Proxy, RouteRuntime
from qanat.gateway.request import Request
from qanat.gateway.routing import RouteTable, compile_routes, route_host
from qanat.gateway.server import HttpServer, ServerStats
from qanat.gateway.upstream import Resolver, Upstream
from qanat.http import HttpPool

RouteInput = RouteConfig | Mapping[str, Any]


class Gateway:
    """An API gateway serving ``routes``; see the module docstring for the life cycle.

    ``pool`` defaults to a new ``HttpPool`` that the gateway owns and closes;
    ``resolver`` resolves ``kind: service`` upstreams (discovery).
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
    ) -> None:
        self._own_pool = pool is None
        self.pool = pool if pool is not None else HttpPool()
        self._resolver = resolver
        self._proxy = Proxy(self.pool, clock)
        self._state: tuple[RouteTable, tuple[RouteRuntime, ...]] = self._compile(routes)
        self.server = HttpServer(self.handle, limits, scheme=scheme.encode(), clock=clock)
        self._stop: asyncio.Event | None = None

    # -- routes -----------------------------------------------------------------

    @property
    def routes(self) -> tuple[RouteConfig, ...]:
        """The route set being served, in declaration order."""
        return tuple(r.config for r in self._state[0].routes)

    def update_routes(self, routes: Sequence[RouteInput]) -> None:
        """Swap in a new route set atomically; on ConfigError the old set keeps serving."""
        self._state = self._compile(routes)

    def _compile(
        self, routes: Sequence[RouteInput]
    ) -> tuple[RouteTable, tuple[RouteRuntime, ...]]:
        table = compile_routes(parse_routes(routes))
        runtimes = []
        for route in table.routes:
            cfg = route.config
            where = f"route {cfg.name!r} (routes[{route.index}])"
            upstream = Upstream(cfg.upstream, self._resolver, where)
            filters = [
                build_filter(f.name, f.config, cfg.name, f"{where}.filters[{i}]")
                for i, f in enumerate(cfg.filters)
            ]
            handler = chain(filters, self._proxy) if filters else self._proxy
            timeout = min(cfg.timeout, cfg.per_try_timeout or cfg.timeout)
            runtimes.append(RouteRuntime(route, upstream, timeout, handler))
        return table, tuple(runtimes)

    # -- per request ------------------------------------------------------------

    async def handle(self, req: Request) -> Reply:
        """Route one request and run its filter chain around the proxy."""
        table, runtimes = self._state
        try:
            authority, path, query = split_target(req.target)
            path = normalize_path(path)
        except RequestRejected as exc:
            return problem(exc.status, exc.detail, request_id_for(req.headers), close=True)
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
        return await rt.handler(ex)

    # -- life cycle -------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        """Bind and start serving; returns once listening (see ``port``)."""
        await self.server.start(host, port)

    @property
    def port(self) -> int:
        return self.server.port

    def stats(self) -> ServerStats:
        return self.server.stats()

    async def aclose(self, timeout: float | None = None) -> None:
        """Graceful shutdown: stop accepting, let in-flight requests finish, close."""
        await self.server.shutdown(timeout)
        if self._own_pool:
            await self.pool.aclose()

    def stop(self) -> None:
        """Ask ``serve`` to shut down (what SIGTERM and SIGINT do)."""
        if self._stop is not None:
            self._stop.set()

    async def serve(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        """Serve until SIGTERM/SIGINT (or ``stop()``), then shut down gracefully."""
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        await self.start(host, port)
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


__all__ = ["Gateway"]
