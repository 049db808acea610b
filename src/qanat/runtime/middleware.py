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
  (an invalid one starts a new trace), read by hand (``trace_context``) rather
  than through the generic propagator. FastAPI's built-in request tracing is
  turned off for the app (``observability.framework``); when some other outer
  layer already opened the server span for this request, that span is
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
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from qanat.observability import context
from qanat.observability.framework import defer_fastapi_tracing
from qanat.observability.routes import RouteTemplates
from qanat.observability.trace_context import parse_traceparent

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from qanat.runtime.service import Service

PLATFORM_PATHS = frozenset({"/health", "/ready", "/metrics"})
DEADLINE_ROUTE = "<deadline>"
"""The route label of requests refused for a spent budget (they are never routed)."""
CLIENT_CLOSED = 499  # nginx's status for "the client went away before the response"

# The request headers the middleware reads, found in one pass over the raw list.
_RID, _BUDGET, _PARENT, _STATE = range(4)
_WANTED = {
    context.REQUEST_ID_HEADER.encode(): _RID,
    context.BUDGET_HEADER.encode(): _BUDGET,
    b"traceparent": _PARENT,
    b"tracestate": _STATE,
}
_NO_PARENT = Context()  # an empty context: the server span becomes the root of a new trace
_ERROR = Status(StatusCode.ERROR)
_SERVER = SpanKind.SERVER


class QanatMiddleware:
    """Pure ASGI middleware: request id, deadline, server span, metrics, in-flight."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        self.templates = RouteTemplates(service.app.routes)
        # This middleware makes the request's server span; FastAPI's own would be four
        # more spans per request describing the same thing (see observability.framework).
        defer_fastapi_tracing(service.app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route_path(scope) in PLATFORM_PATHS:
            await self.app(scope, receive, send)
            return
        found = _read_headers(scope["headers"])
        incoming = found[_RID]
        rid = incoming.decode("latin-1") if incoming is not None else None
        if rid is None or not context.valid_request_id(rid):
            rid = _new_id()
        budget_field = found[_BUDGET]
        budget = (
            None if budget_field is None else context.parse_budget(budget_field.decode("latin-1"))
        )
        start = time.monotonic()
        method: str = scope["method"]
        span, own_span = self._server_span(method, found[_PARENT], found[_STATE])
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
                    _describe(span, method, label, status)
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
            service.metrics.observe(route, method, status, time.monotonic() - start)
            if own_span:
                if span.is_recording():  # an unsampled span ignores all of this anyway
                    _describe(span, method, route, status)
                    if status >= 500:
                        span.set_status(_ERROR)
                span.end()
            otel_context.detach(tokens[2])
            context.deadline.reset(tokens[1])
            context.request_id.reset(tokens[0])

    def _server_span(
        self, method: str, traceparent: bytes | None, tracestate: bytes | None
    ) -> tuple[Span, bool]:
        """The server span of this request, and whether this middleware owns (ends) it."""
        outer = trace.get_current_span()
        if outer.is_recording() and getattr(outer, "kind", None) is _SERVER:
            return outer, False
        parent = _NO_PARENT
        caller = parse_traceparent(traceparent)
        if caller is not None:
            # What TraceContextTextMapPropagator.extract builds, without its generic carrier
            # walk; tracestate is only read with a valid traceparent (W3C Trace Context §3.3).
            state = (
                None
                if tracestate is None
                else TraceState.from_header([tracestate.decode("latin-1")])
            )
            remote = SpanContext(
                caller.trace_id, caller.span_id, True, TraceFlags(caller.flags), state
            )
            parent = trace.set_span_in_context(NonRecordingSpan(remote), _NO_PARENT)
        span = self.service.tracer.start_span(method, context=parent, kind=_SERVER)
        return span, True


def _read_headers(raw: Any) -> list[bytes | None]:
    """The request id, budget, traceparent and tracestate values, in one pass over the headers.

    The first of each wins, except ``tracestate``, whose repeated fields are one list
    (RFC 9110 §5.3, W3C Trace Context §3.3.1). Names are lower case in ASGI; other
    spellings are folded only when met, so the usual request pays no ``lower()``.
    """
    found: list[bytes | None] = [None, None, None, None]
    for name, value in raw:
        which = _WANTED.get(name)
        if which is None:
            if name.islower():
                continue
            which = _WANTED.get(name.lower())
            if which is None:
                continue
        previous = found[which]
        if previous is None:
            found[which] = value
        elif which == _STATE:
            found[which] = previous + b"," + value
    return found


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
