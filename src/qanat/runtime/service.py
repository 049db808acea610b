"""``qanat.Service``: the platform added to an existing FastAPI or Starlette app.

::

    app = FastAPI()
    service = qanat.Service(app, "users")

    @app.get("/users/{id}")
    async def get_user(id: int) -> dict: ...

That adds ``/health`` (liveness), ``/ready`` (readiness: registered, its
dependencies discoverable, not draining) and ``/metrics`` (Prometheus);
registers the instance with a lease when it starts; JSON logs and W3C traces
on every request; and drains on SIGTERM: not ready, deregistered, in-flight
requests finished, then exit. ``service.client("catalog")`` returns a
resilient client for another service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qanat.backends import open_registry
from qanat.errors import ConfigError
from qanat.http import HttpPool
from qanat.observability.logging import configure_logging
from qanat.observability.metrics import ServiceMetrics
from qanat.observability.tracing import setup_tracing
from qanat.policy import Policies, load_policies
from qanat.ports import Instance, Registry
from qanat.runner.env import InstanceEnv
from qanat.runtime.client import ServiceClient, settings_from_policy
from qanat.runtime.discovery import DiscoveryCache
from qanat.runtime.middleware import QanatMiddleware
from qanat.topology import load_topology

log = logging.getLogger("qanat.service")
_RUNNING: list[Service] = []  # services started in this process, drained on SIGTERM


class Service:
    """Adds registration, probes, metrics, tracing, logs and draining to an ASGI app."""

    def __init__(
        self,
        app: Starlette,
        name: str | None = None,
        *,
        depends_on: Sequence[str] = (),
        version: str | None = None,
        tags: Sequence[str] = (),
        metadata: dict[str, str] | None = None,
        registry_url: str | None = None,
        env: InstanceEnv | None = None,
    ) -> None:
        self.env = env or InstanceEnv.from_env()
        resolved = name or (self.env.service if self.env else None)
        if not resolved:
            raise ConfigError(
                "a Service needs a name: Service(app, 'users'), or run it with 'qanat up'",
                source="qanat.Service",
            )
        if self.env is not None and name is not None and self.env.service != name:
            raise ConfigError(
                f"this app says it is {name!r} but qanat.yaml runs it as {self.env.service!r}",
                source="qanat.Service",
            )
        self.name = resolved
        self.app = app
        self.depends_on = tuple(depends_on)
        self.version = version or (self.env.version if self.env else "v1")
        self.tags = tuple(tags) or (self.env.tags if self.env else ())
        self.metadata = dict(metadata or {})
        self.registry_url = registry_url or (self.env.registry if self.env else None)
        self.metrics = ServiceMetrics(self.name)
        self.registry: Registry | None = None
        self.instance: Instance | None = None
        self.in_flight = 0
        self.draining = False
        self.started = False
        self._clients: dict[str, ServiceClient] = {}
        self.pool = HttpPool()
        self.discovery: DiscoveryCache | None = None
        self._on_stop: list[Callable[[], Any]] = []
        self._policy_cache: Policies | None = None
        self._install()

    # -- wiring into the app ---------------------------------------------------

    def _install(self) -> None:
        router = self.app.router
        router.add_route("/health", self._health, methods=["GET"], include_in_schema=False)
        router.add_route("/ready", self._ready, methods=["GET"], include_in_schema=False)
        router.add_route("/metrics", self._metrics, methods=["GET"], include_in_schema=False)
        self.app.add_middleware(QanatMiddleware, service=self)
        inner = router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[Any]:
            await self.start()
            try:
                async with inner(app) as state:
                    yield state
            finally:
                await self.stop()

        router.lifespan_context = lifespan

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Configure logs and traces, then register this instance (when run by qanat)."""
        instance_id = self.env.instance_id if self.env else f"{self.name}-{socket.gethostname()}"
        configure_logging(self.name, instance_id)
        state_dir = self.env.state_dir if self.env else ".qanat"
        self._tracer_provider = setup_tracing(self.name, instance_id, state_dir)
        if self.registry_url:
            self.registry = await open_registry(self.registry_url)
            self.discovery = DiscoveryCache(self.registry)
            for client in self._clients.values():
                client.bind(self.discovery, self.pool)
        if self.env is not None and self.registry is not None:
            self.instance = Instance(
                id=self.env.instance_id,
                service=self.name,
                address=self.env.host,
                port=self.env.port,
                tags=self.tags,
                metadata=self.metadata,
                version=self.version,
            )
            await self.registry.register(self.instance, ttl=self.env.ttl)
            log.info("registered %s at %s", self.instance.id, self.instance.url)
        self.started = True
        _RUNNING.append(self)

    async def drain(self) -> None:
        """Stop taking traffic: not ready, deregistered. In-flight requests continue."""
        if self.draining:
            return
        self.draining = True
        if self.registry is not None and self.instance is not None:
            with contextlib.suppress(Exception):
                await self.registry.deregister(self.name, self.instance.id)
            log.info("deregistered %s; draining %d in-flight", self.instance.id, self.in_flight)

    async def stop(self) -> None:
        await self.drain()
        for callback in reversed(self._on_stop):
            result = callback()
            if asyncio.iscoroutine(result):
                with contextlib.suppress(Exception):
                    await result
        if self.discovery is not None:
            with contextlib.suppress(Exception):
                await self.discovery.close()
        with contextlib.suppress(Exception):
            await self.pool.aclose()
        if self.registry is not None:
            with contextlib.suppress(Exception):
                await self.registry.close()
        with contextlib.suppress(Exception):
            self._tracer_provider.shutdown()
        if self in _RUNNING:
            _RUNNING.remove(self)

    def on_stop(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` (sync or async) when the service stops, in reverse order."""
        self._on_stop.append(callback)

    # -- outgoing calls --------------------------------------------------------

    def client(self, target: str) -> ServiceClient:
        """The resilient client for ``target`` (one per target; usable once the app started).

        Its timeouts, retries, breaker and balancer come from the target's
        policies in ``qanat.yaml`` (``policies.targets.services.<target>``).
        """
        client = self._clients.get(target)
        if client is None:
            settings = settings_from_policy(self._policies().for_target(target))
            client = self._clients[target] = ServiceClient(target, settings=settings)
            if self.discovery is not None:
                client.bind(self.discovery, self.pool)
        return client

    def _policies(self) -> Policies:
        if self._policy_cache is None:
            path = self.env.topology if self.env else ""
            spec: dict[str, Any] = {}
            if path:
                spec = load_topology(path).policies
            self._policy_cache = load_policies(spec)
        return self._policy_cache

    # -- probes ----------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": self.name})

    def readiness(self) -> list[str]:
        """Reasons this instance is not ready; empty when it is."""
        reasons = []
        if not self.started:
            reasons.append("starting")
        if self.draining:
            reasons.append("draining")
        if self.env is not None and self.instance is None:
            reasons.append("not registered")
        for dep in self.depends_on:
            client = self._clients.get(dep)
            if client is not None and not client.has_endpoints():
                reasons.append(f"no instance of {dep} available")
        return reasons

    async def _ready(self, request: Request) -> Response:
        reasons = self.readiness()
        if reasons:
            return JSONResponse({"status": "not ready", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready", "service": self.name})

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def running_services() -> list[Service]:
    """Services started in this process (the instance runner drains them on SIGTERM)."""
    return list(_RUNNING)
