"""Retry budgets: a cap on retries relative to normal traffic, so retries cannot snowball.

Pure: counters and an injected clock, no sleeping, no I/O.

- ``RetryBudget``: Envoy's ``retry_budget`` — retries in flight at most
  ``max(min_retry_concurrency, percent % of active requests)``, with a
  floor that by default scales with the calls per instance.
- ``RatioRetryBudget``: Finagle's ``RetryBudget`` — each request deposits
  ``percent`` % of a retry, each retry withdraws one, deposits expire after
  ``ttl``, plus a floor of ``min_retries_per_sec``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from qanat.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BudgetStats:
    """A retry budget's state, for metrics: requests and retries in flight, and the
    retries it granted and refused since it was made (Envoy's ``upstream_rq_retry`` and
    ``upstream_rq_retry_overflow``; a retry that never asked the budget is in neither)."""

    active_requests: int
    active_retries: int
    refused: int
    granted: int = 0


ENVOY_MIN_RETRY_CONCURRENCY = 3
"""Envoy's ``min_retry_concurrency`` default, and the least the scaling floor allows."""


class RetryBudget:
    """Envoy's retry budget: retries in flight <= max(floor, percent % of active requests).

    Call ``request_started``/``request_finished`` around each logical call and
    ``try_retry``/``retry_finished`` around each retry. A refused retry is
    counted in ``stats().refused`` (Envoy's ``upstream_rq_retry_overflow``).
    ``percent`` defaults to Envoy's 20.

    The floor is ``min_retry_concurrency`` when it is given (Envoy's default
    is a fixed 3). Left out (``None``), it scales with the calls and with the
    instances they are spread over: ``max(3, ceil(active / hosts))``, where
    ``hosts`` is what the caller passes to ``try_retry``. That is the share of
    the calls in flight that one instance carries, so when one of several
    instances dies every call it held may retry on the others at once, while
    a failure of the whole service is still held to that share (with 2
    instances, half the calls; with 10, the 20 % dominates). With one host
    (or none given) there is nowhere else to retry and the floor stays 3.
    A fixed floor of 3 refuses the 4th simultaneous retry when an instance
    with more calls on it dies; Envoy Gateway answers that with as many
    parallel retries as requests (1024) and Istio with no retry limit at all,
    and the gateway's routes default to ``percent=100`` (docs/retries.md).
    Retrying calls stay counted as active (unlike Envoy's upstream-request
    count), so the floor does not shrink as calls turn into retries.
    """

    __slots__ = ("_active", "_granted", "_min", "_ratio", "_refused", "_retries")

    def __init__(self, percent: float = 20.0, min_retry_concurrency: int | None = None) -> None:
        floor = min_retry_concurrency
        if not (0 <= percent <= 100) or not (
            floor is None or (isinstance(floor, int) and not isinstance(floor, bool) and floor >= 0)
        ):
            raise ConfigError(
                "need 0 <= percent <= 100 and min_retry_concurrency >= 0 (or None: a floor "
                f"that scales with the calls per instance), got {percent!r} and {floor!r}",
                source="RetryBudget",
            )
        self._ratio = percent / 100.0
        self._min = floor
        self._active = self._retries = self._refused = self._granted = 0

    @property
    def min_retry_concurrency(self) -> int | None:
        """The fixed floor, or None when the floor scales (see the class docstring)."""
        return self._min

    def floor(self, hosts: int = 1) -> int:
        """Retries in flight always allowed now, with calls spread over ``hosts`` instances."""
        if self._min is not None:
            return self._min
        if hosts < 2:
            return ENVOY_MIN_RETRY_CONCURRENCY
        return max(ENVOY_MIN_RETRY_CONCURRENCY, -(-self._active // hosts))

    def request_started(self) -> None:
        """A logical call (first attempt and its retries) began."""
        self._active += 1

    def request_finished(self) -> None:
        """A logical call ended, successfully or not."""
        self._active -= 1

    def try_retry(self, hosts: int = 1) -> bool:
        """Reserve a retry; False (and a counted refusal) when the budget is spent.

        ``hosts``: the instances of the target the calls are spread over (the
        scaling floor's divisor; ignored with a fixed ``min_retry_concurrency``).
        """
        if self._retries + 1 <= max(self.floor(hosts), self._ratio * self._active):
            self._retries += 1
            self._granted += 1
            return True
        self._refused += 1
        return False

    def retry_finished(self) -> None:
        """A retry granted by ``try_retry`` ended."""
        self._retries -= 1

    def stats(self) -> BudgetStats:
        """The current counts."""
        return BudgetStats(self._active, self._retries, self._refused, self._granted)


class RatioRetryBudget:
    """Finagle's retry budget: each request deposits ``percent`` of a retry; deposits expire.

    Over any trailing ``ttl`` seconds, retries <= percent % of requests +
    ``min_retries_per_sec`` × ttl. Defaults are Finagle's (10 s, 10/s, 20 %).
    ``ttl`` is split into 10 slots, so a deposit expires within ttl ± ttl/10.
    """

    __slots__ = (
        "_clock",
        "_deposits",
        "_granted",
        "_ratio",
        "_refused",
        "_reserve",
        "_slot",
        "_width",
        "_withdrawals",
    )

    _SLOTS = 10

    def __init__(
        self,
        ttl: float = 10.0,
        min_retries_per_sec: float = 10.0,
        percent: float = 20.0,
        *,
        clock: Callable[[], float],
    ) -> None:
        if not (ttl > 0 and min_retries_per_sec >= 0 and 0 <= percent <= 1000):
            raise ConfigError(
                "need ttl > 0, min_retries_per_sec >= 0 and 0 <= percent <= 1000, "
                f"got {ttl!r}, {min_retries_per_sec!r}, {percent!r}",
                source="RatioRetryBudget",
            )
        self._clock = clock
        self._width = ttl / self._SLOTS
        self._ratio = percent / 100.0
        self._reserve = min_retries_per_sec * ttl
        self._deposits = [0] * self._SLOTS
        self._withdrawals = [0] * self._SLOTS
        self._slot = math.floor(clock() / self._width)
        self._refused = self._granted = 0

    def _advance(self) -> int:
        """Clear the slots that expired since the last call; return the current slot index."""
        slot = math.floor(self._clock() / self._width)
        for s in range(max(self._slot + 1, slot - self._SLOTS + 1), slot + 1):
            self._deposits[s % self._SLOTS] = self._withdrawals[s % self._SLOTS] = 0
        self._slot = max(self._slot, slot)
        return self._slot % self._SLOTS

    def request_started(self) -> None:
        """Deposit a request."""
        self._deposits[self._advance()] += 1

    def request_finished(self) -> None:
        """Nothing: Finagle's budget counts rates, not concurrency."""

    def try_retry(self) -> bool:
        """Withdraw a retry if the window holds enough deposits (or the reserve allows it)."""
        i = self._advance()
        balance = self._ratio * sum(self._deposits) + self._reserve - sum(self._withdrawals)
        if balance >= 1:
            self._withdrawals[i] += 1
            self._granted += 1
            return True
        self._refused += 1
        return False

    def retry_finished(self) -> None:
        """Nothing: a withdrawal is spent once made."""

    def stats(self) -> BudgetStats:
        """Deposits and withdrawals in the window, and refusals."""
        self._advance()
        return BudgetStats(sum(self._deposits), sum(self._withdrawals), self._refused,
                           self._granted)


__all__ = ["ENVOY_MIN_RETRY_CONCURRENCY", "BudgetStats", "RatioRetryBudget", "RetryBudget"]
