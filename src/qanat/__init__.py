"""qanat: everything between your FastAPI services.

This module is the front door: everything users import is re-exported here
and listed in ``__all__`` (a test keeps the two in step).
"""


from qanat.errors import (
    BackendError as BackendError,
)
from qanat.errors import (
    BackendUnreachable as BackendUnreachable,
)
from qanat.errors import (
    CircuitOpenError as CircuitOpenError,
)
from qanat.errors import (
    ConfigError as ConfigError,
)
from qanat.errors import (
    Conflict as Conflict,
)
from qanat.errors import (
    DeadlineExceeded as DeadlineExceeded,
)
from qanat.errors import (
    NoEndpoints as NoEndpoints,
)
from qanat.errors import (
    NotFound as NotFound,
)
from qanat.errors import (
    Overloaded as Overloaded,
)
from qanat.errors import (
    QanatError as QanatError,
)
from qanat.errors import (
    RateLimited as RateLimited,
)
from qanat.errors import (
    RetryBudgetExhausted as RetryBudgetExhausted,
)
from qanat.errors import (
    Timeout as Timeout,
)
from qanat.errors import (
    TooManyRequestsError as TooManyRequestsError,
)
from qanat.errors import (
    Unavailable as Unavailable,
)
from qanat.testing import FakeClock as FakeClock

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BackendUnreachable",
    "CircuitOpenError",
    "ConfigError",
    "Conflict",
    "DeadlineExceeded",
    "FakeClock",
    "NoEndpoints",
    "NotFound",
    "Overloaded",
    "QanatError",
    "RateLimited",
    "RetryBudgetExhausted",
    "Timeout",
    "TooManyRequestsError",
    "Unavailable",
]
