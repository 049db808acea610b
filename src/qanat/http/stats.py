"""Pool statistics as data, for metrics and the dashboard (anyio ``statistics()`` style)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HostStats:
    """One upstream (host, port) at the moment of the snapshot.

    ``open`` counts every connection holding a slot under the per-host cap:
    ``idle + in_use + connecting``. ``pending`` is the number of requests
    queued for a slot.
    """

    host: str
    port: int
    open: int
    idle: int
    in_use: int
    connecting: int
    pending: int


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Every host's :class:`HostStats`, their totals, and counters since the pool began.

    ``connections_opened``: TCP connections made. ``requests``: requests that
    got a connection. ``reused``: of those, how many rode a kept-alive one.
    ``stale_retries``: idempotent requests retried once on a fresh connection
    after a reused one died before any response byte.
    """

    hosts: tuple[HostStats, ...]
    open: int
    idle: int
    in_use: int
    pending: int
    connections_opened: int
    requests: int
    reused: int
    stale_retries: int


__all__ = ["HostStats", "PoolStats"]
