"""A training run's configuration: :class:`TrainConfig` (the run folder's ``config.json``) and its files.

``TrainConfig`` round-trips through JSON (``format: ouro-train-config``); ``ouro train --config``
reads it back, and ``--resume`` reads the run folder's copy. The run itself is
:mod:`ouro.pipelines.train`; the weights it starts from, :mod:`ouro.pipelines.train_init`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import ouro
from ouro.config import OuroConfig, get_preset
from ouro.io.checkpoint import CHECKPOINT_FILE, is_checkpoint
from ouro.io.files import write_text_atomic

from ouro.conventions import FRAME_CHOICES, check_seed

from .choices import LR_SCHEDULERS, MIXED_PRECISION
from .train_step import StepSettings, ablation_feedback

__all__ = [
    "CONFIG_FORMAT",
    "DEEPSPEED_CONFIG",
    "LR_SCHEDULERS",
    "MIXED_PRECISION",
    "TrainConfig",
    "default_run_name",
    "init_compat",
    "read_run_config",
    "write_run_config",
]

CONFIG_FORMAT = "ouro-train-config"
#: The shipped DeepSpeed ZeRO-2 config (package data of ``ouro``); batch, accumulation, clipping and
#: precision ("auto" there) are filled in from the run's config.
DEEPSPEED_CONFIG = Path(ouro.__file__).resolve().parent / "assets" / "deepspeed" / "zero2.json"


# ---------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; ``config.json`` of the run folder, round-trips through JSON."""

    model: OuroConfig  #: model sizes; ``generator.feedback`` follows ``ablation``
    data: str  #: render folder (``ouro render``)
    output: str  #: run folder
    kept: str | None = None  #: kept list (``ouro filter``); None = every object
    frame_choice: str = "every2"  #: "every2" (paper) or "linspace" (public code)
    ablation: str = "full"  #: paper Table 2 row: separate, joint, ccm, rgb, full
    gpus: int = 1  #: processes per machine (one per GPU; CPU processes without a GPU)
    num_machines: int = 1  #: machines the run spans (``ouro.pipelines.machines``); processes = gpus x num_machines
    deepspeed: bool = False  #: DeepSpeed ZeRO-2 with the shipped config
    mixed_precision: str = "fp16"  #: no, fp16 (paper), bf16; forced to "no" on CPU
    max_steps: int = 30_000  #: optimiser steps
    batch_size: int = 4  #: objects per process per micro-step
    grad_accum: int = 1  #: micro-steps per optimiser step
    lr: float = 1e-5  #: AdamW learning rate (paper)
    weight_decay: float = 0.01  #: AdamW weight decay (torch's default, as the public code)
    warmup_steps: int = 0  #: linear learning-rate warm-up
    lr_scheduler: str = "constant"  #: after the warm-up: "constant" (paper), or "cosine" / "linear" decay to 0 at max_steps
    max_grad_norm: float = 1.0  #: gradient clipping (paper); 0 = off
    feedback_prob: float = 0.5  #: probability of the feedback pass
    cfg_dropout: float = 0.1  #: conditioning dropout for classifier-free guidance
    recon_loss: str | None = None  #: "mse" (paper) or "l1" (public code); None: l1 under compat "official", else mse
    detach_feedback: bool | None = None  #: feedback maps detached in pass B (paper); None: not under compat "official"
    lpips_weight: float = 1.0  #: LPIPS weight in the reconstruction loss (paper: 1)
    recon_weight: float = 1.0  #: reconstruction loss weight in the total
    ema: bool = False  #: keep an EMA of the trained weights (used for final/ and samples)
    ema_decay: float = 0.9999
    gradient_checkpointing: bool = False  #: recompute F's UNet blocks in backward (memory for time)
    checkpoint_every: int = 1000  #: resumable checkpoint every N steps
    checkpoints_total_limit: int = 3  #: keep at most this many checkpoint-<N>/ (0 = all)
    sample_every: int = 1000  #: sample images every N steps (0 = never)
    workers: int = 2  #: DataLoader worker processes per process
    init_svd: str | None = None  #: diffusers SVD img2vid folder (F's UNet, VAE, CLIP)
    init_lgm: str | None = None  #: LGM safetensors (G; the noise-level embedding starts fresh)
    init_official: str | None = None  #: public Ouroboros3D weights (or an ouro checkpoint) for F, G, VAE, CLIP
    compat: str | None = None  #: "official" when starting from the public weights (their quirks)
    seed: int = 0
    #: one CPU thread per process and torch's deterministic algorithms: the same seed gives the same
    #: losses whatever OMP_NUM_THREADS the caller exported (exact resume needs the same setting throughout)
    deterministic: bool = False

    def __post_init__(self) -> None:
        # the recipe left open follows the weights: the public training code's when fine-tuning the
        # public checkpoint (L1 + LPIPS, feedback maps not detached), the paper's text otherwise
        public = self.compat == "official"
        if self.recon_loss is None:
            object.__setattr__(self, "recon_loss", "l1" if public else "mse")
        if self.detach_feedback is None:
            object.__setattr__(self, "detach_feedback", not public)

    # ------------------------------------------------------------------------------ building
    @classmethod
    def create(cls, preset: str | OuroConfig = "tiny", **fields: Any) -> "TrainConfig":
        """A config for ``preset`` with ``fields`` overridden; ``model.generator.feedback`` follows the ablation."""
        model = get_preset(preset) if isinstance(preset, str) else preset
        if fields.get("init_official") and "compat" not in fields:
            fields["compat"] = init_compat(fields["init_official"])
        config = cls(model=model, **{"data": "data/renders", "output": "", **fields})
        return config.with_ablation(config.ablation)

    def with_ablation(self, ablation: str) -> "TrainConfig":
        feedback = ablation_feedback(ablation)
        generator = dataclasses.replace(self.model.generator, feedback=feedback)
        return dataclasses.replace(self, ablation=ablation, model=dataclasses.replace(self.model, generator=generator))

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        self.step_settings().check()
        if tuple(self.model.generator.feedback) != ablation_feedback(self.ablation):
            raise ValueError(f"model.generator.feedback {tuple(self.model.generator.feedback)} does not match ablation {self.ablation!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {LR_SCHEDULERS}, got {self.lr_scheduler!r}")
        if self.frame_choice not in FRAME_CHOICES:
            raise ValueError(f"frame_choice must be every2 or linspace, got {self.frame_choice!r}")
        for name in ("gpus", "num_machines", "max_steps", "batch_size", "grad_accum", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoints_total_limit", "sample_every", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or self.max_grad_norm < 0 or not 0 < self.ema_decay < 1:
            raise ValueError("need lr > 0, weight_decay >= 0, max_grad_norm >= 0 and 0 < ema_decay < 1")
        if self.init_official and (self.init_svd or self.init_lgm):
            raise ValueError("--init-official already holds F, G, VAE and CLIP; do not combine it with --init-svd / --init-lgm")
        if self.model.name == "paper" and not (self.init_svd or self.init_official):
            raise ValueError("the paper preset needs SVD's VAE and CLIP: pass --init-svd DIR or --init-official DIR")
        if self.compat not in (None, "official"):
            raise ValueError(f"compat must be null or 'official', got {self.compat!r}")
        if not self.output:
            raise ValueError("output (the run folder) is empty")
        check_seed(self.seed)

    def step_settings(self) -> StepSettings:
        return StepSettings(
            ablation=self.ablation, feedback_prob=self.feedback_prob, cfg_dropout=self.cfg_dropout,
            recon_loss=self.recon_loss, detach_feedback=self.detach_feedback, lpips_weight=self.lpips_weight,
            recon_weight=self.recon_weight,
            p_mean=self.model.diffusion.p_mean, p_std=self.model.diffusion.p_std, sigma_data=self.model.diffusion.sigma_data,
            seed=self.seed, compat=self.compat,
        )

    # ---------------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["model"] = self.model.to_dict()
        return {"format": CONFIG_FORMAT, "version": 1, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
            raise ValueError(f"not an ouro training config (format {data.get('format') if isinstance(data, dict) else None!r})")
        data = {k: v for k, v in data.items() if k not in ("format", "version")}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"training config: unknown field(s) {sorted(unknown)}")
        data["model"] = OuroConfig.from_dict(data["model"])
        data.setdefault("detach_feedback", True)  # configs written before the field existed detached the maps
        return cls(**data)


def init_compat(init_official: str | Path) -> str | None:
    """The compatibility mode of ``--init-official``: an ouro checkpoint's own, else ``"official"`` (the public weights)."""
    folder = Path(init_official)
    if is_checkpoint(folder):
        try:
            return json.loads((folder / CHECKPOINT_FILE).read_text(encoding="utf-8")).get("compat")
        except (OSError, ValueError):
            return None
    return "official"


def read_run_config(path: str | Path) -> TrainConfig:
    """A run's ``config.json`` (or any TrainConfig JSON). Raises ``ValueError`` naming the file."""
    path = Path(path)
    try:
        return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def write_run_config(config: TrainConfig) -> Path:
    """Create the run folder and write ``config.json`` atomically (before the first step)."""
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out / "config.json", config.to_json())


def default_run_name(preset: str) -> str:
    return f"{preset}-{datetime.now().strftime('%Y-%m-%d_%H%M%S')}"
