"""What ``qanat.Service`` adds to each request, against a bare app and against the peers.

Run: ``.venv/bin/python benchmarks/service_overhead.py`` (``--quick`` for a smoke
run, ``--http`` to add a uvicorn + wrk pass).

The same FastAPI app (one ``GET /items/{item_id}`` route returning a small
JSON object) is measured as:

- ``bare``: the app alone;
- ``qanat``: ``qanat.Service(app, "bench")``, as ``qanat up`` runs it (its own
  tracer provider, installed globally, spans to the local span store);
- ``qanat, ratio 0``: the same with ``QANAT_TRACE_SAMPLE_RATIO=0``;
- ``qanat, FastAPI tracing off``: the app built with FastAPI's public
  ``telemetry={"tracing": False}``. Since qanat.Service turns FastAPI's
  built-in request tracing off itself, these rows equal the ones above; on a
  qanat that did not (before that change), they show what it cost;
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

The peer's middleware is added inside the app (``app.add_middleware``), as
its docs show, so FastAPI's built-in telemetry steps aside for it; with its
defaults it records three spans per request (the server span and two
``http send`` spans), qanat one.

In-process, requests go straight through the ASGI interface (a minimal call
loop: no server, no client), so what is measured is the app plus its
middleware, in process CPU time (wall time on a shared machine measures the
other tenants). Each request comes without a ``traceparent``, with a sampled
one (flags 01) and with an unsampled one (00). Over HTTP (``--http``), one
uvicorn worker serves each variant in turn under ``wrk -t1 -c16``; the table
gives wrk's requests/s and the server process's CPU time per request (from
``/proc``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

VARIANTS = ("bare", "qanat", "qanat-s0", "qanat-nf", "qanat-nf-s0", "otel-prom", "otel-instr")
LABELS = {
    "bare": "bare FastAPI",
    "qanat": "qanat.Service",
    "qanat-s0": "qanat.Service, ratio 0",
    "qanat-nf": "qanat.Service, FastAPI tracing off",
    "qanat-nf-s0": "qanat.Service, FastAPI tracing off, ratio 0",
    "otel-prom": "otel-asgi + prometheus_client",
    "otel-instr": "otel-asgi + instrumentator",
}
PEER = "otel-prom"
TRACE = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-"
HEADERS = [
    (b"host", b"svc"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"),
]
MODES = {
    "none": HEADERS,
    "sampled": [*HEADERS, (b"traceparent", TRACE + b"01")],
    "unsampled": [*HEADERS, (b"traceparent", TRACE + b"00")],
}
MODE_TITLES = {"none": "no traceparent", "sampled": "traceparent …-01", "unsampled": "…-00"}


# -- the apps ----------------------------------------------------------------------------


def make_fastapi(telemetry: dict[str, Any] | None = None) -> Any:
    from fastapi import FastAPI

    app = FastAPI() if telemetry is None else FastAPI(telemetry=telemetry)

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
    if variant.startswith("qanat"):
        import qanat

        # "-nf": FastAPI's built-in telemetry (which opens its own server span and three
        # operation spans per request once a global provider exists) is turned off with
        # its public option, so the qanat middleware makes the one server span itself.
        app = make_fastapi({"tracing": False} if "-nf" in variant else None)
        qanat.Service(app, "bench")
        return app
    app = make_fastapi()
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


class DropCounter(logging.Handler):
    """Counts the span processor's "Queue full, dropping Span" warnings.

    A variant whose exporter falls behind drops spans, and a dropped span is
    never exported: its row then understates what that tracing costs. The
    tables say how many were dropped, so such a row is not taken at face value.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0
        logging.getLogger("opentelemetry.sdk._shared_internal").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if "dropping" in record.getMessage():
            self.dropped += 1


async def child(variant: str, batches: int, n: int) -> dict[str, float]:
    """Best ns/request per mode for one variant, in this process (and spans dropped)."""
    drops = DropCounter()
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
        return {**best, "dropped": drops.dropped}


# -- the parent: rounds of child processes, then the table -------------------------------


def run_in_process(rounds: int, batches: int, n: int) -> dict[str, dict[str, float]]:
    best: dict[str, dict[str, float]] = {
        v: {**{m: float("inf") for m in MODES}, "dropped": 0} for v in VARIANTS
    }
    for _ in range(rounds):
        for variant in VARIANTS:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("QANAT_", "OTEL_"))}
            if variant.endswith("-s0"):
                env["QANAT_TRACE_SAMPLE_RATIO"] = "0"
            out = subprocess.run(
                [sys.executable, __file__, "--child", variant, str(batches), str(n)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            for key, value in json.loads(out.splitlines()[-1]).items():
                if key == "dropped":
                    best[variant][key] += value
                else:
                    best[variant][key] = min(best[variant][key], value)
    return best


def table(best: dict[str, dict[str, float]]) -> str:
    """One row per variant: µs/request (and µs added to bare FastAPI) per traceparent case."""
    bare = best["bare"]
    head = " | ".join(f"{MODE_TITLES[m]}: µs (added)" for m in MODES)
    lines = [
        f"| variant | {head} | req/s, no traceparent | added ÷ peer's added | spans dropped |",
        "|---|" + "---:|" * (len(MODES) + 3),
    ]
    for variant in VARIANTS:
        row = best[variant]
        cells = " | ".join(f"{row[m] / 1000:.1f} (+{(row[m] - bare[m]) / 1000:.1f})" for m in MODES)
        ratios = " / ".join(
            f"{(row[m] - bare[m]) / (best[PEER][m] - bare[m]):.2f}" for m in ("none", "sampled")
        )
        lines.append(
            f"| {LABELS[variant]} | {cells} | {1e9 / row['none']:,.0f} "
            f"| {'—' if variant == 'bare' else ratios} | {row['dropped']:.0f} |"
        )
    return "\n".join(lines)


# -- over real HTTP: uvicorn (one worker) and wrk ----------------------------------------

HTTP_VARIANTS = ("bare", "qanat", "qanat-nf", "otel-prom")


def serve(variant: str, port: int) -> None:
    """Child: serve one variant with uvicorn on 127.0.0.1:``port`` until killed."""
    import uvicorn

    tmp = tempfile.mkdtemp()
    os.chdir(tmp)
    app = build(variant, Path(tmp))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for_port(port: int, deadline: float) -> None:
    import socket

    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # polling a server we started, with a deadline
    raise RuntimeError(f"the server on port {port} did not start")


def http_round(variant: str, port: int, seconds: int) -> dict[str, tuple[float, float]]:
    """(requests/s, server CPU µs per request) per traceparent case, for one variant;
    under "dropped", the spans the server's span processor dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QANAT_", "OTEL_"))}
    with tempfile.TemporaryFile("w+") as log:
        command = [sys.executable, __file__, "--serve", variant, str(port)]
        server = subprocess.Popen(command, env=env, stderr=log)
        try:
            out = _load(port, server.pid, seconds)
        finally:
            server.terminate()
            server.wait(timeout=10)
        log.seek(0)
        out["dropped"] = (log.read().count("dropping Span"), 0.0)
    return out


def _load(port: int, pid: int, seconds: int) -> dict[str, tuple[float, float]]:
    """wrk against the server without and with a traceparent; (req/s, CPU µs/request) each."""
    _wait_for_port(port, time.monotonic() + 30)
    url = f"http://127.0.0.1:{port}/items/7"
    out: dict[str, tuple[float, float]] = {}
    for mode in ("none", "sampled"):
        extra = [] if mode == "none" else ["-H", f"traceparent: {TRACE.decode()}01"]
        cpu = _cpu_seconds(pid)
        wrk = subprocess.run(
            ["wrk", "-t1", "-c16", f"-d{seconds}s", *extra, url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        used = _cpu_seconds(pid) - cpu
        total = int(wrk.split(" requests in ")[0].split()[-1])
        rps = float(wrk.split("Requests/sec:")[1].split()[0])
        out[mode] = (rps, used / total * 1e6)
    return out


def run_http(rounds: int, seconds: int) -> str:
    """Each variant under wrk in turn, ``rounds`` times; best requests/s and CPU per request."""
    best: dict[str, dict[str, tuple[float, float]]] = {}
    for r in range(rounds):
        for i, variant in enumerate(HTTP_VARIANTS):
            got = http_round(variant, 18600 + 10 * r + i, seconds)
            row = best.setdefault(variant, {"dropped": (0.0, 0.0)})
            row["dropped"] = (row["dropped"][0] + got.pop("dropped")[0], 0.0)
            for mode, (rps, cpu) in got.items():
                old = row.get(mode, (0.0, float("inf")))
                row[mode] = (max(old[0], rps), min(old[1], cpu))
    bare = best["bare"]
    lines = [
        "| variant | req/s | server CPU µs/req | req/s, traceparent | CPU µs/req, traceparent "
        "| req/s vs bare | spans dropped |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in HTTP_VARIANTS:
        row = best[variant]
        lines.append(
            f"| {LABELS[variant]} | {row['none'][0]:,.0f} | {row['none'][1]:.0f} "
            f"| {row['sampled'][0]:,.0f} | {row['sampled'][1]:.0f} "
            f"| {row['none'][0] / bare['none'][0]:.2f} | {row['dropped'][0]:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        variant, batches, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(asyncio.run(child(variant, batches, n))))
        return
    quick = "--quick" in sys.argv
    rounds, batches, n = (1, 2, 300) if quick else (3, 4, 2000)
    best = run_in_process(rounds, batches, n)
    print(f"In-process (raw ASGI calls), CPU time, best of {rounds}×{batches} batches of {n}:\n")
    print(table(best))
    if "--http" in sys.argv:
        print("\nOver HTTP (uvicorn, one worker; wrk -t1 -c16), best of rounds:\n")
        print(run_http(1 if quick else 3, 2 if quick else 5))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
