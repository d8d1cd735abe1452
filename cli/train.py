"""`ouro train`: joint SVD + LGM training (paper Algorithm 1) on accelerate and DeepSpeed."""

from __future__ import annotations

import dataclasses
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ouro.conventions import FRAME_CHOICES
from ouro.paths import DEFAULT_RENDER_DIR, DEFAULT_RUNS_DIR
from ouro.pipelines.choices import ABLATIONS, LR_SCHEDULERS, MIXED_PRECISION, RECON_LOSSES

from ._common import choice_enum, err_console, fail, seed_callback


MixedPrecision = choice_enum("MixedPrecision", MIXED_PRECISION)
Ablation = choice_enum("Ablation", ABLATIONS)
FrameChoice = choice_enum("FrameChoice", FRAME_CHOICES)
LRScheduler = choice_enum("LRScheduler", LR_SCHEDULERS)
ReconLoss = choice_enum("ReconLoss", RECON_LOSSES)


#: Options that may change when a run is resumed (they do not change what a step computes).
RESUMABLE_OVERRIDES = ("max_steps", "checkpoint_every", "checkpoints_total_limit", "sample_every", "workers")
#: CLI option -> TrainConfig field, for the options that map one to one.
_FIELDS = (
    "data", "kept", "gpus", "deepspeed", "mixed_precision", "max_steps", "batch_size", "grad_accum", "lr", "ablation",
    "checkpoint_every", "ema", "init_svd", "init_lgm", "init_official", "seed", "frame_choice", "lpips_weight",
    "recon_loss", "detach_feedback", "recon_weight", "sample_every", "feedback_prob", "cfg_dropout", "warmup_steps", "lr_scheduler", "weight_decay",
    "max_grad_norm", "ema_decay", "checkpoints_total_limit", "workers", "gradient_checkpointing", "deterministic",
)


def train(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option(help="Run config JSON: a run's config.json reproduces that run in --output (a new folder; the stored one is not reused), options given here win; or a model config (ouro.json's config) for the model alone. Overrides --preset.")] = None,
    preset: Annotated[str, typer.Option(help="Model preset: tiny, demo, small or paper (see ouro/config.py).")] = "paper",
    data: Annotated[Path, typer.Option(help="Render folder from `ouro render`.")] = DEFAULT_RENDER_DIR,
    kept: Annotated[Optional[Path], typer.Option(help="Kept-object list from `ouro filter`. Default: <data>/kept.txt when it exists, else every object.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run folder. Default: runs/<name>.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name used for the default output folder. Default: <preset>-<date>_<time>.")] = None,
    gpus: Annotated[int, typer.Option(min=1, help="Processes on this machine (one per GPU) launched through accelerate; on a CPU-only machine, CPU processes over gloo.")] = 1,
    num_machines: Annotated[Optional[int], typer.Option(min=1, help="Machines the run spans; run the same command on each, with its --machine-rank (processes in all: --gpus x this). Default: $SLURM_NNODES, else $NNODES, else 1.", show_default=False)] = None,
    machine_rank: Annotated[Optional[int], typer.Option(min=0, help="This machine's rank, 0 on the main machine. Default: $SLURM_NODEID, else $NODE_RANK, else 0.", show_default=False)] = None,
    main_process_ip: Annotated[Optional[str], typer.Option(help="Address of machine 0, the same on every machine (several machines). Default: $MASTER_ADDR.", show_default=False)] = None,
    main_process_port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Port on machine 0, the same on every machine (several machines). Default: $MASTER_PORT, else 29500.", show_default=False)] = None,
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
    seed: Annotated[int, typer.Option(callback=seed_callback, help="Seed for data order, noise and initialisation (0 to 2^63 - 1).")] = 0,
    frame_choice: Annotated[FrameChoice, typer.Option(help="Views of a sample: every2 (paper: every 2nd frame) or linspace (public code: linspace(0, 15, 8)).")] = FrameChoice.every2,
    lpips_weight: Annotated[float, typer.Option(min=0.0, help="LPIPS weight in the reconstruction loss (paper: 1; 0 = off).")] = 1.0,
    recon_loss: Annotated[Optional[ReconLoss], typer.Option(help="Pixel term of the reconstruction loss: mse (paper) or l1 (public code). Default: l1 when starting from the public weights (--init-official), else mse.")] = None,
    detach_feedback: Annotated[Optional[bool], typer.Option("--detach-feedback/--no-detach-feedback", help="Detach the rendered feedback maps in the feedback pass (paper), or let its diffusion loss reach the reconstructor through them (public code). Default: not detached when starting from the public weights (--init-official), else detached.")] = None,
    recon_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the reconstruction loss in the total.")] = 1.0,
    feedback_prob: Annotated[float, typer.Option(min=0.0, max=1.0, help="Probability of the feedback pass (paper: 0.5).")] = 0.5,
    cfg_dropout: Annotated[float, typer.Option(min=0.0, max=1 / 3, help="Conditioning dropout for classifier-free guidance (public code: 0.1).")] = 0.1,
    warmup_steps: Annotated[int, typer.Option(min=0, help="Linear learning-rate warm-up steps.")] = 0,
    lr_scheduler: Annotated[LRScheduler, typer.Option(help="Learning rate after the warm-up: constant (paper), or a cosine or linear decay to 0 at --max-steps (a resume with another --max-steps re-stretches the rest of the decay).")] = LRScheduler.constant,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="AdamW weight decay.")] = 0.01,
    max_grad_norm: Annotated[float, typer.Option(min=0.0, help="Gradient clipping norm (paper: 1; 0 = off).")] = 1.0,
    ema_decay: Annotated[float, typer.Option(min=0.0, max=1.0, help="EMA decay (with --ema).")] = 0.9999,
    sample_every: Annotated[int, typer.Option(min=0, help="Write sample images every N steps (0 = never).")] = 1000,
    checkpoints_total_limit: Annotated[int, typer.Option(min=0, help="Keep at most this many checkpoints (0 = all).")] = 3,
    workers: Annotated[int, typer.Option(min=0, help="Data-loading worker processes per training process.")] = 2,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute F's UNet blocks in the backward pass (less memory).")] = False,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Bit-exact runs: one CPU thread per process and torch's deterministic algorithms. Without it the same --seed gives the same losses only at the same thread count (OMP_NUM_THREADS); exact --resume needs the same setting throughout.")] = False,
) -> None:
    """Train the multi-view generator and the Gaussian reconstructor jointly (paper Algorithm 1)."""
    import torch

    from ouro.config import OuroConfig, get_preset
    from ouro.data.dataset import DatasetError
    from ouro.io.checkpoint import CheckpointError
    from ouro.io.files import check_output_folder
    from ouro.pipelines.machines import resolve_machines
    from ouro.pipelines.train import (
        TrainConfig, check_data, default_run_name, init_compat, read_run_config, train as run,
    )

    # by name: typer vendors its own click, whose ParameterSource is not click.core's enum
    given = {p for p in ctx.params if getattr(ctx.get_parameter_source(p), "name", None) == "COMMANDLINE"}
    values: dict[str, Any] = {}
    for key in _FIELDS:
        value = ctx.params[key]
        values[key] = value.value if isinstance(value, Enum) else (str(value) if isinstance(value, Path) else value)

    # 1. the run folder (a default name needs the preset, known once the config is)
    if resume and output is None and name is None:
        fail("--resume needs the run folder: pass --output DIR (or --name NAME for runs/NAME)")
    if output is None and name is not None:
        output = DEFAULT_RUNS_DIR / name
    stored = output / "config.json" if output is not None else None

    # 2. the config: stored run (resume) > --config > preset + options
    try:
        if resume and stored is not None and stored.is_file():
            cfg = read_run_config(stored)
            changed = [k for k in given & set(_FIELDS) if k not in RESUMABLE_OVERRIDES and values[k] != getattr(cfg, k)]
            if changed:
                fail(f"--resume continues {stored}; it cannot change {', '.join('--' + k.replace('_', '-') for k in sorted(changed))} "
                     f"(only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE_OVERRIDES)})")
            cfg = dataclasses.replace(cfg, **{k: values[k] for k in given & set(RESUMABLE_OVERRIDES)})
        elif config is not None:
            try:
                raw = json.loads(config.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                fail(f"--config {config}: {exc}")
            if isinstance(raw, dict) and "generator" in raw:  # a model config (OuroConfig)
                cfg = TrainConfig.create(OuroConfig.from_dict(raw), **values)
            else:
                cfg = read_run_config(config)
                cfg = dataclasses.replace(cfg, **{k: values[k] for k in given & set(_FIELDS)})
        else:
            try:
                model = get_preset(preset)
            except ValueError as exc:
                fail(str(exc))
            cfg = TrainConfig.create(model, **values)
        machines = resolve_machines(num_machines, machine_rank, main_process_ip, main_process_port,
                                    default_num_machines=cfg.num_machines)
        if machines.num_machines != cfg.num_machines:
            if resume and stored is not None and stored.is_file():
                fail(f"--resume continues {stored}, which spans {cfg.num_machines} machine(s); it cannot change the number of machines "
                     f"({machines.num_machines})")
            cfg = dataclasses.replace(cfg, num_machines=machines.num_machines)
        if output is None:
            if machines.multi:
                fail("several machines write one run folder: pass --output DIR (or --name NAME), a folder all machines share")
            output = DEFAULT_RUNS_DIR / default_run_name(cfg.model.name)
        cfg = dataclasses.replace(cfg, output=str(output)).with_ablation(cfg.ablation)
        if cfg.kept is None and (Path(cfg.data) / "kept.txt").is_file():
            cfg = dataclasses.replace(cfg, kept=str(Path(cfg.data) / "kept.txt"))
        if cfg.init_official and "init_official" in given:
            cfg = dataclasses.replace(cfg, compat=init_compat(cfg.init_official))
        warning = None
        if not torch.cuda.is_available() and cfg.mixed_precision != "no":
            warning = f"no GPU: --mixed-precision {cfg.mixed_precision} needs one; training in fp32 ('no')"
            cfg = dataclasses.replace(cfg, mixed_precision="no")
        cfg.check()
        # 3. before anything is written: the run folder can be written, the weights exist, and every
        # object's meta.json and frames are sound (headers and checksums: seconds, not hours in)
        check_output_folder(cfg.output, "--output")
        for path in (cfg.init_svd, cfg.init_lgm, cfg.init_official):
            if path is not None and not Path(path).exists():
                fail(f"{path}: no such file or folder")
        ds = check_data(cfg)
    except (ValueError, DatasetError) as exc:
        fail(str(exc))
    if warning:
        err_console.print(f"[yellow]ouro: warning:[/] {warning}", highlight=False)

    err_console.print(
        f"ouro train: {cfg.model.name}, ablation {cfg.ablation}, {len(ds)} objects from {cfg.data}, "
        f"{cfg.gpus} process(es){' + DeepSpeed ZeRO-2' if cfg.deepspeed else ''}"
        + (f" on machine {machines.machine_rank} of {machines.num_machines} (main: {machines.main_process_ip}:{machines.main_process_port})"
           if machines.multi else "")
        + f", batch {cfg.batch_size} x {cfg.grad_accum} -> {cfg.output}", highlight=False)
    try:
        result = run(cfg, resume=resume, reporter=RichReporter(), check=False, machines=machines)
    except (CheckpointError, DatasetError) as exc:
        fail(str(exc), code=1)
    if isinstance(result, int):
        if result != 0:
            fail(f"training processes failed (exit code {result}); see the messages above", code=1)
        err_console.print(f"done: {cfg.output}/final", highlight=False)
        return
    err_console.print(f"done: step {result.step}, {result.feedback_micro_steps} of {result.micro_steps} micro-steps with feedback "
                      f"-> {result.final}", highlight=False)


class RichReporter:
    """A Rich progress line (step, loss, step time, samples/s); plain lines when not on a terminal."""

    def __init__(self) -> None:
        self.console = err_console
        self.progress = None
        self.task = None
        self.every = 1

    def message(self, text: str) -> None:
        (self.progress.console if self.progress is not None else self.console).print(text, highlight=False, soft_wrap=True)

    def start(self, step: int, max_steps: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.every = max(1, max_steps // 100)
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[time]} s/step  {task.fields[rate]} samples/s  feedback {task.fields[fb]}"),
                TimeRemainingColumn(), console=self.console, transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=max_steps, completed=step, loss="-", time="-", rate="-", fb="-")

    def step(self, log) -> None:
        fb = f"{log.feedback_total}/{log.micro_steps}"
        if self.progress is not None:
            self.progress.update(self.task, completed=log.step, loss=f"{log.loss:.4f}", time=f"{log.step_time:.2f}",
                                 rate=f"{log.samples_per_s:.2f}", fb=fb)
        elif log.step % self.every == 0 or log.step == log.max_steps:
            self.console.print(f"step {log.step}/{log.max_steps}  loss {log.loss:.4f} (diffusion {log.diffusion:.4f}, "
                               f"recon {log.recon:.4f})  {log.step_time:.2f} s/step  {log.samples_per_s:.2f} samples/s  "
                               f"feedback {fb}", highlight=False)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _worker(argv: list[str]) -> int:
    """A training process started by `accelerate launch`: ``python -m ouro.cli.train RUN/config.json [--resume]``."""
    from ouro.data.dataset import DatasetError
    from ouro.io.checkpoint import CheckpointError
    from ouro.pipelines.train import read_run_config, run_training

    if not argv or any(a not in ("--resume",) for a in argv[1:]):
        err_console.print("usage: python -m ouro.cli.train RUN/config.json [--resume]")
        return 2
    try:
        cfg = read_run_config(argv[0])
    except ValueError as exc:
        err_console.print(f"[bold red]ouro: error:[/] {exc}")
        return 2
    import os

    main = int(os.environ.get("RANK", "0")) == 0
    try:
        run_training(cfg, resume="--resume" in argv, reporter=RichReporter() if main else None)
    except (CheckpointError, DatasetError, ValueError) as exc:
        err_console.print(f"[bold red]ouro: error:[/] {exc}", soft_wrap=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
