"""What ``qanat up`` and ``qanat status`` show a person: tables, progress, the banner.

On a terminal, progress is a live table redrawn in place while instances
start; piped into a file or another program it is one line per event
(``users-0 ready at http://127.0.0.1:41234 (1.2s)``), so logs stay readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

_STATUS_STYLE = {"ready": "green", "starting": "yellow", "restarting": "red", "failed": "red"}
_HEALTH_STYLE = {"passing": "green", "warning": "yellow", "critical": "red"}
COLUMNS = ("service", "instance", "process", "health", "url", "pid", "restarts")


def _styled(value: str, styles: Mapping[str, str]) -> str:
    style = styles.get(value.split(",", 1)[0])
    return f"[{style}]{value}[/{style}]" if style else value


def status_table(rows: Sequence[Mapping[str, Any]], title: str) -> Table:
    """One row per process: its supervisor status next to its health in the registry."""
    table = Table(title=title, title_justify="left")
    for column in COLUMNS:
        # A URL or a name cut in the middle is useless: those columns never wrap.
        table.add_column(column, no_wrap=column in ("instance", "url"))
    for r in rows:
        table.add_row(
            str(r["group"]),
            str(r["name"]),
            _styled(str(r["status"]), _STATUS_STYLE),
            _styled(str(r.get("health", "-")), _HEALTH_STYLE),
            str(r["url"]),
            str(r["pid"] or "-"),
            str(r["restarts"]),
        )
    return table


def progress_title(rows: Sequence[Mapping[str, Any]], elapsed: float) -> str:
    """``starting… 3/5 ready (2.1s)``: the title of the live table."""
    ready = sum(1 for r in rows if r["status"] == "ready")
    return f"starting… {ready}/{len(rows)} ready ({elapsed:.1f}s)"


def banner(console: Console, gateway_url: str | None, where: str = "") -> None:
    """The closing lines of a start: where to go and how to stop.

    ``where`` is what the other commands need to find this system (``-d DIR``).
    """
    if gateway_url:
        console.print(f"\n  Open [bold cyan]{gateway_url}[/bold cyan]")
    else:
        console.print("\n  Running (no gateway routes in qanat.yaml: call the instances directly)")
    w = f" {where}" if where else ""
    console.print(
        f"  Ctrl-C stops everything gracefully. From another terminal: 'qanat status{w}', "
        f"'qanat scale SERVICE N{w}', 'qanat logs SERVICE{w}', 'qanat down{w}'\n"
    )
