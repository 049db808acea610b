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
4. the instance's own circuit breaker admits the attempt or the client picks
   another; every breaker open raises ``CircuitOpenError``;
5. the pooled HTTP/1.1 transport sends it with ``host``, ``x-request-id``,
   ``x-qanat-budget-ms`` (the time left, rounded down) and ``traceparent``
   (a CLIENT span per attempt, child of the current span), bounded by the
   per-try timeout until the head and by the deadline for the body;
6. the outcome settles the breaker, the outlier detector and the balancer
   exactly once; then, if the attempt failed in a way that is safe and worth
   retrying (``client_request.retry_delay``), the client waits a jittered
   backoff (or ``Retry-After``) within the retry budget and the deadline, and
   goes back to 3.

Retries are safe only when the request cannot take effect twice: idempotent
methods, writes carrying an idempotency key, and requests the upstream never
saw (a refused connection).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from qanat.core.balance import BALANCERS, Balancer, make_balancer
from qanat.core.breaker import CircuitBreaker
from qanat.core.outlier import OutlierDetector
from qanat.core.retry import RetryBudget
from qanat.errors import CircuitOpenError, ConfigError, DeadlineExceeded, NoEndpoints, Unavailable
from qanat.http import HttpPool, UpstreamError, UpstreamTimeout
from qanat.observability import context
from qanat.ports import Instance
from qanat.runtime.client_request import Prepared, failure_verdict, prepare, retry_delay
from qanat.runtime.client_response import ClientResponse
from qanat.runtime.client_settings import DEFAULT_TIMEOUT, ClientSettings, settings_from_policy
from qanat.runtime.discovery import DiscoveryCache

_BUDGET = context.BUDGET_HEADER.encode()
_Choice = tuple[Instance, CircuitBreaker, int, bool]  # instance, its breaker, ticket, picked


class ServiceClient:
    """Calls one target service; see the module docstring for what happens per call.

    ``clock`` (seconds; default ``time.monotonic``) times deadlines, breakers,
    outlier ejections and the balancer; ``sleep`` waits between attempts;
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
        self.pool = pool
        self.settings = s = settings or ClientSettings()
        self.budget = budget or s.budget or RetryBudget()
        self._clock, self._sleep, self._rng = clock, sleep, rng
        self._balancer: Balancer[Instance] = _balancer(s.load_balancer, clock)
        self._outlier = OutlierDetector(s.outlier)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._snapshot: tuple[Instance, ...] | None = None
        self._routable: Sequence[Instance] = ()
        self._epoch = -1
        self._tracer = tracer or trace.get_tracer("qanat.client")
        self._hosts: dict[str, tuple[bytes, bytes]] = {}  # instance id -> its host header
        self._span_names: dict[bytes, str] = {}
        # Hot-path copies of settings; a response below _final_below is never retried.
        self._timeout, self._per_try, self._max_body = s.timeout, s.per_try_timeout, s.max_body
        self._final_below = min((409, *s.retry.retriable_status_codes))

    def bind(self, discovery: DiscoveryCache, pool: HttpPool) -> None:
        """Attach discovery and transport (``qanat.Service`` does this when it starts)."""
        self.discovery, self.pool = discovery, pool

    @property
    def balancer(self) -> Balancer[Instance]:
        """The balancer fed with this target's routable instances (read it, do not pick)."""
        return self._balancer

    def has_endpoints(self) -> bool:
        """True when discovery knows at least one routable instance of the target."""
        return self.discovery is not None and bool(self.discovery.instances(self.target))

    # -- choosing an instance: synchronous, no await between pick and send ----------

    def _choose(self, key: str | None, tried: Sequence[str], now: float) -> _Choice:
        """An instance whose breaker admits the call (a ticket), preferring untried ones."""
        discovery = self.discovery
        if discovery is None or self.pool is None:
            raise NoEndpoints(
                f"{self.target}: the client is not started; call it once the service's app "
                "has started (qanat.Service binds it), or call client.bind(discovery, pool)"
            )
        snapshot = discovery.instances(self.target)
        outlier = self._outlier
        outlier.tick(now)
        if snapshot is not self._snapshot or outlier.epoch(now) != self._epoch:
            self._refresh(snapshot, now)
        instance = self._balancer.pick(key)
        if instance is not None and not tried:  # the common case: first pick, breaker closed
            breaker = self._breakers.get(instance.id) or self._new_breaker(instance.id)
            ticket = breaker.allow(now)
            if ticket is not None:
                return instance, breaker, ticket, True
        return self._choose_again(instance, key, tried, now)

    def _choose_again(
        self, instance: Instance | None, key: str | None, tried: Sequence[str], now: float
    ) -> _Choice:
        """Re-pick past tried instances and refusing breakers; then walk the list.

        Each unused pick is closed at once (``_release``). A balancer that keeps
        offering the same instance (a hash ring does, for one key) is bounded
        by the number of candidates; then the candidates are tried in order,
        untried first, without the balancer.
        """
        candidates = self._routable
        untried = [i for i in candidates if i.id not in tried]
        refused: set[str] = set()
        picks = 0
        while instance is not None:
            if not (untried and instance.id in tried) and instance.id not in refused:
                breaker = self._breakers.get(instance.id) or self._new_breaker(instance.id)
                ticket = breaker.allow(now)
                if ticket is not None:
                    return instance, breaker, ticket, True
                refused.add(instance.id)
            self._release(instance)
            picks += 1
            instance = self._balancer.pick(key) if picks <= len(candidates) else None
        for candidate in (*untried, *(i for i in candidates if i.id in tried)):
            if candidate.id in refused:
                continue
            breaker = self._breakers.get(candidate.id) or self._new_breaker(candidate.id)
            ticket = breaker.allow(now)
            if ticket is not None:
                return candidate, breaker, ticket, False
            refused.add(candidate.id)
        if refused:
            raise CircuitOpenError(
                f"{self.target}: the circuit breaker of every instance is open "
                f"({len(refused)} instance(s))",
                retry_after=self.settings.breaker.timeout,
            )
        assert self.discovery is not None
        state = self.discovery.status(self.target).state
        raise NoEndpoints(f"no available instance of {self.target!r} (discovery: {state})")

    def _refresh(self, snapshot: tuple[Instance, ...], now: float) -> None:
        """Feed the balancer after discovery or the ejected set changed."""
        if snapshot is not self._snapshot:
            ids = {i.id for i in snapshot}
            self._outlier.update(ids)
            for gone in [i for i in self._breakers if i not in ids]:
                del self._breakers[gone]
            self._hosts = {i.id: _host_header(i) for i in snapshot}
            self._snapshot = snapshot
        kept = self._outlier.apply(snapshot, now)
        if 2 * len(kept) < len(snapshot):
            kept = list(snapshot)  # Envoy's panic threshold: better all than too few
        self._routable = kept
        self._epoch = self._outlier.epoch(now)
        self._balancer.update(kept)

    def _new_breaker(self, instance_id: str) -> CircuitBreaker:
        breaker = CircuitBreaker(
            self.settings.breaker, clock=self._clock, name=f"{self.target}/{instance_id}"
        )
        self._breakers[instance_id] = breaker
        return breaker

    def _span_name(self, verb: bytes) -> str:
        name = self._span_names.get(verb)
        if name is None:
            name = self._span_names[verb] = f"{verb.decode()} {self.target}"
        return name

    def _release(self, instance: Instance) -> None:
        """Close a pick that was not used: its slot back, nothing learned.

        An observation dated -inf weighs nothing in a time-decayed estimate
        (peak EWMA), and the other balancers ignore latency, so this is
        ``done`` without feedback.
        """
        self._balancer.done(instance, True, 0.0, -math.inf)

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
        or ``CircuitOpenError`` (both ``Unavailable``: nothing was sent),
        ``DeadlineExceeded`` (no time left: nothing was sent), the transport's
        ``UpstreamError`` after the last attempt (``UpstreamTimeout`` is a
        ``Timeout``), or ``ConfigError`` for a malformed call. ``timeout``
        (seconds) overrides the settings' for this call; ``key`` is the hash
        key for a consistent-hash balancer.
        """
        start = self._clock()
        budget = self._timeout if timeout is None else _check_timeout(timeout)
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
            instance, breaker, ticket, picked = self._choose(key, (), start)
            outcome: ClientResponse | UpstreamError
            try:
                response = await self._send(
                    instance, breaker, ticket, picked, prepared, deadline, 1
                )
                if response.status < self._final_below:  # 2xx, 3xx: never retried
                    return response
                outcome = response
            except UpstreamError as exc:
                outcome = exc
            return await self._retries(outcome, [instance.id], prepared, key, start, deadline)
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
                if not budget.try_retry():
                    if isinstance(outcome, BaseException):
                        outcome.add_note(f"qanat: retry refused, {self.target} retry budget spent")
                    break
                holding = True
                await self._sleep(delay)
                previous = delay
                now = clock()
                if now >= deadline:
                    break  # the backoff overslept the deadline
                try:
                    instance, breaker, ticket, picked = self._choose(key, tried, now)
                except Unavailable:
                    break  # nowhere left to retry: the last attempt's outcome stands
                tried.append(instance.id)
                try:
                    outcome = await self._send(
                        instance, breaker, ticket, picked, prepared, deadline, len(tried)
                    )
                except UpstreamError as exc:
                    outcome = exc
                budget.retry_finished()
                holding = False
        finally:
            if holding:
                budget.retry_finished()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _send(
        self,
        instance: Instance,
        breaker: CircuitBreaker,
        ticket: int,
        picked: bool,
        prepared: Prepared,
        deadline: float,
        attempt: int,
    ) -> ClientResponse:
        """One attempt; settles breaker, outlier detector, balancer and span exactly once."""
        clock = self._clock
        began = clock()
        span = self._tracer.start_span(self._span_name(prepared.verb), kind=SpanKind.CLIENT)
        verdict: bool | None = None  # breaker: success, failure, or excluded
        observed: Any = None  # outlier: a status or a CallError, None records nothing
        neutral = False  # balancer: close the pick without feedback
        status: int | None = None
        try:
            left = deadline - began
            per_try = self._per_try
            headers = [
                self._hosts.get(instance.id) or _host_header(instance),
                *prepared.headers,
                (_BUDGET, b"%d" % max(0, int(left * 1000))),  # rounded down: never more than left
            ]
            trace_context = span.get_span_context()
            if trace_context.is_valid:
                headers.append((b"traceparent", b"00-%032x-%016x-%02x" % (
                    trace_context.trace_id, trace_context.span_id, trace_context.trace_flags)))
                if trace_context.trace_state:
                    headers.append((b"tracestate", trace_context.trace_state.to_header().encode()))
            assert self.pool is not None  # checked by _choose
            response = await self.pool.request(
                prepared.verb, instance.address, instance.port, prepared.target, headers,
                prepared.body, timeout=left if per_try is None or per_try > left else per_try,
            )
            status = response.status
            if response.complete:  # the whole body came with the head: no timer needed
                content = await response.read(self._max_body)
            else:
                try:
                    async with asyncio.timeout(max(0.0, deadline - clock())):
                        content = await response.read(self._max_body)
                except TimeoutError:
                    raise UpstreamTimeout(
                        f"{self.target}/{instance.id}: the response body did not arrive "
                        "before the deadline", request_sent=True, response_started=True,
                    ) from None
            verdict, observed = status < 500, status
            return ClientResponse(status, tuple(response.headers), content, instance.id, attempt)
        except UpstreamError as exc:
            verdict, observed = failure_verdict(exc, status)
            neutral = verdict is None
            raise
        finally:
            end = clock()
            if verdict is None:
                breaker.after_excluded(ticket, end)
            else:
                breaker.after(ticket, verdict, end)
            if observed is not None:
                self._outlier.record(instance.id, observed, end)
            if neutral and picked:
                self._release(instance)
            elif picked:
                self._balancer.done(instance, bool(verdict), end - began, end)
            else:
                self._balancer.report(instance.id, bool(verdict), end - began, end)
            _finish_span(span, instance, status, verdict, attempt)

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
        """Instances, breaker states, ejections and the retry budget, for metrics."""
        now = self._clock()
        return {
            "target": self.target,
            "instances": len(self._snapshot or ()),
            "routable": len(self._routable),
            "breakers": {i: b.stats(now).state.value for i, b in self._breakers.items()},
            "ejected": sorted(self._outlier.ejected(now)),
            "budget": self.budget.stats(),
        }


def _balancer(name: str, clock: Callable[[], float]) -> Balancer[Instance]:
    """The named balancer, on the client's clock when it takes one."""
    cls = BALANCERS.get(name)
    takes_clock = cls is not None and "clock" in inspect.signature(cls).parameters
    return make_balancer(name, clock=clock) if takes_clock else make_balancer(name)


def _host_header(instance: Instance) -> tuple[bytes, bytes]:
    host = f"[{instance.address}]" if ":" in instance.address else instance.address
    return (b"host", f"{host}:{instance.port}".encode())


def _check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError(
            f"timeout must be seconds > 0, got {timeout!r}", source="ServiceClient.request"
        )
    return float(timeout)


def _finish_span(
    span: trace.Span, instance: Instance, status: int | None, ok: bool | None, attempt: int
) -> None:
    if span.is_recording():
        span.set_attribute("server.address", instance.address)
        span.set_attribute("server.port", instance.port)
        span.set_attribute("qanat.instance", instance.id)
        if attempt > 1:
            span.set_attribute("http.request.resend_count", attempt - 1)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if status is None or status >= 500 or ok is False:
            span.set_status(Status(StatusCode.ERROR))
    span.end()


__all__ = [
    "DEFAULT_TIMEOUT",
    "ClientResponse",
    "ClientSettings",
    "ServiceClient",
    "settings_from_policy",
]
