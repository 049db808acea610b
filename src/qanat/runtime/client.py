"""The resilient service-to-service client: ``service.client("users")``.

One call goes through, in order (see ``docs/client.md``):

1. the deadline: the caller's remaining budget (``qanat.observability.context``)
   and this call's timeout, whichever ends first; none left raises
   ``DeadlineExceeded`` and nothing is sent;
2. the request is validated and encoded once (``client_request.prepare``);
3. discovery (a cached snapshot fed by watches), minus the instances outlier
   detection ejected (Envoy's; all of them when fewer than half would remain,
   Envoy's panic threshold), feeds the balancer, which picks an instance;
   a retry prefers an instance not tried yet;
4. the target's adaptive throttle may shed the attempt, the instance's own
   circuit breaker admits it or the client picks another (every breaker
   open raises ``CircuitOpenError``), and the target's bulkhead gives it a
   slot; shed or no slot raises ``Overloaded`` (``client_guard``);
5. the pooled HTTP/1.1 transport sends it with ``host``, ``x-request-id``,
   ``x-qanat-budget-ms`` (the time left, rounded down) and ``traceparent``
   (a CLIENT span per attempt, child of the current span), bounded by the
   per-try timeout until the head and by the deadline for the body;
6. the outcome settles the breaker, the outlier detector and the balancer
   exactly once (5 and 6 are ``client_attempt.Attempts``); then, if the
   attempt failed in a way that is safe and worth retrying
   (``client_request.retry_delay``), the client waits a jittered backoff (or
   ``Retry-After``) within the retry budget and the deadline, and goes back
   to 3.

Retries are safe only when the request cannot take effect twice: idempotent
methods, writes carrying an idempotency key, and requests the upstream never
saw (a refused connection).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace

from qanat.core.balance import Balancer
from qanat.core.retry import RetryBudget
from qanat.errors import ConfigError, DeadlineExceeded, NoEndpoints, Unavailable
from qanat.http import HttpPool, UpstreamError
from qanat.observability import context
from qanat.ports import Instance
from qanat.runtime.client_attempt import Attempts
from qanat.runtime.client_endpoints import Choice, TargetEndpoints
from qanat.runtime.client_guard import TargetGuard
from qanat.runtime.client_request import Prepared, check_timeout, prepare, retry_delay
from qanat.runtime.client_response import ClientResponse
from qanat.runtime.client_settings import DEFAULT_TIMEOUT, ClientSettings, settings_from_policy
from qanat.runtime.discovery import DiscoveryCache


class ServiceClient:
    """Calls one target service; see the module docstring for what happens per call.

    ``clock`` (seconds; default ``time.monotonic``) times deadlines, breakers,
    outlier ejections, the balancer and the adaptive throttle's window;
    ``sleep`` waits between attempts;
    ``rng`` draws the backoff jitter; ``tracer`` makes the CLIENT spans
    (default: the global provider's ``qanat.client`` tracer). A client
    belongs to one event loop.
    """

    def __init__(
        self,
        target: str,
        *,
        discovery: DiscoveryCache | None = None,
        pool: HttpPool | None = None,
        settings: ClientSettings | None = None,
        budget: RetryBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        tracer: trace.Tracer | None = None,
    ) -> None:
        if not target:
            raise ConfigError("a client needs a target service name", source="ServiceClient")
        self.target = target
        self.discovery = discovery
        self.settings = s = settings or ClientSettings()
        self.budget = budget or s.budget or RetryBudget()
        self._clock, self._sleep, self._rng = clock, sleep, rng
        self._endpoints = TargetEndpoints(target, s, clock)
        self._guard = None if s.throttle is None and s.bulkhead is None else TargetGuard(
            target, s.throttle, s.bulkhead, clock)
        tracer = tracer or trace.get_tracer("qanat.client")
        self._attempts = Attempts(target, self._endpoints, tracer, clock, s.per_try_timeout,
                                  s.max_body, self._guard)
        self._attempts.pool = pool
        # Hot-path copies of settings; a response below _final_below is never retried.
        self._timeout = s.timeout
        self._final_below = min((409, *s.retry.retriable_status_codes))

    def bind(self, discovery: DiscoveryCache, pool: HttpPool) -> None:
        """Attach discovery and transport (``qanat.Service`` does this when it starts)."""
        self.discovery = discovery
        self._attempts.pool = pool

    @property
    def pool(self) -> HttpPool | None:
        """The transport the client sends through (``None`` until bound)."""
        return self._attempts.pool

    @pool.setter
    def pool(self, pool: HttpPool | None) -> None:
        self._attempts.pool = pool

    @property
    def balancer(self) -> Balancer[Instance]:
        """The balancer fed with this target's routable instances (read it, do not pick)."""
        return self._endpoints.balancer

    def has_endpoints(self) -> bool:
        """True when discovery knows at least one routable instance of the target."""
        return self.discovery is not None and bool(self.discovery.instances(self.target))

    def _choose(self, key: str | None, tried: Sequence[str], now: float) -> Choice:
        discovery = self.discovery
        if discovery is None or self._attempts.pool is None:
            raise NoEndpoints(
                f"{self.target}: the client is not started; call it once the service's app "
                "has started (qanat.Service binds it), or call client.bind(discovery, pool)"
            )
        return self._endpoints.choose(
            discovery.instances(self.target), key, tried, now,
            lambda: discovery.status(self.target).state,
        )

    async def _admit(
        self, key: str | None, tried: Sequence[str], prepared: Prepared, deadline: float
    ) -> Choice:
        """An attempt through the target's throttle, breakers and bulkhead (``client_guard``)."""
        assert self._guard is not None
        return await self._guard.admit(
            lambda now: self._choose(key, tried, now), self._endpoints.unchoose, prepared, deadline
        )

    # -- calls -------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        key: str | None = None,
    ) -> ClientResponse:
        """Send a request to one instance of the target, with retries when safe.

        Returns the final response, whatever its status. Raises ``NoEndpoints``,
        ``CircuitOpenError`` or ``Overloaded`` (the target's bulkhead is full or
        its adaptive throttle shed the call; all ``Unavailable``: nothing was sent),
        ``DeadlineExceeded`` (no time left: nothing was sent), the transport's
        ``UpstreamError`` after the last attempt (``UpstreamTimeout`` is a
        ``Timeout``), or ``ConfigError`` for a malformed call. ``timeout``
        (seconds) overrides the settings' for this call; ``key`` is the hash
        key for a consistent-hash balancer.
        """
        start = self._clock()
        budget = self._timeout if timeout is None else check_timeout(timeout)
        left = context.remaining()  # the propagated deadline is in time.monotonic() seconds
        if left is not None and left < budget:
            budget = left
        if budget <= 0:
            raise DeadlineExceeded(
                f"{self.target}: the caller's deadline has passed; {method} {path} was not sent"
            )
        prepared = prepare(method, path, params, json, content, headers, idempotency_key)
        deadline = start + budget
        retry_budget = self.budget
        retry_budget.request_started()
        try:
            if self._guard is None:
                choice = self._choose(key, (), start)
            else:
                choice = await self._admit(key, (), prepared, deadline)
            outcome: ClientResponse | UpstreamError
            try:
                response = await self._attempts.send(choice, prepared, deadline, 1)
                if response.status < self._final_below:  # 2xx, 3xx: never retried
                    return response
                outcome = response
            except UpstreamError as exc:
                outcome = exc
            return await self._retries(outcome, [choice[0].id], prepared, key, start, deadline)
        finally:
            retry_budget.request_finished()

    async def _retries(
        self,
        outcome: ClientResponse | UpstreamError,
        tried: list[str],
        prepared: Prepared,
        key: str | None,
        start: float,
        deadline: float,
    ) -> ClientResponse:
        """Retry while the last outcome is safe and worth retrying, in budget and in time."""
        clock, budget = self._clock, self.budget
        previous: float | None = None
        holding = False  # a retry granted by the budget, held until its attempt ends
        try:
            while True:
                delay = retry_delay(
                    self.settings.retry, outcome, prepared, len(tried), clock() - start,
                    previous, self._rng, time.time,
                )
                if delay is None or clock() + delay >= deadline:
                    break
                # A call that never reached an instance (refused connection ...) adds no
                # work there when sent again: no budget for it (Finagle's "requeues").
                unsent = isinstance(outcome, UpstreamError) and not outcome.request_sent
                if not unsent and not budget.try_retry(len(self._endpoints.snapshot or ())):
                    if isinstance(outcome, BaseException):
                        outcome.add_note(f"qanat: retry refused, {self.target} retry budget spent")
                    break
                holding = not unsent
                await self._sleep(delay)
                previous = delay
                now = clock()
                if now >= deadline:
                    break  # the backoff overslept the deadline
                try:
                    if self._guard is None:
                        choice = self._choose(key, tried, now)
                    else:
                        choice = await self._admit(key, tried, prepared, deadline)
                except Unavailable as refused:  # nowhere left, shed, or no bulkhead slot
                    if isinstance(outcome, BaseException):
                        outcome.add_note(f"qanat: retry not sent: {refused}")
                    break  # the last attempt's outcome stands
                tried.append(choice[0].id)
                try:
                    outcome = await self._attempts.send(choice, prepared, deadline, len(tried))
                except UpstreamError as exc:
                    outcome = exc
                if holding:
                    budget.retry_finished()
                    holding = False
        finally:
            if holding:
                budget.retry_finished()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def get(self, path: str, **kw: Any) -> ClientResponse:
        """``request("GET", path, ...)``."""
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> ClientResponse:
        """``request("POST", path, ...)``; retried only with ``idempotency_key``."""
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> ClientResponse:
        """``request("PUT", path, ...)``."""
        return await self.request("PUT", path, **kw)

    async def patch(self, path: str, **kw: Any) -> ClientResponse:
        """``request("PATCH", path, ...)``; retried only with ``idempotency_key``."""
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> ClientResponse:
        """``request("DELETE", path, ...)``."""
        return await self.request("DELETE", path, **kw)

    def stats(self) -> dict[str, Any]:
        """Instances, breaker states, ejections, the retry budget, bulkhead and throttle."""
        now = self._clock()
        guard = self._guard
        return {
            "target": self.target,
            **self._endpoints.stats(now),
            "budget": self.budget.stats(),
            **({"bulkhead": None, "throttle": None} if guard is None else guard.stats(now)),
        }


__all__ = [
    "DEFAULT_TIMEOUT",
    "ClientResponse",
    "ClientSettings",
    "ServiceClient",
    "settings_from_policy",
]
