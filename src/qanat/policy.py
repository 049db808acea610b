"""Named resilience policies, built from a Dapr-style spec, applied to calls.

::

    policies = qanat.load_policies('''
      timeouts: {general: 5s}
      retries: {standard: {policy: exponential, duration: 50ms, maxRetries: 3}}
      circuitBreakers: {db: {timeout: 30s, trip: consecutiveFailures > 5}}
      targets: {services: {users: {timeout: general, retry: standard, circuitBreaker: db}}}
    ''')
    users = policies.for_target("users")

    @users                              # as a decorator on an async function
    async def fetch_user(uid): ...

    async with users:                   # as an async context manager (no retries)
        ...

Composition, outermost first (documented in ``docs/policies.md``)::

    timeout > retry (with budget) > throttle > circuit breaker > bulkhead > per-try timeout > call

The total ``timeout`` covers every attempt (Envoy's route timeout); each attempt
passes the adaptive throttle and the breaker before it may wait for a bulkhead
slot, so a refused attempt costs nothing; ``perTryTimeout`` bounds one attempt.
A ``with`` block cannot be run twice, so the context-manager form applies
everything except retries.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from qanat import _yaml
from qanat.core.breaker import BreakerSettings, CircuitBreaker
from qanat.core.retry import Jitter, RetryBudget, RetryPolicy
from qanat.core.throttle import AdaptiveThrottle
from qanat.errors import Overloaded, Timeout
from qanat.policy_spec import ResiliencySpec, RetrySpec, parse_status_codes, parse_trip
from qanat.runtime.bulkhead import Bulkhead
from qanat.runtime.retrying import Retrying

P = ParamSpec("P")
R = TypeVar("R")
_FOREVER = 1_000_000  # "maxRetries: -1": attempts are bounded by maxElapsed instead


def retry_policy(spec: RetrySpec) -> RetryPolicy:
    """The core ``RetryPolicy`` for a retry spec (constant = no growth, no jitter)."""
    attempts = _FOREVER if spec.max_retries == -1 else spec.max_retries + 1
    constant = spec.policy == "constant"
    codes = parse_status_codes(spec.status_codes)
    retry_on = set(spec.retry_on) | ({"retriable-status-codes"} if codes else set())
    return RetryPolicy(
        max_attempts=attempts,
        base=spec.duration,
        cap=spec.duration if constant else spec.max_interval,
        jitter=Jitter.NONE if constant else Jitter(spec.jitter),
        max_elapsed=spec.max_elapsed,
        retry_on=frozenset(retry_on),
        retriable_status_codes=codes,
    )


@dataclass
class Policy:
    """The resilience applied to calls to one target. Build it with ``Policies``."""

    name: str
    timeout: float | None = None
    per_try_timeout: float | None = None
    retry: RetryPolicy | None = None
    budget: RetryBudget | None = None
    breaker_settings: BreakerSettings | None = None
    bulkhead: Bulkhead | None = None
    throttle: AdaptiveThrottle | None = None
    load_balancer: str | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[object]] | None = None  # between retries; asyncio.sleep
    _breaker: CircuitBreaker | None = field(default=None, repr=False)

    @property
    def breaker(self) -> CircuitBreaker | None:
        """One breaker shared by every call through this policy (clients keep one per instance)."""
        if self._breaker is None and self.breaker_settings is not None:
            self._breaker = CircuitBreaker(self.breaker_settings, clock=self.clock)
        return self._breaker

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` under the whole policy, retries included."""

        async def attempt() -> R:
            return await self._guarded(fn, *args, **kwargs)

        async def attempts() -> R:
            if self.retry is None:
                return await attempt()
            retrying = Retrying(self.retry, budget=self.budget, clock=self.clock, sleep=self.sleep)
            if self.budget is not None:
                self.budget.request_started()
            try:
                return await retrying.acall(attempt)
            finally:
                if self.budget is not None:
                    self.budget.request_finished()

        if self.timeout is None:
            return await attempts()
        try:
            async with asyncio.timeout(self.timeout):
                return await attempts()
        except TimeoutError:
            raise Timeout(f"{self.name}: no result within the {self.timeout:g}s timeout") from None

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Decorate an async function so every call runs under this policy."""

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return await self.call(fn, *args, **kwargs)

        return wrapper

    async def _guarded(self, fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
        async with _Guard(self, self.per_try_timeout):
            return await fn(*args, **kwargs)

    async def __aenter__(self) -> Policy:
        guard = _Guard(self, self.timeout if self.per_try_timeout is None else self.per_try_timeout)
        await guard.__aenter__()
        _GUARDS.setdefault(id(self), []).append(guard)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        guard = _GUARDS[id(self)].pop()
        return await guard.__aexit__(kind, exc, tb)


_GUARDS: dict[int, list[_Guard]] = {}


class _Guard:
    """One attempt: throttle, breaker, bulkhead and a timeout around a block."""

    def __init__(self, policy: Policy, timeout: float | None) -> None:
        self.policy = policy
        self.timeout = timeout
        self.ticket: int | None = None
        self.holding = False
        self.deadline: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        p, now = self.policy, self.policy.clock()
        if p.throttle is not None and not p.throttle.allow(now):
            raise Overloaded(f"{p.name}: shed by adaptive throttling")
        breaker = p.breaker
        if breaker is not None:
            self.ticket = breaker.before(now)
        if p.bulkhead is not None:
            try:
                await p.bulkhead.acquire()
            except BaseException:
                self._not_run()
                raise
            self.holding = True
        if self.timeout is not None:
            self.deadline = asyncio.timeout(self.timeout)
            await self.deadline.__aenter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            if self.deadline is not None:
                try:
                    await self.deadline.__aexit__(kind, exc, tb)
                except TimeoutError:
                    error = Timeout(f"{self.policy.name}: attempt exceeded {self.timeout:g}s")
                    self._settle(error)
                    raise error from None
            self._settle(exc)
        finally:
            if self.holding and self.policy.bulkhead is not None:
                self.policy.bulkhead.release()
        return None

    def _not_run(self) -> None:
        """No bulkhead slot: the block never ran, so neither breaker nor throttle learns."""
        p = self.policy
        if self.ticket is not None and p.breaker is not None:
            p.breaker.after_excluded(self.ticket, p.clock())
            self.ticket = None

    def _settle(self, exc: BaseException | None) -> None:
        p, now = self.policy, self.policy.clock()
        if self.ticket is not None and p.breaker is not None:
            if exc is None:
                p.breaker.after(self.ticket, True, now)
            else:
                p.breaker.after_exception(self.ticket, exc, now)
            self.ticket = None
        if p.throttle is not None:
            p.throttle.record(exc is None, now)


class Policies:
    """Every named policy of a resiliency spec, and the policy of each target."""

    def __init__(
        self,
        spec: ResiliencySpec,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> None:
        self.spec = spec
        self.clock = clock
        self.sleep = sleep
        self._targets: dict[str, Policy] = {}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "policies") -> Policies:
        doc = _yaml.LocatedDocument(data, {}, source)
        return cls(_yaml.validate(ResiliencySpec, doc))

    def for_target(self, name: str) -> Policy:
        """The policy bound to ``name`` (built once); an empty policy when none is bound."""
        policy = self._targets.get(name)
        if policy is None:
            policy = self._targets[name] = self._build(name)
        return policy

    def _build(self, name: str) -> Policy:
        spec, target = self.spec, self.spec.target(name)
        if target is None:
            return Policy(name, clock=self.clock, sleep=self.sleep)
        retry = spec.retries[target.retry] if target.retry else None
        cb = spec.circuit_breakers[target.circuit_breaker] if target.circuit_breaker else None
        bh = spec.bulkheads[target.bulkhead] if target.bulkhead else None
        th = spec.throttles[target.throttle] if target.throttle else None
        return Policy(
            name,
            timeout=spec.timeouts[target.timeout] if target.timeout else None,
            per_try_timeout=spec.timeouts[target.per_try_timeout]
            if target.per_try_timeout
            else None,
            retry=retry_policy(retry) if retry else None,
            budget=RetryBudget(retry.budget_percent, retry.budget_min_concurrency)
            if retry
            else None,
            breaker_settings=BreakerSettings(
                name=name,
                max_requests=cb.max_requests,
                interval=cb.interval,
                timeout=cb.timeout,
                bucket_period=cb.bucket_period,
                ready_to_trip=parse_trip(cb.trip),
            )
            if cb
            else None,
            bulkhead=Bulkhead(bh.max_concurrent, bh.max_queue, bh.max_wait, name=name)
            if bh
            else None,
            throttle=AdaptiveThrottle(name, k=th.k, window=th.window, clock=self.clock)
            if th
            else None,
            load_balancer=target.load_balancer,
            clock=self.clock,
            sleep=self.sleep,
        )


def load_policies(source: str | Path | dict[str, Any]) -> Policies:
    """Policies from a dict, a YAML string, or a YAML file path (``policies:`` key optional)."""
    if isinstance(source, dict):
        return Policies.from_dict(source.get("policies", source))
    if isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))
    ):
        doc = _yaml.load(source)
    else:
        doc = _yaml.parse(source, "<policies>")
    at: tuple[str | int, ...] = (
        ("policies",) if isinstance(doc.data, dict) and "policies" in doc.data else ()
    )
    return Policies(_yaml.validate(ResiliencySpec, doc, at=at))
