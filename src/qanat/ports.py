"""Narrow ports: one ``typing.Protocol`` per capability.

Backends (``qanat.backends.*``) implement these; the runtime and the CLI only
ever talk to a port. ``backends/memory.py`` is the reference implementation and
the test fake; one contract suite (``tests/contract/``) runs against every
backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Health(StrEnum):
    """An instance's health, as Consul reports it.

    ``passing`` and ``warning`` instances receive traffic; ``critical`` ones do
    not (Consul's DNS interface makes the same choice).
    """

    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Instance:
    """One running instance of a service, as registered in discovery.

    ``health`` (what checks say) and ``enabled`` (what an operator says) are
    separate facts: an instance is *routable* only when it is enabled and not
    critical.
    """

    id: str
    service: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    weight: int = 1
    version: str = ""
    zone: str = ""
    health: Health = Health.PASSING
    enabled: bool = True

    @property
    def url(self) -> str:
        """Base URL of the instance, e.g. ``http://127.0.0.1:8001``."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    @property
    def routable(self) -> bool:
        """True when the instance should receive traffic."""
        return self.enabled and self.health is not Health.CRITICAL

    @property
    def active(self) -> bool:
        """Alias of ``routable``, so an ``Instance`` is a balancer endpoint."""
        return self.routable


@runtime_checkable
class Registry(Protocol):
    """Service discovery: instances register with a lease; clients discover and watch.

    ``register`` grants a lease of ``ttl`` seconds and keeps it alive in a
    background task owned by the registry until ``deregister`` or ``close``;
    when the process dies the lease expires and the instance disappears.
    """

    async def register(self, instance: Instance, *, ttl: float = 10.0) -> None: ...

    async def deregister(self, service: str, instance_id: str) -> None: ...

    async def discover(self, service: str, *, healthy_only: bool = True) -> list[Instance]:
        """The service's instances, sorted by id; routable ones only by default."""
        ...

    def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Complete snapshots of the service (every instance, any health).

        The first snapshot is the current state; then one per change.
        """
        ...

    async def services(self) -> list[str]:
        """Names of services with at least one registered instance, sorted."""
        ...

    async def set_health(
        self, service: str, instance_id: str, health: Health, output: str = ""
    ) -> None: ...

    async def set_enabled(self, service: str, instance_id: str, enabled: bool) -> None: ...

    async def close(self, *, deregister: bool = True) -> None:
        """Stop keepalives; with ``deregister`` (default) remove this client's instances now,
        otherwise leave them to expire by TTL, as after a crash."""
        ...


class ChangeType(StrEnum):
    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """A key's current value and the store revision at which it was last modified."""

    key: str
    value: str
    revision: int


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One change to a key (seed: ``ConfigChange``), with the store revision."""

    key: str
    old_value: str | None
    new_value: str | None
    type: ChangeType
    revision: int


@runtime_checkable
class ConfigStore(Protocol):
    """The config center: string values under ``/``-separated keys, with watches.

    Revisions are store-wide and increase with every write (as in etcd).
    """

    async def get(self, key: str) -> ConfigEntry | None: ...

    async def set(self, key: str, value: str) -> int:
        """Write ``value``; return the new revision."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed."""
        ...

    async def get_all(self, prefix: str) -> dict[str, ConfigEntry]: ...

    async def compare_and_set(self, key: str, value: str, *, expected_revision: int) -> bool:
        """Write only if the key's last-modified revision equals ``expected_revision``.

        ``expected_revision=0`` means "only if the key does not exist".
        Returns whether the write happened.
        """
        ...

    async def history(self, key: str, *, limit: int = 20) -> list[ConfigChange]:
        """The key's most recent changes, newest first."""
        ...

    def watch(
        self, key: str, *, prefix: bool = False, start_revision: int | None = None
    ) -> AsyncIterator[ConfigChange]:
        """Changes to ``key`` (or every key under it when ``prefix``).

        With ``start_revision``, changes from that revision on are replayed
        first, so a watcher that reconnects misses nothing.
        """
        ...

    async def close(self) -> None: ...


__all__ = [
    "ChangeType",
    "ConfigChange",
    "ConfigEntry",
    "ConfigStore",
    "Health",
    "Instance",
    "Registry",
]
