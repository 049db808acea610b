"""FastAPI's built-in request tracing stepping aside for qanat's server span."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette

from qanat.observability.framework import defer_fastapi_tracing
from qanat.runtime.service import Service

pytest.importorskip("fastapi.telemetry", reason="this FastAPI has no built-in telemetry")


def traced_app() -> tuple[FastAPI, TracerProvider, InMemorySpanExporter]:
    """A FastAPI app whose built-in telemetry is on (its own provider, no global one needed)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = FastAPI(telemetry={"tracer_provider": provider})

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app, provider, spans


async def get(app: Starlette, path: str) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return (await client.get(path)).status_code


async def test_fastapi_alone_traces_each_request_with_several_spans() -> None:
    """Without qanat, the built-in telemetry makes a server span and operation spans."""
    app, _, spans = traced_app()
    assert await get(app, "/items/1") == 200
    names = sorted(s.name for s in spans.get_finished_spans())
    assert "fastapi.endpoint" in names and len(names) >= 2


async def test_under_a_service_there_is_one_span_per_request_and_it_is_qanats() -> None:
    """With qanat.Service, FastAPI steps aside: one SERVER span, named by the route template."""
    app, provider, spans = traced_app()
    Service(app, "users", tracer_provider=provider, json_logs=False)
    assert await get(app, "/items/1") == 200
    [span] = spans.get_finished_spans()
    assert span.name == "GET /items/{item_id}"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "qanat.service"


def test_deferring_is_a_no_op_where_there_is_nothing_to_defer() -> None:
    """Starlette apps and already-quiet FastAPI apps are left as they were (False)."""
    assert defer_fastapi_tracing(Starlette()) is False
    quiet = FastAPI(telemetry={"tracing": False})
    assert defer_fastapi_tracing(quiet) is False
    app = FastAPI()
    assert defer_fastapi_tracing(app) is True
    assert defer_fastapi_tracing(app) is False
