"""The SQL of ``SqliteRegistry``: plain functions run in one transaction in the worker thread.

Every write that changes what a service's watchers would see *touches* the
service: it bumps the file's ``registry`` counter and stamps the service's
row in ``registry_services`` with the new value. A watcher compares its
service's stamp before re-reading, and the change feed wakes only the
watchers of services stamped since its last poll, so a change to one service
costs the watchers of the others nothing. Renewals are not changes and touch
nothing.

Write functions add the services they touched to ``touched``, so the writing
client can wake its own watchers at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace

from qanat.backends._common import instance_from_json, instance_to_json
from qanat.backends.sqlite_db import bump, counter
from qanat.errors import NotFound
from qanat.ports import Health, Instance

COUNTER = "registry"

_LIVE = "FROM registry_instances i JOIN registry_leases l ON l.id = i.lease WHERE l.expires_at > ?"


@dataclass
class Lease:
    """An instance this client registered, its lease row and the task renewing it."""

    instance: Instance
    ttl: float
    lease: int
    task: asyncio.Task[None] | None = None  # the keepalive, owned by the registry


def touch(conn: sqlite3.Connection, services: set[str], touched: set[str]) -> None:
    """Stamp ``services`` with a new value of the registry counter (nothing if empty)."""
    if not services:
        return
    revision = bump(conn, COUNTER)
    conn.executemany(
        "INSERT INTO registry_services (service, revision) VALUES (?, ?) "
        "ON CONFLICT (service) DO UPDATE SET revision = excluded.revision",
        [(service, revision) for service in services],
    )
    touched |= services


def purge(conn: sqlite3.Connection, now: float, touched: set[str]) -> None:
    """Delete expired leases and their instances; the index on ``expires_at`` keeps it O(log n)."""
    dead = conn.execute(
        "DELETE FROM registry_leases WHERE expires_at <= ? RETURNING id", (now,)
    ).fetchall()
    services: set[str] = set()
    for (lease,) in dead:
        rows = conn.execute(
            "DELETE FROM registry_instances WHERE lease = ? RETURNING service", (lease,)
        )
        services.update(service for (service,) in rows)
    touch(conn, services, touched)


def put(
    conn: sqlite3.Connection,
    *,
    inst: Instance,
    ttl: float,
    old: int | None,
    now: float,
    touched: set[str],
) -> int:
    """Grant a lease of ``ttl`` (dropping lease ``old``) and attach ``inst`` to it."""
    purge(conn, now, touched)
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
    touch(conn, {inst.service}, touched)
    return lease


def renew(
    conn: sqlite3.Connection, lease: Lease, now: float, touched: set[str] | None = None
) -> Instance | bool | None:
    """Extend a live lease: False if it had expired, else our instance's current state.

    Also purges other clients' expired leases, so a crashed process's rows do not linger.
    """
    purge(conn, now, set() if touched is None else touched)
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


def remove(
    conn: sqlite3.Connection, service: str, instance_id: str, lease: int | None, touched: set[str]
) -> None:
    """Delete the instance (whoever owns it) and, if given, our lease."""
    if conn.execute(
        "DELETE FROM registry_instances WHERE service = ? AND id = ?", (service, instance_id)
    ).rowcount:
        touch(conn, {service}, touched)
    if lease is not None:
        conn.execute("DELETE FROM registry_leases WHERE id = ?", (lease,))


def remove_leases(conn: sqlite3.Connection, leases: list[int], touched: set[str]) -> None:
    """Delete our leases and only the instances still attached to them."""
    services: set[str] = set()
    for lease in leases:
        rows = conn.execute(
            "DELETE FROM registry_instances WHERE lease = ? RETURNING service", (lease,)
        )
        services.update(service for (service,) in rows)
        conn.execute("DELETE FROM registry_leases WHERE id = ?", (lease,))
    touch(conn, services, touched)


def update(
    conn: sqlite3.Connection,
    *,
    service: str,
    instance_id: str,
    change: Callable[[Instance], Instance],
    output: str | None,
    now: float,
    touched: set[str],
) -> Instance:
    """Read-modify-write one live instance; ``NotFound`` if it is not registered."""
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
    touch(conn, {service}, touched)
    return changed


def with_health(health: Health) -> Callable[[Instance], Instance]:
    """The change ``set_health`` makes."""
    return lambda i: replace(i, health=health)


def with_enabled(enabled: bool) -> Callable[[Instance], Instance]:
    """The change ``set_enabled`` makes."""
    return lambda i: replace(i, enabled=enabled)


def snapshot(conn: sqlite3.Connection, service: str, now: float) -> list[Instance]:
    """The service's live instances, sorted by id."""
    rows = conn.execute(f"SELECT i.data {_LIVE} AND i.service = ? ORDER BY i.id", (now, service))
    return [instance_from_json(data) for (data,) in rows]


def outputs(conn: sqlite3.Connection, service: str, now: float) -> dict[str, str]:
    """The last check output of each live instance of the service."""
    rows = conn.execute(
        f"SELECT i.id, i.output {_LIVE} AND i.service = ? ORDER BY i.id", (now, service)
    )
    return dict(rows.fetchall())


def services(conn: sqlite3.Connection, now: float) -> list[str]:
    """Names of services with at least one live instance, sorted."""
    rows = conn.execute(f"SELECT DISTINCT i.service {_LIVE} ORDER BY 1", (now,))
    return [service for (service,) in rows]


Decoded = dict[str, tuple[str, Instance]]  # instance id -> (its JSON, the decoded instance)


@dataclass
class WatchState:
    """What one watcher last read: the service's stamp, decoded rows, the next lease expiry."""

    stamp: int | None = None
    decoded: Decoded | None = None
    expiry: float | None = None


def watch_read(
    conn: sqlite3.Connection, service: str, now: float, state: WatchState, force: bool
) -> list[Instance] | None:
    """The service's snapshot, or None when its stamp says nothing changed (unless ``force``).

    Only rows whose JSON differs from the last read are decoded (decoding is
    most of the cost of a large service). Updates ``state`` in place.
    """
    row = conn.execute(
        "SELECT revision FROM registry_services WHERE service = ?", (service,)
    ).fetchone()
    stamp = row[0] if row else 0
    if stamp == state.stamp and not force and state.decoded is not None:
        return None
    rows = conn.execute(
        f"SELECT i.id, i.data, l.expires_at {_LIVE} AND i.service = ? ORDER BY i.id",
        (now, service),
    ).fetchall()
    old = state.decoded or {}
    decoded: Decoded = {}
    expiry: float | None = None
    for iid, data, expires_at in rows:
        known = old.get(iid)
        decoded[iid] = (
            known
            if known is not None and known[0] == data
            else (
                data,
                instance_from_json(data),
            )
        )
        expiry = expires_at if expiry is None else min(expiry, expires_at)
    state.stamp, state.decoded, state.expiry = stamp, decoded, expiry
    return [inst for _, inst in decoded.values()]


def changed_since(last: int | None, conn: sqlite3.Connection) -> tuple[int, list[str] | None]:
    """The registry counter now and the services stamped after ``last`` (None: wake all).

    All, when there is no ``last`` yet (a watcher may have read just before the
    first poll) or the counter went backwards (the file was replaced).
    """
    value = counter(conn, COUNTER)
    if last is None or value < last:
        return value, None
    if value == last:
        return value, []
    rows = conn.execute("SELECT service FROM registry_services WHERE revision > ?", (last,))
    return value, [service for (service,) in rows]
