"""The local span store and the choice of exporter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from qanat.errors import ConfigError
from qanat.observability.tracing import (
    SAMPLE_RATIO_ENV,
    SPANS_FILE,
    JsonlSpanExporter,
    read_spans,
    setup_tracing,
    trace_sampler,
)


def test_finished_spans_are_appended_as_json_lines(tmp_path: Path) -> None:
    """Each finished span becomes one line with W3C-formatted ids, parent and service."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(tmp_path / SPANS_FILE)))
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent,
        tracer.start_as_current_span("child", attributes={"k": "v"}),
    ):
        pass
    child, root = read_spans(tmp_path)
    ctx = parent.get_span_context()
    assert (child["name"], root["name"]) == ("child", "parent")
    assert child["trace_id"] == root["trace_id"] == format(ctx.trace_id, "032x")
    assert child["parent_id"] == root["span_id"] == format(ctx.span_id, "016x")
    assert root["parent_id"] is None and root["kind"] == "SERVER"
    assert child["attributes"] == {"k": "v"}
    assert float(str(child["end"])) >= float(str(child["start"])) > 0


def test_a_torn_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    """A half-written line (a process killed mid-write) does not hide the other spans."""
    path = tmp_path / SPANS_FILE
    path.parent.mkdir(parents=True)
    path.write_text('{"name": "a"}\n{"name": "b", "trace\n\n{"name": "c"}\n')
    assert [s["name"] for s in read_spans(tmp_path)] == ["a", "c"]
    assert read_spans(tmp_path / "nowhere") == []


def test_an_otlp_endpoint_without_the_exporter_is_a_clear_error(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT without the OTLP package says what to install."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    with pytest.raises(ConfigError, match="pip install opentelemetry-exporter-otlp-proto-http"):
        setup_tracing("users", "users-0", tmp_path, environ=env, install_global=False)


SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import httpx
    from fastapi import FastAPI
    import qanat
    from qanat.runner.env import InstanceEnv

    app = FastAPI()
    env = InstanceEnv(service="users", instance_id="users-0", host="127.0.0.1", port=1,
                      registry="memory://spans", config="memory://spans", events="",
                      database_url="", state_dir=sys.argv[1])
    service = qanat.Service(app, "users", env=env)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict:
        return {"id": item_id}

    async def main() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
                tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                assert (await c.get("/items/5", headers={"traceparent": tp})).status_code == 200

    asyncio.run(main())
    """
)


def test_a_service_writes_one_server_span_per_request_to_the_local_store(tmp_path: Path) -> None:
    """End to end in a fresh process (the global tracer provider is process-wide): a FastAPI
    service run by qanat writes one SERVER span per request, continuing the caller's trace,
    to <state>/traces/spans.jsonl, and flushes it at shutdown."""
    script = tmp_path / "svc.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QANAT_"))}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spans = read_spans(tmp_path / "state")
    servers = [s for s in spans if s["kind"] == "SERVER"]
    assert len(servers) == 1, json.dumps(spans, indent=1)
    [server] = servers
    assert server["name"] == "GET /items/{item_id}"
    assert server["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert (server["parent_id"], server["remote_parent"]) == ("b7ad6b7169203331", True)
    assert server["service"] == "users"


# -- sampling -----------------------------------------------------------------------------

SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def decision(sampler: Sampler | None, trace_id: int, traceparent: str | None = None) -> bool:
    """Whether ``sampler`` keeps a span of ``trace_id`` (a root, or a child of ``traceparent``)."""
    assert sampler is not None
    parent = (
        TraceContextTextMapPropagator().extract({"traceparent": traceparent})
        if traceparent
        else None
    )
    return sampler.should_sample(parent, trace_id, "GET").decision.is_sampled()


@pytest.mark.parametrize("ratio", [0.0, 0.25, 1.0])
def test_the_ratio_applies_to_new_traces_and_callers_decide_for_theirs(ratio: float) -> None:
    """Roots are kept by trace id at the ratio; a caller's sampled flag is followed either way."""
    sampler = trace_sampler(ratio, {})
    low, high = 1, 2**64 - 1  # TraceIdRatioBased compares the low 64 bits with ratio * 2**64
    assert decision(sampler, low) is (ratio > 0)
    assert decision(sampler, high) is (ratio == 1.0)
    assert decision(sampler, high, SAMPLED_PARENT) is True
    assert decision(sampler, low, UNSAMPLED_PARENT) is False


def test_the_ratio_is_read_from_the_environment() -> None:
    """QANAT_TRACE_SAMPLE_RATIO sets the ratio; an explicit argument wins over it."""
    env = {SAMPLE_RATIO_ENV: " 0 "}
    assert decision(trace_sampler(None, env), 1) is False
    assert decision(trace_sampler(1.0, env), 1) is True


def test_without_a_ratio_the_sdk_default_applies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No ratio anywhere leaves OpenTelemetry's own default: every new trace is kept."""
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    assert trace_sampler(None, {}) is None
    assert trace_sampler(None, {SAMPLE_RATIO_ENV: ""}) is None
    provider = setup_tracing("users", "users-0", tmp_path, environ={}, install_global=False)
    assert decision(provider.sampler, 2**64 - 1) is True
    provider.shutdown()


@pytest.mark.parametrize("value", ["half", "1.5", "-0.1", "nan"])
def test_a_bad_ratio_in_the_environment_is_a_clear_error(value: str, tmp_path: Path) -> None:
    """A ratio that is not a number from 0 to 1 names the variable, the value and the range."""
    env = {SAMPLE_RATIO_ENV: value}
    with pytest.raises(ConfigError, match="from 0 to 1") as caught:
        setup_tracing("users", "users-0", tmp_path, environ=env, install_global=False)
    assert caught.value.source == SAMPLE_RATIO_ENV
    assert repr(value) in str(caught.value)


def test_a_bad_ratio_argument_is_a_clear_error() -> None:
    """sample_ratio= outside 0..1 is refused naming the parameter."""
    with pytest.raises(ConfigError, match="sample_ratio: the trace sample ratio must be"):
        trace_sampler(2.0, {})
