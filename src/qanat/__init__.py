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
from qanat.core.bulkhead import (
    BulkheadStats,
)
from qanat.core.ratelimit import (
    GCRA,
    Decision,
    RateLimiter,
    SlidingWindow,
    TokenBucket,
    Unkeyed,
)
from qanat.core.ratelimit import (
    headers as ratelimit_headers,
)
from qanat.core.retry import (
    BudgetStats,
    Jitter,
    RatioRetryBudget,
    RetryBudget,
    RetryPolicy,
    parse_retry_after,
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
from qanat.policy import (
    Policies,
    Policy,
    load_policies,
)
from qanat.runtime.bulkhead import (
    Bulkhead,
)
from qanat.runtime.retrying import (
    Retrying,
    retry,
)
from qanat.testing import (
    FakeClock,
)

__version__ = "0.1.0"

__all__ = [
    "GCRA",
    "AdaptiveThrottle",
    "BackendError",
    "BackendUnreachable",
    "BreakerSettings",
    "BreakerState",
    "BreakerStats",
    "BudgetStats",
    "Bulkhead",
    "BulkheadStats",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigError",
    "Conflict",
    "Counts",
    "DeadlineExceeded",
    "Decision",
    "FakeClock",
    "Jitter",
    "NoEndpoints",
    "NotFound",
    "Overloaded",
    "Policies",
    "Policy",
    "QanatError",
    "RateLimited",
    "RateLimiter",
    "RatioRetryBudget",
    "RetryBudget",
    "RetryBudgetExhausted",
    "RetryPolicy",
    "Retrying",
    "SlidingWindow",
    "ThrottleStats",
    "Timeout",
    "TokenBucket",
    "TooManyRequestsError",
    "Unavailable",
    "Unkeyed",
    "load_policies",
    "parse_retry_after",
    "ratelimit_headers",
    "retry",
]
