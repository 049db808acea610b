"""``qanat up | status | down | scale | logs``: run a whole system on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from qanat.errors import BackendUnreachable, ConfigError
from qanat.runner import control
from qanat.runner.display import status_table
from qanat.runner.up import UpSession
from qanat.topology import Topology, load_topology

# Piped into a file, tables keep a readable width instead of rich's 80 columns.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120
console = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False)

DirArg = Annotated[Path, typer.Argument(help="Directory holding qanat.yaml (or the file itself).")]
DirOpt = Annotated[
    Path, typer.Option("--dir", "-d", help="Directory holding qanat.yaml (or the file itself).")
]
StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where logs, databases and the control socket live "
        "(default: state_dir in qanat.yaml, '.qanat' beside it).",
    ),
]


def _load(path: Path, state_dir: Path | None = None) -> Topology:
    """The topology at ``path``; a bad file is one located error line and exit status 2."""
    try:
        topo = load_topology(path)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    if state_dir is not None:
        topo = topo.model_copy(update={"state_dir": str(state_dir.resolve())})
    return topo


def _where(path: Path, state_dir: Path | None) -> str:
    """The options the other commands need to find this system (empty for the defaults)."""
    parts = [] if path.resolve() == Path.cwd() else [f"-d {path}"]
    if state_dir is not None:
        parts.append(f"--state-dir {state_dir}")
    return " ".join(parts)


def up(
    path: DirArg = Path("."),
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", help="Gateway port (default from qanat.yaml: 8080)."),
    ] = None,
    state_dir: StateOpt = None,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every instance to become ready.")
    ] = 60.0,
) -> None:
    """Start every service of the system (and its gateway) and keep them running.

    Instances start on free ports, register themselves, and are restarted with
    backoff when they crash. Ctrl-C stops everything gracefully (twice: at once).
    """
    topo = _load(path, state_dir)
    with contextlib.suppress(BackendUnreachable):
        asyncio.run(control.request(topo.state_path, {"cmd": "status"}, timeout=2.0))
        err.print(
            f"[red]error:[/red] a 'qanat up' already runs for {topo.state_path}; "
            "stop it with 'qanat down' first",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    session = UpSession(
        topo,
        console=console,
        gateway_port=port,
        ready_timeout=ready_timeout,
        where=_where(path, state_dir),
    )
    try:
        code = asyncio.run(session.run())
    except (ConfigError, BackendUnreachable) as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # before the signal handlers were installed
        code = 130
    raise typer.Exit(code)


def status(
    path: DirOpt = Path("."),
    state_dir: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show every process of the running system: status, health, URL, pid, restarts."""
    topo = _load(path, state_dir)
    reply = _call(topo, {"cmd": "status"})
    if as_json:
        print(json.dumps(reply["processes"], indent=2))
    else:
        console.print(status_table(reply["processes"], topo.name))


def down(path: DirOpt = Path("."), state_dir: StateOpt = None) -> None:
    """Stop the running system gracefully (drain, deregister, exit); returns once stopped."""
    topo = _load(path, state_dir)
    _call(topo, {"cmd": "down"}, timeout=300)
    console.print(f"{topo.name}: stopped")


def scale(
    service: Annotated[str, typer.Argument(help="Service name from qanat.yaml.")],
    replicas: Annotated[int, typer.Argument(help="Number of instances to run.")],
    path: DirOpt = Path("."),
    state_dir: StateOpt = None,
) -> None:
    """Change the number of instances of a service, live; waits for new ones to be ready."""
    topo = _load(path, state_dir)
    reply = _call(topo, {"cmd": "scale", "service": service, "replicas": replicas}, timeout=120)
    started = ", ".join(reply.get("started", [])) or "none"
    console.print(f"{service}: {replicas} instance(s) (started: {started})")
    if reply.get("not_ready"):
        err.print(f"[yellow]not ready yet:[/yellow] {', '.join(reply['not_ready'])}")
        raise typer.Exit(1)


def _log_files(log_dir: Path, service: str) -> list[Path]:
    """Log files of ``service``'s instances (``users-0.log`` ...) or ``gateway.log``."""
    pattern = re.compile(rf"^{re.escape(service)}(-\d+)?\.log$")
    return sorted(f for f in log_dir.glob("*.log") if pattern.match(f.name))


def logs(
    service: Annotated[str, typer.Argument(help="Service name (or 'gateway').")],
    path: DirOpt = Path("."),
    state_dir: StateOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", help="Lines of history per instance.")
    ] = 50,
) -> None:
    """Print the logs of every instance of a service, prefixed with the instance name."""
    topo = _load(path, state_dir)
    log_dir = topo.state_path / "logs"
    files = _log_files(log_dir, service)
    if not files:
        known = sorted({re.sub(r"-\d+$", "", f.stem) for f in log_dir.glob("*.log")})
        err.print(
            f"[red]error:[/red] no logs for {service!r} in {log_dir} "
            f"(services with logs: {', '.join(known) or 'none'})",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    offsets: dict[Path, int] = {}
    for f in files:
        text = f.read_text(errors="replace").splitlines()
        for line in text[-lines:] if lines > 0 else []:
            print(f"{f.stem:>12} | {line}")
        offsets[f] = f.stat().st_size
    sys.stdout.flush()
    while follow:
        try:
            time.sleep(0.2)  # tail -f polling
        except KeyboardInterrupt:
            return
        for f in _log_files(log_dir, service):  # scaled-up instances appear here too
            size = f.stat().st_size
            start = offsets.get(f, 0)
            if size > start:
                with f.open("rb") as fh:
                    fh.seek(start)
                    chunk = fh.read(size - start).decode(errors="replace")
                for line in chunk.splitlines():
                    print(f"{f.stem:>12} | {line}")
                sys.stdout.flush()
                offsets[f] = size


def _call(topo: Topology, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    try:
        reply = asyncio.run(control.request(topo.state_path, payload, timeout=timeout))
    except BackendUnreachable as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    if not reply.get("ok"):
        err.print(f"[red]error:[/red] {reply.get('error', 'the supervisor refused')}")
        raise typer.Exit(1)
    return reply


def register(app: typer.Typer) -> None:
    """Add the runner commands to the ``qanat`` app."""
    app.command("up")(up)
    app.command("status")(status)
    app.command("down")(down)
    app.command("scale")(scale)
    app.command("logs")(logs)
