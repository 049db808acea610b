"""How calls to one target behave: ``ClientSettings`` and the mapping from named policies."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qanat.core.balance import BALANCERS
from qanat.core.breaker import BreakerSettings
from qanat.core.outlier import OutlierSettings
from qanat.core.retry import RetryBudget, RetryPolicy
from qanat.core.throttle import AdaptiveThrottle
from qanat.errors import ConfigError
from qanat.policy import Policy
from qanat.runtime.bulkhead import Bulkhead

DEFAULT_TIMEOUT = 10.0
"""Seconds a whole call may take, retries included, when no policy says otherwise."""


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How calls to one target behave; built from the target's policy in ``qanat.yaml``.

    Defaults: the whole call (every attempt and backoff) gets ``timeout`` =
    10 s; no per-try timeout; up to 3 attempts (Envoy's retry conditions:
    connect failure, reset, 502/503/504, unavailable); a breaker per instance
    that opens after more than 5 consecutive failures for 10 s; Envoy's
    outlier detection; the peak-EWMA power-of-two-choices balancer; response
    bodies up to 16 MiB. ``budget`` is a retry budget shared by every client
    given these settings (a policy's budget); ``None`` gives each client its
    own ``RetryBudget()`` (Envoy's 20 %, with a floor of max(3, calls in
    flight / instances known), so every call on a lost instance may retry).
    ``throttle`` (an ``AdaptiveThrottle``) and ``bulkhead`` (a ``Bulkhead``)
    are applied to every attempt (``client_guard``) and, like ``budget``,
    shared by every client given these settings; None: neither.
    """

    timeout: float = DEFAULT_TIMEOUT  # whole call, retries and backoff included
    per_try_timeout: float | None = None  # one attempt, until the response head
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=3))
    breaker: BreakerSettings = field(default_factory=lambda: BreakerSettings(timeout=10.0))
    outlier: OutlierSettings = field(default_factory=OutlierSettings)
    load_balancer: str = "p2c_ewma"
    max_body: int = 16 * 1024 * 1024  # a larger response body raises BodyTooLarge
    budget: RetryBudget | None = field(default=None, compare=False)
    throttle: AdaptiveThrottle | None = field(default=None, compare=False)
    bulkhead: Bulkhead | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        where = "ClientSettings"
        if not (isinstance(self.timeout, int | float) and math.isfinite(self.timeout)
                and self.timeout > 0):
            raise ConfigError(f"timeout must be finite seconds > 0, got {self.timeout!r}",
                              source=f"{where}.timeout")
        per_try = self.per_try_timeout
        if per_try is not None and not (isinstance(per_try, int | float) and per_try > 0):
            raise ConfigError(f"per_try_timeout must be seconds > 0 or None, got {per_try!r}",
                              source=f"{where}.per_try_timeout")
        if self.load_balancer not in BALANCERS:
            raise ConfigError(
                f"unknown load balancer {self.load_balancer!r}; use one of: "
                f"{', '.join(BALANCERS)}",
                source=f"{where}.load_balancer",
            )
        if not (isinstance(self.max_body, int) and self.max_body >= 0):
            raise ConfigError(f"max_body must be bytes >= 0, got {self.max_body!r}",
                              source=f"{where}.max_body")


def settings_from_policy(policy: Policy) -> ClientSettings:
    """Client settings for a target from its named policies (``qanat.yaml`` ``policies:``).

    ``timeout`` → ``timeout``, ``perTryTimeout`` → ``per_try_timeout``,
    ``retry`` → ``retry`` (and its budget, shared with the policy),
    ``circuitBreaker`` → ``breaker`` (one breaker per instance, each with
    those settings), ``loadBalancer`` → ``load_balancer``, ``throttle`` →
    ``throttle`` and ``bulkhead`` → ``bulkhead`` (the policy's own objects,
    so the policy used as a decorator shares them). What a policy leaves
    out keeps the ``ClientSettings`` default.
    """
    base = ClientSettings()
    return ClientSettings(
        timeout=policy.timeout if policy.timeout is not None else base.timeout,
        per_try_timeout=policy.per_try_timeout,
        retry=policy.retry if policy.retry is not None else base.retry,
        breaker=policy.breaker_settings
        if policy.breaker_settings is not None
        else base.breaker,
        load_balancer=policy.load_balancer or base.load_balancer,
        budget=policy.budget,
        throttle=policy.throttle,
        bulkhead=policy.bulkhead,
    )


__all__ = ["DEFAULT_TIMEOUT", "ClientSettings", "settings_from_policy"]
