"""``SqliteRegistry``: discovery in one SQLite file shared by the processes of a machine.

Leases follow the memory backend (and etcd): ``register`` inserts a lease row
with a wall-clock ``expires_at`` (wall clock, because several processes share
the file and must agree on time) and attaches the instance to it; a keepalive
task renews it every ``ttl / 3``. Reads ignore instances whose lease has
expired; expired rows are purged by the next write of any client (an index on
``expires_at`` keeps that cheap however many leases the file holds). A killed
process stops renewing, so its instances vanish once their TTL has passed.

Watchers of a service are woken when that service changes (each change
stamps the service; one task per registry polls for stamps every 25 ms, see
``ChangeFeed``; this client's own writes wake its watchers at once) and at
the next lease expiry of the service. A woken watcher re-reads only if the
stamp moved, and decodes only the instances whose JSON changed. SQL lives in
``sqlite_registry_ops``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Self, TypeVar

from qanat.backends import sqlite_registry_ops as ops
from qanat.backends._common import cancel_and_wait, check_instance, check_ttl
from qanat.backends.sqlite_db import ChangeFeed, SqliteDb
from qanat.errors import BackendError
from qanat.ports import Health, Instance

Clock = Callable[[], float]
T = TypeVar("T")

_Lease = ops.Lease
_renew = ops.renew  # one renewal transaction's body (benchmarks/discovery_scale.py times it)


class SqliteRegistry:
    """A ``Registry`` in a SQLite file; see the module docstring for leases and watches.

    ``clock`` (wall-clock seconds, default ``time.time``) stamps lease expiry;
    every process sharing the file must use the same clock.
    """

    def __init__(self, db: SqliteDb, *, clock: Clock = time.time) -> None:
        self._db = db
        self._clock = clock
        self._feed = ChangeFeed(db, ops.COUNTER, changed=ops.changed_since)
        self._leases: dict[tuple[str, str], ops.Lease] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._closed

    @classmethod
    async def open(cls, url: str) -> Self:
        """Open ``sqlite:///path.db`` (created, with its directories, if missing)."""
        return cls(await SqliteDb.connect(url))

    async def _write(self, fn: Callable[..., T]) -> T:
        """Run a write; wake this client's watchers of the services it touched."""
        touched: set[str] = set()
        try:
            return await self._db.write(partial(fn, touched=touched))
        finally:
            if touched:
                self._feed.notify(touched)

    async def register(self, instance: Instance, *, ttl: float = 10.0) -> None:
        """Put ``instance`` under a new lease of ``ttl`` seconds, kept alive until deregistered."""
        check_instance(instance)
        ttl = check_ttl(ttl)
        key = (instance.service, instance.id)
        old = self._leases.pop(key, None)
        if old is not None:
            await cancel_and_wait(old.task)
        now = self._clock()
        put = partial(ops.put, inst=instance, ttl=ttl, old=old.lease if old else None, now=now)
        lease = ops.Lease(instance, ttl, await self._write(put))
        lease.task = asyncio.create_task(self._keepalive(lease), name=f"qanat-keepalive-{key}")
        self._leases[key] = lease

    async def _keepalive(self, lease: ops.Lease) -> None:
        while True:
            await asyncio.sleep(lease.ttl / 3)
            now = self._clock()
            try:
                found = await self._write(partial(ops.renew, lease=lease, now=now))
                if found is False:  # the lease expired under us (a stall): put it back
                    put = partial(ops.put, inst=lease.instance, ttl=lease.ttl, old=lease.lease)
                    lease.lease = await self._write(partial(put, now=now))
                elif isinstance(found, Instance):
                    lease.instance = found  # keep health/enabled for a re-register
            except BackendError:
                continue  # busy or briefly unavailable: the lease has two more turns to live

    async def deregister(self, service: str, instance_id: str) -> None:
        """Remove the instance (a no-op if absent) and stop renewing it if we own it."""
        lease = self._leases.pop((service, instance_id), None)
        if lease is not None:
            await cancel_and_wait(lease.task)
        ours = lease.lease if lease is not None else None
        await self._write(partial(ops.remove, service=service, instance_id=instance_id, lease=ours))

    async def discover(self, service: str, *, healthy_only: bool = True) -> list[Instance]:
        """The service's live instances sorted by id; only routable ones unless told otherwise."""
        now = self._clock()
        found = await self._db.read(partial(ops.snapshot, service=service, now=now))
        return [i for i in found if i.routable] if healthy_only else found

    async def outputs(self, service: str) -> dict[str, str]:
        """The last ``set_health`` output of each live instance of ``service``, by id."""
        now = self._clock()
        return await self._db.read(partial(ops.outputs, service=service, now=now))

    async def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Complete snapshots: the current one, then one per change (expiry included)."""
        event = self._feed.subscribe(service)
        state = ops.WatchState()
        last: list[Instance] | None = None
        force = True
        try:
            while not self._closed:
                event.clear()
                read = partial(ops.watch_read, service=service, state=state, force=force)
                try:
                    snap = await self._db.read(partial(read, now=self._clock()))
                except BackendError:
                    if self.closed:
                        return
                    raise
                force = False
                if snap is not None and snap != last:
                    last = snap
                    yield snap
                    continue
                force = await self._sleep(event, state.expiry)
        finally:
            self._feed.unsubscribe(event, service)

    async def _sleep(self, event: asyncio.Event, expiry: float | None) -> bool:
        """Wait for a change or the next expiry; True when the expiry woke us."""
        timeout = None if expiry is None else max(0.0, expiry - self._clock()) + 0.005
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return True
        return False

    async def services(self) -> list[str]:
        """Names of services with at least one live instance, sorted."""
        return await self._db.read(partial(ops.services, now=self._clock()))

    async def _update(
        self,
        service: str,
        instance_id: str,
        change: Callable[[Instance], Instance],
        output: str | None,
    ) -> None:
        update = partial(
            ops.update,
            service=service,
            instance_id=instance_id,
            change=change,
            output=output,
            now=self._clock(),
        )
        changed = await self._write(update)
        lease = self._leases.get((service, instance_id))
        if lease is not None:  # ours: a re-registration after a lost lease keeps this state
            lease.instance = changed

    async def set_health(
        self, service: str, instance_id: str, health: Health, output: str = ""
    ) -> None:
        """Record what the checks say; raises ``NotFound`` if the instance is not registered."""
        await self._update(service, instance_id, ops.with_health(Health(health)), output)

    async def set_enabled(self, service: str, instance_id: str, enabled: bool) -> None:
        """Record what an operator says; raises ``NotFound`` if the instance is not registered."""
        await self._update(service, instance_id, ops.with_enabled(bool(enabled)), None)

    async def close(self, *, deregister: bool = True) -> None:
        """Stop keepalives; deregister what this object registered unless told not to.

        ``close(deregister=False)`` leaves the instances to expire by TTL, as a
        crashed process would. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        leases = list(self._leases.values())
        self._leases.clear()
        for lease in leases:
            await cancel_and_wait(lease.task)
        try:
            if deregister and leases:
                ids = [lease.lease for lease in leases]
                await self._write(partial(ops.remove_leases, leases=ids))
        finally:
            await self._feed.close()
            await self._db.close()


__all__ = ["SqliteRegistry"]
