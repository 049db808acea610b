"""One attempt of a service-client call: send it to the chosen instance, settle it once.

``Attempts.send(choice, prepared, deadline, attempt)`` writes the per-attempt
headers (``host``, ``x-qanat-budget-ms`` rounded down, ``traceparent`` and
``tracestate`` of a CLIENT span that is a child of the current span), sends
through the pooled HTTP/1.1 transport with the per-try timeout until the head
and the deadline for the body, and then, whatever happened (cancellation
included), settles the instance's breaker, the outlier detector, the
balancer and the span exactly once (``TargetEndpoints.settle``), and the
target's guard, adaptive throttle and bulkhead, when it has one
(``TargetGuard.settle``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from qanat.http import HttpPool, UpstreamError, UpstreamTimeout
from qanat.observability import context
from qanat.ports import Instance
from qanat.runtime.client_endpoints import Choice, TargetEndpoints, host_header
from qanat.runtime.client_guard import TargetGuard
from qanat.runtime.client_request import Prepared, failure_verdict
from qanat.runtime.client_response import ClientResponse

_BUDGET = context.BUDGET_HEADER.encode()


class Attempts:
    """Sends attempts to the instances of one target (the wire half of ``ServiceClient``).

    ``pool`` is set when the client is bound; ``per_try`` bounds one attempt
    until the response head, ``max_body`` the response body's size; every
    attempt sent was admitted by ``guard`` when there is one.
    """

    __slots__ = ("_clock", "_endpoints", "_guard", "_max_body", "_per_try", "_span_names",
                 "_tracer", "pool", "target")

    def __init__(
        self,
        target: str,
        endpoints: TargetEndpoints,
        tracer: trace.Tracer,
        clock: Callable[[], float],
        per_try: float | None,
        max_body: int,
        guard: TargetGuard | None = None,
    ) -> None:
        self.target = target
        self.pool: HttpPool | None = None
        self._endpoints = endpoints
        self._tracer = tracer
        self._clock = clock
        self._per_try = per_try
        self._max_body = max_body
        self._span_names: dict[bytes, str] = {}
        self._guard = guard

    def _span_name(self, verb: bytes) -> str:
        name = self._span_names.get(verb)
        if name is None:
            name = self._span_names[verb] = f"{verb.decode()} {self.target}"
        return name

    async def send(
        self, choice: Choice, prepared: Prepared, deadline: float, attempt: int
    ) -> ClientResponse:
        """One attempt; settles breaker, outlier detector, balancer and span exactly once."""
        instance = choice[0]
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
                self._endpoints.hosts.get(instance.id) or host_header(instance),
                *prepared.headers,
                (_BUDGET, b"%d" % max(0, int(left * 1000))),  # rounded down: never more than left
            ]
            trace_context = span.get_span_context()
            if trace_context.is_valid:
                headers.append((b"traceparent", b"00-%032x-%016x-%02x" % (
                    trace_context.trace_id, trace_context.span_id, trace_context.trace_flags)))
                if trace_context.trace_state:
                    headers.append((b"tracestate", trace_context.trace_state.to_header().encode()))
            assert self.pool is not None  # checked when the instance was chosen
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
            self._endpoints.settle(choice, verdict, observed, neutral, end - began, end)
            if self._guard is not None:  # the attempt was admitted by it: slot back, outcome
                self._guard.settle(verdict, status, end)
            _finish_span(span, instance, status, verdict, attempt)


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


__all__ = ["Attempts"]
