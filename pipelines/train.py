"""Joint training of F (SVD multi-view UNet) and G (LGM) with 3D-aware feedback (paper Algorithm 1).

A plain accelerate loop, one process per GPU (CPU processes over gloo
on a machine without one), optionally DeepSpeed ZeRO-2 (``ouro/assets/deepspeed/zero2.json``):

* the step is :class:`ouro.pipelines.train_step.JointModel` (F and G in one wrapped module);
* ``accelerator.accumulate`` for gradient accumulation; clipping (1.0) only when gradients sync;
  the step counter advances only on synced steps; AdamW (lr 1e-5, as the paper); an optional linear
  warm-up, then a constant learning rate (paper) or a cosine or linear decay to 0 at ``max_steps``
  (:func:`lr_factor`); optional EMA of the trained weights;
* file output on the main process only: ``config.json`` before the first step, TensorBoard scalars
  and ``metrics.jsonl`` every step, sample images every ``sample_every`` steps (recursive sampling of
  the batch's condition image with the current weights), resumable ``checkpoint-<step>/`` every
  ``checkpoint_every`` steps (:mod:`ouro.pipelines.train_state`: safetensors + JSON, atomic, at most
  ``checkpoints_total_limit`` kept), and ``final/`` in the ouro checkpoint format
  (:func:`ouro.io.checkpoint.save_checkpoint`) that ``ouro sample --checkpoint`` reads.

The run's settings are :class:`~ouro.pipelines.train_config.TrainConfig` and the weights it starts
from come from :func:`~ouro.pipelines.train_init.build_models_for`; both are re-exported here.

Run folder::

    runs/<name>/
      config.json            this run (TrainConfig); `ouro train --config <it>` reproduces the run
      metrics.jsonl          one line per optimiser step
      tensorboard/           scalars and sample images
      samples/step-<N>.png   rows: the batch's 8 target views, generated views, splat renders
      checkpoint-<N>/        resumable state (newest used by --resume)
      final/                 released weights (+ training.json: the run config and final step)

Data and noise are keyed by the seed and the sample position (:mod:`ouro.data.dataset`,
:mod:`ouro.pipelines.train_step`): resuming replays exactly what an uninterrupted run would do, and
``N`` processes with batch ``B`` compute what one process with batch ``N * B`` would.

    >>> config = TrainConfig.create("tiny", data="data/renders", output="runs/demo", max_steps=100)
    >>> write_run_config(config)                                     # doctest: +SKIP
    >>> result = run_training(config)                                # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ouro.config import OuroConfig
from ouro.data.dataset import DatasetError, PositionSampler, PositionStream, RenderFolderDataset, collate_samples
from ouro.io.files import make_temp_folder, replace_folder, write_text_atomic
from ouro.io.checkpoint import CheckpointError, OuroModels, quiet_hf, save_checkpoint

from .train_state import (
    EMA,
    CheckpointState,
    checkpoint_name,
    finalize_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_state,
    save_tensors,
    tensors_to_cpu,
)
from .choices import ABLATIONS, LR_SCHEDULERS, MIXED_PRECISION
from .train_step import JointModel, StepOutput, make_perceptual
from .train_config import (
    CONFIG_FORMAT, DEEPSPEED_CONFIG, TrainConfig, default_run_name, init_compat,
    read_run_config, write_run_config,
)
from .machines import Machines, check_shared_folder
from .train_init import build_models_for, models_with

__all__ = [
    "CONFIG_FORMAT",
    "DEEPSPEED_CONFIG",
    "MIXED_PRECISION",
    "TrainConfig",
    "TrainResult",
    "StepLog",
    "Reporter",
    "build_models_for",
    "check_data",
    "default_run_name",
    "init_compat",
    "launch_command",
    "lr_factor",
    "read_run_config",
    "run_training",
    "train",
    "write_run_config",
]

# ------------------------------------------------------------------------------------- reporting
@dataclass
class StepLog:
    """What one optimiser step reports (main process; losses averaged over ranks and micro-steps)."""

    step: int
    max_steps: int
    loss: float
    diffusion: float
    recon: float
    recon_x0: float
    recon_clean: float
    feedback: float  #: fraction of this step's micro-steps that took the feedback pass
    feedback_total: int  #: micro-steps that took it so far (this run, resumed runs included)
    micro_steps: int  #: micro-steps so far
    lr: float
    grad_norm: float
    step_time: float  #: seconds
    samples_per_s: float
    world_size: int


class Reporter(Protocol):
    def message(self, text: str) -> None: ...
    def start(self, step: int, max_steps: int) -> None: ...
    def step(self, log: StepLog) -> None: ...
    def finish(self) -> None: ...


class _Silent:
    def message(self, text: str) -> None:
        pass

    def start(self, step: int, max_steps: int) -> None:
        pass

    def step(self, log: StepLog) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class TrainResult:
    """Where a finished run went and its last figures."""

    output: Path
    final: Path | None
    step: int
    world_size: int
    feedback_micro_steps: int
    micro_steps: int
    resumed_from: int | None
    params_in_sync: bool | None  #: every rank held the same weights at the end (None: one process)
    last: StepLog | None = None
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ accelerate
def _make_accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    cuda = torch.cuda.is_available()
    mixed = config.mixed_precision if cuda else "no"
    handlers: list = [DistributedDataParallelKwargs(find_unused_parameters=False)]
    kwargs: dict[str, Any] = {}
    if config.deepspeed:
        from accelerate.utils import DeepSpeedPlugin

        ds = json.loads(DEEPSPEED_CONFIG.read_text())
        ds["train_micro_batch_size_per_gpu"] = config.batch_size
        ds["gradient_accumulation_steps"] = config.grad_accum
        ds["gradient_clipping"] = config.max_grad_norm
        ds["fp16"]["enabled"] = mixed == "fp16"
        ds["bf16"]["enabled"] = mixed == "bf16"
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=ds, gradient_accumulation_steps=config.grad_accum,
                                                     gradient_clipping=config.max_grad_norm)
        if not cuda:  # accelerate picks no backend for DeepSpeed without a GPU: gloo it is
            handlers.append(InitProcessGroupKwargs(backend="gloo"))
        accelerator = Accelerator(mixed_precision=mixed, gradient_accumulation_steps=config.grad_accum,
                                  kwargs_handlers=handlers, **kwargs)
    else:
        accelerator = Accelerator(cpu=not cuda, mixed_precision=mixed, gradient_accumulation_steps=config.grad_accum,
                                  kwargs_handlers=handlers)
    return accelerator, mixed


def lr_factor(step: int, warmup: int, total: int, shape: str = "constant") -> float:
    """Learning-rate multiplier before optimiser step ``step`` (0-based) of a ``total``-step run.

    A linear warm-up over ``warmup`` steps (``(step + 1) / warmup``: the first step already moves),
    then ``shape``: "constant" (1), "cosine" (``(1 + cos(pi p)) / 2``) or "linear" (``1 - p``), with
    ``p = (step - warmup) / (total - warmup)`` the fraction of the post-warm-up steps done, so a
    decay reaches 0 after the last step. The shapes of diffusers' ``get_scheduler`` ("cosine",
    "linear", "constant_with_warmup"), except the warm-up's first step, which diffusers runs at 0.

        >>> [round(lr_factor(s, 2, 6, "cosine"), 3) for s in range(6)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """
    if step < warmup:
        return (step + 1) / warmup
    if shape == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if shape == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown learning-rate schedule {shape!r}; use one of {LR_SCHEDULERS}")


def _json_safe(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, list, type(None)))}


def _named_trainable(model: JointModel) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _model_state(model: JointModel) -> dict[str, Tensor]:
    return {f"generator.{k}": v for k, v in model.generator.state_dict().items()} | {
        f"reconstructor.{k}": v for k, v in model.reconstructor.state_dict().items()
    }


def _load_model_state(model: JointModel, tensors: dict[str, Tensor], where: Path) -> None:
    for name in ("generator", "reconstructor"):
        module = getattr(model, name)
        part = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
        try:
            module.load_state_dict(part, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{where}: {name} weights do not fit this run's model ({first})") from None


# ---------------------------------------------------------------------------------- checkpoints
def _save_checkpoint(accelerator, config: TrainConfig, model: JointModel, optimizer, scheduler, ema: EMA | None,
                     step: int, counters: dict) -> Path:
    """All ranks call this; rank 0 writes the shared files, each rank its own optimiser / RNG files."""
    run = Path(config.output)
    final = run / checkpoint_name(step)
    tmp = run / f".{checkpoint_name(step)}.tmp"
    rank = accelerator.process_index
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    meta: dict[str, Any] = {"step": step, **counters, "world_size": accelerator.num_processes,
                            "ablation": config.ablation, "scheduler": _json_safe(scheduler.state_dict())}
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"torch_cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_tensors(tmp / f"rng-rank{rank}.safetensors", rng)
    if config.deepspeed:
        zero = optimizer.optimizer  # accelerate's wrapper -> DeepSpeed's ZeRO optimizer
        tensors, base_meta = optimizer_to_tensors(zero.optimizer.state_dict(), prefix="base.")
        for g, part in enumerate(zero.single_partition_of_fp32_groups):
            tensors[f"fp32.{g}"] = part
        save_tensors(tmp / f"optimizer-rank{rank}.safetensors", tensors)
        scaler = getattr(zero, "loss_scaler", None)
        meta["optimizer"] = {"kind": "deepspeed-zero", "base": base_meta,
                             "loss_scaler": {k: getattr(scaler, k) for k in ("cur_scale", "cur_iter", "last_overflow_iter", "cur_hysteresis")
                                             if isinstance(getattr(scaler, k, None), (int, float))}}
    elif accelerator.is_main_process:
        tensors, opt_meta = optimizer_to_tensors(optimizer.state_dict())
        save_tensors(tmp / "optimizer.safetensors", tensors)
        meta["optimizer"] = {"kind": "torch", **opt_meta}
    scaler = getattr(accelerator, "scaler", None)
    meta["scaler"] = _json_safe(scaler.state_dict()) if scaler is not None else None
    if accelerator.is_main_process:
        save_tensors(tmp / "models.safetensors", _model_state(accelerator.unwrap_model(model)))
        if ema is not None:
            save_tensors(tmp / "ema.safetensors", ema.shadow)
            meta["ema"] = {"num_updates": ema.num_updates, "decay": ema.decay}
        (tmp / "config.json").write_text(config.to_json(), encoding="utf-8")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        finalize_checkpoint(tmp, final, meta)
        if config.checkpoints_total_limit > 0:  # oldest first, only after the new one is complete
            for _, old in list_checkpoints(run)[: -config.checkpoints_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _load_checkpoint(state: CheckpointState, accelerator, config: TrainConfig, model: JointModel, optimizer, scheduler,
                     ema: EMA | None) -> None:
    meta = state.meta
    if int(meta.get("world_size", 1)) != accelerator.num_processes and config.deepspeed:
        raise CheckpointError(f"{state.folder}: written by {meta.get('world_size')} DeepSpeed processes; resume with the same --gpus")
    if meta.get("ablation") != config.ablation:
        raise CheckpointError(f"{state.folder}: ablation {meta.get('ablation')!r}, but this run is {config.ablation!r}")
    _load_model_state(accelerator.unwrap_model(model), state.tensors("models.safetensors"), state.folder)
    opt_meta = meta.get("optimizer", {})
    rank = accelerator.process_index
    if config.deepspeed:
        if opt_meta.get("kind") != "deepspeed-zero":
            raise CheckpointError(f"{state.folder}: not a DeepSpeed checkpoint; resume without --deepspeed")
        zero = optimizer.optimizer
        tensors = state.tensors(f"optimizer-rank{rank}.safetensors")
        for g, part in enumerate(zero.single_partition_of_fp32_groups):
            part.data.copy_(tensors[f"fp32.{g}"])
        zero.optimizer.load_state_dict(optimizer_from_tensors(tensors, opt_meta["base"], prefix="base."))
        scaler = getattr(zero, "loss_scaler", None)
        for k, v in opt_meta.get("loss_scaler", {}).items():
            if scaler is not None and hasattr(scaler, k):
                setattr(scaler, k, v)
    else:
        if opt_meta.get("kind") != "torch":
            raise CheckpointError(f"{state.folder}: a DeepSpeed checkpoint; resume with --deepspeed")
        optimizer.load_state_dict(optimizer_from_tensors(state.tensors("optimizer.safetensors"), opt_meta))
    scheduler.load_state_dict(meta["scheduler"])
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    if ema is not None:
        if "ema.safetensors" in meta["files"]:
            shadow = state.tensors("ema.safetensors")
            ema.shadow = {k: shadow[k].to(ema.shadow[k].device) for k in ema.shadow}
            ema.num_updates = int(meta.get("ema", {}).get("num_updates", 0))
        else:
            warnings.warn(f"{state.folder}: no EMA in the checkpoint; the EMA restarts from the current weights", stacklevel=2)
    rng_name = f"rng-rank{rank}.safetensors"
    if rng_name in meta["files"]:
        rng = state.tensors(rng_name)
        torch.set_rng_state(rng["torch_cpu"])
        if torch.cuda.is_available():
            states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda")]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)


def _write_final(config: TrainConfig, model_cfg: OuroConfig, model: JointModel, ema: EMA | None, step: int,
                 summary: dict | None = None) -> Path:
    """``final/``: fresh CPU models with the trained (or EMA) weights, in the ouro checkpoint format."""
    run = Path(config.output)
    state = tensors_to_cpu(_model_state(model))
    if ema is not None:
        prefix = {"generator.": "generator.", "reconstructor.": "reconstructor."}
        for name, value in ema.shadow.items():
            assert any(name.startswith(p) for p in prefix), name
            state[name] = value.to("cpu", copy=True).to(state[name].dtype)
    generator, reconstructor = models_with(model_cfg, state)
    models = OuroModels(generator, reconstructor, model.conditioner, model_cfg, config.compat)
    tmp = make_temp_folder(run, prefix=".final.")
    try:
        with quiet_hf():
            folder = save_checkpoint(tmp / "final", models)
        info = {"run_config": config.to_dict(), "step": step, "ema": ema is not None, "ablation": config.ablation, **(summary or {})}
        (folder / "training.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        replace_folder(folder, run / "final")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return run / "final"


# -------------------------------------------------------------------------------------- samples
def _sample_images(config: TrainConfig, model_cfg: OuroConfig, model: JointModel, ema: EMA | None, batch: dict,
                   step: int, device: torch.device, writer) -> Path:
    """Recursive sampling of the batch's first condition image with the current (EMA) weights -> PNG grid."""
    import numpy as np
    from PIL import Image

    from .sample import SamplePipeline, SampleSettings, image_grid

    state = tensors_to_cpu(_model_state(model))
    if ema is not None:
        state.update({k: v.to("cpu", copy=True) for k, v in ema.shadow.items()})
    generator, reconstructor = models_with(model_cfg, state)  # copies: the trained modules stay as they are
    models = OuroModels(generator, reconstructor, model.conditioner, model_cfg, config.compat)
    with quiet_hf():
        pipe = SamplePipeline(models, device=device, dtype=torch.float32)
    out = pipe(batch["images"][0, 0].float().cpu(), SampleSettings(num_steps=model_cfg.diffusion.num_steps,
                                                                   feedback=bool(model_cfg.generator.feedback), seed=config.seed))
    from ouro.gaussians import render
    from ouro.geometry.cameras import denormalize_intrinsics

    size = out.views.shape[-1]
    splats = render(out.gaussians, out.c2w, denormalize_intrinsics(out.K_norm, size, size), size, size).rgb.clamp(0, 1)
    rows = [batch["images"][0].float().cpu(), out.views, splats]
    grid = torch.cat([image_grid(r, rows=1) for r in rows], dim=1)  # [3, 3H, 8W]
    folder = Path(config.output) / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:06d}.png"
    Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    if writer is not None:
        writer.add_image("samples", grid, step)
    return path


def _trim_metrics(path: Path, step: int) -> None:
    """Drop the lines of steps after ``step`` (a run killed after its last checkpoint logged them; they are redone)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by the kill
    write_text_atomic(path, "".join(line + "\n" for line in keep))


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the `train` extra brings tensorboard
        warnings.warn("tensorboard is not installed: no TensorBoard logs (pip install 'ouro3d[train]')", stacklevel=2)
        return None
    return SummaryWriter(str(folder))


# ------------------------------------------------------------------------------------ the loop
def _make_deterministic():
    """One CPU thread and torch's deterministic algorithms for this process; returns the undo.

    CPU reductions are summed in another order with another thread count, so two runs of one seed
    agree bit for bit only at the same count: accelerate sets one thread per worker only when
    ``OMP_NUM_THREADS`` is unset, and an in-process run inherits its caller's. On CUDA, cuBLAS also
    needs ``CUBLAS_WORKSPACE_CONFIG`` (set here if absent, effective when CUDA starts after it).
    """
    threads, algorithms = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    def restore() -> None:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(algorithms)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn

    return restore


def run_training(config: TrainConfig, resume: bool = False, reporter: Reporter | None = None) -> TrainResult:
    """Train in this process (one of ``config.gpus`` ranks when launched by accelerate).

    Args:
        config: the run (its ``output`` folder gets ``config.json`` if not there yet).
        resume: continue from the newest ``checkpoint-<N>/`` of the run folder (none: start fresh).
        reporter: progress callbacks (main process only); default silent.

    Raises:
        CheckpointError: the newest checkpoint is corrupted or does not fit this run.
        DatasetError: unusable training data.
    """
    import torch.distributed as dist

    config.check()
    env_before = os.environ.get("ACCELERATE_USE_DEEPSPEED")
    restore = _make_deterministic() if config.deterministic else None
    accelerator, mixed = _make_accelerator(config)
    try:
        return _train(config, resume, reporter or _Silent(), accelerator, mixed)
    finally:
        if restore is not None:
            restore()
        accelerator.end_training()  # also destroys the process group (DeepSpeed / gloo exit cleanly)
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        _reset_accelerate()
        if env_before is None:
            os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        else:
            os.environ["ACCELERATE_USE_DEEPSPEED"] = env_before


def _train(config: TrainConfig, resume: bool, reporter: Reporter, accelerator, mixed: str) -> TrainResult:
    from torch.utils.data import DataLoader

    world, rank = accelerator.num_processes, accelerator.process_index
    main = accelerator.is_main_process
    notes: list[str] = []
    if config.mixed_precision != mixed:
        notes.append(f"mixed precision {config.mixed_precision!r} needs a GPU; training in full precision (fp32) on CPU")
    run = Path(config.output)
    if main and not (run / "config.json").is_file():
        write_run_config(config)
    accelerator.wait_for_everyone()
    if config.num_machines > 1:
        check_shared_folder(accelerator, run)

    # 1. the newest checkpoint (verified before anything is built)
    state: CheckpointState | None = None
    if resume:
        latest = latest_checkpoint(run)
        if latest is not None:
            state = read_state(latest)
        elif main:
            notes.append(f"{run}: no checkpoint to resume from; starting at step 0")

    # 2. models, optimiser, schedule
    torch.manual_seed(config.seed)
    generator, reconstructor, conditioner, model_cfg, build_notes = build_models_for(config)
    notes += build_notes
    if config.gradient_checkpointing:
        generator.enable_gradient_checkpointing()
    device = accelerator.device
    conditioner.to(device)
    perceptual = make_perceptual(config.lpips_weight) if ABLATIONS[config.ablation][0] else None
    if perceptual is not None:
        perceptual.to(device)
    model = JointModel(generator, reconstructor, conditioner, config.step_settings(), perceptual)
    model.train()
    groups = [{"params": [p for p in m.parameters() if p.requires_grad]} for m in (generator, reconstructor)]
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.warmup_steps, config.max_steps, config.lr_scheduler))
    model, optimizer = accelerator.prepare(model, optimizer)
    inner: JointModel = accelerator.unwrap_model(model)
    trainable = _named_trainable(inner)
    ema = EMA(trainable, config.ema_decay) if config.ema else None

    step, micro, feedback_total, start_step = 0, 0, 0, None
    if state is not None:
        _load_checkpoint(state, accelerator, config, model, optimizer, scheduler, ema)
        step = state.step
        micro = int(state.meta["micro_step"])
        feedback_total = int(state.meta.get("feedback_micro_steps", 0))
        start_step = step
        saved_world, saved_batch = int(state.meta.get("world_size", world)), int(state.meta.get("batch_size", config.batch_size))
        if (saved_world, saved_batch) != (world, config.batch_size):
            consumed = micro * saved_world * saved_batch  # samples drawn so far; continue after them
            micro = -(-consumed // (world * config.batch_size))
            notes.append(f"{state.folder}: written with {saved_world} process(es) x batch {saved_batch}; the data stream "
                         f"continues after its {consumed} samples, but the run is no longer bit-identical to an uninterrupted one")
        notes.append(f"resumed from {state.folder} (step {step})")

    # 3. data: this rank's share of each micro-step's global batch
    dataset = RenderFolderDataset(config.data, image_size=model_cfg.generator.image_size,
                                  num_views=model_cfg.camera.num_views, frame_choice=config.frame_choice, kept=config.kept)
    stream = PositionStream(dataset, config.seed)
    sampler = PositionSampler(config.batch_size, rank, world, start=micro)
    loader = DataLoader(stream, batch_size=config.batch_size, sampler=sampler, collate_fn=collate_samples,
                        num_workers=config.workers, persistent_workers=False)

    writer = _tensorboard(run / "tensorboard") if main else None
    if main:
        _trim_metrics(run / "metrics.jsonl", step)
    metrics = open(run / "metrics.jsonl", "a", encoding="utf-8") if main else None
    for note in notes:
        if main:
            reporter.message(note)
    reporter.start(step, config.max_steps) if main else None

    last: StepLog | None = None
    sums: dict[str, float] = {}
    n_micro = 0
    t_step = time.perf_counter()
    batch: dict | None = None
    try:
        data_iter = iter(loader)
        while step < config.max_steps:
            batch = next(data_iter)
            images = batch["images"].to(device, non_blocking=True)
            c2w, K_norm = batch["c2w"].to(device), batch["K_norm"].to(device)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    out: StepOutput = model(images, c2w, K_norm, batch["positions"], torch.tensor(micro))
                accelerator.backward(out.loss)
                grad_norm = None
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(list(trainable.values()), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            micro += 1
            n_micro += 1
            feedback_total += int(out.feedback.item() > 0.5)
            for name in ("loss", "diffusion", "recon", "recon_x0", "recon_clean", "feedback"):
                sums[name] = sums.get(name, 0.0) + float(getattr(out, name).detach())
            if not accelerator.sync_gradients:
                continue

            # one optimiser step done
            lr_used = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            if ema is not None:
                ema.update(trainable)
            means = torch.tensor([sums[k] / n_micro for k in sorted(sums)], device=device)
            means = accelerator.reduce(means, "mean") if world > 1 else means
            avg = dict(zip(sorted(sums), means.tolist()))
            elapsed = time.perf_counter() - t_step
            gn = float(grad_norm) if grad_norm is not None else float("nan")
            last = StepLog(step, config.max_steps, avg["loss"], avg["diffusion"], avg["recon"], avg["recon_x0"],
                           avg["recon_clean"], avg["feedback"], feedback_total, micro, lr_used, gn,
                           elapsed, config.batch_size * world * n_micro / max(elapsed, 1e-9), world)
            sums, n_micro = {}, 0
            if main:
                row = dataclasses.asdict(last)
                metrics.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}) + "\n")
                metrics.flush()
                if writer is not None:
                    for k in ("loss", "diffusion", "recon", "recon_x0", "recon_clean", "feedback", "lr", "grad_norm", "samples_per_s"):
                        v = getattr(last, k)
                        if math.isfinite(v):
                            writer.add_scalar(f"train/{k}", v, step)
                reporter.step(last)
            if config.sample_every and step % config.sample_every == 0 and main:
                path = _sample_images(config, model_cfg, inner, ema, batch, step, device, writer)
                reporter.message(f"samples: {path}")
            if step % config.checkpoint_every == 0 or step == config.max_steps:
                counters = {"micro_step": micro, "feedback_micro_steps": feedback_total, "batch_size": config.batch_size,
                            "grad_accum": config.grad_accum, "seed": config.seed}
                path = _save_checkpoint(accelerator, config, model, optimizer, scheduler, ema, step, counters)
                if main:
                    reporter.message(f"checkpoint: {path}")
            t_step = time.perf_counter()

        # 4. the end: replicas in sync?, final/ weights
        in_sync = None
        if world > 1:
            total = sum(float(p.detach().double().sum()) for p in trainable.values())
            sums_all = accelerator.gather(torch.tensor([total], device=device, dtype=torch.float64))
            in_sync = bool(torch.allclose(sums_all, sums_all[:1].expand_as(sums_all), rtol=0, atol=0))
        final = None
        if main:
            summary = {"world_size": world, "params_in_sync": in_sync, "micro_steps": micro,
                       "feedback_micro_steps": feedback_total, "resumed_from": start_step}
            final = _write_final(config, model_cfg, inner, ema, step, summary)
            reporter.message(f"final weights: {final}")
        accelerator.wait_for_everyone()
    finally:
        if main:
            reporter.finish()
            if metrics is not None:
                metrics.close()
            if writer is not None:
                writer.close()
    return TrainResult(run, final, step, world, feedback_total, micro, start_step, in_sync, last, notes)


def _reset_accelerate() -> None:
    """Forget accelerate's process-wide state, so that another run in this process starts clean."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# ------------------------------------------------------------------------------------- launching
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(config: TrainConfig, resume: bool = False, port: int | None = None,
                   machines: Machines | None = None) -> list[str]:
    """The ``accelerate launch`` argv that starts this machine's ``config.gpus`` worker processes of this run.

    Data parallel: ``--multi_gpu --num_processes N`` (on a CPU-only machine the workers build
    ``Accelerator(cpu=True)``: gloo; ``--cpu`` would silently start one process). DeepSpeed:
    ``--use_deepspeed`` with the shipped ZeRO-2 config. Several machines (``machines``, see
    :mod:`ouro.pipelines.machines`): accelerate's multi-node arguments, ``N = gpus x num_machines``
    processes in all, DeepSpeed through the ``standard`` (torchrun) multi-node launcher.
    """
    machines = machines or Machines()
    if machines.num_machines != config.num_machines:
        raise ValueError(f"the run spans {config.num_machines} machine(s), the launch {machines.num_machines}")
    run_config = Path(config.output) / "config.json"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(config.gpus * machines.num_machines),
           "--num_machines", str(machines.num_machines), "--dynamo_backend", "no",
           "--main_process_port", str(machines.main_process_port or port or _free_port())]
    if machines.multi:
        cmd += ["--machine_rank", str(machines.machine_rank), "--main_process_ip", str(machines.main_process_ip)]
        if config.deepspeed:
            cmd += ["--deepspeed_multinode_launcher", "standard"]
    cuda = torch.cuda.is_available()
    cmd += ["--mixed_precision", config.mixed_precision if cuda else "no"]
    if config.deepspeed:
        cmd += ["--use_deepspeed", "--deepspeed_config_file", str(DEEPSPEED_CONFIG),
                "--gradient_accumulation_steps", str(config.grad_accum)]
    else:
        cmd += ["--multi_gpu"]
    cmd += ["-m", "ouro.cli.train", str(run_config)]
    if resume:
        cmd.append("--resume")
    return cmd


def check_data(config: TrainConfig, frames: bool = True) -> RenderFolderDataset:
    """The run's training objects, every one checked before the first step (:meth:`RenderFolderDataset.verify`).

    Raises:
        DatasetError: no usable render folder or kept list, or some objects are unusable (a bad
            meta.json, a missing, damaged or truncated frame): the message lists the first three
            and says how to fix them, so a run does not stop hours in at the first bad object.
    """
    dataset = RenderFolderDataset(config.data, config.model.generator.image_size, config.model.camera.num_views,
                                  config.frame_choice, config.kept)
    problems = dataset.verify(frames=frames)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise DatasetError(
            f"{len(problems)} of {len(dataset)} training objects in {config.data} are unusable: {shown}. Re-render them, "
            f"or train on the rest: `ouro filter {config.data}` leaves them out of its kept.txt, which `ouro train` reads by default"
        )
    return dataset


def train(config: TrainConfig, resume: bool = False, reporter: Reporter | None = None,
          env: dict[str, str] | None = None, check: bool = True,
          machines: Machines | None = None) -> TrainResult | int:
    """Check the data (:func:`check_data`, unless ``check`` is False: the caller did), write
    ``config.json``, then train: in this process (one process on one machine, no DeepSpeed) or
    through ``accelerate launch`` (returns the launcher's exit code; the workers report themselves).
    With several machines, every machine calls this with its own ``machines.machine_rank``."""
    config.check()
    if check:
        check_data(config)
    write_run_config(config)
    if config.gpus == 1 and config.num_machines == 1 and not config.deepspeed:
        return run_training(config, resume, reporter)
    proc = subprocess.run(launch_command(config, resume, machines=machines), env={**os.environ, **(env or {})}, check=False)
    return proc.returncode
