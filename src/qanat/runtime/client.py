"""The resilient service-to-service client: ``service.client("users")``.

One call goes through, in order: the deadline (the caller's remaining budget
and this call's timeout, whichever ends first; nothing is sent when none is
left), discovery (a cached snapshot fed by watches), outlier ejection and the
balancer's pick, the picked instance's circuit breaker, the pooled HTTP/1.1
transport with a per-try timeout, then — if the attempt failed in a way that
is safe and worth retrying — a backoff within the retry budget and another
instance. Every attempt carries ``traceparent`` (a client span of the current
trace), ``x-request-id`` and ``x-qanat-budget-ms``.

Retries are safe only when the request cannot take effect twice: idempotent
methods, writes carrying an ``Idempotency-Key``, and any request the upstream
never saw (a refused connection).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from qanat.core.balance import Balancer, make_balancer
from qanat.core.breaker import BreakerSettings, CircuitBreaker
from qanat.core.outlier import CallError, OutlierDetector, OutlierSettings
from qanat.core.retry import RetryBudget, RetryPolicy
from qanat.errors import CircuitOpenError, DeadlineExceeded, NoEndpoints, Timeout
from qanat.http import IDEMPOTENT_METHODS, HttpPool, UpstreamError, UpstreamTimeout, retry_safe
from qanat.observability import context
from qanat.policy import Policy
from qanat.ports import Instance
from qanat.runtime.discovery import DiscoveryCache

_PROPAGATOR = TraceContextTextMapPropagator()
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ClientResponse:
    """A complete response: status, headers, body, and where it came from."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    content: bytes
    instance: str
    attempts: int

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for k, v in self.headers:
            if k.lower() == key:
                return v.decode("latin-1")
        return None

    @property
    def ok(self) -> bool:
        return self.status < 400


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How calls to one target behave; built from the target's policy in ``qanat.yaml``."""

    timeout: float = DEFAULT_TIMEOUT  # whole call, retries included
    per_try_timeout: float | None = None  # one attempt, until the response head
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=3))
    breaker: BreakerSettings = field(default_factory=lambda: BreakerSettings(timeout=10.0))
    outlier: OutlierSettings = field(default_factory=OutlierSettings)
    load_balancer: str = "p2c_ewma"
    max_body: int = 16 * 1024 * 1024  # a response larger than this is an error


def settings_from_policy(policy: Policy) -> ClientSettings:
    """Client settings for a target from its named policies (``qanat.yaml`` ``policies:``)."""
    base = ClientSettings()
    return ClientSettings(
        timeout=policy.timeout or base.timeout,
        per_try_timeout=policy.per_try_timeout,
        retry=policy.retry or base.retry,
        breaker=policy.breaker_settings or base.breaker,
        load_balancer=policy.load_balancer or base.load_balancer,
    )


class ServiceClient:
    """Calls one target service; see the module docstring for what happens per call."""

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
    ) -> None:
        self.target = target
        self.discovery = discovery
        self.pool = pool
        self.settings = s = settings or ClientSettings()
        self.budget = budget or RetryBudget()
        self._clock, self._sleep, self._rng = clock, sleep, rng
        self._balancer: Balancer[Instance] = make_balancer(s.load_balancer)
        self._outlier = OutlierDetector(s.outlier)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._snapshot: tuple[Instance, ...] | None = None
        self._epoch = -1
        self._tracer = trace.get_tracer("qanat.client")

    def bind(self, discovery: DiscoveryCache, pool: HttpPool) -> None:
        """Attach discovery and transport (``qanat.Service`` does this when it starts)."""
        self.discovery, self.pool = discovery, pool

    # -- endpoints ---------------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        """Feed the balancer when discovery or the ejected set changed (identity checks only)."""
        if self.discovery is None:
            raise NoEndpoints(f"{self.target}: the client is not started (no discovery yet)")
        snapshot = self.discovery.instances(self.target)
        epoch = self._outlier.epoch(now)
        if snapshot is self._snapshot and epoch == self._epoch:
            return
        if snapshot is not self._snapshot:
            self._outlier.update(i.id for i in snapshot)
            for gone in set(self._breakers) - {i.id for i in snapshot}:
                del self._breakers[gone]
        self._snapshot, self._epoch = snapshot, epoch
        self._balancer.update(self._outlier.apply(list(snapshot), now))

    def has_endpoints(self) -> bool:
        """True when discovery knows at least one routable instance of the target."""
        return self.discovery is not None and bool(self.discovery.instances(self.target))

    def _breaker(self, instance_id: str) -> CircuitBreaker:
        breaker = self._breakers.get(instance_id)
        if breaker is None:
            settings = self.settings.breaker
            breaker = CircuitBreaker(
                settings, clock=self._clock, name=f"{self.target}/{instance_id}"
            )
            self._breakers[instance_id] = breaker
        return breaker

    def _choose(self, key: str | None, tried: set[str], now: float) -> tuple[Instance, int]:
        """An instance whose breaker admits the call, preferring ones not tried yet."""
        self._refresh(now)
        refused = 0
        snapshot = self._snapshot or ()
        for _ in range(max(1, len(snapshot)) * 2):
            instance = self._balancer.pick(key)
            if instance is None:
                break
            if instance.id in tried and len(tried) < len(snapshot):
                self._balancer.done(instance, True, 0.0, now)
                continue
            ticket = self._breaker(instance.id).allow(now)
            if ticket is not None:
                return instance, ticket
            refused += 1
            self._balancer.done(instance, False, 0.0, now)
        if refused:
            raise CircuitOpenError(
                f"{self.target}: every instance's circuit breaker is open",
                retry_after=self.settings.breaker.timeout,
            )
        state = self.discovery.status(self.target).state if self.discovery else "not started"
        raise NoEndpoints(f"no available instance of {self.target!r} ({state})")

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

        Returns the final response, whatever its status. Raises ``NoEndpoints``
        or ``CircuitOpenError`` (both ``Unavailable``), ``DeadlineExceeded`` or
        ``Timeout``, or the transport's ``UpstreamError`` after the last attempt.
        ``key`` is the hash key for a consistent-hash balancer.
        """
        start = self._clock()
        budget = min(timeout or self.settings.timeout, context.remaining(start) or float("inf"))
        deadline = start + budget
        if budget <= 0:
            raise DeadlineExceeded(f"{self.target}: no time budget left for {method} {path}")
        verb = method.upper().encode()
        target = (path + ("?" + urlencode(params) if params else "")).encode()
        body, base = _encode(json, content, headers, idempotency_key)
        retryable_method = verb in IDEMPOTENT_METHODS or idempotency_key is not None
        span = self._tracer.start_span(f"{method.upper()} {self.target}", kind=SpanKind.CLIENT)
        try:
            with trace.use_span(span, end_on_exit=False):
                response = await self._attempts(
                    verb, target, body, base, retryable_method, key, start, deadline
                )
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.end()

    async def _attempts(
        self,
        verb: bytes,
        target: bytes,
        body: bytes | None,
        base: list[tuple[bytes, bytes]],
        retryable_method: bool,
        key: str | None,
        start: float,
        deadline: float,
    ) -> ClientResponse:
        tried: set[str] = set()
        attempt, previous = 0, None
        self.budget.request_started()
        try:
            while True:
                attempt += 1
                now = self._clock()
                instance, ticket = self._choose(key, tried, now)
                tried.add(instance.id)
                outcome: ClientResponse | BaseException
                try:
                    outcome = await self._send(
                        instance, ticket, verb, target, body, base, deadline, attempt
                    )
                except (UpstreamError, Timeout) as exc:
                    outcome = exc
                delay = self._retry_delay(outcome, verb, retryable_method, attempt, start, previous)
                if delay is None or self._clock() + delay >= deadline:
                    if isinstance(outcome, BaseException):
                        raise outcome
                    return outcome
                if not self.budget.try_retry():
                    if isinstance(outcome, BaseException):
                        outcome.add_note("qanat: retry refused, retry budget exhausted")
                        raise outcome
                    return outcome
                try:
                    await self._sleep(delay)
                finally:
                    self.budget.retry_finished()
                previous = delay
        finally:
            self.budget.request_finished()

    def _retry_delay(
        self,
        outcome: ClientResponse | BaseException,
        verb: bytes,
        safe: bool,
        attempt: int,
        start: float,
        previous: float | None,
    ) -> float | None:
        retry = self.settings.retry
        if isinstance(outcome, ClientResponse):
            if not (safe and retry.retryable_status(outcome.status)):
                return None
            retry_after = _retry_after(outcome.header("retry-after"))
        else:
            never_sent = isinstance(outcome, UpstreamError) and retry_safe(outcome, verb)
            if not ((safe or never_sent) and retry.retryable_error(outcome)):
                return None
            retry_after = None
        elapsed = self._clock() - start
        return retry.next_delay(attempt, elapsed, retry_after, self._rng, previous=previous)

    async def _send(
        self,
        instance: Instance,
        ticket: int,
        verb: bytes,
        target: bytes,
        body: bytes | None,
        base: list[tuple[bytes, bytes]],
        deadline: float,
        attempt: int,
    ) -> ClientResponse:
        now = self._clock()
        left = deadline - now
        per_try = self.settings.per_try_timeout
        try_timeout = min(left, per_try) if per_try else left
        headers = [
            *base,
            (b"host", f"{instance.address}:{instance.port}".encode()),
            (b"x-qanat-budget-ms", str(int(left * 1000)).encode()),
        ]
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        headers.extend((k.encode(), v.encode()) for k, v in carrier.items())
        breaker, ok, latency = self._breaker(instance.id), False, 0.0
        assert self.pool is not None  # bound before any instance can be chosen
        try:
            response = await self.pool.request(
                verb, instance.address, instance.port, target, headers, body, timeout=try_timeout
            )
            content = await asyncio.wait_for(
                response.read(self.settings.max_body), max(0.001, deadline - self._clock())
            )
            latency = self._clock() - now
            ok = response.status < 500
            self._outlier.record(instance.id, response.status, self._clock())
            return ClientResponse(
                response.status, tuple(response.headers), content, instance.id, attempt
            )
        except TimeoutError:
            self._outlier.record(instance.id, CallError.TIMEOUT, self._clock())
            raise UpstreamTimeout(
                f"{self.target}/{instance.id}: response body too slow", request_sent=True
            ) from None
        except UpstreamError as exc:
            latency = self._clock() - now
            kind = (
                CallError.TIMEOUT
                if isinstance(exc, Timeout)
                else CallError.CONNECT_FAILURE
                if not exc.request_sent
                else CallError.RESET
            )
            self._outlier.record(instance.id, kind, self._clock())
            raise
        finally:
            end = self._clock()
            breaker.after(ticket, ok, end)
            self._balancer.done(instance, ok, latency or (end - now), end)

    async def get(self, path: str, **kw: Any) -> ClientResponse:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> ClientResponse:
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> ClientResponse:
        return await self.request("PUT", path, **kw)

    async def patch(self, path: str, **kw: Any) -> ClientResponse:
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> ClientResponse:
        return await self.request("DELETE", path, **kw)

    def stats(self) -> dict[str, Any]:
        """Breaker states and ejections, for metrics and the dashboard."""
        now = self._clock()
        return {
            "target": self.target,
            "instances": len(self._snapshot or ()),
            "breakers": {i: str(b.state) for i, b in self._breakers.items()},
            "ejected": sorted(self._outlier.ejected(now)),
            "budget": self.budget.stats(),
        }


def _encode(
    json: Any, content: bytes | None, headers: Mapping[str, str] | None, idempotency_key: str | None
) -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
    base: list[tuple[bytes, bytes]] = []
    body = content
    if json is not None:
        body = jsonlib.dumps(json, separators=(",", ":")).encode()
        base.append((b"content-type", b"application/json"))
    if headers:
        base.extend((k.lower().encode(), v.encode()) for k, v in headers.items())
    rid = context.request_id.get() or uuid.uuid4().hex
    base.append((b"x-request-id", rid.encode()))
    if idempotency_key is not None:
        base.append((b"idempotency-key", idempotency_key.encode()))
    if body is not None:
        base.append((b"content-length", str(len(body)).encode()))
    return body, base


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
