"""One exception tree for qanat, grouped by what a caller can do about it.

- ``QanatError``: the root; catch it to catch everything qanat raises.
- ``Unavailable``: the call was refused *before* any work was done, so it is
  safe to retry elsewhere or later (circuit open, rate limited, overloaded).
- ``Timeout``: the call ran out of time; whether work happened is unknown.
- ``Conflict``: a precondition (expected version, compare-and-set) failed.
- ``ConfigError``: bad configuration, with where it came from and how to fix it.
- ``BackendError``: a backend (etcd, SQLite, NATS ...) failed or is unreachable.
"""

from __future__ import annotations


class QanatError(Exception):
    """Root of every error qanat raises."""


class Unavailable(QanatError):
    """Refused before any work was done; safe to retry later or elsewhere.

    ``retry_after`` is the number of seconds after which a retry may succeed,
    when known.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitOpenError(Unavailable):
    """The circuit breaker is open: calls fail fast until it half-opens."""


class TooManyRequestsError(Unavailable):
    """The breaker is half-open and already admitted its quota of trial calls."""


class RateLimited(Unavailable):
    """A rate limiter refused the call; ``retry_after`` says when to try again."""


class Overloaded(Unavailable):
    """A concurrency limit (bulkhead) or adaptive throttle shed the call."""


class RetryBudgetExhausted(Unavailable):
    """A retry was refused because the retry budget is spent."""


class NoEndpoints(Unavailable):
    """There is no healthy endpoint to send the call to."""


class Timeout(QanatError):
    """The call did not finish in time; whether it had an effect is unknown."""


class DeadlineExceeded(Timeout):
    """The caller's deadline (propagated across services) had already passed."""


class Conflict(QanatError):
    """A precondition failed: an expected version or compare-and-set lost."""


class NotFound(QanatError):
    """The named thing (key, service, instance, route) does not exist."""


class ConfigError(QanatError, ValueError):
    """Invalid configuration.

    The message says what was wrong, where (``source``: a file and line, a key
    or a field path) and what is allowed.
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.source = source
        self.reason = message


class BackendError(QanatError):
    """A backend failed or could not be reached (etcd, SQLite, NATS, Redis ...)."""


class WatchCompacted(BackendError):
    """etcd cannot replay a watch from the asked revision (compacted, or the store was reset).

    ``compact_revision`` is the oldest revision etcd can still replay from
    (0 when the store's revision went backwards, as after a restore or a wipe).
    """

    def __init__(self, message: str, *, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class BackendUnreachable(BackendError):
    """The backend could not be reached at all; the URL is in the message."""


__all__ = [
    "BackendError",
    "BackendUnreachable",
    "CircuitOpenError",
    "ConfigError",
    "Conflict",
    "DeadlineExceeded",
    "NoEndpoints",
    "NotFound",
    "Overloaded",
    "QanatError",
    "RateLimited",
    "RetryBudgetExhausted",
    "Timeout",
    "TooManyRequestsError",
    "Unavailable",
    "WatchCompacted",
]
