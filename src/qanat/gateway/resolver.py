"""Where ``kind: service`` upstreams get their instances: the ``Resolver`` port.

Split from ``upstream.py`` (which re-exports these names). A resolver answers
from a cache, without I/O, because the gateway asks it on every pick;
``qanat.gateway.discovery.DiscoveryResolver`` follows a registry,
``StaticResolver`` holds fixed lists (tests, examples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qanat.ports import Instance

Endpoints = Sequence[tuple[str, str, int, int]]


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream endpoint in balancer shape (``id``, ``weight``, ``active``)."""

    id: str
    host: str
    port: int
    weight: int = 1
    active: bool = True
    version: str = ""
    tags: tuple[str, ...] = ()


class Resolver(Protocol):
    """Discovery for the gateway: the current endpoints of ``service``.

    Called per request, so it must answer from a cache without I/O. Returns
    ``(id, host, port, weight)`` tuples; an unknown service is an empty list.
    Returning the same list object while nothing changed lets the gateway skip
    rebuilding its balancer. A resolver that also has ``instances(service)``
    (``qanat.ports.Instance`` objects, as ``DiscoveryCache`` and
    ``StaticResolver`` do) serves routes with canary subsets (version, tags).
    """

    def endpoints(self, service: str) -> Endpoints: ...


class StaticResolver:
    """A ``Resolver`` over fixed ``qanat.ports.Instance`` lists (tests, examples).

    Only routable instances (enabled and not critical) are returned.
    """

    def __init__(self, services: Mapping[str, Sequence[Instance]] | None = None) -> None:
        self._lists: dict[str, list[tuple[str, str, int, int]]] = {}
        self._instances: dict[str, tuple[Instance, ...]] = {}
        for name, instances in (services or {}).items():
            self.set(name, instances)

    def set(self, service: str, instances: Sequence[Instance]) -> None:
        """Replace a service's instances."""
        routable = tuple(i for i in instances if i.routable)
        self._instances[service] = routable
        self._lists[service] = [(i.id, i.address, i.port, i.weight) for i in routable]

    def endpoints(self, service: str) -> Endpoints:
        return self._lists.get(service, [])

    def instances(self, service: str) -> Sequence[Instance]:
        return self._instances.get(service, ())


def as_target(i: Any) -> Target:
    """A ``Target`` from an ``endpoints()`` tuple or a ``qanat.ports.Instance``."""
    if isinstance(i, tuple):
        return Target(i[0], i[1], i[2], i[3])
    return Target(i.id, i.address, i.port, i.weight, True, i.version, tuple(i.tags))


__all__ = ["Endpoints", "Resolver", "StaticResolver", "Target", "as_target"]
