"""OpenTelemetry tracing with W3C trace context, exported to a local span store.

With no collector configured, spans go to ``<state>/traces/spans.jsonl``, one
JSON object per line (the dashboard and ``qanat traces`` read it). Set
``OTEL_EXPORTER_OTLP_ENDPOINT`` and install the OTLP exporter to send them to
a collector instead.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class JsonlSpanExporter(SpanExporter):
    """Appends finished spans to a JSON-lines file shared by every local process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(_to_dict(s), separators=(",", ":")) + "\n" for s in spans)
        with self._lock:
            # One write per batch with O_APPEND: lines from several processes do not interleave.
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, lines.encode())
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _to_dict(span: ReadableSpan) -> dict[str, object]:
    ctx = span.get_span_context()
    parent = span.parent
    service = span.resource.attributes.get("service.name", "") if span.resource else ""
    return {
        "trace_id": format(ctx.trace_id, "032x") if ctx else "",
        "span_id": format(ctx.span_id, "016x") if ctx else "",
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "name": span.name,
        "kind": span.kind.name if span.kind else "",
        "service": service,
        "start": (span.start_time or 0) / 1e9,
        "end": (span.end_time or 0) / 1e9,
        "status": span.status.status_code.name,
        "attributes": {k: v for k, v in (span.attributes or {}).items()},
    }


def setup_tracing(service: str, instance: str, state_dir: str | Path) -> TracerProvider:
    """A tracer provider for this process, exporting to the local span store."""
    resource = Resource.create({"service.name": service, "service.instance.id": instance})
    provider = TracerProvider(resource=resource)
    exporter = JsonlSpanExporter(Path(state_dir) / "traces" / "spans.jsonl")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    return provider


def read_spans(state_dir: str | Path) -> list[dict[str, object]]:
    """Every span in the local store (for tests, the CLI and the dashboard)."""
    path = Path(state_dir) / "traces" / "spans.jsonl"
    if not path.exists():
        return []
    spans = []
    for line in path.read_text().splitlines():
        if line.strip():
            spans.append(json.loads(line))
    return spans
