"""`ouro sample`: image to 8 views, 3D Gaussians and a turntable (paper Algorithm 2)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import not_implemented


class ModelChoice(str, Enum):
    auto = "auto"
    demo = "demo"
    official = "official"


def sample(
    images: Annotated[list[Path], typer.Argument(help="Input images (RGBA uses its alpha) or folders of images.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder; one sub-folder per input when several are given.")] = Path("out"),
    model: Annotated[ModelChoice, typer.Option(help="`auto`: the public weights when found locally, else the embedded demo model.")] = ModelChoice.auto,
    checkpoint: Annotated[Optional[Path], typer.Option(help="A checkpoint folder (ours, or the public Ouroboros3D weights).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Denoising steps.")] = 25,
    feedback_steps: Annotated[Optional[str], typer.Option(help="Steps that use 3D feedback, `START:END` (paper Table 3: 0:25, 10:25, 20:25). Default: all.")] = None,
    no_feedback: Annotated[bool, typer.Option("--no-feedback", help="Two-stage baseline: denoise fully, then reconstruct once.")] = False,
    guidance: Annotated[str, typer.Option(help="Classifier-free guidance `MIN:MAX`, rising linearly across the 8 views.")] = "1:3",
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same outputs.")] = 0,
    device: Annotated[Optional[str], typer.Option(help="Torch device, e.g. cpu or cuda:0. Default: cuda when available.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="float32, float16 or bfloat16. Default: float16 on CUDA, float32 on CPU.")] = None,
    keep_background: Annotated[bool, typer.Option("--keep-background", help="Use the image as is: no segmentation, crop or recentring.")] = False,
    save_intermediate: Annotated[bool, typer.Option("--save-intermediate", help="Also keep each step's x0 views and splat renders.")] = False,
) -> None:
    """Generate 8 views, 3D Gaussians (.ply) and a turntable video from one image."""
    not_implemented("sample")
