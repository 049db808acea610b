"""Health checks with Consul's semantics: the pure part (no I/O, time passed in).

- ``CheckSettings``: how a check runs and when its status flips (Consul's
  defaults and names).
- ``classify_status``: Consul's mapping of an HTTP status to a result (any
  2xx passing, 429 warning, anything else critical).
- ``CheckState``: folds check results into a status with Consul's thresholds
  (``success_before_passing``, ``failures_before_warning``,
  ``failures_before_critical``; agent/checks ``StatusHandler``) and knows how
  long the check has been critical (``deregister_critical_service_after``),
  and when an output-only change is due to be written
  (``check_update_interval``).
- ``TtlCheck``: the service reports ``pass_ttl()``/``warn_ttl()``/``fail_ttl()``;
  when no report comes within the TTL the check is critical (Consul TTL checks).

``qanat.runtime.health.HealthChecker`` runs these and writes to the registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from qanat.errors import ConfigError
from qanat.ports import Health

Clock = Callable[[], float]

MAX_OUTPUT = 4096
"""Characters of check output kept (Consul keeps 4 KiB of an HTTP check's body)."""


def bounded_output(text: str, limit: int = MAX_OUTPUT) -> str:
    """``text`` cut to ``limit`` characters, saying that it was cut."""
    if len(text) <= limit:
        return text
    marker = " ... (truncated)"
    return text[: max(0, limit - len(marker))] + marker


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """How a check runs and when its status flips.

    Defaults are Consul's: thresholds of 0 flip on the first result; a new
    check starts ``critical`` until a result says otherwise; deregistration
    is off unless ``deregister_critical_after`` is set; a change of output
    alone is written at most every 5 minutes (``check_update_interval``), a
    change of status at once.
    """

    interval: float = 10.0  # seconds between two runs of the check
    timeout: float = 10.0  # one HTTP probe's limit (Consul's default)
    deregister_critical_after: float | None = None  # critical this long -> deregister
    success_before_passing: int = 0  # consecutive successes before passing
    failures_before_critical: int = 0  # consecutive failures before critical
    failures_before_warning: int | None = None  # None: same as failures_before_critical
    initial: Health = Health.CRITICAL  # status before the first result
    output_update_interval: float = 300.0  # an output-only change is written at most this often

    def __post_init__(self) -> None:
        for name in ("interval", "timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"must be > 0 seconds, got {getattr(self, name)!r}",
                    source=f"CheckSettings.{name}",
                )
        if not self.output_update_interval >= 0:
            raise ConfigError(
                f"must be >= 0 seconds, got {self.output_update_interval!r}",
                source="CheckSettings.output_update_interval",
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
        self.written: Health | None = None  # what the registry was last told
        self.written_output = ""
        self.written_at = now

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
        self.output = bounded_output(output)

    def write_due(self, now: float) -> bool:
        """Whether the registry should be told now: the status changed, or only the output
        did and the last write is ``output_update_interval`` old (Consul's
        ``check_update_interval``, so a check whose output always differs, such
        as one printing a timestamp, does not write on every run)."""
        if self.status is not self.written:
            return True
        stale = now - self.written_at >= self.settings.output_update_interval
        return self.output != self.written_output and stale

    def mark_written(self, now: float) -> None:
        """Record that the registry now holds the current status and output."""
        self.written, self.written_output, self.written_at = self.status, self.output, now

    def forget_written(self) -> None:
        """The registry changed behind our back: the next ``write_due`` says yes."""
        self.written = None

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


__all__ = [
    "MAX_OUTPUT",
    "CheckSettings",
    "CheckState",
    "TtlCheck",
    "bounded_output",
    "classify_status",
]
