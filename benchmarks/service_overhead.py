"""What ``qanat.Service`` adds to each request, against a bare app and against the peers.

Run: ``.venv/bin/python benchmarks/service_overhead.py`` (``--quick`` for a smoke
run, ``--http`` to add a uvicorn + wrk pass).

The same FastAPI app (one ``GET /items/{item_id}`` route returning a small
JSON object) is measured as:

- ``bare``: the app alone;
- ``qanat``: ``qanat.Service(app, "bench")``, as ``qanat up`` runs it (its own
  tracer provider, installed globally, spans to the local span store);
- ``qanat, sampled 0``: the same with ``QANAT_TRACE_SAMPLE_RATIO=0``;
- ``otel-asgi + prom``: the peer a user would otherwise assemble:
  ``opentelemetry-instrumentation-asgi``'s ``OpenTelemetryMiddleware`` with
  an SDK provider set globally, plus a plainly written ``prometheus_client``
  middleware (requests counter, latency histogram, in-progress gauge, route
  template labels);
- ``otel-asgi + instrumentator``: the same tracing with
  ``prometheus-fastapi-instrumentator`` for the metrics.

Both tracing set-ups export through a ``BatchSpanProcessor`` to the same
JSON-lines exporter, so span export costs the same and what differs is the
middleware. Each variant runs in a process of its own (OpenTelemetry's global
provider, which FastAPI's built-in telemetry keys on, can be set once per
process), and the variants take turns, round after round; the fastest batch
of each is kept, since noise on a shared machine only ever slows a batch.

In-process, requests go straight through the ASGI interface (a minimal call
loop: no server, no client), so what is measured is the app plus its
middleware. Each request is sent with a valid incoming ``traceparent`` and
without.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

VARIANTS = ("bare", "qanat", "qanat-s0", "otel-prom", "otel-instr")
LABELS = {
    "bare": "bare FastAPI",
    "qanat": "qanat.Service",
    "qanat-s0": "qanat.Service, sampled 0",
    "otel-prom": "otel-asgi + prometheus_client",
    "otel-instr": "otel-asgi + instrumentator",
}
PEER = "otel-prom"
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HEADERS = [
    (b"host", b"svc"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"),
]
MODES = {"no traceparent": HEADERS, "traceparent": [*HEADERS, (b"traceparent", TRACEPARENT)]}


# -- the apps ----------------------------------------------------------------------------


def make_fastapi() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": "widget"}

    return app


def _sdk_provider(state: Path) -> Any:
    """A global SDK provider exporting like qanat's: batched, to a JSON-lines file."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from qanat.observability.tracing import JsonlSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    exporter = JsonlSpanExporter(state / "traces" / "spans.jsonl")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    return provider


class PlainPrometheus:
    """Metrics middleware as a user writes it from the prometheus_client docs."""

    def __init__(self, app: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.app = app
        self.requests = Counter("http_requests_total", "Requests.", ["method", "route", "status"])
        self.latency = Histogram("http_request_duration_seconds", "Latency.", ["method", "route"])
        self.in_progress = Gauge("http_requests_in_progress", "In progress.")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        self.in_progress.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.in_progress.dec()
            template = getattr(scope.get("route"), "path", "<unmatched>")
            self.requests.labels(scope["method"], template, str(status)).inc()
            elapsed = time.perf_counter() - start
            self.latency.labels(scope["method"], template).observe(elapsed)


def build(variant: str, state: Path) -> Any:
    """The ASGI app of one variant (the outermost callable)."""
    app = make_fastapi()
    if variant in ("qanat", "qanat-s0"):
        import qanat

        qanat.Service(app, "bench")
        return app
    if variant == "bare":
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    provider = _sdk_provider(state)
    # Added inside the app, as its docs show, so FastAPI sees it and keeps its own
    # built-in telemetry out of the way (one server span per request, not two).
    if variant == "otel-instr":
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app)
    else:
        app.add_middleware(PlainPrometheus)
    app.add_middleware(OpenTelemetryMiddleware, tracer_provider=provider)
    return app


# -- the in-process driver ---------------------------------------------------------------


def _scope(headers: list[tuple[bytes, bytes]], state: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/7",
        "raw_path": b"/items/7",
        "query_string": b"",
        "root_path": "",
        "headers": list(headers),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),
    }


async def _lifespan(app: Any) -> tuple[dict[str, Any], Callable[[], Any]]:
    """Run the app's startup through the ASGI lifespan protocol; returns (state, shutdown)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    state: dict[str, Any] = {}
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"startup failed: {started}")

    async def shutdown() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task

    return state, shutdown


async def _batch(
    app: Any, headers: list[tuple[bytes, bytes]], state: dict[str, Any], n: int
) -> float:
    """CPU nanoseconds per request over ``n`` sequential requests.

    Process CPU time, not wall time: on a shared machine wall time mostly
    measures the other tenants, while CPU time counts only what this process
    did — including the span processor's export thread, which is part of the
    cost of tracing.
    """
    request = {"type": "http.request", "body": b"", "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    start = time.process_time_ns()
    for _ in range(n):
        await app(_scope(headers, state), receive, send)
    elapsed = time.process_time_ns() - start
    if statuses != [200] * n:
        raise RuntimeError(f"unexpected statuses: {sorted(set(statuses))}")
    return elapsed / n


async def child(variant: str, batches: int, n: int) -> dict[str, float]:
    """Best ns/request per mode for one variant, in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the Service keeps its span store under ./.qanat
        app = build(variant, Path(tmp))
        state, shutdown = await _lifespan(app)
        for headers in MODES.values():  # warm up
            await _batch(app, headers, state, n // 4)
        best = {mode: float("inf") for mode in MODES}
        for _ in range(batches):
            for mode, headers in MODES.items():
                best[mode] = min(best[mode], await _batch(app, headers, state, n))
        await shutdown()
        return best


# -- the parent: rounds of child processes, then the table -------------------------------


def run_in_process(rounds: int, batches: int, n: int) -> dict[str, dict[str, float]]:
    best: dict[str, dict[str, float]] = {v: {m: float("inf") for m in MODES} for v in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("QANAT_", "OTEL_"))}
            if variant == "qanat-s0":
                env["QANAT_TRACE_SAMPLE_RATIO"] = "0"
            out = subprocess.run(
                [sys.executable, __file__, "--child", variant, str(batches), str(n)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            for mode, ns in json.loads(out.splitlines()[-1]).items():
                best[variant][mode] = min(best[variant][mode], ns)
    return best


def table(best: dict[str, dict[str, float]]) -> str:
    lines = [
        "| variant | traceparent | µs/request | requests/s | vs bare | added µs | added vs peer |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        bare = best["bare"][mode]
        peer_added = best[PEER][mode] - bare
        for variant in VARIANTS:
            ns = best[variant][mode]
            added = ns - bare
            vs_peer = "—" if variant == "bare" else f"{added / peer_added:.2f}×"
            lines.append(
                f"| {LABELS[variant]} | {'yes' if mode == 'traceparent' else 'no'} "
                f"| {ns / 1000:.1f} | {1e9 / ns:,.0f} | {bare / ns:.2f} "
                f"| {added / 1000:.1f} | {vs_peer} |"
            )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        variant, batches, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(asyncio.run(child(variant, batches, n))))
        return
    quick = "--quick" in sys.argv
    rounds, batches, n = (1, 2, 300) if quick else (3, 4, 2000)
    best = run_in_process(rounds, batches, n)
    print(f"In-process (raw ASGI calls), best of {rounds}×{batches} batches of {n}:\n")
    print(table(best))
    if "--http" in sys.argv:
        from service_overhead_http import run_http

        print()
        print(run_http(quick=quick))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
