"""``SqliteRegistry``: discovery in one SQLite file shared by the processes of a machine.

Leases follow the memory backend (and etcd): ``register`` inserts a lease row
with a wall-clock ``expires_at`` (wall clock, because several processes share
the file and must agree on time) and attaches the instance to it; a keepalive
task renews it every ``ttl / 3``. Reads ignore instances whose lease has
expired; expired rows are purged by the next write of any client. A killed
process stops renewing, so its instances vanish once their TTL has passed.

Watchers are woken by the file's change counter (polled every 25 ms by one
task per registry, see ``ChangeFeed``) and at the next lease expiry of the
service they watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Self, TypeVar

from qanat.backends._common import (
    cancel_and_wait,
    check_instance,
    check_ttl,
    instance_from_json,
    instance_to_json,
)
from qanat.backends.sqlite_db import ChangeFeed, SqliteDb, bump
from qanat.errors import BackendError, NotFound
from qanat.ports import Health, Instance

Clock = Callable[[], float]
T = TypeVar("T")
_COUNTER = "registry"

_LIVE = "FROM registry_instances i JOIN registry_leases l ON l.id = i.lease WHERE l.expires_at > ?"


def _purge(conn: sqlite3.Connection, now: float) -> None:
    """Delete expired leases and the instances attached to them."""
    if conn.execute("DELETE FROM registry_leases WHERE expires_at <= ?", (now,)).rowcount:
        conn.execute(
            "DELETE FROM registry_instances WHERE lease NOT IN (SELECT id FROM registry_leases)"
        )
        bump(conn, _COUNTER)


def _put(
    conn: sqlite3.Connection, *, inst: Instance, ttl: float, old: int | None, now: float
) -> int:
    _purge(conn, now)
    if old is not None:
        conn.execute("DELETE FROM registry_leases WHERE id = ?", (old,))
    lease = conn.execute(
        "INSERT INTO registry_leases (expires_at) VALUES (?)", (now + ttl,)
    ).lastrowid
    assert lease is not None
    conn.execute(
        "INSERT INTO registry_instances (service, id, lease, data) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (service, id) DO UPDATE SET lease = excluded.lease, data = excluded.data, "
        "output = ''",
        (inst.service, inst.id, lease, instance_to_json(inst)),
    )
    bump(conn, _COUNTER)
    return lease


def _snapshot(conn: sqlite3.Connection, service: str, now: float) -> list[Instance]:
    rows = conn.execute(f"SELECT i.data {_LIVE} AND i.service = ? ORDER BY i.id", (now, service))
    return [instance_from_json(data) for (data,) in rows]


def _next_expiry(conn: sqlite3.Connection, service: str, now: float) -> float | None:
    row = conn.execute(f"SELECT min(l.expires_at) {_LIVE} AND i.service = ?", (now, service))
    value = row.fetchone()[0]
    return None if value is None else float(value)


def _watch_state(
    conn: sqlite3.Connection, service: str, now: float
) -> tuple[list[Instance], float | None]:
    return _snapshot(conn, service, now), _next_expiry(conn, service, now)


@dataclass
class _Lease:
    instance: Instance
    ttl: float
    lease: int
    task: asyncio.Task[None] | None = None


def _renew(conn: sqlite3.Connection, lease: _Lease, now: float) -> Instance | bool | None:
    """Extend a live lease: False if it had expired, else our instance's current state.

    Also purges other clients' expired leases, so a crashed process's rows do not linger.
    """
    _purge(conn, now)
    if not conn.execute(
        "UPDATE registry_leases SET expires_at = ? WHERE id = ? AND expires_at > ?",
        (now + lease.ttl, lease.lease, now),
    ).rowcount:
        return False
    row = conn.execute(
        "SELECT data FROM registry_instances WHERE service = ? AND id = ? AND lease = ?",
        (lease.instance.service, lease.instance.id, lease.lease),
    ).fetchone()
    return instance_from_json(row[0]) if row else None


class SqliteRegistry:
    """A ``Registry`` in a SQLite file; see the module docstring for leases and watches.

    ``clock`` (wall-clock seconds, default ``time.time``) stamps lease expiry;
    every process sharing the file must use the same clock.
    """

    def __init__(self, db: SqliteDb, *, clock: Clock = time.time) -> None:
        self._db = db
        self._clock = clock
        self._feed = ChangeFeed(db, _COUNTER)
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._closed

    @classmethod
    async def open(cls, url: str) -> Self:
        """Open ``sqlite:///path.db`` (created, with its directories, if missing)."""
        return cls(await SqliteDb.connect(url))

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        result = await self._db.write(fn)
        self._feed.notify()
        return result

    async def register(self, instance: Instance, *, ttl: float = 10.0) -> None:
        """Put ``instance`` under a new lease of ``ttl`` seconds, kept alive until deregistered."""
        check_instance(instance)
        ttl = check_ttl(ttl)
        key = (instance.service, instance.id)
        old = self._leases.pop(key, None)
        if old is not None:
            await cancel_and_wait(old.task)
        now = self._clock()
        put = partial(_put, inst=instance, ttl=ttl, old=old.lease if old else None, now=now)
        lease_id = await self._write(put)
        lease = _Lease(instance, ttl, lease_id)
        lease.task = asyncio.create_task(self._keepalive(lease), name=f"qanat-keepalive-{key}")
        self._leases[key] = lease

    async def _keepalive(self, lease: _Lease) -> None:
        while True:
            await asyncio.sleep(lease.ttl / 3)
            now = self._clock()
            try:
                found = await self._db.write(partial(_renew, lease=lease, now=now))
                if found is False:  # the lease expired under us (a stall): put it back
                    put = partial(
                        _put, inst=lease.instance, ttl=lease.ttl, old=lease.lease, now=now
                    )
                    lease.lease = await self._write(put)
                elif isinstance(found, Instance):
                    lease.instance = found  # keep health/enabled for a re-register
            except BackendError:
                continue  # busy or briefly unavailable: the lease has two more turns to live

    async def deregister(self, service: str, instance_id: str) -> None:
        """Remove the instance (a no-op if absent) and stop renewing it if we own it."""
        lease = self._leases.pop((service, instance_id), None)
        if lease is not None:
            await cancel_and_wait(lease.task)

        def remove(conn: sqlite3.Connection) -> None:
            if conn.execute(
                "DELETE FROM registry_instances WHERE service = ? AND id = ?",
                (service, instance_id),
            ).rowcount:
                bump(conn, _COUNTER)
            if lease is not None:
                conn.execute("DELETE FROM registry_leases WHERE id = ?", (lease.lease,))

        await self._write(remove)

    async def discover(self, service: str, *, healthy_only: bool = True) -> list[Instance]:
        """The service's live instances sorted by id; only routable ones unless told otherwise."""
        now = self._clock()
        found = await self._db.read(lambda c: _snapshot(c, service, now))
        return [i for i in found if i.routable] if healthy_only else found

    async def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Complete snapshots: the current one, then one per change (expiry included)."""
        event = self._feed.subscribe()
        last: list[Instance] | None = None
        try:
            while not self._closed:
                event.clear()
                now = self._clock()
                try:
                    snap, expiry = await self._db.read(
                        partial(_watch_state, service=service, now=now)
                    )
                except BackendError:
                    if self.closed:
                        return
                    raise
                if snap != last:
                    last = snap
                    yield snap
                    continue
                timeout = None if expiry is None else max(0.0, expiry - self._clock()) + 0.005
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await event.wait()
        finally:
            self._feed.unsubscribe(event)

    async def services(self) -> list[str]:
        """Names of services with at least one live instance, sorted."""
        now = self._clock()
        rows = await self._db.read(
            lambda c: c.execute(f"SELECT DISTINCT i.service {_LIVE} ORDER BY 1", (now,)).fetchall()
        )
        return [service for (service,) in rows]

    async def _update(
        self,
        service: str,
        instance_id: str,
        change: Callable[[Instance], Instance],
        output: str | None,
    ) -> None:
        now = self._clock()

        def update(conn: sqlite3.Connection) -> Instance:
            row = conn.execute(
                f"SELECT i.data {_LIVE} AND i.service = ? AND i.id = ?", (now, service, instance_id)
            ).fetchone()
            if row is None:
                raise NotFound(f"no instance {instance_id!r} of service {service!r} is registered")
            changed = change(instance_from_json(row[0]))
            conn.execute(
                "UPDATE registry_instances SET data = ?, output = coalesce(?, output) "
                "WHERE service = ? AND id = ?",
                (instance_to_json(changed), output, service, instance_id),
            )
            bump(conn, _COUNTER)
            return changed

        changed = await self._write(update)
        lease = self._leases.get((service, instance_id))
        if lease is not None:  # ours: a re-registration after a lost lease keeps this state
            lease.instance = changed

    async def set_health(
        self, service: str, instance_id: str, health: Health, output: str = ""
    ) -> None:
        """Record what the checks say; raises ``NotFound`` if the instance is not registered."""
        health = Health(health)
        await self._update(service, instance_id, lambda i: replace(i, health=health), output)

    async def set_enabled(self, service: str, instance_id: str, enabled: bool) -> None:
        """Record what an operator says; raises ``NotFound`` if the instance is not registered."""
        on = bool(enabled)
        await self._update(service, instance_id, lambda i: replace(i, enabled=on), None)

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

        def remove_all(conn: sqlite3.Connection) -> None:
            for lease in leases:  # only rows still attached to our leases
                conn.execute("DELETE FROM registry_instances WHERE lease = ?", (lease.lease,))
                conn.execute("DELETE FROM registry_leases WHERE id = ?", (lease.lease,))
            bump(conn, _COUNTER)

        try:
            if deregister and leases:
                await self._write(remove_all)
        finally:
            await self._feed.close()
            await self._db.close()
