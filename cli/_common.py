"""What every subcommand shares: the error console and the one-line failure exits."""

from __future__ import annotations

from enum import Enum
from typing import Iterable, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

err_console = Console(stderr=True, highlight=False)

#: Exit code for bad input and for features not in this version (as click's usage errors).
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``ouro: error: <message>`` on one line of stderr and exit with ``code``.

    ``message`` is plain text (paths and ``ouro3d[render]`` print as they are, not as Rich markup).
    """
    err_console.print(f"[bold red]ouro: error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def seed_callback(value: int) -> int:
    """Typer callback of every ``--seed``: a seed outside ``[0, 2^63 - 1]`` is a one-line usage error
    at parse time, before a model is loaded (``ouro.conventions.check_seed``)."""
    from ouro.conventions import check_seed

    try:
        return check_seed(value, "--seed")
    except ValueError as e:
        fail(str(e))


def checked_output(check, path, option: str = "--output"):
    """``check(path, option)`` (``ouro.io.files.check_output_folder`` / ``check_output_file``), failing in one line."""
    try:
        return check(path, option)
    except ValueError as e:
        fail(str(e))


def choice_enum(name: str, values: Iterable[str]) -> type[Enum]:
    """A ``str`` Enum whose members are ``values`` (name = value), for a Typer option with those choices.

    Built from the pipelines' own tuples (:mod:`ouro.pipelines.choices`) so the CLI never repeats them.
    """
    return Enum(name, [(v, v) for v in values], type=str)


def not_implemented(command: str) -> NoReturn:
    """Exit 2 for a subcommand whose pipeline is not in this version yet."""
    fail(f"`ouro {command}` is not implemented in this version (the command line parses; the pipeline is coming).")


def resolve_device_dtype(device: str | None, dtype: str | None):
    """``--device`` / ``--dtype`` to ``(device, torch.dtype)``: cuda and float16 when a GPU is there, else cpu and float32."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    dtype = dtype or ("float16" if device.startswith("cuda") else "float32")
    if dtype not in dtypes:
        fail(f"--dtype {dtype}: choose float32, float16 or bfloat16")
    return device, dtypes[dtype]
