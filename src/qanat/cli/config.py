"""``qanat config get | set | delete | ls | watch | history``: read and change live config."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from qanat.backends import DEFAULT_BACKEND, open_config_store
from qanat.cli._output import (
    BackendOpt,
    JsonOpt,
    change_data,
    changes_table,
    console,
    entry_data,
    fail,
    print_json,
    require_existing,
    run,
    short,
)
from qanat.errors import NotFound
from qanat.ports import ConfigStore

app = typer.Typer(
    name="config",
    help="Read, change and watch live configuration (string values under /-separated keys).",
    no_args_is_help=True,
)

KeyArg = Annotated[str, typer.Argument(help="Config key, e.g. orders/timeout.")]


async def _open(url: str, *, create: bool = False) -> ConfigStore:
    if not create:
        require_existing(url)
    return await open_config_store(url)


@app.command("get")
def get(key: KeyArg, backend: BackendOpt = DEFAULT_BACKEND, as_json: JsonOpt = False) -> None:
    """Print a key's value (exactly, for scripts); exit 1 if the key is missing."""
    run(_get(backend, key, as_json))


async def _get(url: str, key: str, as_json: bool) -> None:
    store = await _open(url)
    try:
        entry = await store.get(key)
    finally:
        await store.close()
    if entry is None:
        raise NotFound(f"key {key!r} not found at {url}")
    if as_json:
        print_json(entry_data(entry))
    else:
        typer.echo(entry.value)


@app.command("set")
def set_(
    key: KeyArg,
    value: Annotated[str, typer.Argument(help="The new value (a string; quote it in the shell).")],
    expected_revision: Annotated[
        int | None,
        typer.Option(
            "--expected-revision",
            min=0,
            help="Write only if the key's revision is this (0: only if absent); else exit 1.",
        ),
    ] = None,
    backend: BackendOpt = DEFAULT_BACKEND,
    as_json: JsonOpt = False,
) -> None:
    """Write a value and print the new store revision; watchers see it at once."""
    run(_set(backend, key, value, expected_revision, as_json))


async def _set(url: str, key: str, value: str, expected: int | None, as_json: bool) -> None:
    store = await _open(url, create=True)
    try:
        if expected is None:
            revision = await store.set(key, value)
        elif await store.compare_and_set(key, value, expected_revision=expected):
            revision = (await store.get(key) or fail(f"key {key!r} vanished")).revision
        else:
            current = await store.get(key)
            now = f"is at revision {current.revision}" if current else "does not exist"
            fail(f"not written: key {key!r} {now}, expected revision {expected}")
    finally:
        await store.close()
    if as_json:
        print_json({"key": key, "value": value, "revision": revision})
    else:
        typer.echo(f"{key} = {short(value)} (revision {revision})")


@app.command("delete")
def delete(key: KeyArg, backend: BackendOpt = DEFAULT_BACKEND) -> None:
    """Delete a key; exit 1 if it did not exist."""
    run(_delete(backend, key))


async def _delete(url: str, key: str) -> None:
    store = await _open(url)
    try:
        existed = await store.delete(key)
    finally:
        await store.close()
    if not existed:
        raise NotFound(f"key {key!r} not found at {url}")
    typer.echo(f"deleted {key}")


@app.command("ls")
def ls(
    prefix: Annotated[
        str, typer.Argument(help="Only keys starting with this (plain prefix).")
    ] = "",
    backend: BackendOpt = DEFAULT_BACKEND,
    as_json: JsonOpt = False,
) -> None:
    """List keys with their values and revisions."""
    run(_ls(backend, prefix, as_json))


async def _ls(url: str, prefix: str, as_json: bool) -> None:
    store = await _open(url)
    try:
        entries = await store.get_all(prefix)
    finally:
        await store.close()
    if as_json:
        print_json([entry_data(e) for e in entries.values()])
        return
    table = Table(title=f"{len(entries)} key(s) under {prefix or '/'!r}", title_justify="left")
    for column in ("key", "value", "revision"):
        table.add_column(column)
    for e in entries.values():
        table.add_row(e.key, short(e.value), str(e.revision))
    console().print(table)


@app.command("watch")
def watch(
    key: KeyArg,
    prefix: Annotated[
        bool, typer.Option("--prefix", help="Watch every key starting with KEY.")
    ] = False,
    from_revision: Annotated[
        int | None,
        typer.Option("--from-revision", min=0, help="First replay changes since this revision."),
    ] = None,
    backend: BackendOpt = DEFAULT_BACKEND,
    as_json: JsonOpt = False,
) -> None:
    """Print each change to KEY (or under it) as it happens, until Ctrl-C.

    With ``--json``, one change per line: {"key", "type", "old_value", "new_value", "revision"}.
    """
    run(_watch(backend, key, prefix, from_revision, as_json))


async def _watch(url: str, key: str, prefix: bool, start: int | None, as_json: bool) -> None:
    store = await _open(url)
    try:
        async for change in store.watch(key, prefix=prefix, start_revision=start):
            if as_json:
                print_json(change_data(change))
            else:
                typer.echo(
                    f"{change.revision:>6} {change.type.value:<8} {change.key} "
                    f"{short(change.old_value, 30)} -> {short(change.new_value, 30)}"
                )
    finally:
        await store.close()


@app.command("history")
def history(
    key: KeyArg,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most this many changes.")
    ] = 20,
    backend: BackendOpt = DEFAULT_BACKEND,
    as_json: JsonOpt = False,
) -> None:
    """Show a key's recent changes, newest first (backends keep at least the last 100)."""
    run(_history(backend, key, limit, as_json))


async def _history(url: str, key: str, limit: int, as_json: bool) -> None:
    store = await _open(url)
    try:
        changes = await store.history(key, limit=limit)
    finally:
        await store.close()
    if not changes:
        raise NotFound(f"no history for key {key!r} at {url}")
    if as_json:
        print_json([change_data(c) for c in changes])
    else:
        console().print(changes_table(f"history of {key}", changes))
