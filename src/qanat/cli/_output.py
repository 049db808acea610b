"""Shared plumbing for the CLI: backend option, error handling, tables and JSON.

People get rich tables; scripts pass ``--json`` and get one JSON document (or,
for ``watch``, one JSON object per line). Errors are one line on stderr and
exit code 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from qanat.backends.sqlite_db import sqlite_path
from qanat.errors import BackendUnreachable, QanatError
from qanat.ports import ConfigChange, ConfigEntry, Instance

T = TypeVar("T")

ENV_BACKEND = "QANAT_BACKEND"

BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        "-b",
        envvar=ENV_BACKEND,
        show_envvar=True,
        help="Discovery/config backend URL: sqlite:///path.db, etcd://host:2379 or memory://.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


def require_existing(url: str) -> None:
    """For read-only commands: refuse to create a SQLite file that does not exist yet."""
    if url.startswith("sqlite:"):
        path = sqlite_path(url)
        if not path.exists():
            raise BackendUnreachable(
                f"no control database at {str(path)!r} (from {url!r}); start a system with "
                f"'qanat up' here, or pass --backend / set {ENV_BACKEND}"
            )


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with status 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine: qanat errors become one line and exit 1; Ctrl-C exits 130.

    On Ctrl-C, ``asyncio.run`` cancels the coroutine, whose ``finally`` blocks
    close the backend before we exit.
    """
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except QanatError as exc:
        fail(str(exc))


def console() -> Console:
    """A console on the current stdout (created per call, so test runners can capture it)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    """One compact JSON document on its own line, flushed (safe to pipe into ``jq``)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, sort_keys=True) + "\n")
    sys.stdout.flush()


def instance_data(instance: Instance) -> dict[str, Any]:
    """An instance as plain JSON-able data."""
    return {
        "id": instance.id,
        "service": instance.service,
        "address": instance.address,
        "port": instance.port,
        "url": instance.url,
        "tags": list(instance.tags),
        "metadata": dict(instance.metadata),
        "weight": instance.weight,
        "version": instance.version,
        "zone": instance.zone,
        "health": instance.health.value,
        "enabled": instance.enabled,
        "routable": instance.routable,
    }


def entry_data(entry: ConfigEntry) -> dict[str, Any]:
    """A config entry as plain JSON-able data."""
    return {"key": entry.key, "value": entry.value, "revision": entry.revision}


def change_data(change: ConfigChange) -> dict[str, Any]:
    """A config change as plain JSON-able data."""
    return {
        "key": change.key,
        "type": change.type.value,
        "old_value": change.old_value,
        "new_value": change.new_value,
        "revision": change.revision,
    }


_HEALTH_STYLE = {"passing": "green", "warning": "yellow", "critical": "red"}


def instances_table(service: str, instances: list[Instance]) -> Table:
    """A table of a service's instances: where they are and whether they get traffic."""
    table = Table(title=f"{service}: {len(instances)} instance(s)", title_justify="left")
    for column in ("id", "url", "health", "enabled", "weight", "version", "zone", "tags"):
        table.add_column(column)
    for i in instances:
        style = _HEALTH_STYLE[i.health.value]
        table.add_row(
            i.id,
            i.url,
            f"[{style}]{i.health.value}[/{style}]",
            "yes" if i.enabled else "[red]no[/red]",
            str(i.weight),
            i.version or "-",
            i.zone or "-",
            ",".join(i.tags) or "-",
        )
    return table


def short(value: str | None, width: int = 60) -> str:
    """A value for a table cell: one line, cut to ``width`` characters."""
    if value is None:
        return "-"
    flat = value.replace("\n", "⏎")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def changes_table(title: str, changes: list[ConfigChange]) -> Table:
    """A table of config changes, one row each."""
    table = Table(title=title, title_justify="left")
    for column in ("revision", "type", "key", "old value", "new value"):
        table.add_column(column)
    for c in changes:
        table.add_row(str(c.revision), c.type.value, c.key, short(c.old_value), short(c.new_value))
    return table


__all__ = [
    "BackendOpt",
    "JsonOpt",
    "change_data",
    "changes_table",
    "console",
    "entry_data",
    "fail",
    "instance_data",
    "instances_table",
    "print_json",
    "require_existing",
    "run",
    "short",
]
