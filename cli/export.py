"""`ouro export`: Gaussians to PLY and to a coloured mesh."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ._common import not_implemented


class ExportFormat(str, Enum):
    ply = "ply"
    glb = "glb"
    obj = "obj"


def export(
    gaussians: Annotated[Path, typer.Argument(help="A 3DGS PLY file (e.g. out/gaussians.ply).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file.", show_default=False)],
    format: Annotated[ExportFormat, typer.Option("--format", help="`ply`: cleaned splats; `glb`/`obj`: a vertex-coloured mesh fused from rendered depth and colour.")] = ExportFormat.glb,
) -> None:
    """Export splats to a standard 3DGS PLY or to a coloured mesh (GLB/OBJ)."""
    not_implemented("export")
