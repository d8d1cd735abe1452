"""Resumable training state: ``checkpoint-<step>/`` folders of safetensors + JSON, never pickle.

Layout of one checkpoint (resumable state kept apart from the released weights)::

    checkpoint-000500/
      config.json                 the run's config (ablation, data, optimiser, ... : see pipelines/train_config.py)
      models.safetensors          generator.* (F) and reconstructor.* (G) weights
      ema.safetensors             EMA of the trained weights (with --ema)
      optimizer.safetensors       AdamW state (data parallel: one copy, rank 0), or
      optimizer-rank<r>.safetensors   per rank under DeepSpeed ZeRO (fp32 master partition + AdamW state)
      rng-rank<r>.safetensors     each rank's torch RNG states
      state.json                  step counters, optimiser hyper-parameters, scheduler, loss scaler,
                                  EMA count, and every file's size and sha256 (written last)

A checkpoint is written into ``.checkpoint-<step>.tmp`` and renamed into place once complete, so a
crash never leaves a half folder under the final name; :func:`read_state` checks every file
against the manifest and raises :class:`~ouro.io.checkpoint.CheckpointError` on any mismatch.
Tensors are read with ``safetensors`` only (no pickle anywhere).
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ouro.io.checkpoint import CheckpointError
from ouro.io.files import file_sha256, replace_folder

__all__ = [
    "STATE_FILE",
    "EMA",
    "CheckpointState",
    "checkpoint_name",
    "list_checkpoints",
    "latest_checkpoint",
    "read_state",
    "finalize_checkpoint",
    "optimizer_to_tensors",
    "optimizer_from_tensors",
    "tensors_to_cpu",
    "save_tensors",
    "load_tensors",
]

STATE_FILE = "state.json"
FORMAT, VERSION = "ouro-train-state", 1
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``[(step, folder)]`` of the finished-looking checkpoints (name ``checkpoint-<digits>``), oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


# ------------------------------------------------------------------------------------- tensors
def tensors_to_cpu(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU copies (no shared storage, as safetensors requires)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def save_tensors(path: Path, tensors: Mapping[str, Tensor]) -> None:
    save_file(tensors_to_cpu(tensors), str(path))


def load_tensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable tensors ({exc}); the checkpoint is corrupted") from None


def optimizer_to_tensors(state_dict: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, Tensor], dict]:
    """A torch optimizer ``state_dict`` as ``(tensors, json)``: tensors ``state.<i>.<key>``; the rest JSON."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}state.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_tensors(tensors: Mapping[str, Tensor], meta: Mapping[str, Any], prefix: str = "") -> dict:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix + "state."):
            continue
        idx, key = name[len(prefix) + len("state."):].split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ----------------------------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of parameters, ``decay_n = min(decay, (1 + n) / (10 + n))`` as the
    public code's ``LitEma``; the shadow is fp32."""

    def __init__(self, params: Mapping[str, nn.Parameter], decay: float = 0.9999) -> None:
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {n: p.detach().float().clone() for n, p in params.items()}

    @torch.no_grad()
    def update(self, params: Mapping[str, nn.Parameter]) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for n, p in params.items():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - decay)

    @contextmanager
    @torch.no_grad()
    def applied(self, params: Mapping[str, nn.Parameter]) -> Iterator[None]:
        """Temporarily copy the averaged weights into ``params`` (restored on exit)."""
        backup = {n: p.detach().clone() for n, p in params.items()}
        for n, p in params.items():
            p.copy_(self.shadow[n])
        try:
            yield
        finally:
            for n, p in params.items():
                p.copy_(backup[n])


# -------------------------------------------------------------------------------------- reading
@dataclass
class CheckpointState:
    """A verified checkpoint folder: ``folder``, its ``state.json`` (``meta``) and ``config.json``."""

    folder: Path
    meta: dict
    config: dict

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def tensors(self, name: str) -> dict[str, Tensor]:
        if name not in self.meta["files"]:
            raise CheckpointError(f"{self.folder}: no {name} in this checkpoint")
        return load_tensors(self.folder / name)


def read_state(folder: str | Path) -> CheckpointState:
    """Open and verify a checkpoint folder (every listed file present with its size and sha256).

    Raises:
        CheckpointError: naming the folder and what is wrong.
    """
    folder = Path(folder)
    hint = "delete it to resume from the previous checkpoint"
    path = folder / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder}: incomplete checkpoint (no {STATE_FILE}); {hint}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: unreadable {STATE_FILE} or config.json ({exc}); {hint}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ouro training state (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: written by a newer ouro (version {meta['version']}); upgrade ouro")
    files = meta.get("files")
    if not isinstance(files, dict) or "models.safetensors" not in files:
        raise CheckpointError(f"{path}: no file manifest; {hint}")
    for name, info in files.items():
        if "/" in name or name.startswith(".") or not re.match(r"^[A-Za-z0-9._-]+$", name):
            raise CheckpointError(f"{path}: bad file name {name[:80]!r} in the manifest")
        file = folder / name
        if not file.is_file():
            raise CheckpointError(f"{folder}: {name} is missing; the checkpoint is corrupted, {hint}")
        if file.stat().st_size != int(info["bytes"]):
            raise CheckpointError(f"{folder}: {name} has {file.stat().st_size} bytes, expected {info['bytes']}; "
                                  f"the checkpoint is corrupted (truncated?), {hint}")
        if file_sha256(file) != info["sha256"]:
            raise CheckpointError(f"{folder}: {name} does not match its sha256; the checkpoint is corrupted, {hint}")
    return CheckpointState(folder, meta, config)


def finalize_checkpoint(tmp: Path, final: Path, meta: dict) -> Path:
    """Write the manifest and ``state.json`` into ``tmp``, then rename it to ``final`` (main process only)."""
    files = {}
    for file in sorted(tmp.iterdir()):
        if file.is_file() and file.name != STATE_FILE:
            files[file.name] = {"bytes": file.stat().st_size, "sha256": file_sha256(file)}
    meta = {"format": FORMAT, "version": VERSION, **meta, "files": files}
    (tmp / STATE_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    replace_folder(tmp, final)  # a re-run of the same step (e.g. after a crash right after saving) replaces it
    return final
