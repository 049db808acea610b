"""The qanat gateway as a benchmark target: one worker, one route to one upstream.

Run: ``python benchmarks/gateway/gateway_target.py --port 0 --upstream 127.0.0.1:8001
[--stack plain|full]``. First it prints one ``info KEY VALUE`` line per fact
the driver needs (``info build compiled|pure``, ``info stack ...`` and, for
the full stack, ``info header Authorization: Bearer ...``), then, once
listening, ``listening on 127.0.0.1:PORT``. The build is whichever qanat is
imported: the editable tree (pure), or ``PYTHONPATH=DIR/site`` after
``scripts/build_wheel.sh DIR`` (compiled, what ``pip install .`` gives).

``plain`` is a prefix route with no filters. ``full`` turns on what a
production route runs: the ``jwt`` filter (HS256; wrk sends a valid token),
``rate_limit`` (GCRA keyed by the JWT subject, a rate far above what one core
serves, so every request is admitted but the limiter runs), a circuit
breaker on the upstream, the Prometheus metrics observer, and trace context
(wrk sends a ``traceparent``, the gateway keeps the trace and makes a new
span id). Whatever this build lacks is left out, and the ``info stack`` line
says what ran, so a table never claims a stack it did not run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import importlib
import sys
from collections.abc import Callable
from typing import Any

from qanat.gateway.app import Gateway
from qanat.gateway.filters import _REGISTRY

try:  # the platform helper's metrics observer
    from qanat.gateway.metrics import GatewayMetrics
except ImportError:  # pragma: no cover - an older build
    GatewayMetrics = None  # type: ignore[assignment,misc]

# Modules that register filters when imported (the "traffic" and "platform" helpers').
FILTER_MODULES = ("qanat.gateway.filters_auth", "qanat.gateway.filters_ratelimit",
                  "qanat.gateway.filters_traffic")
JWT_SECRET = b"benchmark-secret-benchmark-secret-0123456789"
# A valid incoming trace context: the gateway keeps the trace and makes its own span.
TRACEPARENT = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _jwt() -> tuple[dict[str, Any], str]:
    import jwt  # pyjwt, a qanat dependency

    token = jwt.encode({"sub": "bench", "iss": "bench", "aud": "gw", "exp": 4_000_000_000},
                       JWT_SECRET, algorithm="HS256")
    config = {"algorithms": ["HS256"], "issuer": "bench", "audience": "gw",
              "keys": [{"alg": "HS256", "secret_base64": base64.b64encode(JWT_SECRET).decode()}]}
    return config, f"Authorization: Bearer {token}"


# (name, config factory returning (config, extra wrk header or None)), in route order
FULL_FILTERS: tuple[tuple[str, Callable[[], tuple[dict[str, Any], str | None]]], ...] = (
    ("jwt", _jwt),
    # far above what one core serves: every request is admitted, the limiter still runs
    ("rate_limit", lambda: ({"rate": 10_000_000, "burst": 10_000_000, "key": "subject"}, None)),
)


def full_stack() -> tuple[dict[str, Any], list[str], list[str]]:
    """Route fields, wrk headers and a description of what the full stack has in this build."""
    for module in FILTER_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    fields: dict[str, Any] = {"filters": [], "upstream": {}}
    headers = [TRACEPARENT]
    have = ["tracing (traceparent kept, new span id)"]
    for name, make in FULL_FILTERS:
        if name in _REGISTRY:
            config, header = make()
            fields["filters"].append({"name": name, "config": config})
            have.append(name)
            if header:
                headers.append(header)
    fields["upstream"]["breaker"] = {"consecutive_failures": 5, "timeout": "30s"}
    have.append("breaker")
    if GatewayMetrics is not None:
        have.append("metrics")
    return fields, headers, have


async def serve(host: str, port: int, upstream: str, stack: str) -> None:
    route: dict[str, Any] = {
        "name": stack,
        "match": {"prefix": "/"},
        "upstream": {"kind": "static", "targets": [{"url": f"http://{upstream}"}]},
    }
    from qanat.gateway.workers import build

    print(f"info build {'compiled' if build() == 'compiled' else 'pure'}", flush=True)
    headers: list[str] = []
    observers: list[Any] = []  # the metrics observer joins once the gateway exists
    metered = False
    if stack == "full":
        fields, headers, have = full_stack()
        route["filters"] = fields["filters"]
        route["upstream"].update(fields["upstream"])
        print(f"info stack {', '.join(have)}", flush=True)
        metered = GatewayMetrics is not None
    gateway = Gateway([route], observers=observers if metered else None)
    if metered:
        gw = gateway
        observers.append(GatewayMetrics(gw.stats, lambda: gw.in_flight))
    for header in headers:
        print(f"info header {header}", flush=True)
    await gateway.start(host, port)
    gc.collect()
    gc.freeze()  # as ``python -m qanat.gateway`` does once started (workers.serve_plan)
    print(f"listening on {host}:{gateway.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await gateway.aclose(0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("--upstream", required=True, help="host:port of the upstream")
    parser.add_argument("--stack", choices=["plain", "full"], default="plain")
    args = parser.parse_args(argv)
    import uvloop

    try:
        uvloop.run(serve(args.host, args.port, args.upstream, args.stack))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
