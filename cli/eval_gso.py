"""`ouro eval-gso`: PSNR/SSIM/LPIPS on Google Scanned Objects, for views and splats."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ouro.paths import GSO_ROOT_ENV, resolve_gso_root

from ._common import not_implemented


class LpipsNet(str, Enum):
    alex = "alex"
    vgg = "vgg"


def eval_gso(
    gso_root: Annotated[Optional[Path], typer.Option(help=f"Folder of GSO objects (meshes/model.obj, materials/textures/texture.png). Default: ${GSO_ROOT_ENV}, else ~/.cache/ouro/gso.", show_default=False)] = None,
    objects: Annotated[Optional[Path], typer.Option(help="Object names to score, one per line. Default: the 100-object list shipped with ouro.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="Model to evaluate (as `ouro sample --checkpoint`).")] = None,
    predictions: Annotated[Optional[Path], typer.Option(help="Score another method's saved views (<object>/views/000.png..) instead of sampling.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder: per-object CSV, summary.json, report.")] = Path("eval/gso"),
    limit: Annotated[Optional[int], typer.Option(min=1, help="Score only the first N objects.")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    lpips_net: Annotated[LpipsNet, typer.Option(help="LPIPS backbone (the public code uses alex).")] = LpipsNet.alex,
    count_input: Annotated[bool, typer.Option("--count-input/--skip-input", help="Whether the input view counts in the metrics (the public code counts it).")] = True,
) -> None:
    """Score image-to-3D on 100 GSO objects: views, splat renders and their deltas."""
    resolve_gso_root(gso_root)
    not_implemented("eval-gso")
