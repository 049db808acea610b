"""``EtcdRegistry``: service discovery on a real etcd cluster (details: docs/etcd.md).

``P/registry/<service>/<id>`` holds the instance as JSON (health and enabled
included), attached to the instance's lease; ``set_health`` rewrites it under
the same lease in a ``mod_revision``-compared transaction. Lease semantics
follow ``MemoryRegistry``: a keepalive task renews every ``ttl / 3``, rides out
outages with jittered backoff, and re-registers when etcd lost the lease.
``watch`` lists, then watches from the list's revision + 1; it resumes from the
last revision after a broken stream and re-lists after compaction or a wipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Self

from aetcd import rpc

from qanat.backends._common import (
    check_instance,
    check_name,
    check_ttl,
    instance_from_json,
    output_from_json,
)
from qanat.backends._common import instance_to_json as _to_json
from qanat.backends._etcd import EtcdConnection, connect
from qanat.backends._etcd_registry_watch import list_service, watch_service
from qanat.backends._etcd_util import (
    Backoff,
    cancel_task,
    compare_mod,
    prefix_end,
    put_op,
)
from qanat.errors import BackendError, Conflict, NotFound
from qanat.ports import Health, Instance

_UPDATE_ATTEMPTS = 16


@dataclass
class _Lease:
    """An instance this registry registered, its lease and the task renewing it."""

    instance: Instance
    ttl: float
    lease_id: int = 0
    attached: bool = False  # the key is on this lease, as of our last put or renewal
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None


class EtcdRegistry:
    """A ``Registry`` on etcd; see the module docstring for layout and lease behaviour."""

    def __init__(self, conn: EtcdConnection) -> None:
        self._conn = conn
        self._root = f"{conn.settings.prefix}/registry/"
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._closed = False

    @classmethod
    async def open(cls, url: str) -> Self:
        """Open ``etcd://host:port[,host:port...][?prefix=/ns]``; ``BackendUnreachable`` if down."""
        return cls(await connect(url))

    def _key(self, service: str, instance_id: str) -> bytes:
        return f"{self._root}{service}/{instance_id}".encode()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"this EtcdRegistry for {self._conn.url} is closed; open a new one")

    async def register(self, instance: Instance, *, ttl: float = 10.0) -> None:
        """Put ``instance`` under a new lease of ``ttl`` seconds, kept alive until deregistered."""
        self._check_open()
        check_instance(instance)
        ttl = check_ttl(ttl)
        key = (instance.service, instance.id)
        old = self._leases.pop(key, None)
        if old is not None:
            await cancel_task(old.task)
            await self._revoke(old.lease_id)
        lease = _Lease(instance, ttl)
        await self._grant_and_put(lease)
        lease.task = asyncio.create_task(self._keepalive(lease), name=f"qanat-etcd-keepalive-{key}")
        self._leases[key] = lease

    async def _grant_and_put(self, lease: _Lease) -> None:
        inst = lease.instance
        action = f"registering {inst.service}/{inst.id}"
        grant = rpc.LeaseGrantRequest(TTL=math.ceil(lease.ttl))
        granted = await self._conn.call("leasestub", "LeaseGrant", grant, action)
        put = rpc.PutRequest(
            key=self._key(inst.service, inst.id), value=_to_json(inst).encode(), lease=granted.ID
        )
        await self._conn.call("kvstub", "Put", put, action)
        lease.lease_id = int(granted.ID)
        lease.attached = True

    async def _keepalive(self, lease: _Lease) -> None:
        """Renew every ttl/3; re-register when etcd lost the lease; ride out outages."""
        backoff = Backoff(cap=lease.ttl / 3)
        delay = lease.ttl / 3
        inst = lease.instance
        action = f"renewing the lease of {inst.service}/{inst.id}"
        while True:
            await asyncio.sleep(delay)
            endpoint = self._conn.current
            try:
                async with lease.lock:
                    if await self._conn.keepalive(lease.lease_id, action) > 0:
                        await self._refresh_copy(lease)
                    else:  # expired during an outage, or the store was wiped
                        await self._grant_and_put(lease)
                delay = lease.ttl / 3
                backoff.reset()
            except BackendError:
                self._conn.failed(endpoint)
                delay = backoff.next()

    async def _refresh_copy(self, lease: _Lease) -> None:
        """Remember health/enabled as etcd has them, for a later re-registration."""
        kv = await self._get(lease.instance.service, lease.instance.id, "renewing a lease")
        lease.attached = kv is not None and kv.lease == lease.lease_id
        if lease.attached:
            # A value someone else garbled must not kill the keepalive: keep our copy.
            with contextlib.suppress(ValueError, KeyError):
                lease.instance = instance_from_json(kv.value.decode())

    async def _revoke(self, lease_id: int) -> bool:
        """Revoke a lease (its keys go with it); False if etcd refused (e.g. already gone)."""
        # A lease that is already gone is fine: revoking it is idempotent for us.
        try:
            req = rpc.LeaseRevokeRequest(ID=lease_id)
            await self._conn.call("leasestub", "LeaseRevoke", req, "revoking a lease")
        except BackendError:
            return False
        return True

    async def deregister(self, service: str, instance_id: str) -> None:
        """Remove the instance (a no-op if absent) and stop renewing it if we own it.

        When the key is on our own lease, revoking the lease deletes it: one
        round trip. Otherwise (not ours, or someone re-registered it under
        another lease, as our last renewal saw) the key is deleted as well.
        """
        self._check_open()
        lease = self._leases.pop((service, instance_id), None)
        if lease is not None:
            await cancel_task(lease.task)
            if await self._revoke(lease.lease_id) and lease.attached:
                return
        req = rpc.DeleteRangeRequest(key=self._key(service, instance_id))
        action = f"deregistering {service}/{instance_id}"
        await self._conn.call("kvstub", "DeleteRange", req, action)

    async def _get(self, service: str, instance_id: str, action: str) -> Any:
        req = rpc.RangeRequest(key=self._key(service, instance_id))
        found = await self._conn.call("kvstub", "Range", req, action)
        return found.kvs[0] if found.kvs else None

    async def _list(self, service: str) -> tuple[dict[str, Instance], int]:
        return await list_service(self._conn, self._root, service)

    async def discover(self, service: str, *, healthy_only: bool = True) -> list[Instance]:
        """The service's live instances sorted by id; only routable ones unless told otherwise."""
        self._check_open()
        check_name(service, "service")
        by_id, _ = await self._list(service)
        found = [by_id[i] for i in sorted(by_id)]
        return [i for i in found if i.routable] if healthy_only else found

    async def services(self) -> list[str]:
        """Names of services with at least one live instance, sorted."""
        self._check_open()
        root = self._root.encode()
        req = rpc.RangeRequest(key=root, range_end=prefix_end(root), keys_only=True)
        found = await self._conn.call("kvstub", "Range", req, "listing services")
        names = {kv.key[len(root) :].decode().split("/", 1)[0] for kv in found.kvs}
        return sorted(names)

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

    async def outputs(self, service: str) -> dict[str, str]:
        """The last ``set_health`` output of each instance of ``service``, by id."""
        self._check_open()
        check_name(service, "service")
        prefix = f"{self._root}{service}/".encode()
        req = rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix))
        found = await self._conn.call("kvstub", "Range", req, f"listing service {service!r}")
        return {
            kv.key[len(prefix) :].decode(): output_from_json(kv.value.decode()) for kv in found.kvs
        }

    async def _update(
        self,
        service: str,
        instance_id: str,
        change: Callable[[Instance], Instance],
        output: str | None,
    ) -> None:
        """Read-modify-write the instance under its own lease, retrying lost races."""
        self._check_open()
        ours = self._leases.get((service, instance_id))
        async with ours.lock if ours else contextlib.nullcontext():
            for _ in range(_UPDATE_ATTEMPTS):
                kv = await self._get(service, instance_id, f"updating {service}/{instance_id}")
                if kv is None:
                    raise NotFound(
                        f"no instance {instance_id!r} of service {service!r} is registered"
                    )
                old = kv.value.decode()
                inst = change(instance_from_json(old))
                kept = output_from_json(old) if output is None else output
                txn = rpc.TxnRequest(
                    compare=[compare_mod(kv.key, kv.mod_revision)],
                    success=[put_op(kv.key, _to_json(inst, kept).encode(), kv.lease)],
                )
                done = await self._conn.call("kvstub", "Txn", txn, f"updating {kv.key!r}")
                if done.succeeded:
                    if ours is not None:
                        ours.instance = inst
                    return
        raise Conflict(
            f"{service}/{instance_id} changed {_UPDATE_ATTEMPTS} times while being updated; retry"
        )

    async def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Complete snapshots: the current one, then one per change; survives etcd restarts.

        The first listing's errors are raised (a wrong URL shows at once);
        afterwards outages are ridden out with backoff.
        """
        self._check_open()
        check_name(service, "service")
        async with contextlib.aclosing(
            watch_service(self._conn, self._root, service, lambda: self._closed)
        ) as snapshots:
            async for snapshot in snapshots:
                yield snapshot

    async def close(self, *, deregister: bool = True) -> None:
        """Stop every keepalive; deregister what this object registered unless told not to.

        ``close(deregister=False)`` leaves the instances to expire by TTL, as a
        crashed process would. Watches end. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        leases, self._leases = list(self._leases.values()), {}
        for lease in leases:
            await cancel_task(lease.task)
            if deregister:
                await self._revoke(lease.lease_id)
        await self._conn.close()


__all__ = ["EtcdRegistry"]
