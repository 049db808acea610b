"""The per-request ASGI middleware every qanat service gets.

In one pass:

- request id: an incoming ``x-request-id`` is kept when it is safe (letters,
  digits, ``._-``, at most 128), otherwise a new one is generated; either way
  it is echoed in the response and visible to logs and outgoing calls
  (APISIX request-id behaviour);
- deadline: ``x-qanat-budget-ms`` is the caller's remaining budget; with none
  left (0 or less) the request is refused with a 504 problem+json before the
  app sees it, otherwise ``context.remaining()`` counts down inside the
  handler and outgoing calls carry what is left;
- tracing: a SERVER span that continues the caller's W3C ``traceparent``
  (an invalid one starts a new trace). When an outer layer already opened the
  server span for this request (FastAPI's built-in telemetry), that span is
  enriched instead of a second one being made;
- metrics per route *template* with the final status, and the in-flight count
  that draining waits on.

The platform's own routes (``/health``, ``/ready``, ``/metrics``) pass through
untouched, so probes do not count as traffic.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from qanat.observability import context
from qanat.observability.routes import RouteTemplates

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from qanat.runtime.service import Service

_PROPAGATOR = TraceContextTextMapPropagator()
PLATFORM_PATHS = frozenset({"/health", "/ready", "/metrics"})
DEADLINE_ROUTE = "<deadline>"
"""The route label of requests refused for a spent budget (they are never routed)."""
CLIENT_CLOSED = 499  # nginx's status for "the client went away before the response"


class QanatMiddleware:
    """Pure ASGI middleware: request id, deadline, server span, metrics, in-flight."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        self.templates = RouteTemplates(service.app.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route_path(scope) in PLATFORM_PATHS:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        incoming = headers.get(context.REQUEST_ID_HEADER)
        rid = incoming if context.valid_request_id(incoming) and incoming else _new_id()
        budget = context.parse_budget(headers.get(context.BUDGET_HEADER))
        start = time.monotonic()
        span, own_span = self._server_span(scope, headers)
        tokens = (
            context.request_id.set(rid),
            context.deadline.set(start + budget if budget is not None else None),
            otel_context.attach(trace.set_span_in_context(span)),
        )
        refused = budget is not None and budget <= 0
        status, route = 0, DEADLINE_ROUTE
        rid_header = (b"x-request-id", rid.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
                if not own_span:  # enrich now: an adopted span ends as soon as the body is sent
                    label = DEADLINE_ROUTE if refused else self.templates.label(scope.get("route"))
                    _describe(span, scope["method"], label, status)
            await send(message)

        service = self.service
        service.request_started()
        try:
            if refused:
                await _deadline_exceeded(send_wrapper, rid)
            else:
                await self.app(scope, receive, send_wrapper)
                route = self.templates.label(scope.get("route"))
        except asyncio.CancelledError:
            route = self.templates.label(scope.get("route"))
            status = status or CLIENT_CLOSED
            raise
        except BaseException as exc:
            route = self.templates.label(scope.get("route"))
            status = 500 if status == 0 or status < 500 else status
            if own_span:
                span.record_exception(exc)
            raise
        finally:
            service.request_finished()
            status = status or 500  # the app returned without starting a response
            service.metrics.observe(route, scope["method"], status, time.monotonic() - start)
            if own_span:
                _describe(span, scope["method"], route, status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                span.end()
            otel_context.detach(tokens[2])
            context.deadline.reset(tokens[1])
            context.request_id.reset(tokens[0])

    def _server_span(self, scope: Scope, headers: dict[str, str]) -> tuple[Span, bool]:
        """The server span of this request, and whether this middleware owns (ends) it."""
        outer = trace.get_current_span()
        if outer.is_recording() and getattr(outer, "kind", None) is SpanKind.SERVER:
            return outer, False
        parent = _PROPAGATOR.extract(headers)
        span = self.service.tracer.start_span(scope["method"], context=parent, kind=SpanKind.SERVER)
        return span, True


def _new_id() -> str:
    # 128 random bits, as uuid4 has, without a urandom syscall per request: an id must be
    # unique, not secret (OpenTelemetry's id generator makes the same choice).
    return format(random.getrandbits(128), "032x")


def _describe(span: Span, method: str, route: str, status: int) -> None:
    span.update_name(f"{method} {route}")
    span.set_attributes(
        {"http.request.method": method, "http.route": route, "http.response.status_code": status}
    )


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        out[k.decode("latin-1").lower()] = v.decode("latin-1")
    return out


async def _deadline_exceeded(send: Send, rid: str) -> None:
    """A 504 problem+json (RFC 9457) for a request whose budget was spent upstream."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": "Deadline exceeded",
        "status": 504,
        "detail": "the caller's time budget (x-qanat-budget-ms) was spent before this "
        "service started; nothing was done",
        "request_id": rid,
    }
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 504,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
