"""A client-side discovery cache: watched snapshots, read with a dict lookup.

``DiscoveryCache(registry)`` keeps one ``registry.watch(service)`` per service,
shared by every caller, and precomputes the routable instances on each
snapshot, so ``cache.instances(service)`` is a synchronous dict read.

Resilience, after the systems that do this well:

- **Last-known-good** (Consul agent cache, Nacos failover): when the watch
  fails the cache keeps serving the last snapshot, marks it *stale*, and
  reconnects with full-jitter exponential backoff, so a registry outage does
  not become an outage of every caller, and many caches do not reconnect in
  lock step.
- **Protection threshold** (Nacos ``protectThreshold``, Envoy's panic
  threshold, default 50 % in Envoy and here): when fewer than that fraction of
  a service's enabled instances is healthy, the cache returns every enabled
  instance rather than pile all traffic on the few survivors. A threshold of 0
  turns this off.
- **No thundering herd**: the first lookups of a service, however many and
  however concurrent, await one in-flight watch.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from qanat.errors import BackendError, ConfigError, Timeout
from qanat.ports import Instance, Registry
from qanat.runtime._tasks import TaskOwner, backoff_delay

log = logging.getLogger("qanat.discovery")

DEFAULT_PROTECTION_THRESHOLD = 0.5
"""Below this healthy fraction, serve every enabled instance (Envoy's default panic threshold)."""

Clock = Callable[[], float]
Listener = Callable[[tuple[Instance, ...]], object]


def select(snapshot: tuple[Instance, ...], threshold: float) -> tuple[tuple[Instance, ...], bool]:
    """The instances to route to, and whether the protection threshold tripped.

    Normally the routable ones (enabled and not critical). When the routable
    share of the *enabled* instances falls below ``threshold``, every enabled
    instance is returned instead (Envoy "panic mode"); disabled instances are
    an operator's decision and are never returned.
    """
    enabled = tuple(i for i in snapshot if i.enabled)
    healthy = tuple(i for i in enabled if i.routable)
    if enabled and len(healthy) < threshold * len(enabled):
        return enabled, True
    return healthy, False


def check_threshold(value: float, where: str) -> float:
    """Return ``value`` if it is a fraction in [0, 1], else raise ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(
            f"must be a fraction between 0 and 1 (0 turns protection off), got {value!r}",
            source=where,
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class CacheStatus:
    """How much to trust what the cache serves for one service.

    ``state`` is ``unknown`` before the first snapshot, ``stale`` while the
    watch is down (the last snapshot is still served), ``fresh`` otherwise.
    ``age`` is seconds since the last snapshot arrived (None if none did).
    """

    state: Literal["fresh", "stale", "unknown"]
    age: float | None
    last_error: str | None
    instances: int  # in the last snapshot, any health
    routable: int  # what instances() returns
    panic: bool  # the protection threshold tripped


@dataclass(eq=False)
class _Entry:
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    snapshot: tuple[Instance, ...] = ()
    panic: bool = False
    updated_at: float | None = None
    stale_since: float | None = None
    last_error: str | None = None
    listeners: list[Listener] = field(default_factory=list)


class DiscoveryCache:
    """Watched, precomputed service instances with last-known-good and protection.

    ``protection_threshold`` applies to every service unless ``thresholds``
    (or ``set_protection_threshold``) names one. ``backoff_base`` and
    ``backoff_cap`` (seconds) shape the jittered reconnect delays.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        protection_threshold: float = DEFAULT_PROTECTION_THRESHOLD,
        thresholds: Mapping[str, float] | None = None,
        backoff_base: float = 0.2,
        backoff_cap: float = 15.0,
        clock: Clock = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._registry = registry
        self._default = check_threshold(protection_threshold, "protection_threshold")
        self._thresholds = {
            s: check_threshold(v, f"thresholds[{s!r}]") for s, v in (thresholds or {}).items()
        }
        self._backoff = (backoff_base, backoff_cap)
        self._clock = clock
        self._rand = rand
        self._selected: dict[str, tuple[Instance, ...]] = {}
        self._entries: dict[str, _Entry] = {}
        self._tasks = TaskOwner("discovery")

    def instances(self, service: str) -> tuple[Instance, ...]:
        """The instances to route to now: a dict read, no await.

        Empty until the first snapshot; the first call for a service (from
        inside a running event loop) starts its watch.
        """
        try:
            return self._selected[service]
        except KeyError:
            if service not in self._entries:
                self._ensure(service)
            return ()

    async def wait_ready(self, service: str, timeout: float = 5.0) -> None:
        """Wait until the service's first snapshot arrived; ``Timeout`` if it does not."""
        entry = self._ensure(service)
        if entry.ready.is_set():
            return
        try:
            async with asyncio.timeout(timeout):
                await entry.ready.wait()
        except TimeoutError:
            why = f"; last error: {entry.last_error}" if entry.last_error else ""
            raise Timeout(f"no snapshot of service {service!r} within {timeout}s{why}") from None

    async def get(self, service: str, timeout: float = 5.0) -> tuple[Instance, ...]:
        """``wait_ready`` then ``instances``: for callers that can await."""
        await self.wait_ready(service, timeout)
        return self._selected.get(service, ())

    def status(self, service: str) -> CacheStatus:
        """Freshness of what ``instances(service)`` serves."""
        entry = self._entries.get(service)
        if entry is None or entry.updated_at is None:
            error = entry.last_error if entry else None
            return CacheStatus("unknown", None, error, 0, 0, False)
        state: Literal["fresh", "stale"] = "fresh" if entry.stale_since is None else "stale"
        return CacheStatus(
            state,
            self._clock() - entry.updated_at,
            entry.last_error,
            len(entry.snapshot),
            len(self._selected.get(service, ())),
            entry.panic,
        )

    def on_change(self, service: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener(instances)`` whenever ``instances(service)`` changes.

        If the service is already loaded the listener is called at once with
        the current instances, so a balancer can ``update()`` from it alone.
        Returns a function that unsubscribes.
        """
        entry = self._ensure(service)
        entry.listeners.append(listener)
        if entry.ready.is_set():
            self._call(service, listener, self._selected.get(service, ()))
        return lambda: entry.listeners.remove(listener) if listener in entry.listeners else None

    def set_protection_threshold(self, service: str, threshold: float) -> None:
        """Set one service's protection threshold and re-select its instances now."""
        self._thresholds[service] = check_threshold(threshold, f"thresholds[{service!r}]")
        entry = self._entries.get(service)
        if entry is not None and entry.ready.is_set():
            self._apply(service, entry, entry.snapshot)

    def watched(self) -> list[str]:
        """Services with a watch, sorted."""
        return sorted(self._entries)

    def _ensure(self, service: str) -> _Entry:
        entry = self._entries.get(service)
        if entry is None:
            entry = _Entry()
            self._tasks.start(self._run(service, entry), name=service)  # needs a running loop
            self._entries[service] = entry
        return entry

    async def _run(self, service: str, entry: _Entry) -> None:
        attempt = 0
        while True:
            try:
                async for snapshot in self._registry.watch(service):
                    attempt = 0
                    self._apply(service, entry, tuple(snapshot))
                raise BackendError("the registry ended the watch")
            except Exception as exc:  # keep serving the last snapshot; reconnect below
                entry.last_error = f"{type(exc).__name__}: {exc}"
                if entry.stale_since is None:
                    entry.stale_since = self._clock()
                log.warning(
                    "discovery watch of %r failed (%s); serving last-known-good",
                    service,
                    entry.last_error,
                )
            base, cap = self._backoff
            await asyncio.sleep(backoff_delay(attempt, base=base, cap=cap, rand=self._rand()))
            attempt += 1

    def _apply(self, service: str, entry: _Entry, snapshot: tuple[Instance, ...]) -> None:
        threshold = self._thresholds.get(service, self._default)
        selected, panic = select(snapshot, threshold)
        if panic and not entry.panic:
            log.warning(
                "service %r below protection threshold %.0f%%: serving all %d enabled",
                service,
                threshold * 100,
                len(selected),
            )
        previous = self._selected.get(service)
        entry.snapshot, entry.panic = snapshot, panic
        entry.updated_at, entry.stale_since = self._clock(), None
        self._selected[service] = selected
        entry.ready.set()
        if selected != previous:
            for listener in list(entry.listeners):
                self._call(service, listener, selected)

    @staticmethod
    def _call(service: str, listener: Listener, selected: tuple[Instance, ...]) -> None:
        try:
            listener(selected)
        except Exception:  # one bad subscriber must not starve the others
            log.exception("discovery listener for %r failed", service)

    async def close(self) -> None:
        """Cancel every watch and wait for them; idempotent."""
        await self._tasks.close()

    async def __aenter__(self) -> DiscoveryCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = [
    "DEFAULT_PROTECTION_THRESHOLD",
    "CacheStatus",
    "DiscoveryCache",
    "check_threshold",
    "select",
]
