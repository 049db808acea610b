"""Run a gateway from a YAML file: ``python -m qanat.gateway --config FILE.yaml --port 8080``.

The file holds a ``routes:`` list (see docs/gateway.md) and optionally a
``limits:`` mapping overriding ``hardening.Limits`` defaults. SIGTERM/SIGINT
stop accepting and let in-flight requests finish (``--drain`` seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

from qanat.core.duration import parse_duration
from qanat.errors import ConfigError
from qanat.gateway.app import Gateway
from qanat.gateway.config import load_gateway_file
from qanat.gateway.hardening import Limits


def _limits(raw: dict[str, object], drain: float | None, source: str) -> Limits:
    fields = {f.name: f for f in dataclasses.fields(Limits)}
    values: dict[str, object] = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"unknown limit {key!r}; allowed: {', '.join(fields)}",
                              source=f"{source}: limits")
        try:
            if fields[key].type in ("float", float):
                values[key] = parse_duration(value)  # type: ignore[arg-type]
            elif isinstance(value, int) and not isinstance(value, bool):
                values[key] = value
            else:
                raise ValueError(f"expected an integer, got {value!r}")
        except ValueError as exc:
            raise ConfigError(str(exc), source=f"{source}: limits.{key}") from None
    if drain is not None:
        values["shutdown_timeout"] = drain
    try:
        return Limits(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(str(exc), source=f"{source}: limits") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qanat.gateway", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML file with a 'routes:' list")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--drain", type=float, default=None,
                        help="seconds in-flight requests get on shutdown (default 10)")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    args = parser.parse_args(argv)
    try:
        routes, raw_limits = load_gateway_file(args.config)
        limits = _limits(raw_limits, args.drain, args.config)
    except ConfigError as exc:
        print(f"qanat.gateway: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        gateway = Gateway(routes, limits=limits)
        await gateway.serve(args.host, args.port)

    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
            pass
    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"qanat.gateway: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
