"""``qanat registry ls | watch``: look at service discovery."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from qanat.backends import DEFAULT_BACKEND, open_registry
from qanat.cli._output import (
    BackendOpt,
    JsonOpt,
    console,
    instance_data,
    instances_table,
    print_json,
    require_existing,
    run,
)
from qanat.ports import Instance

app = typer.Typer(
    name="registry",
    help="Inspect service discovery: which instances are registered, healthy and enabled.",
    no_args_is_help=True,
)

ServiceArg = Annotated[str, typer.Argument(help="Service name, e.g. orders.")]


@app.command("ls")
def ls(
    service: Annotated[
        str | None, typer.Argument(help="Show this service's instances (default: all services).")
    ] = None,
    routable: Annotated[
        bool,
        typer.Option(
            "--routable", help="Only instances that receive traffic (enabled, not critical)."
        ),
    ] = False,
    backend: BackendOpt = DEFAULT_BACKEND,
    as_json: JsonOpt = False,
) -> None:
    """List services, or the instances of one service with their health and state.

    Examples: ``qanat registry ls``, ``qanat registry ls orders --json``.
    """
    run(_ls(backend, service, routable, as_json))


async def _ls(url: str, service: str | None, routable: bool, as_json: bool) -> None:
    require_existing(url)
    registry = await open_registry(url)
    try:
        names = [service] if service else await registry.services()
        found = {n: await registry.discover(n, healthy_only=routable) for n in names}
    finally:
        await registry.close()
    if service is not None:
        if as_json:
            print_json([instance_data(i) for i in found[service]])
        else:
            console().print(instances_table(service, found[service]))
        return
    if as_json:
        print_json({n: [instance_data(i) for i in found[n]] for n in names})
        return
    table = Table()
    for column in ("service", "instances", "routable"):
        table.add_column(column)
    for n in names:
        table.add_row(n, str(len(found[n])), str(sum(i.routable for i in found[n])))
    out = console()
    out.print(f"{len(names)} service(s) at {url}")
    out.print(table)


@app.command("watch")
def watch(
    service: ServiceArg, backend: BackendOpt = DEFAULT_BACKEND, as_json: JsonOpt = False
) -> None:
    """Print the service's instances now and again after every change, until Ctrl-C.

    With ``--json``, each snapshot is one line: {"service", "time", "instances"}.
    """
    run(_watch(backend, service, as_json))


async def _watch(url: str, service: str, as_json: bool) -> None:
    require_existing(url)
    registry = await open_registry(url)
    try:
        async for snapshot in registry.watch(service):
            _print_snapshot(service, snapshot, as_json)
    finally:
        await registry.close()


def _print_snapshot(service: str, snapshot: list[Instance], as_json: bool) -> None:
    if as_json:
        data = [instance_data(i) for i in snapshot]
        print_json({"service": service, "time": time.time(), "instances": data})
        return
    out = console()
    out.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim]")
    out.print(instances_table(service, snapshot))
    out.file.flush()
