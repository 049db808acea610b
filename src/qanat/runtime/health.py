"""Health checks with Consul's semantics, written to the registry.

Three layers, from pure to effectful:

- ``CheckState`` (pure): folds check results into a status with Consul's
  thresholds (``success_before_passing``, ``failures_before_warning``,
  ``failures_before_critical``; agent/checks ``StatusHandler``) and knows how
  long the check has been critical (``deregister_critical_service_after``).
- ``TtlCheck``: the service reports ``pass_ttl()``/``warn_ttl()``/``fail_ttl()``;
  when no report comes within the TTL the check is critical (Consul TTL checks).
- ``HealthChecker``: runs HTTP and TTL checks in an owned task group and writes
  each status change with ``Registry.set_health``; it deregisters an instance
  that stays critical longer than ``deregister_critical_after``.

HTTP checks follow Consul: any 2xx is passing, 429 is warning, any other
status, a timeout or a connection error is critical.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from qanat.errors import BackendError, ConfigError, NotFound
from qanat.ports import Health, Instance, Registry
from qanat.runtime._tasks import TaskOwner, backoff_delay

log = logging.getLogger("qanat.health")

Clock = Callable[[], float]
Probe = Callable[[str, float], Awaitable[tuple[Health, str]]]


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """How a check runs and when its status flips.

    Defaults are Consul's: thresholds of 0 flip on the first result; a new
    check starts ``critical`` until a result says otherwise; deregistration
    is off unless ``deregister_critical_after`` is set.
    """

    interval: float = 10.0  # seconds between two runs of the check
    timeout: float = 10.0  # one HTTP probe's limit (Consul's default)
    deregister_critical_after: float | None = None  # critical this long -> deregister
    success_before_passing: int = 0  # consecutive successes before passing
    failures_before_critical: int = 0  # consecutive failures before critical
    failures_before_warning: int | None = None  # None: same as failures_before_critical
    initial: Health = Health.CRITICAL  # status before the first result

    def __post_init__(self) -> None:
        for name in ("interval", "timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"must be > 0 seconds, got {getattr(self, name)!r}",
                    source=f"CheckSettings.{name}",
                )
        if self.deregister_critical_after is not None and self.deregister_critical_after < 0:
            raise ConfigError(
                "must be >= 0 seconds or None (never deregister)",
                source="CheckSettings.deregister_critical_after",
            )
        for name in (
            "success_before_passing",
            "failures_before_critical",
            "failures_before_warning",
        ):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"must be >= 0, got {value!r}", source=f"CheckSettings.{name}")


def classify_status(code: int) -> Health:
    """Consul's mapping of an HTTP status to a check result."""
    if 200 <= code < 300:
        return Health.PASSING
    if code == 429:
        return Health.WARNING  # "too many requests": alive but shedding load
    return Health.CRITICAL


class CheckState:
    """Pure state of one check: results in, status out; time is passed in.

    Mirrors Consul's ``StatusHandler``: a passing or warning result counts as a
    success and resets the failure count; the status takes that result once
    ``success_before_passing`` successes in a row were seen. A critical result
    resets the success count; after ``failures_before_critical`` failures in a
    row the status is critical, after ``failures_before_warning`` it is warning.
    """

    def __init__(self, settings: CheckSettings, now: float) -> None:
        self.settings = settings
        self.status = settings.initial
        self.output = ""
        self.successes = 0
        self.failures = 0
        self.critical_since: float | None = now if settings.initial is Health.CRITICAL else None

    def record(self, result: Health, output: str, now: float) -> Health:
        """Fold one result in at time ``now``; return the (possibly unchanged) status."""
        s = self.settings
        if result is Health.CRITICAL:
            self.successes = 0
            self.failures += 1
            warn_after = s.failures_before_warning
            if warn_after is None:
                warn_after = s.failures_before_critical
            if self.failures >= s.failures_before_critical:
                self._set(Health.CRITICAL, output, now)
            elif self.failures >= warn_after:
                self._set(Health.WARNING, output, now)
        else:
            self.failures = 0
            self.successes += 1
            if self.successes >= s.success_before_passing:
                self._set(result, output, now)
        return self.status

    def _set(self, status: Health, output: str, now: float) -> None:
        if status is Health.CRITICAL and self.status is not Health.CRITICAL:
            self.critical_since = now
        elif status is not Health.CRITICAL:
            self.critical_since = None
        self.status = status
        self.output = output

    def critical_for(self, now: float) -> float:
        """Seconds the status has been critical without a break (0 if not critical)."""
        return 0.0 if self.critical_since is None else now - self.critical_since

    def should_deregister(self, now: float) -> bool:
        """True once the check has stayed critical longer than ``deregister_critical_after``."""
        limit = self.settings.deregister_critical_after
        return (
            limit is not None
            and self.critical_since is not None
            and (now - self.critical_since > limit)
        )


class TtlCheck:
    """A check the service itself keeps alive by reporting within ``ttl`` seconds.

    Until the first report, and whenever the last one is older than ``ttl``,
    the result is critical ("TTL expired"), as in Consul.
    """

    def __init__(self, ttl: float, *, clock: Clock = time.monotonic) -> None:
        if not ttl > 0:
            raise ConfigError(f"must be > 0 seconds, got {ttl!r}", source="TtlCheck.ttl")
        self.ttl = ttl
        self._clock = clock
        self._reported: tuple[Health, str, float] | None = None
        self._listeners: list[Callable[[], None]] = []

    def pass_ttl(self, note: str = "") -> None:
        """Report passing; the check stays passing for ``ttl`` seconds."""
        self._report(Health.PASSING, note)

    def warn_ttl(self, note: str = "") -> None:
        """Report warning; still routable, but flagged."""
        self._report(Health.WARNING, note)

    def fail_ttl(self, note: str = "") -> None:
        """Report critical at once."""
        self._report(Health.CRITICAL, note)

    def _report(self, health: Health, note: str) -> None:
        self._reported = (health, note, self._clock())
        for listener in self._listeners:
            listener()  # wakes the checker so the report is written at once

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every report (the checker uses it to wake up)."""
        self._listeners.append(listener)

    def expires_at(self) -> float | None:
        """When the last report runs out, or None before the first report."""
        return None if self._reported is None else self._reported[2] + self.ttl

    def result(self, now: float) -> tuple[Health, str]:
        """The check's result at ``now``."""
        if self._reported is None:
            return Health.CRITICAL, "TTL check has not been reported yet"
        health, note, at = self._reported
        if now - at > self.ttl:
            age = now - at
            return Health.CRITICAL, f"TTL expired ({age:.3f}s since last report, ttl {self.ttl}s)"
        return health, note


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


_MAX_STATUS_LINE = 4096  # bytes; a longer status line is a broken server


async def probe_http(url: str, timeout: float) -> tuple[Health, str]:
    """GET ``url`` once (HTTP/1.1, ``Connection: close``) and classify the answer.

    Only the status line is read (at most 4 KiB), so a huge or endless body
    cannot stall the checker; everything runs under one ``timeout``.
    """
    try:
        async with asyncio.timeout(timeout):
            code, reason = await _get_status(url)
    except TimeoutError:
        return Health.CRITICAL, f"HTTP GET {url}: timed out after {timeout}s"
    except (OSError, ValueError, EOFError, asyncio.LimitOverrunError) as exc:
        return Health.CRITICAL, f"HTTP GET {url}: {type(exc).__name__}: {exc}"
    return classify_status(code), f"HTTP GET {url}: {code} {reason}".rstrip()


async def _get_status(url: str) -> tuple[int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    reader, writer = await asyncio.open_connection(
        parts.hostname,
        port,
        ssl=True if parts.scheme == "https" else None,
        limit=_MAX_STATUS_LINE,
    )
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: qanat-health\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        line = await reader.readuntil(b"\n")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return parse_status_line(line)


def parse_status_line(line: bytes) -> tuple[int, str]:
    """``b"HTTP/1.1 200 OK\\r\\n"`` -> ``(200, "OK")``; ValueError when malformed (RFC 9112 §4)."""
    version, _, rest = line.rstrip(b"\r\n").partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"malformed status line {line[:80]!r}")
    return int(code), reason.decode("latin-1")


@dataclass(eq=False)
class _Check:
    instance: Instance
    kind: str
    state: CheckState
    result: Callable[[], Awaitable[tuple[Health, str]]]
    ttl: TtlCheck | None = None
    watched: bool = False  # added by watch_service, removed when the instance leaves
    written: Health | None = None  # last status written to the registry
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
            if status is not check.written:
                await self._registry.set_health(service, instance_id, status, check.state.output)
                check.written = status
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
            elif instance.health is not check.written:
                check.written = None  # changed behind our back (re-registered?): write again
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
    "CheckReport",
    "CheckSettings",
    "CheckState",
    "HealthChecker",
    "Probe",
    "TtlCheck",
    "classify_status",
    "parse_status_line",
    "probe_http",
]
