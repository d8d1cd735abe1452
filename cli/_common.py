"""What every subcommand shares: the error console and the one-line failure exits."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

err_console = Console(stderr=True, highlight=False)

#: Exit code for bad input and for features not in this version (as click's usage errors).
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``ouro: error: <message>`` on one line of stderr and exit with ``code``."""
    err_console.print(f"[bold red]ouro: error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def not_implemented(command: str) -> NoReturn:
    """Exit 2 for a subcommand whose pipeline is not in this version yet."""
    fail(f"`ouro {command}` is not implemented in this version (the command line parses; the pipeline is coming).")
