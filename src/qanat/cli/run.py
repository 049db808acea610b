"""``qanat up | status | down | scale | logs``: run a whole system on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from qanat.errors import BackendUnreachable, ConfigError
from qanat.runner import control
from qanat.runner.supervisor import GATEWAY, ProcessInfo, Supervisor
from qanat.topology import Topology, load_topology

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

DirArg = Annotated[Path, typer.Argument(help="Directory holding qanat.yaml (or the file itself).")]
DirOpt = Annotated[
    Path, typer.Option("--dir", "-d", help="Directory holding qanat.yaml (or the file itself).")
]


def _load(path: Path) -> Topology:
    try:
        return load_topology(path)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _status_table(rows: list[ProcessInfo] | list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("service", "instance", "status", "url", "pid", "restarts"):
        table.add_column(col)
    for row in rows:
        r = row.to_dict() if isinstance(row, ProcessInfo) else row
        status = str(r["status"])
        colour = {"ready": "green", "starting": "yellow", "restarting": "red"}.get(status, "")
        table.add_row(
            str(r["group"]),
            str(r["name"]),
            f"[{colour}]{status}[/{colour}]" if colour else status,
            str(r["url"]),
            str(r["pid"] or "-"),
            str(r["restarts"]),
        )
    return table


def up(
    path: DirArg = Path("."),
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", help="Gateway port (default from qanat.yaml: 8080)."),
    ] = None,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every instance to become ready.")
    ] = 60.0,
) -> None:
    """Start every service of the system (and its gateway) and keep them running.

    Instances start on free ports, register themselves, and are restarted with
    backoff when they crash. Ctrl-C stops everything gracefully.
    """
    topo = _load(path)
    with contextlib.suppress(BackendUnreachable):
        asyncio.run(control.request(topo.state_path, {"cmd": "status"}, timeout=2.0))
        err.print(
            f"[red]error:[/red] a 'qanat up' already runs for {topo.state_path}; "
            "stop it with 'qanat down' first"
        )
        raise typer.Exit(1)
    try:
        code = asyncio.run(_up(topo, port, ready_timeout))
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


async def _up(topo: Topology, port: int | None, ready_timeout: float) -> int:
    def notify(name: str, message: str) -> None:
        console.print(f"[bold]{name}[/bold] {message}")

    sup = Supervisor(topo, notify=notify, gateway_port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def handle(req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "processes": [p.to_dict() for p in sup.processes()]}
        if cmd == "scale":
            service, replicas = str(req["service"]), int(req["replicas"])
            if service not in topo.services:
                known = ", ".join(sorted(topo.services))
                return {"ok": False, "error": f"unknown service {service!r} (services: {known})"}
            if not 0 <= replicas <= 64:
                return {"ok": False, "error": "replicas must be between 0 and 64"}
            await sup.scale(service, replicas)
            console.print(f"[bold]{service}[/bold] scaled to {replicas}")
            return {"ok": True}
        if cmd == "down":
            stop.set()
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r} (status, scale, down)"}

    server = await control.serve(topo.state_path, handle)
    console.print(
        f"[bold]qanat[/bold] starting [cyan]{topo.name}[/cyan] "
        f"from {topo.root} (state in {topo.state_path})"
    )
    started = time.monotonic()
    await sup.start()
    waiter = asyncio.create_task(sup.wait_ready(ready_timeout))
    with Live(
        _status_table(sup.processes(), "starting…"),
        console=console,
        refresh_per_second=8,
        transient=True,
    ) as live:
        while not waiter.done() and not stop.is_set():
            await asyncio.wait([waiter], timeout=0.1)
            live.update(_status_table(sup.processes(), "starting…"))
    late = waiter.result() if waiter.done() else []
    waiter.cancel()
    code = 0
    if not stop.is_set():
        console.print(
            _status_table(sup.processes(), f"{topo.name}: up in {time.monotonic() - started:.1f}s")
        )
        if late:
            console.print(
                f"[yellow]not ready after {ready_timeout:g}s:[/yellow] "
                f"{', '.join(late)} — see 'qanat logs SERVICE'"
            )
        gateway = [p for p in sup.processes() if p.group == GATEWAY]
        if gateway:
            console.print(
                f"\n  Open [bold cyan]{gateway[0].url}[/bold cyan]  "
                "(Ctrl-C to stop; 'qanat status' in another terminal)\n"
            )
        else:
            console.print("\n  Running (Ctrl-C to stop; 'qanat status' in another terminal)\n")
        await stop.wait()
    console.print("[bold]qanat[/bold] stopping: draining instances (Ctrl-C again to force)…")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    server.close()
    await sup.stop()
    with contextlib.suppress(FileNotFoundError):
        control.socket_path(topo.state_path).unlink()
    console.print("[bold]qanat[/bold] stopped.")
    return code


def status(
    path: DirOpt = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show every process of the running system: status, URL, pid, restarts."""
    topo = _load(path)
    reply = _call(topo, {"cmd": "status"})
    if as_json:
        print(json.dumps(reply["processes"], indent=2))
    else:
        console.print(_status_table(reply["processes"], f"{topo.name}"))


def down(path: DirOpt = Path(".")) -> None:
    """Stop the running system gracefully (drain, deregister, exit)."""
    topo = _load(path)
    _call(topo, {"cmd": "down"})
    sock = control.socket_path(topo.state_path)
    deadline = time.monotonic() + 60
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # waiting for the supervisor to finish its graceful stop
    console.print("stopped" if not sock.exists() else "still stopping; check 'qanat status'")


def scale(
    service: Annotated[str, typer.Argument(help="Service name from qanat.yaml.")],
    replicas: Annotated[int, typer.Argument(help="Number of instances to run.")],
    path: DirOpt = Path("."),
) -> None:
    """Change the number of instances of a service, live."""
    topo = _load(path)
    _call(topo, {"cmd": "scale", "service": service, "replicas": replicas}, timeout=120)
    console.print(f"{service}: {replicas} instance(s)")


def logs(
    service: Annotated[str, typer.Argument(help="Service name (or 'gateway').")],
    path: DirOpt = Path("."),
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", help="Lines of history per instance.")
    ] = 50,
) -> None:
    """Print the logs of every instance of a service, prefixed with the instance name."""
    topo = _load(path)
    log_dir = topo.state_path / "logs"
    files = sorted(log_dir.glob(f"{service}-*.log")) + sorted(log_dir.glob(f"{service}.log"))
    if not files:
        known = sorted({f.stem.rsplit("-", 1)[0] for f in log_dir.glob("*.log")})
        err.print(
            f"[red]error:[/red] no logs for {service!r} in {log_dir} "
            f"(services with logs: {', '.join(known) or 'none'})"
        )
        raise typer.Exit(1)
    offsets: dict[Path, int] = {}
    for f in files:
        text = f.read_text(errors="replace").splitlines()
        for line in text[-lines:]:
            print(f"{f.stem:>12} | {line}")
        offsets[f] = f.stat().st_size
    while follow:
        try:
            time.sleep(0.2)  # tail -f polling
        except KeyboardInterrupt:
            return
        for f in sorted(log_dir.glob(f"{service}-*.log")):
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
        err.print(f"[red]error:[/red] {exc}")
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
