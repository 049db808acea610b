"""``qanat.Service``: the platform added to an existing FastAPI or Starlette app.

::

    app = FastAPI()
    service = qanat.Service(app, "users")

That adds ``/health`` (liveness), ``/ready`` (readiness: started, registered,
its dependencies discoverable, not draining) and ``/metrics`` (Prometheus);
when run by ``qanat up`` (``QANAT_*`` variables, ``qanat.runner.env``) it
registers the instance with a lease and keeps a TTL health check on it; JSON
logs and W3C traces on every request; ``service.client("catalog")`` for
resilient calls and ``service.config(prefix, Model)`` for live typed config.

Lifespan (ours wraps the app's): logs, tracing, registry, config and discovery
start first, so the app's own startup can use them; then the app starts; then
the instance registers and turns ready. On the way down: not ready and
deregistered first (``drain``), then the app's shutdown, then ours. Under
``python -m qanat.runner.instance`` SIGTERM drains *before* the listener
closes; see ``docs/service.md`` for the whole sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar, cast

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel
from starlette.applications import Starlette

from qanat.backends import open_config_store, open_registry
from qanat.errors import ConfigError
from qanat.http import HttpPool
from qanat.observability.client_metrics import add_client_metrics
from qanat.observability.logging import configure_logging
from qanat.observability.metrics import ServiceMetrics
from qanat.observability.probes import HealthReporter, platform_routes, readiness_reasons
from qanat.observability.tracing import setup_tracing
from qanat.policy import Policies
from qanat.ports import ConfigStore, Instance, Registry
from qanat.runner.env import InstanceEnv
from qanat.runtime._service_support import LazyConfigStore as _LazyConfigStore
from qanat.runtime._service_support import check_bindable, instance_for, policies_of
from qanat.runtime._service_support import quietly as _quietly
from qanat.runtime._service_support import resolve_name as _resolve_name
from qanat.runtime.client import ServiceClient, settings_from_policy
from qanat.runtime.discovery import DiscoveryCache
from qanat.runtime.middleware import QanatMiddleware
from qanat.runtime.typed_config import BoundConfig

log = logging.getLogger("qanat.service")
M = TypeVar("M", bound=BaseModel)
DEREGISTER_TIMEOUT = 2.0  # seconds; a registry outage must not hold up a shutdown
_RUNNING: list[Service] = []  # services started in this process, drained on SIGTERM


class Service:
    """Adds registration, probes, metrics, tracing, logs, config and draining to an ASGI app.

    ``env`` defaults to the ``QANAT_*`` variables (None when not run by
    qanat: nothing is registered). ``registry_url`` and ``config_url`` default
    to the env's. ``tracer_provider``: export spans through it instead of the
    local span store (the caller then owns it). ``json_logs=False`` leaves the
    process's logging configuration alone.
    """

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
        config_url: str | None = None,
        env: InstanceEnv | None = None,
        tracer_provider: TracerProvider | None = None,
        json_logs: bool = True,
    ) -> None:
        if not isinstance(app, Starlette):
            raise ConfigError(
                f"expected a FastAPI or Starlette app, got {type(app).__name__}",
                source="qanat.Service(app)",
            )
        self.env = env or InstanceEnv.from_env()
        self.name = _resolve_name(name, self.env)
        self.app = app
        self.depends_on = tuple(depends_on)
        self.version = version or (self.env.version if self.env else "v1")
        self.tags = tuple(tags) or (self.env.tags if self.env else ())
        self.metadata = dict(metadata or {})
        self.registry_url = registry_url or (self.env.registry if self.env else None)
        self.config_url = config_url or (self.env.config if self.env else None)
        self.instance_id = (
            self.env.instance_id if self.env else f"{self.name}-{socket.gethostname()}"
        )
        self.metrics = ServiceMetrics(self.name)
        self.registry: Registry | None = None
        self.discovery: DiscoveryCache | None = None
        self.instance: Instance | None = None
        self.pool = HttpPool()
        self.in_flight = 0
        self.started = self.draining = False
        self._json_logs = json_logs
        self._provider = tracer_provider
        self._own_provider = False
        self._tracer: tuple[TracerProvider | None, trace.Tracer] | None = None
        self._clients: dict[str, ServiceClient] = {}
        self._configs: list[BoundConfig[Any]] = []
        self._store = _LazyConfigStore()
        self._health: HealthReporter | None = None
        self._on_stop: list[Callable[[], Any]] = []
        self._policy_cache: Policies | None = None
        add_client_metrics(self.metrics, lambda: list(self._clients.values()), self.pool.stats)
        self._install()

    # -- wiring into the app ---------------------------------------------------

    def _install(self) -> None:
        router = self.app.router
        # First, so an app's catch-all route cannot shadow them.
        router.routes[:0] = platform_routes(self.name, self.readiness, self.metrics)
        self.app.add_middleware(QanatMiddleware, service=self)
        inner = router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[Any]:
            await self.start()
            try:
                async with inner(app) as state:
                    await self._go_live()
                    try:
                        yield state
                    finally:
                        await self.drain()
            finally:
                await self.stop()

        router.lifespan_context = lifespan

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Logs, tracing, registry, discovery and bound configs; before the app's startup."""
        if self._json_logs:
            configure_logging(self.name, self.instance_id)
        if self._provider is None:
            state_dir = self.env.state_dir if self.env else ".qanat"
            self._provider = setup_tracing(self.name, self.instance_id, state_dir)
            self._own_provider = True
        _RUNNING.append(self)
        if self.registry_url:
            self.registry = await open_registry(self.registry_url)
            self.discovery = DiscoveryCache(self.registry)
            for client in self._clients.values():
                client.bind(self.discovery, self.pool)
            for dep in self.depends_on:
                self.discovery.instances(dep)  # start watching now, not at the first call
        if self._configs:
            assert self.config_url is not None  # config() refused to bind without one
            self._store.store = await open_config_store(self.config_url)
            for bound in self._configs:
                await bound.start()

    async def _go_live(self) -> None:
        """After the app's startup: register (when run by qanat) and turn ready."""
        if self.env is not None and self.registry is not None:
            self.instance = instance_for(self.env, self.name, self.tags, self.metadata,
                                         self.version)
            await self.registry.register(self.instance, ttl=self.env.ttl)
            # Ready before the first health report, so that report says "passing".
            self.started = True
            self._health = HealthReporter(
                self.registry, self.instance, self.env.ttl, self.readiness
            )
            await self._health.start()
            log.info("registered %s at %s", self.instance.id, self.instance.url)
        self.started = True

    async def drain(self) -> None:
        """Stop taking traffic: not ready, then deregistered. In-flight requests continue.

        Idempotent; the instance runner calls it on SIGTERM before the listener closes.
        """
        if self.draining:
            return
        self.draining = True
        if self._health is not None:
            await self._health.close()
        if self.registry is not None and self.instance is not None:
            try:
                async with asyncio.timeout(DEREGISTER_TIMEOUT):
                    await self.registry.deregister(self.name, self.instance.id)
                log.info(
                    "deregistered %s; %d request(s) in flight", self.instance.id, self.in_flight
                )
            except Exception as exc:  # the lease will expire anyway; keep shutting down
                log.warning("could not deregister %s: %r", self.instance.id, exc)

    async def stop(self) -> None:
        """Release everything ``start`` opened (after the app's shutdown); idempotent."""
        await self.drain()
        for callback in reversed(self._on_stop):
            await _quietly(callback)
        self._on_stop.clear()
        for bound in self._configs:
            await _quietly(bound.close)
        closers: list[Callable[[], Any]] = [self.pool.aclose]
        if self._store.store is not None:
            closers.append(self._store.store.close)
        if self.discovery is not None:
            closers.insert(0, self.discovery.close)
        if self.registry is not None:
            closers.append(self.registry.close)
        for close in closers:
            await _quietly(close)
        if self._own_provider and self._provider is not None:
            self._provider.shutdown()  # flushes the spans still queued
        if self in _RUNNING:
            _RUNNING.remove(self)

    def on_stop(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` (sync or async) when the service stops, in reverse order."""
        self._on_stop.append(callback)

    # -- per request (called by the middleware) ---------------------------------

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer of this service's server spans (its provider's, once started)."""
        if self._tracer is None or self._tracer[0] is not self._provider:
            provider = self._provider or trace.get_tracer_provider()
            self._tracer = (self._provider, provider.get_tracer("qanat.service"))
        return self._tracer[1]

    def request_started(self) -> None:
        self.in_flight += 1
        self.metrics.in_flight_now.inc()

    def request_finished(self) -> None:
        self.in_flight -= 1
        self.metrics.in_flight_now.dec()

    # -- outgoing calls and configuration --------------------------------------

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

    def config(self, prefix: str, model: type[M]) -> BoundConfig[M]:
        """``model`` bound to the keys under ``prefix`` in the config center, kept live.

        Call it before the app starts (e.g. at import); the config loads and
        validates when the service starts (an invalid one fails the startup
        with ``ConfigError``) and stops with it. Read ``bound.current``.
        """
        check_bindable(self.config_url, self.started, prefix)
        store = cast(ConfigStore, self._store)
        bound = BoundConfig(store, prefix, model, instance_id=self.instance_id, tags=self.tags)
        self._configs.append(bound)
        return bound

    def _policies(self) -> Policies:
        if self._policy_cache is None:
            self._policy_cache = policies_of(self.env)
        return self._policy_cache

    # -- probes ----------------------------------------------------------------

    def readiness(self) -> list[str]:
        """Reasons this instance is not ready; empty when it is."""
        return readiness_reasons(
            started=self.started,
            draining=self.draining,
            must_register=self.env is not None,
            registered=self.instance is not None,
            dependencies=self.depends_on,
            instances=self.discovery.instances if self.discovery is not None else None,
        )


def running_services() -> list[Service]:
    """Services started in this process (the instance runner drains them on SIGTERM)."""
    return list(_RUNNING)
