"""Service upstreams through discovery: a ``Resolver`` over ``DiscoveryCache``.

``upstream: {kind: service, service: users}`` routes go to the instances the
registry calls routable — enabled by an operator and not ``critical`` by
their health checks, i.e. the registry's active health — read from
``qanat.runtime.discovery.DiscoveryCache``: one watch per service, a dict
read per request, last-known-good while the registry is down, and the
cache's protection (panic) threshold: below 50 % healthy, every enabled
instance gets traffic rather than the few survivors (Envoy's panic mode).

``endpoints()`` returns the *same* list object while the cache's snapshot is
unchanged, so ``Upstream.pick`` rebuilds its balancer only when an instance
joins, leaves or changes health.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from qanat.errors import Timeout
from qanat.ports import Instance
from qanat.runtime.discovery import DiscoveryCache

Endpoint = tuple[str, str, int, int]


class DiscoveryResolver:
    """The gateway's ``Resolver`` for ``kind: service`` routes, fed by a ``DiscoveryCache``.

    The cache belongs to the caller (close it after the gateway). A service's
    watch starts on its first lookup, or earlier with ``prepare``.
    """

    def __init__(self, cache: DiscoveryCache) -> None:
        self.cache = cache
        self._memo: dict[str, tuple[tuple[Instance, ...], list[Endpoint]]] = {}

    def endpoints(self, service: str) -> Sequence[Endpoint]:
        """The service's routable endpoints now (no I/O: a cache read)."""
        current = self.cache.instances(service)
        memo = self._memo.get(service)
        if memo is not None and memo[0] is current:
            return memo[1]
        out = [(i.id, i.address, i.port, i.weight) for i in current]
        self._memo[service] = (current, out)
        return out

    def instances(self, service: str) -> Sequence[Instance]:
        """The routable ``Instance`` objects (versions, tags: for canary subsets)."""
        return self.cache.instances(service)

    async def prepare(self, services: Iterable[str], timeout: float = 5.0) -> list[str]:
        """Start watching ``services`` and wait for their first snapshots.

        Returns the reasons for the services still without one after
        ``timeout`` (empty: all arrived). Their watches keep retrying.
        """
        names = sorted(set(services))

        async def one(service: str) -> str | None:
            try:
                await self.cache.wait_ready(service, timeout)
            except Timeout as exc:
                return str(exc)
            return None

        results = await asyncio.gather(*(one(s) for s in names))
        return [r for r in results if r is not None]

    def not_ready(self, services: Iterable[str]) -> list[str]:
        """Reasons why ``services`` cannot be routed yet: those without a first snapshot."""
        reasons = []
        for service in sorted(set(services)):
            status = self.cache.status(service)
            if status.state == "unknown":
                why = f" (last error: {status.last_error})" if status.last_error else ""
                reasons.append(f"service {service!r}: no discovery snapshot yet{why}")
                self.cache.instances(service)  # make sure its watch is running
        return reasons

    def describe(self, service: str) -> dict[str, Any]:
        """What discovery knows about ``service``, as plain data for the admin endpoint."""
        status = self.cache.status(service)
        return {
            "service": service,
            "discovery": status.state,
            "age_s": None if status.age is None else round(status.age, 3),
            "last_error": status.last_error,
            "registered": status.instances,
            "routable": status.routable,
            "panic": status.panic,
            "instances": [
                {
                    "id": i.id,
                    "address": f"{i.address}:{i.port}",
                    "weight": i.weight,
                    "health": str(i.health),
                    "enabled": i.enabled,
                    "version": i.version,
                    "zone": i.zone,
                }
                for i in self.cache.instances(service)
            ],
        }


__all__ = ["DiscoveryResolver"]
