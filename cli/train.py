"""`ouro train`: joint SVD + LGM training (paper Algorithm 1) on accelerate and DeepSpeed."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ouro.paths import DEFAULT_RENDER_DIR, DEFAULT_RUNS_DIR

from ._common import not_implemented


class MixedPrecision(str, Enum):
    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


class Ablation(str, Enum):
    """Paper Table 2 rows."""

    separate = "separate"  # G frozen, no feedback
    joint = "joint"  # joint training, no feedback
    ccm = "ccm"  # coordinate-map feedback only
    rgb = "rgb"  # colour feedback only
    full = "full"  # both (the paper's model)


def train(
    config: Annotated[Optional[Path], typer.Option(help="Run config JSON (a run's config.json reproduces it); overrides --preset.")] = None,
    preset: Annotated[str, typer.Option(help="Model preset: tiny, small or paper.")] = "paper",
    data: Annotated[Path, typer.Option(help="Render folder from `ouro render`.")] = DEFAULT_RENDER_DIR,
    kept: Annotated[Optional[Path], typer.Option(help="Kept-object list from `ouro filter`. Default: <data>/kept.txt when it exists, else every object.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run folder. Default: runs/<name>.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name used for the default output folder. Default: <preset>-<date>_<time>.")] = None,
    gpus: Annotated[int, typer.Option(min=1, help="Processes (one per GPU) launched through accelerate; on a CPU-only machine, CPU processes over gloo.")] = 1,
    deepspeed: Annotated[bool, typer.Option("--deepspeed", help="Use DeepSpeed ZeRO-2 with the config shipped in ouro.")] = False,
    mixed_precision: Annotated[MixedPrecision, typer.Option(help="Mixed precision: fp16 (paper), bf16 or no.")] = MixedPrecision.fp16,
    max_steps: Annotated[int, typer.Option(min=1, help="Optimiser steps to train (the paper trains 30,000).")] = 30_000,
    batch_size: Annotated[int, typer.Option(min=1, help="Objects per process per step (paper: total batch 32 on 8 GPUs).")] = 4,
    grad_accum: Annotated[int, typer.Option(min=1, help="Gradient accumulation steps.")] = 1,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-5,
    ablation: Annotated[Ablation, typer.Option(help="Paper Table 2 switch: separate, joint, ccm, rgb or full.")] = Ablation.full,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Save a resumable checkpoint every N steps.")] = 1000,
    ema: Annotated[bool, typer.Option("--ema", help="Keep an exponential moving average of the weights.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in the run folder.")] = False,
    init_svd: Annotated[Optional[Path], typer.Option(help="Start F from a diffusers SVD img2vid folder.")] = None,
    init_lgm: Annotated[Optional[Path], typer.Option(help="Start G from an LGM safetensors file.")] = None,
    init_official: Annotated[Optional[Path], typer.Option(help="Start both from the public Ouroboros3D checkpoint folder.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for data order, noise and initialisation.")] = 0,
) -> None:
    """Train the multi-view generator and the Gaussian reconstructor jointly (paper Algorithm 1)."""
    not_implemented("train")
