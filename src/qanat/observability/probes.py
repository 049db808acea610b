"""What ``/ready`` answers, and the health an instance reports about itself to the registry.

Readiness rules (Kubernetes readiness semantics: "should this instance get
traffic now?"): not before the app finished starting, not while draining, not
before the instance is registered when a runner expects it to be, and not
while a declared dependency (``depends_on``) has no routable instance.

``HealthReporter`` keeps a Consul-style TTL check on the registered instance
(``qanat.runtime.health``): the service reports *passing* when ready and
*warning* (still routable, but flagged, with the reasons) when it is not; a
stalled event loop stops reporting and the check turns critical after the TTL.
A dependency outage is a warning, not critical: taking every caller out of
rotation because one dependency is down would turn one outage into many.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from qanat.observability.metrics import ServiceMetrics
from qanat.ports import Instance, Registry
from qanat.runtime._tasks import TaskOwner
from qanat.runtime.health import HealthChecker, TtlCheck

Instances = Callable[[str], Sequence[Instance]]
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"  # exposition format 0.0.4


class PlatformRoute(Route):
    """A fixed-path route that every other request rejects with one ``str.endswith``.

    The platform routes sit in front of the app's routes, so every request to the
    app is tried against them first; Starlette's own check (route path, then a
    regex) costs more than the whole of some handlers.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # The routed path is a suffix of scope["path"] (mounts and root_path only
        # strip a prefix), so a path that does not end with ours cannot match.
        if scope["type"] != "http" or not scope["path"].endswith(self.path):
            return Match.NONE, {}
        return super().matches(scope)


def platform_routes(
    service: str, readiness: Callable[[], list[str]], metrics: ServiceMetrics
) -> list[Route]:
    """``/health``, ``/ready`` and ``/metrics``, left out of the app's OpenAPI schema."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": service})

    async def ready(request: Request) -> Response:
        reasons = readiness()
        if reasons:
            body = {"status": "not ready", "service": service, "reasons": reasons}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", "service": service})

    async def scrape(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=PROMETHEUS_TEXT)

    return [
        PlatformRoute("/health", health, methods=["GET"], include_in_schema=False),
        PlatformRoute("/ready", ready, methods=["GET"], include_in_schema=False),
        PlatformRoute("/metrics", scrape, methods=["GET"], include_in_schema=False),
    ]


def readiness_reasons(
    *,
    started: bool,
    draining: bool,
    must_register: bool,
    registered: bool,
    dependencies: Sequence[str],
    instances: Instances | None,
) -> list[str]:
    """Why the instance is not ready (empty: ready). ``instances`` is None without discovery."""
    reasons = []
    if not started:
        reasons.append("starting")
    if draining:
        reasons.append("draining")
    if must_register and not registered and not draining:
        reasons.append("not registered")
    for dep in dependencies:
        if instances is None:
            reasons.append(f"no registry configured to discover {dep}")
        elif not instances(dep):
            reasons.append(f"no instance of {dep} available")
    return reasons


class HealthReporter:
    """Reports ``readiness()`` into a TTL check on ``instance`` every ``ttl / 3`` seconds."""

    def __init__(
        self,
        registry: Registry,
        instance: Instance,
        ttl: float,
        readiness: Callable[[], list[str]],
    ) -> None:
        self._checker = HealthChecker(registry)
        self._ttl: TtlCheck = self._checker.add_ttl(instance, ttl)
        self._readiness = readiness
        self._interval = ttl / 3  # three chances to report before the TTL runs out
        self._tasks = TaskOwner(f"health-report:{instance.id}")

    def report(self) -> None:
        """Report the current readiness now (passing, or warning with the reasons)."""
        reasons = self._readiness()
        if reasons:
            self._ttl.warn_ttl("; ".join(reasons))
        else:
            self._ttl.pass_ttl("ready")

    async def start(self) -> None:
        self.report()
        await self._checker.start()
        self._tasks.start(self._loop(), name="report")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)  # the reporting period, not a wait for an event
            self.report()

    async def close(self) -> None:
        """Stop reporting and checking; idempotent."""
        await self._tasks.close()
        await self._checker.close()
