"""Retry decisions: exponential backoff with jitter, error classification, budgets.

Pure: no sleeping, no I/O. ``RetryPolicy.next_delay`` says how long to wait
before the next attempt, or ``None`` to stop; ``qanat.runtime.retrying`` does
the waiting.

Sources:

- Backoff and jitter: Marc Brooker, "Exponential Backoff and Jitter", AWS
  Architecture Blog (2015). With ``ceiling = min(cap, base * 2**(attempt-1))``:
  full jitter waits ``uniform(0, ceiling)``; equal jitter waits
  ``ceiling/2 + uniform(0, ceiling/2)``; decorrelated jitter waits
  ``min(cap, uniform(base, previous * 3))``.
- Defaults: Envoy's router (base 25 ms, cap 10 × base, full jitter; a policy
  without a count retries once) and its named retry conditions.
- Budgets (``qanat.core.retry_budget``, re-exported here): Envoy's
  ``retry_budget`` (concurrency) and Finagle's ``RetryBudget`` (deposits per
  request, with a time-to-live).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum

from qanat.core.retry_budget import BudgetStats, RatioRetryBudget, RetryBudget
from qanat.errors import ConfigError, Timeout, Unavailable


class Jitter(StrEnum):
    """How a delay is randomised inside its exponential ceiling (AWS article's names)."""

    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"
    NONE = "none"


#: Envoy's retry conditions, plus qanat's ``unavailable`` and ``timeout``.
CONDITIONS = frozenset(
    {
        "5xx",
        "gateway-error",
        "connect-failure",
        "reset",
        "retriable-4xx",
        "retriable-status-codes",
        "unavailable",
        "timeout",
    }
)
_GATEWAY = frozenset({502, 503, 504})
_RESET = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to retry and how long to wait. Every default is Envoy's unless noted.

    ``max_attempts`` counts the first try (2 = one retry, Envoy's default).
    ``max_elapsed`` stops retrying when the next attempt would start later than
    that many seconds after the first (``None``: no limit). ``cap`` defaults to
    10 × ``base``. A server's ``Retry-After`` replaces the backoff delay, clamped
    to ``retry_after_cap`` (Envoy's ``max_interval`` for rate-limited back-off).
    ``retry_on`` names the conditions (see ``CONDITIONS``); the default retries
    errors that happened before the server did any work, plus 502/503/504.
    """

    max_attempts: int = 2
    base: float = 0.025
    cap: float | None = None
    jitter: Jitter = Jitter.FULL
    max_elapsed: float | None = None
    retry_after_cap: float = 300.0
    retry_on: frozenset[str] = frozenset(
        {"connect-failure", "reset", "gateway-error", "unavailable"}
    )
    retriable_status_codes: frozenset[int] = frozenset()
    _cap: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cap = 10 * self.base if self.cap is None else self.cap
        unknown = sorted(set(self.retry_on) - CONDITIONS)
        for ok, name, rule in (
            (self.max_attempts >= 1, "max_attempts", "an integer >= 1 (1 = no retry)"),
            (math.isfinite(self.base) and self.base >= 0, "base", "finite seconds >= 0"),
            (math.isfinite(cap) and cap >= self.base, "cap", "finite seconds >= base"),
            (self.max_elapsed is None or self.max_elapsed >= 0, "max_elapsed", "seconds >= 0"),
            (self.retry_after_cap >= 0, "retry_after_cap", "seconds >= 0"),
            (not unknown, "retry_on", f"a set of {sorted(CONDITIONS)}"),
        ):
            if not ok:
                value = unknown or getattr(self, name)
                raise ConfigError(f"must be {rule}, got {value!r}", source=f"RetryPolicy.{name}")
        object.__setattr__(self, "jitter", Jitter(self.jitter))
        object.__setattr__(self, "retry_on", frozenset(self.retry_on))
        object.__setattr__(self, "_cap", cap)

    def next_delay(
        self,
        attempt: int,
        elapsed: float,
        retry_after: float | None = None,
        rng: Callable[[], float] = random.random,
        *,
        previous: float | None = None,
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None`` to stop.

        ``attempt`` is the number of attempts made so far (>= 1); ``elapsed`` the
        seconds since the first began; ``rng`` returns uniform floats in [0, 1);
        ``previous`` is the last delay returned (decorrelated jitter needs it).
        """
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), self.retry_after_cap)
        else:
            delay = self.backoff(attempt, rng, previous=previous)
        if self.max_elapsed is not None and elapsed + delay > self.max_elapsed:
            return None
        return delay

    def backoff(
        self,
        attempt: int,
        rng: Callable[[], float] = random.random,
        *,
        previous: float | None = None,
    ) -> float:
        """The jittered exponential delay after ``attempt`` attempts (ignores the limits)."""
        cap = self._cap
        if self.jitter is Jitter.DECORRELATED:
            prev = self.base if previous is None else previous
            high = max(prev * 3, self.base)
            return min(cap, self.base + rng() * (high - self.base))
        # 2**1023 is the largest finite power; beyond it the ceiling is the cap anyway
        ceiling = min(cap, self.base * 2.0 ** min(attempt - 1, 1023))
        if self.jitter is Jitter.FULL:
            return rng() * ceiling
        if self.jitter is Jitter.EQUAL:
            return ceiling / 2 + rng() * (ceiling / 2)
        return ceiling

    def retryable_status(self, status: int) -> bool:
        """True when an HTTP response with ``status`` should be retried."""
        on = self.retry_on
        if status >= 500 and "5xx" in on:
            return True
        if status in _GATEWAY and "gateway-error" in on:
            return True
        if status == 409 and "retriable-4xx" in on:
            return True
        return "retriable-status-codes" in on and status in self.retriable_status_codes

    def retryable_error(self, exc: BaseException) -> bool:
        """True when the error ``exc`` should be retried under ``retry_on``.

        ``connect-failure``: ``ConnectionRefusedError`` or any error with
        ``request_sent = False`` (the upstream never saw the request);
        ``reset``: connection reset, aborted or broken pipe; ``5xx`` and
        ``gateway-error`` include both, as in Envoy; ``unavailable``:
        ``qanat.errors.Unavailable`` (refused before any work); ``timeout``:
        ``qanat.errors.Timeout`` or ``TimeoutError`` (work may have happened).
        An error with an integer ``status`` attribute is classified by status.
        """
        on = self.retry_on
        broad = "5xx" in on or "gateway-error" in on
        # Transport errors name their own condition (``qanat.http`` errors do), so a
        # connect failure that is also ``Unavailable`` matches ``connect-failure`` too.
        condition = getattr(exc, "retry_condition", None)
        if condition in ("connect-failure", "reset"):
            return broad or condition in on or (
                isinstance(exc, Unavailable) and "unavailable" in on
            )
        if isinstance(exc, ConnectionRefusedError) or getattr(exc, "request_sent", None) is False:
            return broad or "connect-failure" in on or (
                isinstance(exc, Unavailable) and "unavailable" in on
            )
        if isinstance(exc, Unavailable):
            return "unavailable" in on
        if isinstance(exc, Timeout | TimeoutError):
            return "timeout" in on
        if isinstance(exc, _RESET):
            return broad or "reset" in on
        status = getattr(exc, "status", None)
        return isinstance(status, int) and self.retryable_status(status)


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 §10.2.3), or None.

    ``value`` is delay-seconds (``"120"``) or an HTTP-date; ``now`` is the
    current Unix time (wall clock: an HTTP-date is absolute). A date in the
    past means 0; anything else unparseable means None (ignore the header).
    """
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # RFC 9110: an HTTP-date is always GMT; a zoneless one is malformed
    return max(0.0, when.timestamp() - now)


__all__ = [
    "CONDITIONS",
    "BudgetStats",
    "Jitter",
    "RatioRetryBudget",
    "RetryBudget",
    "RetryPolicy",
    "parse_retry_after",
]
