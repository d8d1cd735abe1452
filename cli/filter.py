"""`ouro filter`: keep or drop rendered objects, with a reason for each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ouro.paths import DEFAULT_RENDER_DIR

from ._common import not_implemented


def filter_(
    render_dir: Annotated[Path, typer.Argument(help="Render folder written by `ouro render`.")] = DEFAULT_RENDER_DIR,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Kept-object list (one uid per line), read by `ouro train --kept`. Default: <render_dir>/kept.txt.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="CSV with keep/drop and the reason per object. Default: <render_dir>/filter_report.csv.")] = None,
    min_alpha: Annotated[float, typer.Option(help="Drop objects whose mean foreground fraction per frame is below this.")] = 0.01,
    min_color_std: Annotated[float, typer.Option(help="Drop texture-less objects: foreground colour standard deviation below this (0-1 scale).")] = 0.02,
    max_border_alpha: Annotated[float, typer.Option(help="Drop objects clipped by the frame: foreground fraction on the image border above this.")] = 0.01,
    licenses: Annotated[Optional[str], typer.Option(help="Comma-separated licence allow-list applied where metadata has one (e.g. `by,by-sa,cc0`).")] = None,
) -> None:
    """Drop bad objects (no texture, empty or clipped renders, bad metadata) and write the kept list."""
    not_implemented("filter")
