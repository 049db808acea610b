"""OpenTelemetry tracing with W3C trace context, exported to a local span store.

With no collector configured, spans go to ``<state>/traces/spans.jsonl``, one
JSON object per line, appended by every local process (the dashboard and the
CLI read it with ``read_spans``). With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set,
spans go to that collector over OTLP/HTTP instead; that needs the optional
``opentelemetry-exporter-otlp-proto-http`` package.

Sampling: ``QANAT_TRACE_SAMPLE_RATIO`` (or ``sample_ratio=``) keeps that
share of the traces that *start* in this process, chosen by trace id
(OpenTelemetry's ``TraceIdRatioBased``, so every process keeps the same
traces); a request that arrives with a ``traceparent`` follows the caller's
sampled flag (``ParentBased``), so a trace is kept or dropped whole. The
default is 1.0 — every trace — which suits a system on one machine; an
unsampled request costs a non-recording span and no export.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from qanat.errors import ConfigError

SPANS_FILE = Path("traces") / "spans.jsonl"
"""Where the local span store lives, relative to the state directory (``.qanat``)."""

SAMPLE_RATIO_ENV = "QANAT_TRACE_SAMPLE_RATIO"
"""The share of new traces to keep, 0 to 1 (default 1: all)."""


class JsonlSpanExporter(SpanExporter):
    """Appends finished spans to a JSON-lines file shared by every local process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_to_dict(s), separators=(",", ":")) + "\n" for s in spans)
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


def span_to_dict(span: ReadableSpan) -> dict[str, object]:
    """One line of the span store: ids in W3C hex form, times in epoch seconds."""
    ctx = span.get_span_context()
    parent = span.parent
    service = span.resource.attributes.get("service.name", "") if span.resource else ""
    return {
        "trace_id": format(ctx.trace_id, "032x") if ctx else "",
        "span_id": format(ctx.span_id, "016x") if ctx else "",
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "remote_parent": bool(parent and parent.is_remote),
        "name": span.name,
        "kind": span.kind.name if span.kind else "",
        "service": service,
        "start": (span.start_time or 0) / 1e9,
        "end": (span.end_time or 0) / 1e9,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


def _exporter(state_dir: str | Path, environ: Mapping[str, str]) -> SpanExporter:
    if not environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return JsonlSpanExporter(Path(state_dir) / SPANS_FILE)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )
    except ImportError:
        raise ConfigError(
            "spans are to go to a collector, but the OTLP exporter is not installed: "
            "pip install opentelemetry-exporter-otlp-proto-http, or unset the variable "
            "to keep spans in the local store",
            source="OTEL_EXPORTER_OTLP_ENDPOINT",
        ) from None
    exporter: SpanExporter = OTLPSpanExporter()  # reads the OTEL_EXPORTER_OTLP_* variables
    return exporter


def setup_tracing(
    service: str,
    instance: str,
    state_dir: str | Path,
    *,
    environ: Mapping[str, str] | None = None,
    install_global: bool = True,
    sample_ratio: float | None = None,
) -> TracerProvider:
    """A tracer provider for this process, exporting to the local store (or OTLP).

    ``sample_ratio`` defaults to ``QANAT_TRACE_SAMPLE_RATIO``; with neither,
    OpenTelemetry's own ``OTEL_TRACES_SAMPLER`` applies, whose default keeps
    every trace (see ``trace_sampler``).

    With ``install_global`` it also becomes OpenTelemetry's global provider
    when none was set yet (OpenTelemetry allows setting it once per process),
    so libraries that use ``trace.get_tracer`` export through it too.
    """
    env = os.environ if environ is None else environ
    resource = Resource.create({"service.name": service, "service.instance.id": instance})
    provider = TracerProvider(resource=resource, sampler=trace_sampler(sample_ratio, env))
    provider.add_span_processor(
        BatchSpanProcessor(_exporter(state_dir, env), schedule_delay_millis=500)
    )
    if install_global and not global_provider_set():
        trace.set_tracer_provider(provider)
    return provider


def trace_sampler(ratio: float | None, environ: Mapping[str, str]) -> Sampler | None:
    """``ParentBased(TraceIdRatioBased(ratio))``; None (the SDK's default) with no ratio set.

    ``ratio`` defaults to ``environ[QANAT_TRACE_SAMPLE_RATIO]``. 1 and 0 use
    ``ALWAYS_ON``/``ALWAYS_OFF`` for the root decision, which skip the id
    arithmetic. Anything but a number from 0 to 1 is a ``ConfigError``.
    """
    source, shown = "sample_ratio", repr(ratio)
    if ratio is None:
        raw = environ.get(SAMPLE_RATIO_ENV, "").strip()
        if not raw:
            return None
        source, shown = SAMPLE_RATIO_ENV, repr(raw)
        try:
            ratio = float(raw)
        except ValueError:
            ratio = float("nan")
    if not 0.0 <= ratio <= 1.0:  # also refuses NaN
        raise ConfigError(
            f"the trace sample ratio must be a number from 0 to 1, got {shown}: "
            "1 keeps every new trace, 0.01 one in a hundred, 0 none (a caller's "
            "sampled traceparent is still followed)",
            source=source,
        )
    root = ALWAYS_ON if ratio == 1.0 else ALWAYS_OFF if ratio == 0.0 else TraceIdRatioBased(ratio)
    return ParentBased(root)


def global_provider_set() -> bool:
    """True once a real tracer provider was installed globally in this process."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def read_spans(state_dir: str | Path) -> list[dict[str, object]]:
    """Every span in the local store (for tests, the CLI and the dashboard).

    A line that does not parse (a process killed in the middle of a write) is
    skipped rather than failing the whole read.
    """
    path = Path(state_dir) / SPANS_FILE
    if not path.exists():
        return []
    spans = []
    for line in path.read_text().splitlines():
        try:
            spans.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return spans
