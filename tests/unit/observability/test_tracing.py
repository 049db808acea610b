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
from opentelemetry.trace import SpanKind

from qanat.errors import ConfigError
from qanat.observability.tracing import SPANS_FILE, JsonlSpanExporter, read_spans, setup_tracing


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
