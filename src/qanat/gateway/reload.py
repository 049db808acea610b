"""Live route reload from the config center, without dropping a connection.

The route set lives under one config key, ``qanat/gateway/routes`` (override
with ``--routes-key``): a YAML or JSON document, either a ``routes:`` mapping
or a bare list, in the model of ``docs/gateway.md``. Each gateway watches it;
a change is parsed and validated, the services it names are given a moment
to get their first discovery snapshot, and ``Gateway.update_routes`` swaps
the compiled set in one assignment — requests in flight finish on the set
they started with, keep-alive connections stay open. A document that does
not parse or validate is **rejected**: the reason is logged and kept for the
admin endpoint, and the set being served stays.

Seeding from the topology (``seed=``), decided once at start:

- key absent: the topology's routes are written (``compare_and_set`` from
  revision 0, so one of several workers writes them);
- key present, and the topology's routes changed since they last seeded it
  (a sha256 under ``qanat/gateway/routes.seed`` says so): the file was edited,
  the file wins and is written again;
- otherwise the stored set wins: live edits survive a gateway restart.

Deleting the key changes nothing (logged); write a new set instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import yaml

from qanat import _yaml
from qanat.errors import BackendError, ConfigError, WatchCompacted
from qanat.gateway.config import RouteConfig, ServiceUpstream, _validate_route
from qanat.ports import ConfigStore
from qanat.runtime._tasks import TaskOwner, backoff_delay

log = logging.getLogger("qanat.gateway.reload")

ROUTES_KEY = "qanat/gateway/routes"
SEED_SUFFIX = ".seed"


class RouteTarget(Protocol):
    """What the reloader drives: ``Gateway.update_routes``."""

    def update_routes(self, routes: Sequence[RouteConfig | Mapping[str, Any]]) -> None: ...


Prepare = Callable[[list[str]], Awaitable[list[str]]]
"""Start discovery for these services and wait a little; returns what is still missing."""


def parse_route_document(text: str, source: str) -> list[RouteConfig]:
    """Parse and validate a route document (pure); ``ConfigError`` names the route and line."""
    doc = _yaml.parse(text, source)
    data: Any = doc.data
    at: _yaml.Loc = ()
    if isinstance(data, dict):
        unknown = set(data) - {"routes"}
        if unknown or not isinstance(data.get("routes"), list):
            raise ConfigError(
                "expected a 'routes:' list (or a bare list of routes)"
                + (f"; unknown keys {sorted(unknown)}" if unknown else ""), source=source)
        data, at = data["routes"], ("routes",)
    if not isinstance(data, list):
        raise ConfigError(f"expected a list of routes, got {type(data).__name__}", source=source)
    return [_validate_route(doc, (*at, i), i, raw) for i, raw in enumerate(data)]


def route_document(routes: Sequence[Mapping[str, Any]]) -> str:
    """The YAML the reloader seeds the key with: ``routes:`` and the list."""
    return yaml.safe_dump({"routes": [dict(r) for r in routes]}, sort_keys=False)


def routes_digest(routes: Sequence[Mapping[str, Any]]) -> str:
    """A stable fingerprint of a route list (key order does not matter)."""
    canonical = json.dumps(list(routes), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class ReloadStatus:
    """What the admin endpoint reports about the route set."""

    key: str
    source: str  # "config store" once a stored set is served, else where the set came from
    revision: int | None  # the store revision of the set being served
    applied: int = 0
    rejected: int = 0
    applied_at: float | None = None  # wall clock
    last_rejection: dict[str, Any] | None = None  # revision, reason, at


class RouteReloader:
    """Keeps ``gateway``'s routes in step with ``key`` in ``store`` (see the module docstring).

    ``start()`` seeds, applies the stored set and starts the watch;
    ``close()`` stops it. ``prepare`` (usually ``DiscoveryResolver.prepare``)
    is awaited with a new set's services before the swap.
    """

    def __init__(
        self,
        gateway: RouteTarget,
        store: ConfigStore,
        *,
        key: str = ROUTES_KEY,
        seed: Sequence[Mapping[str, Any]] | None = None,
        initial_source: str = "topology",
        prepare: Prepare | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._gateway = gateway
        self._store = store
        self._seed = seed
        self._prepare = prepare
        self._wall = wall
        self._state = ReloadStatus(key, initial_source, None)
        self._tasks = TaskOwner("gateway-reload")

    @property
    def key(self) -> str:
        return self._state.key

    def status(self) -> dict[str, Any]:
        """The reload state as plain data."""
        return asdict(self._state)

    async def start(self, timeout: float = 10.0) -> None:
        """Seed if needed, serve the stored set (if valid), then watch for changes.

        If the store does not answer within ``timeout`` the routes being served
        stay and the watch keeps trying in the background.
        """
        since: int | None = None
        try:
            async with asyncio.timeout(timeout):
                if self._seed is not None:
                    await self._seed_store(self._seed)
                since = await self._load()
        except (BackendError, TimeoutError) as exc:
            log.error("cannot read %s from the config store (%s); serving the %s routes "
                      "and retrying", self.key, exc or type(exc).__name__, self._state.source)
        self._tasks.start(self._watch(since), name=self.key)

    async def _load(self) -> int:
        """Apply the stored set unless it is the one served; its revision (0: no key)."""
        entry = await self._store.get(self.key)
        if entry is None:
            return 0
        if entry.revision != self._state.revision:
            await self.apply(entry.value, entry.revision)
        return entry.revision

    async def _seed_store(self, seed: Sequence[Mapping[str, Any]]) -> None:
        store, marker_key = self._store, self.key + SEED_SUFFIX
        digest, text = routes_digest(seed), route_document(seed)
        marker = await store.get(marker_key)
        if marker is not None and marker.value == digest:
            return  # the stored set descends from this very file: it wins
        current = await store.get(self.key)
        if current is None:
            if await store.compare_and_set(self.key, text, expected_revision=0):
                log.info("seeded %s from the topology (%d routes)", self.key, len(seed))
        elif marker is not None and await store.compare_and_set(
            marker_key, digest, expected_revision=marker.revision
        ):
            await store.set(self.key, text)
            log.info("the topology's routes changed: rewrote %s from it", self.key)
            return
        if marker is None:
            await store.compare_and_set(marker_key, digest, expected_revision=0)

    async def apply(self, text: str, revision: int) -> bool:
        """Validate and swap in the set stored at ``revision``; False (and logged) if rejected."""
        source = f"config {self.key}@{revision}"
        try:
            routes = parse_route_document(text, source)
            if self._prepare is not None:
                services = [r.upstream.service for r in routes
                            if isinstance(r.upstream, ServiceUpstream)]
                missing = await self._prepare(services)
                for reason in missing:
                    log.warning("%s: applying anyway: %s", source, reason)
            self._gateway.update_routes(routes)
        except ConfigError as exc:
            self._reject(revision, str(exc))
            return False
        s = self._state
        s.source, s.revision, s.applied, s.applied_at = "config store", revision, s.applied + 1, \
            self._wall()
        log.info("applied route set %s (%d routes)", source, len(routes))
        return True

    def _reject(self, revision: int, reason: str) -> None:
        s = self._state
        s.rejected += 1
        s.last_rejection = {"revision": revision, "reason": reason, "at": self._wall()}
        log.error("rejected route set %s@%d, the previous set keeps serving: %s",
                  self.key, revision, reason)

    async def _watch(self, since: int | None) -> None:
        attempt = 0
        while True:
            try:
                if since is None:
                    since = await self._load()
                # an absent key has no history worth replaying: watch from now on
                start = since + 1 if since else None
                async for change in self._store.watch(self.key, start_revision=start):
                    attempt = 0
                    since = change.revision
                    if change.new_value is None:
                        self._reject(change.revision, "the key was deleted; write a new route "
                                     "set to change the routes")
                    else:
                        await self.apply(change.new_value, change.revision)
            except asyncio.CancelledError:
                raise
            except WatchCompacted:  # cannot replay from there: read the current value
                since = None
                continue
            except Exception as exc:
                log.warning("watch of %s failed (%s: %s); retrying", self.key,
                            type(exc).__name__, exc)
            await asyncio.sleep(backoff_delay(attempt, base=0.2, cap=10.0, rand=random.random()))
            attempt += 1

    async def close(self) -> None:
        """Stop watching; idempotent."""
        await self._tasks.close()


__all__ = [
    "ROUTES_KEY",
    "ReloadStatus",
    "RouteReloader",
    "parse_route_document",
    "route_document",
    "routes_digest",
]
