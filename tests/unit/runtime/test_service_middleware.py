"""The per-request middleware of qanat.Service: request ids, deadlines, metrics, spans, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI, HTTPException
from hypothesis import HealthCheck, given, settings
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from tests.unit.observability.strategies import reference, traceparents

from qanat.observability import context
from qanat.observability.tracing import trace_sampler
from qanat.runtime.service import Service

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Service.start configures process-wide logging; put it back after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


class Harness:
    """A FastAPI app with a Service, an in-memory span exporter and what handlers saw."""

    def __init__(self, *, json_logs: bool = False, sample_ratio: float | None = None) -> None:
        self.app = FastAPI()
        self.spans = InMemorySpanExporter()
        provider = TracerProvider(sampler=trace_sampler(sample_ratio, {}))
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.service = Service(self.app, "users", tracer_provider=provider, json_logs=json_logs)
        self.calls: list[dict[str, Any]] = []
        app, calls, service = self.app, self.calls, self.service

        @app.get("/items/{item_id}")
        async def get_item(item_id: int) -> dict[str, Any]:
            calls.append(
                {
                    "request_id": context.request_id.get(),
                    "deadline": context.deadline.get(),
                    "remaining": context.remaining(),
                    "at": time.monotonic(),
                    "in_flight": service.in_flight,
                    "in_flight_gauge": service.metrics.registry.get_sample_value(
                        "qanat_http_requests_in_flight", {"service": "users"}
                    ),
                }
            )
            if item_id == 404:
                raise HTTPException(404, "no such item")
            if item_id == 500:
                raise RuntimeError("boom")
            logging.getLogger("shop.items").info("served item %d", item_id)
            return {"id": item_id}

    def sample(self, name: str, **labels: str) -> float:
        """The value of one sample in /metrics' registry, 0 when absent."""
        value = self.service.metrics.registry.get_sample_value(name, {"service": "users", **labels})
        return value or 0.0


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield client


# -- request id ---------------------------------------------------------------------------


async def test_a_valid_request_id_is_kept_and_echoed() -> None:
    """A safe incoming x-request-id reaches the handler unchanged and is echoed back."""
    h = Harness()
    async with serve(h.app) as client:
        r = await client.get("/items/1", headers={"x-request-id": "order-42.retry_1"})
    assert r.headers["x-request-id"] == "order-42.retry_1"
    assert h.calls[0]["request_id"] == "order-42.retry_1"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "ünïcode", ""])
async def test_an_invalid_request_id_is_replaced(bad: str) -> None:
    """An unsafe or oversized x-request-id is replaced by a generated one, which is echoed."""
    h = Harness()
    async with serve(h.app) as client:
        r = await client.get("/items/1", headers={"x-request-id": bad.encode()})
    echoed = r.headers["x-request-id"]
    assert echoed != bad
    assert len(echoed) == 32 and int(echoed, 16) >= 0
    assert h.calls[0]["request_id"] == echoed


async def test_a_missing_request_id_is_generated_uniquely() -> None:
    """Requests without an id each get a fresh one, echoed and seen by the handler."""
    h = Harness()
    async with serve(h.app) as client:
        ids = [(await client.get("/items/1")).headers["x-request-id"] for _ in range(3)]
    assert len(set(ids)) == 3
    assert [c["request_id"] for c in h.calls] == ids


# -- deadline budget ----------------------------------------------------------------------


@pytest.mark.parametrize("budget", ["0", "-250", "-inf"])
async def test_a_spent_budget_is_refused_with_504_before_the_handler(budget: str) -> None:
    """x-qanat-budget-ms of 0 or less: 504 problem+json, the handler is never called."""
    h = Harness()
    async with serve(h.app) as client:
        r = await client.get("/items/1", headers={"x-qanat-budget-ms": budget})
    assert r.status_code == 504
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["status"], body["title"]) == (504, "Deadline exceeded")
    assert body["request_id"] == r.headers["x-request-id"]
    assert h.calls == []
    assert h.sample("qanat_http_requests_total", route="<deadline>", method="GET", status="504")
    assert h.sample("qanat_http_errors_total", route="<deadline>", method="GET") == 1


async def test_a_positive_budget_sets_the_deadline_inside_the_handler() -> None:
    """With a budget, the handler's deadline is arrival + budget and remaining() counts down."""
    h = Harness()
    async with serve(h.app) as client:
        before = time.monotonic()
        await client.get("/items/1", headers={"x-qanat-budget-ms": "1500"})
        after = time.monotonic()
    [call] = h.calls
    arrival = call["deadline"] - 1.5
    assert before <= arrival <= call["at"] <= after
    assert call["remaining"] == pytest.approx(call["deadline"] - call["at"], abs=0.05)
    assert 0 < call["remaining"] <= 1.5


@pytest.mark.parametrize("header", [None, "soon", "nan", "1e400"])
async def test_no_or_malformed_budget_means_no_deadline(header: str | None) -> None:
    """Without a usable budget the handler runs with no deadline (remaining() is None)."""
    h = Harness()
    headers = {"x-qanat-budget-ms": header} if header is not None else {}
    async with serve(h.app) as client:
        r = await client.get("/items/1", headers=headers)
    assert r.status_code == 200
    assert (h.calls[0]["deadline"], h.calls[0]["remaining"]) == (None, None)


# -- metrics ------------------------------------------------------------------------------


async def test_requests_are_counted_per_route_template_and_status() -> None:
    """Three ids, one 404 from the handler and two unmatched paths make bounded series."""
    h = Harness()
    async with serve(h.app) as client:
        for path in ["/items/1", "/items/2", "/items/3", "/items/404", "/nope", "/nope/2"]:
            await client.get(path)
    assert (
        h.sample("qanat_http_requests_total", route="/items/{item_id}", method="GET", status="200")
        == 3
    )
    assert (
        h.sample("qanat_http_requests_total", route="/items/{item_id}", method="GET", status="404")
        == 1
    )
    assert (
        h.sample("qanat_http_requests_total", route="<unmatched>", method="GET", status="404") == 2
    )
    assert (
        h.sample(
            "qanat_http_request_duration_seconds_count", route="/items/{item_id}", method="GET"
        )
        == 4
    )
    exposition = h.service.metrics.exposition().decode()
    assert "/items/1" not in exposition and "/nope" not in exposition


async def test_an_exception_is_a_counted_error_and_in_flight_returns_to_zero() -> None:
    """A handler that raises is counted as a 500 error, and the in-flight gauge drops back."""
    h = Harness()
    async with serve(h.app) as client:
        r = await client.get("/items/500")
    assert r.status_code == 500
    assert h.calls[0]["in_flight"] == 1
    assert h.calls[0]["in_flight_gauge"] == 1  # a scrape during the request sees it
    assert h.service.in_flight == 0
    assert h.sample("qanat_http_requests_in_flight") == 0
    assert h.sample("qanat_http_errors_total", route="/items/{item_id}", method="GET") == 1
    assert (
        h.sample("qanat_http_requests_total", route="/items/{item_id}", method="GET", status="500")
        == 1
    )


async def test_a_cancelled_request_counts_as_client_closed_not_as_an_error() -> None:
    """A request cancelled before it answers (client gone) is status 499 and not an error."""
    app = Starlette()
    service = Service(app, "users", tracer_provider=TracerProvider(), json_logs=False)
    entered = asyncio.Event()

    async def hang(request: Request) -> JSONResponse:
        entered.set()
        await asyncio.Event().wait()  # until cancelled
        raise AssertionError("unreachable")

    app.router.routes.append(Route("/hang", hang))
    async with serve(app) as client:
        call = asyncio.create_task(client.get("/hang"))
        await entered.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    registry = service.metrics.registry
    labels = {"service": "users", "route": "/hang", "method": "GET"}
    assert registry.get_sample_value("qanat_http_requests_total", labels | {"status": "499"}) == 1
    assert registry.get_sample_value("qanat_http_errors_total", labels) is None
    assert service.in_flight == 0


async def test_routes_under_a_mount_are_labelled_with_the_full_template() -> None:
    """A route inside a Mount is labelled with mount prefix + template, convertors dropped."""

    async def order(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.path_params["order_id"]})

    app = Starlette(
        routes=[Mount("/api/{tenant}", routes=[Route("/orders/{order_id:int}", order)])]
    )
    service = Service(app, "users", tracer_provider=TracerProvider(), json_logs=False)
    async with serve(app) as client:
        for path in ["/api/acme/orders/1", "/api/globex/orders/2"]:
            assert (await client.get(path)).status_code == 200
    labels = {"service": "users", "route": "/api/{tenant}/orders/{order_id}", "method": "GET"}
    value = service.metrics.registry.get_sample_value(
        "qanat_http_requests_total", labels | {"status": "200"}
    )
    assert value == 2


async def test_the_exposition_follows_prometheus_conventions() -> None:
    """Every family has HELP and a type; counters end in _total; durations are in seconds."""
    h = Harness()
    async with serve(h.app) as client:
        await client.get("/items/1")
        scrape = await client.get("/metrics")
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = list(text_string_to_metric_families(scrape.text))
    names = {f.name: f for f in families}
    for family in families:
        assert family.documentation, f"{family.name} has no HELP"
        if family.type == "counter":
            assert f"# TYPE {family.name}_total counter" in scrape.text or family.name.endswith(
                "_created"
            )
    assert names["qanat_http_requests"].type == "counter"
    assert names["qanat_http_request_duration_seconds"].type == "histogram"
    assert names["qanat_http_requests_in_flight"].type == "gauge"
    assert names["qanat_client_breaker_state"].type == "gauge"
    assert "qanat_client_pool_connections" in names


async def test_probes_are_not_counted_as_traffic() -> None:
    """Requests to /health, /ready and /metrics do not appear in the request metrics."""
    h = Harness()
    async with serve(h.app) as client:
        for path in ["/health", "/ready", "/metrics"]:
            await client.get(path)
    text = h.service.metrics.exposition().decode()
    assert "qanat_http_requests_total{" not in text


# -- tracing ------------------------------------------------------------------------------


async def test_a_valid_traceparent_makes_the_server_span_its_child() -> None:
    """The server span continues the caller's trace: same trace id, the caller's span as parent."""
    h = Harness()
    async with serve(h.app) as client:
        await client.get("/items/7", headers={"traceparent": TRACEPARENT})
    [span] = h.spans.get_finished_spans()
    assert span.kind is SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.name == "GET /items/{item_id}"
    assert span.attributes is not None
    assert (span.attributes["http.route"], span.attributes["http.response.status_code"]) == (
        "/items/{item_id}",
        200,
    )


@pytest.mark.parametrize(
    "bad",
    [
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is forbidden
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",  # wrong length
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # upper-case hex
        "garbage",
    ],
)
async def test_an_invalid_traceparent_starts_a_new_trace(bad: str) -> None:
    """An invalid traceparent is ignored: the server span is a root of a new trace."""
    h = Harness()
    async with serve(h.app) as client:
        await client.get("/items/7", headers={"traceparent": bad})
    [span] = h.spans.get_finished_spans()
    assert span.parent is None
    assert format(span.context.trace_id, "032x") != TRACE_ID


async def test_a_server_error_marks_the_span_as_error() -> None:
    """A 500 leaves the server span with an ERROR status and the exception recorded."""
    h = Harness()
    async with serve(h.app) as client:
        await client.get("/items/500")
    [span] = h.spans.get_finished_spans()
    assert span.status.status_code.name == "ERROR"
    assert [e.name for e in span.events] == ["exception"]


async def test_an_outer_server_span_is_enriched_not_duplicated() -> None:
    """When an outer layer already opened the request's server span, no second one is made."""
    h = Harness()
    tracer = TracerProvider()
    outer_spans = InMemorySpanExporter()
    tracer.add_span_processor(SimpleSpanProcessor(outer_spans))
    inner_app = h.app

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner_app(scope, receive, send)
            return
        with tracer.get_tracer("outer").start_as_current_span("GET", kind=SpanKind.SERVER):
            await inner_app(scope, receive, send)

    async with h.app.router.lifespan_context(h.app):
        transport = httpx.ASGITransport(app=outer)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            await client.get("/items/3")
    assert h.spans.get_finished_spans() == ()
    [span] = outer_spans.get_finished_spans()
    assert span.name == "GET /items/{item_id}"
    assert span.attributes is not None and span.attributes["http.route"] == "/items/{item_id}"


def test_any_traceparent_is_continued_when_valid_and_replaced_when_not() -> None:
    """For random valid and invalid values: a valid sampled one is the span's remote parent, a
    valid unsampled one is respected (nothing recorded), anything invalid starts a new trace."""
    h = Harness()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(traceparents)
    def check(value: str) -> None:
        h.spans.clear()
        asyncio.run(_get(h.app, "/items/7", {"traceparent": value}))
        caller = reference(value)
        spans = h.spans.get_finished_spans()
        if caller is not None and not caller.sampled:
            assert spans == ()
            return
        [span] = spans
        if caller is None:
            assert span.parent is None
        else:
            assert span.context.trace_id == caller.trace_id
            assert span.parent is not None and span.parent.is_remote
            assert span.parent.span_id == caller.span_id

    check()


async def _get(app: Starlette, path: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return await client.get(path, headers=headers)


async def test_tracestate_is_carried_with_a_valid_traceparent_and_dropped_without() -> None:
    """The caller's tracestate (repeated fields joined) lives on in the span; with an invalid
    traceparent it is ignored, as W3C Trace Context §3.3 requires."""
    h = Harness()
    async with serve(h.app) as client:
        headers = [("traceparent", TRACEPARENT), ("tracestate", "a=1"), ("tracestate", "b=2")]
        await client.get("/items/7", headers=headers)
        headers[0] = ("traceparent", "garbage")
        await client.get("/items/7", headers=headers)
    continued, fresh = h.spans.get_finished_spans()
    assert continued.context.trace_state.to_header() == "a=1,b=2"
    assert fresh.parent is None and not fresh.context.trace_state


async def test_header_names_in_any_case_are_read() -> None:
    """A server that does not lower-case header names still gets ids, budget and trace read."""
    h = Harness()
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/items/7", "raw_path": b"/items/7", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
        "headers": [
            (b"Host", b"svc"), (b"X-Request-Id", b"Mixed-1"),
            (b"X-Qanat-Budget-Ms", b"2000"), (b"TraceParent", TRACEPARENT.encode()),
        ],
    }  # fmt: skip
    await h.app(scope, receive, send)
    assert dict(sent[0]["headers"])[b"x-request-id"] == b"Mixed-1"
    assert h.calls[0]["request_id"] == "Mixed-1" and h.calls[0]["deadline"] is not None
    [span] = h.spans.get_finished_spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID


async def test_at_ratio_zero_new_traces_are_not_recorded_but_callers_sampled_ones_are() -> None:
    """Sampling drops spans only: the request id, metrics and a caller's sampled trace remain."""
    h = Harness(sample_ratio=0.0)
    async with serve(h.app) as client:
        r = await client.get("/items/7", headers={"x-request-id": "req-1"})
        assert h.spans.get_finished_spans() == ()
        await client.get("/items/7", headers={"traceparent": TRACEPARENT})
    assert r.headers["x-request-id"] == "req-1"
    [span] = h.spans.get_finished_spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.name == "GET /items/{item_id}"
    assert (
        h.sample("qanat_http_requests_total", route="/items/{item_id}", method="GET", status="200")
        == 2
    )


# -- logs ---------------------------------------------------------------------------------


async def test_log_lines_are_json_with_trace_and_request_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A line logged in a handler is JSON carrying the service, request id and trace id."""
    h = Harness(json_logs=True)
    async with serve(h.app) as client:
        r = await client.get(
            "/items/9", headers={"traceparent": TRACEPARENT, "x-request-id": "req-9"}
        )
    assert r.status_code == 200
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    [served] = [line for line in lines if line["event"] == "served item 9"]
    assert served["request_id"] == "req-9"
    assert served["trace_id"] == TRACE_ID
    assert (served["service"], served["level"], served["logger"]) == ("users", "info", "shop.items")
    [span] = h.spans.get_finished_spans()
    assert served["span_id"] == format(span.context.span_id, "016x")
