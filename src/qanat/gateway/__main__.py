"""Run a gateway: ``python -m qanat.gateway --topology qanat.yaml`` or ``--config FILE.yaml``.

``--topology`` builds it from a topology file: routes from ``gateway.routes``,
discovery from ``backends.registry``, live route reload from
``backends.config`` (key ``qanat/gateway/routes``, seeded from the file).
``--config`` serves a route file (``routes:`` and optional ``limits:``, see
docs/gateway.md); add ``--registry URL`` for ``kind: service`` routes and
``--config-store URL`` for live reload. ``/__qanat/ready`` and
``/__qanat/health`` answer on the public port; ``--admin-port`` adds
/routes, /upstreams, /stats and /metrics on 127.0.0.1. ``--workers N`` runs N
processes on the port (SO_REUSEPORT). SIGTERM/SIGINT stop accepting and let
in-flight requests finish (``--drain`` seconds). See docs/gateway-operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys

from qanat.core.duration import parse_duration
from qanat.errors import BackendError, ConfigError
from qanat.gateway.accesslog import AccessLog
from qanat.gateway.hardening import Limits
from qanat.gateway.reload import ROUTES_KEY
from qanat.gateway.topology import GatewayPlan, plan_from_file, plan_from_topology
from qanat.gateway.workers import CONFIG_ERROR, run_workers, serve_plan


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qanat.gateway", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--topology", help="a qanat.yaml (or its directory)")
    source.add_argument("--config", help="YAML file with a 'routes:' list")
    p.add_argument("--host", help="public address (default: the topology's, or 127.0.0.1)")
    p.add_argument("--port", type=int, help="public port (default: the topology's, or 8080)")
    p.add_argument("--admin-port", type=int, help="serve the admin endpoints on this port")
    p.add_argument("--admin-host", default=None, help="admin address (default 127.0.0.1)")
    p.add_argument("--workers", type=int, help="processes sharing the port (default 1)")
    p.add_argument("--registry", help="registry URL for kind: service routes")
    p.add_argument("--config-store", help="config store URL for live route reload")
    p.add_argument("--routes-key", default=ROUTES_KEY, help=f"default {ROUTES_KEY}")
    p.add_argument("--access-log", default=None,
                   help="stderr, stdout, a file path, or off (default: stderr with "
                   "--topology, off with --config)")
    p.add_argument("--drain", type=float, default=None,
                   help="seconds in-flight requests get on shutdown (default 10)")
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers
    return p


def _plan(args: argparse.Namespace) -> GatewayPlan:
    overrides = {
        "host": args.host, "port": args.port, "admin_port": args.admin_port,
        "admin_host": args.admin_host, "workers": args.workers,
        "registry_url": args.registry, "config_url": args.config_store,
    }
    if args.topology is not None:
        return plan_from_topology(args.topology, **overrides)
    return plan_from_file(args.config, **overrides)


def _without_workers(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    try:
        plan = _plan(args)
        if plan.workers < 1:
            raise ConfigError(f"must be at least 1, got {plan.workers}", source="--workers")
        limits = _limits(plan.limits, args.drain, plan.source)
        if plan.workers > 1 and args.worker_index is None:
            print(f"qanat gateway: http://{plan.host}:{plan.port} | {plan.workers} workers"
                  + (f" | admin ports {plan.admin_port}..{plan.admin_port + plan.workers - 1}"
                     if plan.admin_port is not None else ""), file=sys.stderr, flush=True)
            return run_workers(plan.workers, [*_without_workers(argv), "--workers", "1"],
                               drain=limits.shutdown_timeout)
        # off by default for a route file: the benchmark and embedding path, and a
        # blocking write to a stderr pipe nobody reads would stall the event loop
        spec = args.access_log or ("stderr" if args.topology is not None else "off")
        access_log = None if spec == "off" else AccessLog.open(spec)
    except ConfigError as exc:
        print(f"qanat.gateway: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    _logging(args.worker_index)
    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
            pass

    def banner(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        asyncio.run(serve_plan(plan, limits, access_log=access_log, worker=args.worker_index,
                               routes_key=args.routes_key,
                               banner=banner if args.worker_index is None else None))
    except ConfigError as exc:
        print(f"qanat.gateway: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    except BackendError as exc:
        print(f"qanat.gateway: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"qanat.gateway: cannot listen on {plan.host}:{plan.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        if access_log is not None:
            access_log.close()
    return 0


def _logging(worker: int | None) -> None:
    from qanat.observability.logging import configure_logging

    suffix = f"-{worker}" if worker is not None else ""
    configure_logging("gateway", f"gateway{suffix}-{os.getpid()}")


if __name__ == "__main__":
    sys.exit(main())
