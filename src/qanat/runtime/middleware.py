"""The per-request ASGI middleware every qanat service gets.

In one pass: request id (kept if valid, else generated, echoed back), the
deadline budget (a request that arrives with no budget left is refused with
504 before any work), a server span continuing the caller's W3C trace,
Prometheus metrics per route template, and an in-flight count used to drain.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from qanat.observability import context

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from qanat.runtime.service import Service

_PROPAGATOR = TraceContextTextMapPropagator()
_PLATFORM_PATHS = frozenset({"/health", "/ready", "/metrics"})


class QanatMiddleware:
    """Pure ASGI middleware (no per-request objects beyond what it must create)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _PLATFORM_PATHS:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        incoming = headers.get(context.REQUEST_ID_HEADER)
        rid = incoming if incoming and context.valid_request_id(incoming) else uuid.uuid4().hex
        budget = context.parse_budget(headers.get(context.BUDGET_HEADER))
        start = time.monotonic()
        if budget is not None and budget <= 0:
            await _problem(
                send,
                504,
                "Deadline exceeded",
                "the caller's time budget was spent before this service started",
                rid,
            )
            self.service.metrics.requests.labels(
                self.service.name, "<deadline>", scope["method"], "504"
            ).inc()
            return
        rid_token = context.request_id.set(rid)
        dl_token = context.deadline.set(start + budget if budget is not None else None)
        parent = _PROPAGATOR.extract(headers)
        tracer = trace.get_tracer("qanat.service")
        span = tracer.start_span(
            f"{scope['method']} {scope['path']}", context=parent, kind=SpanKind.SERVER
        )
        otel_token = otel_context.attach(trace.set_span_in_context(span, parent))
        status = 500
        rid_bytes = rid.encode()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid_bytes)]
            await send(message)

        metrics = self.service.metrics
        metrics.in_flight.labels(self.service.name).inc()
        self.service.in_flight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            status = 500
            raise
        finally:
            self.service.in_flight -= 1
            metrics.in_flight.labels(self.service.name).dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope["method"]
            elapsed = time.monotonic() - start
            metrics.requests.labels(self.service.name, template, method, str(status)).inc()
            metrics.latency.labels(self.service.name, template, method).observe(elapsed)
            if status >= 500:
                metrics.errors.labels(self.service.name, template, method).inc()
                span.set_status(Status(StatusCode.ERROR))
            span.update_name(f"{method} {template}")
            span.set_attribute("http.request.method", method)
            span.set_attribute("http.route", template)
            span.set_attribute("http.response.status_code", status)
            span.end()
            otel_context.detach(otel_token)
            context.deadline.reset(dl_token)
            context.request_id.reset(rid_token)


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        out[k.decode("latin-1")] = v.decode("latin-1")
    return out


async def _problem(send: Send, status: int, title: str, detail: str, rid: str) -> None:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": rid,
    }
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(data)).encode()),
                (b"x-request-id", rid.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
