"""The ``qanat`` command line: thin typer commands over the runtime."""

from __future__ import annotations

import typer

from qanat.cli import config as _config
from qanat.cli import registry as _registry
from qanat.cli import run as _run

app = typer.Typer(
    name="qanat",
    help="qanat: run, inspect and operate a system of Python services.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """qanat: run, inspect and operate a system of Python services."""


app.add_typer(_registry.app, name="registry")
app.add_typer(_config.app, name="config")
_run.register(app)


def main() -> None:
    """Entry point of the ``qanat`` console script."""
    app()
