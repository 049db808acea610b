"""Shared set-up for the service client's tests: real servers, a real registry, a fake clock.

``harness(handler, ...)`` starts one scriptable HTTP/1.1 server per handler
on 127.0.0.1:0 (``tests/unit/http/upstream_servers.Upstream``, whose parser is
independent of the client's), registers each as an instance of ``users`` in
a ``MemoryRegistry`` (plus ``dead`` instances on ports where nothing
listens), waits for the ``DiscoveryCache`` to see them, and binds a
``ServiceClient`` on a ``FakeClock`` whose ``sleep`` records the delay and
moves the clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.unit.http.upstream_servers import Exchange, Handler, Received, Upstream, response

from qanat.backends.memory import MemoryRegistry
from qanat.core.breaker import BreakerSettings
from qanat.core.outlier import OutlierSettings
from qanat.core.retry import RetryPolicy
from qanat.http import HttpPool
from qanat.ports import Instance
from qanat.runtime.client import ClientSettings, ServiceClient
from qanat.runtime.discovery import DiscoveryCache
from qanat.testing import FakeClock, free_port

SERVICE = "users"
NO_OUTLIERS = OutlierSettings(consecutive_5xx=None, consecutive_gateway_failure=None)
NEVER_TRIP = BreakerSettings(ready_to_trip=lambda counts: False)


def settings(**overrides: Any) -> ClientSettings:
    """Round-robin (predictable), no backoff jitter surprises; override anything."""
    base: dict[str, Any] = {"load_balancer": "round_robin", "timeout": 5.0}
    base.update(overrides)
    return ClientSettings(**base)


def retrying(attempts: int, **kw: Any) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, **kw)


def status(code: int, *headers: tuple[bytes, bytes], body: bytes = b"") -> Handler:
    """A handler that always answers ``code``."""

    async def handler(req: Received, ex: Exchange) -> None:
        await ex.send(response(code, body or str(code).encode(), *headers))

    return handler


def sequence(*codes: int) -> Handler:
    """A handler answering ``codes`` in turn (the last one repeats), shared by every server."""
    answers = list(codes)

    async def handler(req: Received, ex: Exchange) -> None:
        code = answers.pop(0) if len(answers) > 1 else answers[0]
        await ex.send(response(code, str(code).encode()))

    return handler


async def reset(req: Received, ex: Exchange) -> None:
    """Read the request, then reset the connection without answering."""
    ex.reset()


@dataclass
class Harness:
    client: ServiceClient
    registry: MemoryRegistry
    discovery: DiscoveryCache
    pool: HttpPool
    upstreams: list[Upstream]
    clock: FakeClock
    sleeps: list[float] = field(default_factory=list)

    def received(self) -> int:
        """Requests received by every server together."""
        return sum(len(u.received) for u in self.upstreams)

    def counts(self) -> list[int]:
        return [len(u.received) for u in self.upstreams]

    async def wait_instances(self, ids: set[str], timeout: float = 5.0) -> None:
        """Wait until discovery serves exactly ``ids`` (woken by each change, not a sleep)."""
        changed = asyncio.Event()
        unsubscribe = self.discovery.on_change(SERVICE, lambda _: changed.set())
        try:
            async with asyncio.timeout(timeout):
                while {i.id for i in self.discovery.instances(SERVICE)} != ids:
                    changed.clear()
                    await changed.wait()
        finally:
            unsubscribe()


def instance(iid: str, port: int) -> Instance:
    return Instance(id=iid, service=SERVICE, address="127.0.0.1", port=port)


@contextlib.asynccontextmanager
async def harness(
    *handlers: Handler,
    dead: int = 0,
    client_settings: ClientSettings | None = None,
    sleep: Callable[[float], Awaitable[object]] | None = None,
    **client_kw: Any,
) -> AsyncIterator[Harness]:
    """Servers ``u0, u1 ...`` (one per handler), then dead instances ``d0, d1 ...``."""
    registry = MemoryRegistry()
    clock = FakeClock()
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        clock.advance(delay)

    async with contextlib.AsyncExitStack() as stack:
        upstreams = [await stack.enter_async_context(Upstream(h)) for h in handlers]
        for n, up in enumerate(upstreams):
            await registry.register(instance(f"u{n}", up.port))
        for n in range(dead):
            await registry.register(instance(f"d{n}", free_port()))
        discovery = DiscoveryCache(registry)
        pool = HttpPool()
        stack.push_async_callback(registry.close)
        stack.push_async_callback(discovery.close)
        stack.push_async_callback(pool.aclose)
        await discovery.wait_ready(SERVICE)
        client = ServiceClient(
            SERVICE,
            settings=client_settings or settings(),
            clock=clock,
            sleep=sleep or fake_sleep,
            rng=lambda: 0.5,
            **client_kw,
        )
        client.bind(discovery, pool)
        h = Harness(client, registry, discovery, pool, upstreams, clock, sleeps)
        expected = {f"u{n}" for n in range(len(upstreams))} | {f"d{n}" for n in range(dead)}
        await h.wait_instances(expected)
        yield h
