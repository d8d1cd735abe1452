"""The `ouro` command: one Typer app, one module per subcommand."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ouro import __version__

from .app import app_
from .eval_gso import eval_gso
from .export import export
from .filter import filter_
from .render import render
from .sample import sample
from .train import train

app = typer.Typer(
    name="ouro",
    help="Image-to-3D by 3D-aware recursive diffusion (Ouroboros3D): render data, train, sample, evaluate, export, and a local web app.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("render")(render)
app.command("filter")(filter_)
app.command("train")(train)
app.command("sample")(sample)
app.command("eval-gso")(eval_gso)
app.command("export")(export)
app.command("app")(app_)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ouro {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """Image-to-3D by 3D-aware recursive diffusion (Ouroboros3D): render data, train, sample, evaluate, export, and a local web app."""


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
