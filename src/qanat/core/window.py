"""Rolling windows of time buckets, for the circuit breaker and the adaptive throttle.

All pure (time is passed in, nothing here sleeps or locks):

- ``Counts`` / ``Tally`` / ``RollingCounts``: the circuit breaker's request
  counts, in a fixed window or a rolling window of buckets, with the rules of
  sony/gobreaker v2 (``counter.go``): a result is credited to the bucket its
  request was admitted in, a result whose bucket already fell off the window
  is dropped, and a run of consecutive results loses the part that fell off.
- ``Epoch``: the stretch of one breaker generation (and, with a rolling
  window, one bucket of it) in which admissions and successes are counted
  without a lock, on atomic counters that the breaker drains into its
  ``Tally`` objects under its lock.
- ``RollingWindow`` (the adaptive throttle's; it lives in ``rolling_window.py``
  and is re-exported here): a count and a sum of hits over the last ``size``
  buckets of ``width`` seconds each, as go-zero's ``collection.RollingWindow``
  (used there by the Google SRE breaker).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from qanat.core.rolling_window import RollingWindow
from qanat.errors import ConfigError

# How a call ended, for ``Tally.record`` and ``RollingCounts.record``.
SUCCESS, FAILURE, EXCLUDED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Counts:
    """A snapshot of a circuit breaker's counts in its current window (gobreaker ``Counts``).

    ``requests`` counts admitted calls, including those still in flight; every
    finished call is exactly one of a success, a failure or an exclusion.
    """

    requests: int = 0
    total_successes: int = 0
    total_failures: int = 0
    total_exclusions: int = 0
    consecutive_successes: int = 0
    consecutive_failures: int = 0


class Tally:
    """Mutable counts, the working copy behind ``Counts`` (kept cheap: slots, no checks)."""

    __slots__ = (
        "consecutive_failures",
        "consecutive_successes",
        "requests",
        "total_exclusions",
        "total_failures",
        "total_successes",
    )

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Reset every count to zero."""
        self.requests = 0
        self.total_successes = 0
        self.total_failures = 0
        self.total_exclusions = 0
        self.consecutive_successes = 0
        self.consecutive_failures = 0

    def on_success(self) -> None:
        """Count a success: it extends the success run and ends the failure run."""
        self.total_successes += 1
        self.consecutive_successes += 1
        self.consecutive_failures = 0

    def on_failure(self) -> None:
        """Count a failure: it extends the failure run and ends the success run."""
        self.total_failures += 1
        self.consecutive_failures += 1
        self.consecutive_successes = 0

    def record(self, outcome: int) -> None:
        """Count a finished call: ``SUCCESS``, ``FAILURE`` or ``EXCLUDED``."""
        if outcome == SUCCESS:
            self.on_success()
        elif outcome == FAILURE:
            self.on_failure()
        else:
            self.total_exclusions += 1

    def is_empty(self) -> bool:
        """True when nothing has been counted since the last ``clear``."""
        return not (self.requests or self.total_exclusions or self.total_successes
                    or self.total_failures)

    def snapshot(self) -> Counts:
        """An immutable copy, safe to hand to user callbacks and dashboards."""
        return Counts(
            self.requests,
            self.total_successes,
            self.total_failures,
            self.total_exclusions,
            self.consecutive_successes,
            self.consecutive_failures,
        )


class RollingCounts:
    """gobreaker v2's ``rollingCounts``: totals over the last ``len(buckets)`` bucket ages.

    ``age`` is the index of the current bucket since the window was cleared;
    ``total`` always equals the sum of the buckets (up to the consecutive-run
    heuristic, which follows gobreaker exactly: see ``_drop``).
    """

    __slots__ = ("age", "buckets", "total")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ConfigError(f"needs at least one bucket, got {size!r}",
                              source="RollingCounts.size")
        self.total = Tally()
        self.buckets = [Tally() for _ in range(size)]
        self.age = 0

    def clear(self) -> None:
        """Forget everything and restart at age 0."""
        self.total.clear()
        for bucket in self.buckets:
            bucket.clear()
        self.age = 0

    def on_request(self) -> None:
        """Count an admitted request in the current bucket."""
        self.total.requests += 1
        self.buckets[self.age % len(self.buckets)].requests += 1

    def record(self, age: int, outcome: int) -> None:
        """Credit a finished call to the bucket it was admitted in (``age``).

        Dropped when that bucket has already fallen off the window.
        """
        if age > self.age or self.age - age >= len(self.buckets):
            return
        self.total.record(outcome)
        self.buckets[age % len(self.buckets)].record(outcome)

    def grow(self, age: int) -> None:
        """Move the window forward to ``age``, dropping the buckets that fall off."""
        if age <= self.age:
            return
        size = len(self.buckets)
        if age - self.age >= size:
            self.clear()
            self.age = age
            return
        while self.age < age:
            self.age += 1
            oldest = self.buckets[self.age % size]
            if not oldest.is_empty():
                self._drop(oldest)
                oldest.clear()

    def _drop(self, oldest: Tally) -> None:
        """Subtract the oldest bucket from the totals.

        A consecutive run loses the oldest bucket's share only if the run spans
        every newer bucket, i.e. it equals the oldest bucket's trailing run plus
        all of the newer buckets' results of that kind (gobreaker ``subtract``).
        """
        total = self.total
        newer_successes = -oldest.total_successes
        newer_failures = -oldest.total_failures
        for bucket in self.buckets:
            newer_successes += bucket.total_successes
            newer_failures += bucket.total_failures
        if total.consecutive_successes == oldest.consecutive_successes + newer_successes:
            total.consecutive_successes -= min(
                total.consecutive_successes, oldest.consecutive_successes
            )
        if total.consecutive_failures == oldest.consecutive_failures + newer_failures:
            total.consecutive_failures -= min(
                total.consecutive_failures, oldest.consecutive_failures
            )
        total.requests -= min(total.requests, oldest.requests)
        total.total_successes -= min(total.total_successes, oldest.total_successes)
        total.total_failures -= min(total.total_failures, oldest.total_failures)
        total.total_exclusions -= min(total.total_exclusions, oldest.total_exclusions)


class Epoch:
    """One generation of a breaker, or one bucket age of it: what its lock-free path reads.

    ``state``, ``ticket`` and ``until`` never change. While ``fast`` is true the
    breaker counts admissions and successes with ``next(requests)`` and
    ``next(successes)``: under the GIL ``next`` on an ``itertools.count`` is one
    atomic step, so no lock is taken. ``drain`` (under the breaker's lock) moves
    what was counted into ``tallies`` and remembers the counters' positions in
    ``seen_requests`` / ``seen_successes``, so a thread that counted *after* the
    epoch was retired can tell, by the index ``next`` gave it, that it was missed.
    """

    __slots__ = ("fast", "requests", "seen_requests", "seen_successes", "state", "successes",
                 "tallies", "ticket", "timeless", "until")

    def __init__(self, state: object, ticket: int, until: float,
                 tallies: tuple[Tally, ...] = ()) -> None:
        self.state = state
        self.ticket = ticket
        self.until = until  # the fast path holds while now <= until
        self.tallies = tallies  # empty: never fast (open, half-open)
        self.fast = bool(tallies)
        self.timeless = until == math.inf  # no clock read needed on the fast path
        self.requests = itertools.count()
        self.successes = itertools.count()
        self.seen_requests = self.seen_successes = -1

    def drain(self) -> None:
        """Add what was counted lock-free since the last drain to the tallies (lock held).

        Successes are read first: a success counted here had its request counted
        before it, so a drain never shows more results than requests.
        """
        s = next(self.successes)
        r = next(self.requests)
        successes = s - self.seen_successes - 1
        requests = r - self.seen_requests - 1
        self.seen_successes, self.seen_requests = s, r
        for tally in self.tallies:
            tally.requests += requests
            if successes:
                # Lock-free successes all came after the last locked update: one run.
                tally.total_successes += successes
                tally.consecutive_successes += successes
                tally.consecutive_failures = 0

    def retire(self, keep: bool) -> None:
        """Stop the lock-free path for good (lock held); ``keep`` drains, else counts are void."""
        if not self.fast:
            return  # paused (already drained) or never fast
        self.fast = False
        if keep:
            self.drain()
        else:
            self.seen_successes = next(self.successes)
            self.seen_requests = next(self.requests)


__all__ = [
    "EXCLUDED", "FAILURE", "SUCCESS", "Counts", "Epoch", "RollingCounts", "RollingWindow", "Tally",
]
