"""Where a route's requests go: static targets or a discovered service, balanced.

A route's upstream is either ``kind: static`` (weighted URLs from config) or
``kind: service`` (names resolved per request through a ``Resolver``, so
discovery plugs in without the gateway awaiting it on the hot path).
Balancers come from ``qanat.core.balance`` (``make_balancer(name)``, the
``pick(key)`` / ``done(endpoint, ok, latency, now)`` convention); until that
package is importable, a plain round robin stands in for ``round_robin``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qanat.errors import ConfigError
from qanat.gateway.config import ServiceUpstream, StaticUpstream
from qanat.ports import Instance


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream endpoint in balancer shape (``id``, ``weight``, ``active``)."""

    id: str
    host: str
    port: int
    weight: int = 1
    active: bool = True


class Resolver(Protocol):
    """Discovery for the gateway: the current endpoints of ``service``.

    Called per request, so it must answer from a cache without I/O. Returns
    ``(id, host, port, weight)`` tuples; an unknown service is an empty list.
    Returning the same list object while nothing changed lets the gateway skip
    rebuilding its balancer.
    """

    def endpoints(self, service: str) -> Sequence[tuple[str, str, int, int]]: ...


class StaticResolver:
    """A ``Resolver`` over fixed ``qanat.ports.Instance`` lists (tests, examples).

    Only routable instances (enabled and not critical) are returned.
    """

    def __init__(self, services: Mapping[str, Sequence[Instance]] | None = None) -> None:
        self._lists: dict[str, list[tuple[str, str, int, int]]] = {}
        for name, instances in (services or {}).items():
            self.set(name, instances)

    def set(self, service: str, instances: Sequence[Instance]) -> None:
        """Replace a service's instances."""
        self._lists[service] = [
            (i.id, i.address, i.port, i.weight) for i in instances if i.routable
        ]

    def endpoints(self, service: str) -> Sequence[tuple[str, str, int, int]]:
        return self._lists.get(service, [])


class _RoundRobin:
    """Stand-in balancer (plain round robin, weights ignored) until core.balance lands."""

    __slots__ = ("_endpoints", "_next")

    def __init__(self) -> None:
        self._endpoints: list[Any] = []
        self._next = 0

    def update(self, endpoints: Sequence[Any]) -> None:
        self._endpoints = [e for e in endpoints if e.active and e.weight > 0]
        self._next = 0

    def pick(self, key: str | None = None) -> Any:
        if not self._endpoints:
            return None
        i = self._next % len(self._endpoints)
        self._next = i + 1
        return self._endpoints[i]

    def done(self, endpoint: Any, success: bool, latency: float, now: float) -> None:
        return None


def make_balancer(name: str, where: str) -> Any:
    """A balancer by name from ``qanat.core.balance``, or the stand-in round robin."""
    try:
        module = importlib.import_module("qanat.core.balance")
        factory = getattr(module, "make_balancer", None)
    except ImportError:
        factory = None
    if factory is None:
        if name != "round_robin":
            raise ConfigError(
                f"balancer {name!r} needs qanat.core.balance; only 'round_robin' is available",
                source=where,
            )
        return _RoundRobin()
    try:
        return factory(name)
    except ConfigError as exc:
        raise ConfigError(exc.reason, source=where) from None


class Upstream:
    """The endpoints of one route and its balancer. ``pick()`` -> Target or None."""

    __slots__ = ("_balancer", "_last", "_resolver", "_service", "description")

    def __init__(
        self,
        spec: StaticUpstream | ServiceUpstream,
        resolver: Resolver | None,
        where: str,
    ) -> None:
        self._balancer = make_balancer(spec.balancer, f"{where}.upstream.balancer")
        self._last: Sequence[tuple[str, str, int, int]] | None = None
        if isinstance(spec, StaticUpstream):
            self._resolver: Resolver | None = None
            self._service = ""
            self.description = "static targets"
            self._balancer.update(
                [Target(t.url, t.host, t.port, t.weight) for t in spec.targets]
            )
        else:
            if resolver is None:
                raise ConfigError(
                    f"upstream service {spec.service!r} needs a resolver (discovery); "
                    "pass Gateway(resolver=...) or use kind: static",
                    source=f"{where}.upstream",
                )
            self._resolver = resolver
            self._service = spec.service
            self.description = f"service {spec.service!r}"

    def pick(self, key: str | None = None) -> Target | None:
        """The next target, or None when there is no endpoint (503)."""
        if self._resolver is not None:
            current = self._resolver.endpoints(self._service)
            if current is not self._last and current != self._last:
                self._balancer.update([Target(i, h, p, w) for i, h, p, w in current])
            self._last = current
        target: Target | None = self._balancer.pick(key)
        return target

    def done(self, target: Target, success: bool, latency: float, now: float) -> None:
        """Report the outcome of a call to ``target`` (exactly once per pick)."""
        self._balancer.done(target, success, latency, now)


__all__ = ["Resolver", "StaticResolver", "Target", "Upstream", "make_balancer"]
