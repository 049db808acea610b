"""qanat: everything between your FastAPI services.

This module is the front door: everything users import is re-exported here
and listed in ``__all__`` (a test keeps the two in step).
"""

from qanat.core.breaker import (
    BreakerSettings,
    BreakerStats,
    CircuitBreaker,
    Counts,
)
from qanat.core.breaker_settings import (
    State as BreakerState,
)
from qanat.core.throttle import (
    AdaptiveThrottle,
    ThrottleStats,
)
from qanat.errors import (
    BackendError,
    BackendUnreachable,
    CircuitOpenError,
    ConfigError,
    Conflict,
    DeadlineExceeded,
    NoEndpoints,
    NotFound,
    Overloaded,
    QanatError,
    RateLimited,
    RetryBudgetExhausted,
    Timeout,
    TooManyRequestsError,
    Unavailable,
)
from qanat.testing import (
    FakeClock,
)

__version__ = "0.1.0"

__all__ = [
    "AdaptiveThrottle",
    "BackendError",
    "BackendUnreachable",
    "BreakerSettings",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigError",
    "Conflict",
    "Counts",
    "DeadlineExceeded",
    "FakeClock",
    "NoEndpoints",
    "NotFound",
    "Overloaded",
    "QanatError",
    "RateLimited",
    "RetryBudgetExhausted",
    "ThrottleStats",
    "Timeout",
    "TooManyRequestsError",
    "Unavailable",
]
