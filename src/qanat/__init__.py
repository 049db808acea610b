"""qanat: everything between your FastAPI services.

This module is the front door: everything users import is re-exported here
and listed in ``__all__`` (a test keeps the two in step).
"""

from qanat.backends import (
    open_config_store,
    open_registry,
)
from qanat.core.balance import (
    Balancer,
    ConsistentHash,
    Endpoint,
    EndpointLike,
    LeastRequest,
    PeakEwmaP2C,
    RoundRobin,
    SmoothWeightedRoundRobin,
    WeightedRandom,
    make_balancer,
)
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
from qanat.core.outlier import (
    CallError,
    OutlierDetector,
    OutlierSettings,
    OutlierStats,
)
from qanat.core.ratelimit import (
    GCRA,
    Decision,
    RateLimiter,
    SlidingWindow,
    TokenBucket,
    Unkeyed,
)
from qanat.core.ratelimit_headers import (
    rate_limit_headers,
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
    WatchCompacted,
)
from qanat.gateway import (
    Gateway,
    RouteConfig,
    register_filter,
)
from qanat.gateway import (
    Limits as GatewayLimits,
)
from qanat.http import (
    ConnectError as UpstreamConnectError,
)
from qanat.http import (
    HttpPool,
    PoolOverloaded,
    PoolStats,
    UpstreamError,
    UpstreamReset,
    UpstreamResponse,
    UpstreamTimeout,
)
from qanat.policy import (
    Policies,
    Policy,
    load_policies,
)
from qanat.ports import (
    ChangeType,
    ConfigChange,
    ConfigEntry,
    ConfigStore,
    Health,
    Instance,
    Registry,
)
from qanat.runtime import (
    gray,
)
from qanat.runtime.bulkhead import (
    Bulkhead,
)
from qanat.runtime.client import (
    ClientResponse,
    ClientSettings,
    ServiceClient,
    settings_from_policy,
)
from qanat.runtime.discovery import (
    CacheStatus,
    DiscoveryCache,
)
from qanat.runtime.health import (
    CheckSettings,
    HealthChecker,
    TtlCheck,
)
from qanat.runtime.retrying import (
    Retrying,
    retry,
)
from qanat.runtime.service import (
    Service,
)
from qanat.runtime.typed_config import (
    BoundConfig,
    ConfigRejection,
)
from qanat.security import (
    ApiKeyAuth,
    AuthFailure,
    Identity,
    JwtAuthenticator,
    JwtVerifier,
    hash_api_key,
)
from qanat.testing import (
    FakeClock,
    eventually,
    eventually_sync,
    free_port,
)
from qanat.topology import (
    Topology,
    load_topology,
)

__version__ = "0.1.0"

__all__ = [
    "GCRA",
    "AdaptiveThrottle",
    "ApiKeyAuth",
    "AuthFailure",
    "BackendError",
    "BackendUnreachable",
    "Balancer",
    "BoundConfig",
    "BreakerSettings",
    "BreakerState",
    "BreakerStats",
    "BudgetStats",
    "Bulkhead",
    "BulkheadStats",
    "CacheStatus",
    "CallError",
    "ChangeType",
    "CheckSettings",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClientResponse",
    "ClientSettings",
    "ConfigChange",
    "ConfigEntry",
    "ConfigError",
    "ConfigRejection",
    "ConfigStore",
    "Conflict",
    "ConsistentHash",
    "Counts",
    "DeadlineExceeded",
    "Decision",
    "DiscoveryCache",
    "Endpoint",
    "EndpointLike",
    "FakeClock",
    "Gateway",
    "GatewayLimits",
    "Health",
    "HealthChecker",
    "HttpPool",
    "Identity",
    "Instance",
    "Jitter",
    "JwtAuthenticator",
    "JwtVerifier",
    "LeastRequest",
    "NoEndpoints",
    "NotFound",
    "OutlierDetector",
    "OutlierSettings",
    "OutlierStats",
    "Overloaded",
    "PeakEwmaP2C",
    "Policies",
    "Policy",
    "PoolOverloaded",
    "PoolStats",
    "QanatError",
    "RateLimited",
    "RateLimiter",
    "RatioRetryBudget",
    "Registry",
    "RetryBudget",
    "RetryBudgetExhausted",
    "RetryPolicy",
    "Retrying",
    "RoundRobin",
    "RouteConfig",
    "Service",
    "ServiceClient",
    "SlidingWindow",
    "SmoothWeightedRoundRobin",
    "ThrottleStats",
    "Timeout",
    "TokenBucket",
    "TooManyRequestsError",
    "Topology",
    "TtlCheck",
    "Unavailable",
    "Unkeyed",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamReset",
    "UpstreamResponse",
    "UpstreamTimeout",
    "WatchCompacted",
    "WeightedRandom",
    "eventually",
    "eventually_sync",
    "free_port",
    "gray",
    "hash_api_key",
    "load_policies",
    "load_topology",
    "make_balancer",
    "open_config_store",
    "open_registry",
    "parse_retry_after",
    "rate_limit_headers",
    "register_filter",
    "retry",
    "settings_from_policy",
]
