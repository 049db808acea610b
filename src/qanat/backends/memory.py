"""In-process discovery and config: the reference implementation and the test fake.

``MemoryRegistry`` and ``MemoryConfigStore`` implement the ``Registry`` and
``ConfigStore`` ports with plain dicts, for tests and single-process use. They
define the semantics every other backend must match (the contract suites in
``tests/contract/`` check that they do).

Namespaces: ``memory://name`` opens a named in-process namespace; two opens of
the same name share state. ``memory://`` opens a fresh private namespace.
A namespace belongs to one event loop at a time (no locks: every operation is
synchronous between two awaits).

Leases follow etcd's model: ``register`` grants a lease of ``ttl`` seconds and
attaches the instance to it; the registry renews the lease every ``ttl / 3``;
an expired lease removes its instance. Deregistering from *another* client
removes the instance but leaves the owner's lease alone (the owner does not put
it back); a lease that expired (a stalled loop, a fake clock moved on) is
re-granted and the instance re-registered by the owner's next renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Self

from qanat.backends._common import (
    cancel_and_wait,
    check_instance,
    check_ttl,
    memory_namespace,
)
from qanat.backends.memory_config import MemoryConfigStore
from qanat.errors import BackendError, NotFound
from qanat.ports import Health, Instance

Clock = Callable[[], float]
_tokens = itertools.count(1)


@dataclass
class _Record:
    instance: Instance
    lease: int
    output: str = ""


@dataclass
class _RegistryState:
    """One namespace: instances by service and id, leases by token."""

    clock: Clock
    records: dict[str, dict[str, _Record]] = field(default_factory=dict)
    leases: dict[int, float] = field(default_factory=dict)  # token -> expires_at (clock time)
    waiters: set[asyncio.Event] = field(default_factory=set)

    def notify(self) -> None:
        for event in self.waiters:
            event.set()

    def purge(self) -> None:
        """Drop expired leases and the instances attached to them."""
        now = self.clock()
        dead = {token for token, expires in self.leases.items() if expires <= now}
        if not dead:
            return
        for token in dead:
            del self.leases[token]
        for service in list(self.records):
            by_id = self.records[service]
            for iid in [i for i, r in by_id.items() if r.lease in dead]:
                del by_id[iid]
            if not by_id:
                del self.records[service]
        self.notify()

    def snapshot(self, service: str) -> list[Instance]:
        by_id = self.records.get(service, {})
        return [by_id[i].instance for i in sorted(by_id)]

    def next_expiry(self, service: str) -> float | None:
        tokens = {r.lease for r in self.records.get(service, {}).values()}
        return min((self.leases[t] for t in tokens if t in self.leases), default=None)

    def put(self, instance: Instance, ttl: float) -> int:
        token = next(_tokens)
        self.leases[token] = self.clock() + ttl
        self.records.setdefault(instance.service, {})[instance.id] = _Record(instance, token)
        self.notify()
        return token

    def remove(self, service: str, instance_id: str) -> bool:
        by_id = self.records.get(service, {})
        if by_id.pop(instance_id, None) is None:
            return False
        if not by_id:
            del self.records[service]
        self.notify()
        return True


_REGISTRIES: dict[str, _RegistryState] = {}


@dataclass
class _Lease:
    instance: Instance
    ttl: float
    token: int
    task: asyncio.Task[None] | None = None


class MemoryRegistry:
    """A ``Registry`` held in this process; see the module docstring for lease semantics.

    ``clock`` (seconds, default ``time.monotonic``) measures lease expiry; it is
    taken from the first registry that creates a namespace.
    """

    def __init__(self, namespace: str | None = None, *, clock: Clock = time.monotonic) -> None:
        if namespace is None:
            self._state = _RegistryState(clock)
        else:
            self._state = _REGISTRIES.setdefault(namespace, _RegistryState(clock))
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._closed = False

    @classmethod
    async def open(cls, url: str) -> Self:
        """Open ``memory://[name]``."""
        return cls(memory_namespace(url))

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("this MemoryRegistry is closed; open a new one")

    async def register(self, instance: Instance, *, ttl: float = 10.0) -> None:
        """Put ``instance`` under a new lease of ``ttl`` seconds, kept alive until deregistered."""
        self._check_open()
        check_instance(instance)
        ttl = check_ttl(ttl)
        key = (instance.service, instance.id)
        old = self._leases.pop(key, None)
        if old is not None:
            await cancel_and_wait(old.task)
            self._state.leases.pop(old.token, None)
        lease = _Lease(instance, ttl, self._state.put(instance, ttl))
        lease.task = asyncio.create_task(self._keepalive(lease), name=f"qanat-keepalive-{key}")
        self._leases[key] = lease

    async def _keepalive(self, lease: _Lease) -> None:
        state = self._state
        while True:
            await asyncio.sleep(lease.ttl / 3)
            state.purge()
            if lease.token in state.leases:
                state.leases[lease.token] = state.clock() + lease.ttl
                rec = state.records.get(lease.instance.service, {}).get(lease.instance.id)
                if rec is not None and rec.lease == lease.token:
                    lease.instance = rec.instance  # remember health/enabled for a re-register
            else:  # the lease expired under us: grant a new one and put the instance back
                lease.token = state.put(lease.instance, lease.ttl)

    async def deregister(self, service: str, instance_id: str) -> None:
        """Remove the instance (a no-op if absent) and stop renewing it if we own it."""
        self._check_open()
        lease = self._leases.pop((service, instance_id), None)
        if lease is not None:
            await cancel_and_wait(lease.task)
            self._state.leases.pop(lease.token, None)
        self._state.remove(service, instance_id)

    async def discover(self, service: str, *, healthy_only: bool = True) -> list[Instance]:
        """The service's live instances sorted by id; only routable ones unless told otherwise."""
        self._check_open()
        self._state.purge()
        found = self._state.snapshot(service)
        return [i for i in found if i.routable] if healthy_only else found

    async def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Complete snapshots: the current one, then one per change (expiry included)."""
        self._check_open()
        state, event, last = self._state, asyncio.Event(), None
        state.waiters.add(event)
        try:
            while not self._closed:
                event.clear()
                state.purge()
                snap = state.snapshot(service)
                if snap != last:
                    last = snap
                    yield snap
                    continue  # re-check: the consumer may have changed state while we yielded
                expiry = state.next_expiry(service)
                timeout = None if expiry is None else max(0.0, expiry - state.clock()) + 0.001
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await event.wait()
        finally:
            state.waiters.discard(event)

    async def services(self) -> list[str]:
        """Names of services with at least one live instance, sorted."""
        self._check_open()
        self._state.purge()
        return sorted(self._state.records)

    async def outputs(self, service: str) -> dict[str, str]:
        """The last ``set_health`` output of each live instance of ``service``, by id."""
        self._check_open()
        self._state.purge()
        by_id = self._state.records.get(service, {})
        return {iid: by_id[iid].output for iid in sorted(by_id)}

    def _record(self, service: str, instance_id: str) -> _Record:
        self._state.purge()
        rec = self._state.records.get(service, {}).get(instance_id)
        if rec is None:
            raise NotFound(f"no instance {instance_id!r} of service {service!r} is registered")
        return rec

    async def set_health(
        self, service: str, instance_id: str, health: Health, output: str = ""
    ) -> None:
        """Record what the checks say; raises ``NotFound`` if the instance is not registered."""
        self._check_open()
        rec = self._record(service, instance_id)
        rec.instance, rec.output = replace(rec.instance, health=Health(health)), output
        self._remember(rec)

    async def set_enabled(self, service: str, instance_id: str, enabled: bool) -> None:
        """Record what an operator says; raises ``NotFound`` if the instance is not registered."""
        self._check_open()
        rec = self._record(service, instance_id)
        rec.instance = replace(rec.instance, enabled=bool(enabled))
        self._remember(rec)

    def _remember(self, rec: _Record) -> None:
        lease = self._leases.get((rec.instance.service, rec.instance.id))
        if lease is not None:  # ours: a re-registration after a lost lease keeps this state
            lease.instance = rec.instance
        self._state.notify()

    async def close(self, *, deregister: bool = True) -> None:
        """Stop every keepalive; deregister what this object registered unless told not to.

        ``close(deregister=False)`` leaves the instances to expire by TTL, as a
        crashed process would. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        for (service, iid), lease in list(self._leases.items()):
            await cancel_and_wait(lease.task)
            if deregister:
                self._state.leases.pop(lease.token, None)
                rec = self._state.records.get(service, {}).get(iid)
                if rec is not None and rec.lease == lease.token:  # not if someone took it over
                    self._state.remove(service, iid)
        self._leases.clear()
        self._state.notify()  # wake watchers so they see they are closed


__all__ = ["MemoryConfigStore", "MemoryRegistry"]
