"""Health checks with Consul's semantics, written to the registry.

Three layers, from pure to effectful:

- ``qanat.core.health`` (pure): ``CheckSettings``, ``CheckState`` (Consul's
  thresholds and critical time), ``TtlCheck``, ``classify_status``.
- ``qanat.runtime.health_http``: ``probe_http``, one HTTP GET classified as
  Consul does (any 2xx passing, 429 warning, any other status, a timeout or a
  connection error critical), with up to 4 KiB of the body as output.
- ``HealthChecker`` (here): runs HTTP and TTL checks in an owned task group
  and writes each status change, with its output, through
  ``Registry.set_health``; it deregisters an instance that stays critical
  longer than ``deregister_critical_after``.

Every name above is importable from this module too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from qanat.core.health import (
    MAX_OUTPUT,
    CheckSettings,
    CheckState,
    TtlCheck,
    bounded_output,
    classify_status,
)
from qanat.errors import BackendError, NotFound
from qanat.ports import Health, Instance, Registry
from qanat.runtime._tasks import TaskOwner, backoff_delay
from qanat.runtime.health_http import parse_status_line, probe_http

log = logging.getLogger("qanat.health")

Clock = Callable[[], float]
Probe = Callable[[str, float], Awaitable[tuple[Health, str]]]


@dataclass(frozen=True, slots=True)
class CheckReport:
    """One check's state, as data for metrics and the dashboard."""

    service: str
    instance_id: str
    kind: str  # "http" or "ttl"
    status: Health
    output: str
    critical_for: float
    successes: int
    failures: int


@dataclass(eq=False)
class _Check:
    instance: Instance
    kind: str
    state: CheckState
    result: Callable[[], Awaitable[tuple[Health, str]]]
    ttl: TtlCheck | None = None
    watched: bool = False  # added by watch_service, removed when the instance leaves
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.instance.service, self.instance.id


class HealthChecker:
    """Runs health checks for instances and writes their status to the registry.

    Give it instances (``add_http``, ``add_ttl``) or whole services
    (``watch_service``: every instance that registers gets an HTTP check, every
    one that leaves loses it). Checks run in tasks owned by the checker from
    ``start()`` (or ``async with``) until ``close()``; ``run_once()`` runs every
    check one time, for tests and one-shot tools. Only status *changes* are
    written, so a steady fleet costs no registry writes.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        settings: CheckSettings | None = None,
        clock: Clock = time.monotonic,
        probe: Probe = probe_http,
    ) -> None:
        self.settings = settings or CheckSettings()
        self._registry = registry
        self._clock = clock
        self._probe = probe
        self._checks: dict[tuple[str, str], _Check] = {}
        self._watches: list[tuple[str, str, CheckSettings]] = []
        self._tasks = TaskOwner("health")
        self._started = False

    def add_http(
        self, instance: Instance, *, path: str = "/health", settings: CheckSettings | None = None
    ) -> None:
        """Check ``instance.url + path`` with HTTP GET every ``settings.interval`` seconds."""
        self._add_http(instance, path, settings or self.settings, watched=False)

    def _add_http(self, instance: Instance, path: str, s: CheckSettings, *, watched: bool) -> None:
        url = instance.url + (path if path.startswith("/") else "/" + path)

        async def probe() -> tuple[Health, str]:
            return await self._probe(url, s.timeout)

        state = CheckState(s, self._clock())
        self._add(_Check(instance, "http", state, probe, watched=watched))

    def add_ttl(
        self, instance: Instance, ttl: float, *, settings: CheckSettings | None = None
    ) -> TtlCheck:
        """Add a TTL check; the service keeps it passing by calling ``pass_ttl()``."""
        handle = TtlCheck(ttl, clock=self._clock)

        async def result() -> tuple[Health, str]:
            return handle.result(self._clock())

        s = settings or self.settings
        check = _Check(instance, "ttl", CheckState(s, self._clock()), result, ttl=handle)
        handle.add_listener(check.wake.set)
        self._add(check)
        return handle

    def watch_service(
        self, service: str, *, path: str = "/health", settings: CheckSettings | None = None
    ) -> None:
        """HTTP-check every instance of ``service``, following registrations as they come."""
        entry = (service, path, settings or self.settings)
        self._watches.append(entry)
        if self._started:
            self._tasks.start(self._watch(*entry), name=f"watch:{service}")

    def _add(self, check: _Check) -> None:
        old = self._checks.pop(check.key, None)
        if old is not None and old.task is not None:
            old.task.cancel()  # replaced: the owner still awaits it on close()
        self._checks[check.key] = check
        if self._started:
            check.task = self._tasks.start(self._loop(check), name="/".join(check.key))

    async def start(self) -> None:
        """Start every check and service watch in tasks owned by the checker."""
        if self._started:
            return
        self._started = True
        for check in self._checks.values():
            check.task = self._tasks.start(self._loop(check), name="/".join(check.key))
        for entry in self._watches:
            self._tasks.start(self._watch(*entry), name=f"watch:{entry[0]}")

    async def run_once(self) -> None:
        """Run every check once, in turn (no background tasks needed)."""
        for check in list(self._checks.values()):
            await self._step(check)

    def report(self) -> list[CheckReport]:
        """Every check's current state, sorted by service and instance id."""
        now = self._clock()
        return [
            CheckReport(
                c.instance.service,
                c.instance.id,
                c.kind,
                c.state.status,
                c.state.output,
                c.state.critical_for(now),
                c.state.successes,
                c.state.failures,
            )
            for _, c in sorted(self._checks.items())
        ]

    async def _step(self, check: _Check) -> bool:
        """Run the check once and write the outcome; False once the check is gone."""
        health, output = await check.result()
        now = self._clock()
        status = check.state.record(health, output, now)
        service, instance_id = check.key
        try:
            if check.state.write_due(now):
                await self._registry.set_health(service, instance_id, status, check.state.output)
                check.state.mark_written(now)
            if check.state.should_deregister(now):
                log.warning(
                    "deregistering %s/%s: critical for %.1fs (%s)",
                    service,
                    instance_id,
                    check.state.critical_for(now),
                    check.state.output,
                )
                await self._registry.deregister(service, instance_id)
                self._drop(check)
                return False
        except NotFound:
            self._drop(check)  # deregistered by someone else: nothing left to check
            return False
        return True

    def _drop(self, check: _Check) -> None:
        if self._checks.get(check.key) is check:
            del self._checks[check.key]

    async def _loop(self, check: _Check) -> None:
        while True:
            check.wake.clear()
            try:
                if not await self._step(check):
                    return
            except Exception:  # a registry outage must not kill the check loop
                log.exception("health check %s/%s failed to run", *check.key)
            delay = check.state.settings.interval
            expires = check.ttl.expires_at() if check.ttl is not None else None
            if expires is not None and expires > self._clock():
                delay = min(delay, expires - self._clock() + 0.001)  # wake just past expiry
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await check.wake.wait()

    async def _watch(self, service: str, path: str, s: CheckSettings) -> None:
        attempt = 0
        while True:
            try:
                async for snapshot in self._registry.watch(service):
                    attempt = 0
                    self._sync(service, snapshot, path, s)
                raise BackendError(f"watch of {service!r} ended")
            except Exception as exc:  # reconnect: the checks keep running meanwhile
                log.warning("health watch of %s failed (%s); reconnecting", service, exc)
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt, base=0.1, cap=10.0, rand=random.random()))

    def _sync(self, service: str, snapshot: list[Instance], path: str, s: CheckSettings) -> None:
        present = {i.id: i for i in snapshot}
        for instance in present.values():
            check = self._checks.get((service, instance.id))
            if check is None or check.instance.url != instance.url:
                self._add_http(instance, path, s, watched=True)
            elif instance.health is not check.state.written:
                check.state.forget_written()  # changed behind our back (re-registered?)
        for key, check in list(self._checks.items()):
            if key[0] == service and check.watched and key[1] not in present:
                del self._checks[key]
                if check.task is not None:
                    check.task.cancel()

    async def close(self) -> None:
        """Stop every check and watch and wait for them; idempotent."""
        await self._tasks.close()

    async def __aenter__(self) -> HealthChecker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = [
    "MAX_OUTPUT",
    "CheckReport",
    "CheckSettings",
    "CheckState",
    "HealthChecker",
    "Probe",
    "TtlCheck",
    "bounded_output",
    "classify_status",
    "parse_status_line",
    "probe_http",
]
