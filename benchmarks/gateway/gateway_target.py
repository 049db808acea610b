"""The qanat gateway as a benchmark target: one worker, one route to one upstream.

Run: ``python benchmarks/gateway/gateway_target.py --port 0 --upstream 127.0.0.1:8001
[--stack plain|full]``. First it prints one ``info KEY VALUE`` line per fact
the driver needs (``info filters jwt,rate_limit`` and, when JWT is on, ``info
header Authorization: Bearer ...``), then, once listening, ``listening on
127.0.0.1:PORT``.

``plain`` is a prefix route with no filters. ``full`` adds, in order, every
filter of ``FULL_STACK`` that is registered in this build (JWT, rate limit,
circuit breaker, metrics, tracing), each configured so that every request
passes (a rate far above what one core can serve); the ``info filters`` line
says which were found, so a table never claims a stack it did not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import sys
from collections.abc import Callable
from typing import Any

from qanat.gateway.app import Gateway
from qanat.gateway.filters import _REGISTRY

# Modules that register filters when imported (the "traffic" and "platform" helpers').
FILTER_MODULES = (
    "qanat.gateway.filters_auth", "qanat.gateway.filters_ratelimit",
    "qanat.gateway.filters_traffic", "qanat.gateway.resilience", "qanat.gateway.metrics",
    "qanat.gateway.accesslog",
)
JWT_SECRET = "benchmark-secret-benchmark-secret-0123456789"


def _jwt() -> tuple[dict[str, Any], str]:
    import jwt  # pyjwt, a qanat dependency

    token = jwt.encode({"sub": "bench", "iss": "bench", "aud": "gw", "exp": 4_000_000_000},
                       JWT_SECRET, algorithm="HS256")
    config = {"secret": JWT_SECRET, "algorithms": ["HS256"], "issuer": "bench", "audience": "gw"}
    return config, f"Authorization: Bearer {token}"


# name candidates (first registered wins) -> config factory returning (config, extra header)
FULL_STACK: tuple[tuple[tuple[str, ...], Callable[[], tuple[dict[str, Any], str | None]]], ...] = (
    (("jwt", "jwt_auth"), _jwt),
    (("rate_limit", "ratelimit"), lambda: ({"rate": 1_000_000, "burst": 1_000_000}, None)),
    (("circuit_breaker", "breaker"), lambda: ({}, None)),
    (("metrics", "prometheus"), lambda: ({}, None)),
    (("tracing", "trace", "opentelemetry"), lambda: ({}, None)),
)


def full_filters() -> tuple[list[dict[str, Any]], list[str]]:
    """The ``full`` route's filter list from what is registered, and the extra wrk headers."""
    for module in FILTER_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    filters: list[dict[str, Any]] = []
    headers: list[str] = []
    for names, make in FULL_STACK:
        name = next((n for n in names if n in _REGISTRY), None)
        if name is None:
            continue
        config, header = make()
        filters.append({"name": name, "config": config})
        if header:
            headers.append(header)
    return filters, headers


async def serve(host: str, port: int, upstream: str, stack: str) -> None:
    filters, headers = full_filters() if stack == "full" else ([], [])
    route = {
        "name": stack,
        "match": {"prefix": "/"},
        "upstream": {"kind": "static", "targets": [{"url": f"http://{upstream}"}]},
        "filters": filters,
    }
    gateway = Gateway([route])
    print(f"info filters {','.join(f['name'] for f in filters) or '-'}", flush=True)
    for header in headers:
        print(f"info header {header}", flush=True)
    await gateway.start(host, port)
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
