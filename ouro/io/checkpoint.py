"""ouro checkpoint folders: safetensors weights plus JSON configs, never pickle.

Layout (what ``ouro sample --checkpoint`` and ``ouro train`` read and write)::

    DIR/
      ouro.json                 {"format": "ouro-checkpoint", "version": 1, "config": <OuroConfig>, "compat": null}
      generator/                MultiViewUNet.save_pretrained  (config.json + *.safetensors)
      reconstructor/            Reconstructor.save_pretrained
      vae/ image_encoder/ feature_extractor/ scheduler/    SVD's frozen parts (SVDConditioner)

Folders are written to a temporary sibling and renamed into place, so a crash never leaves a
half checkpoint under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ouro.config import OuroConfig
from ouro.io.files import make_temp_folder, replace_folder

__all__ = ["quiet_hf", "OuroModels", "CheckpointError", "save_checkpoint", "load_checkpoint", "is_checkpoint", "CHECKPOINT_FILE"]

CHECKPOINT_FILE = "ouro.json"
_FORMAT, _VERSION = "ouro-checkpoint", 1


@contextlib.contextmanager
def quiet_hf():
    """Silence diffusers' / transformers' warnings and progress bars (dtype casts, shard reads and writes) for a moment."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    bars = tlog.is_progress_bar_enabled()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])
        dlog.enable_progress_bar()
        if bars:
            tlog.enable_progress_bar()


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message names the folder and the problem."""


@dataclass
class OuroModels:
    """Everything sampling needs: F, G, SVD's VAE/CLIP, the preset and the compatibility mode."""

    generator: "torch.nn.Module"  # ouro.models.MultiViewUNet
    reconstructor: "torch.nn.Module"  # ouro.models.Reconstructor
    conditioner: "torch.nn.Module"  # ouro.models.svd_parts.SVDConditioner
    config: OuroConfig
    compat: str | None = None

    def to(self, device=None, dtype=None) -> "OuroModels":
        for m in (self.generator, self.reconstructor, self.conditioner):
            # casting a diffusers model to the dtype it already has only earns a warning; skip it
            same = dtype is None or all(p.dtype == dtype for p in m.parameters() if p.is_floating_point())
            m.to(device=device) if same else m.to(device=device, dtype=dtype)
        return self

    def eval(self) -> "OuroModels":
        for m in (self.generator, self.reconstructor, self.conditioner):
            m.eval()
        return self


def is_checkpoint(folder: str | os.PathLike) -> bool:
    return (Path(folder) / CHECKPOINT_FILE).is_file()


def save_checkpoint(folder: str | os.PathLike, models: OuroModels) -> Path:
    """Write ``models`` to ``folder`` atomically (replacing an existing checkpoint there)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_folder(folder.parent, prefix=f".{folder.name}.")  # umask modes: others may read the weights
    try:
        models.generator.save_pretrained(tmp / "generator", safe_serialization=True)
        models.reconstructor.save_pretrained(tmp / "reconstructor", safe_serialization=True)
        models.conditioner.save_pretrained(tmp)
        meta = {"format": _FORMAT, "version": _VERSION, "config": models.config.to_dict(), "compat": models.compat}
        (tmp / CHECKPOINT_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_checkpoint(
    folder: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> OuroModels:
    """Load an ouro checkpoint folder (safetensors only). Raises :class:`CheckpointError` if unusable."""
    from ouro.models import MultiViewUNet, Reconstructor
    from ouro.models.svd_parts import SVDConditioner

    folder = Path(folder)
    meta_path = folder / CHECKPOINT_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{folder}: not an ouro checkpoint (no {CHECKPOINT_FILE}); train one with `ouro train` or pass a folder that has it")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != _FORMAT:
            raise CheckpointError(f"{meta_path}: unknown format {meta.get('format')!r}")
        if meta.get("version", 0) > _VERSION:
            raise CheckpointError(f"{meta_path}: written by a newer ouro (version {meta['version']}); upgrade ouro")
        config = OuroConfig.from_dict(meta["config"])
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint metadata ({exc})") from None
    for sub in ("generator", "reconstructor", "vae", "image_encoder", "feature_extractor"):
        if not (folder / sub).is_dir():
            raise CheckpointError(f"{folder}: missing '{sub}/'; the checkpoint is incomplete")
    kwargs = {"use_safetensors": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    try:
        with quiet_hf():
            generator = MultiViewUNet.from_pretrained(folder / "generator", **kwargs)
            reconstructor = Reconstructor.from_pretrained(folder / "reconstructor", **kwargs)
            conditioner = SVDConditioner.from_pretrained(folder, torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError, EnvironmentError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{folder}: cannot load weights ({first}); the files may be corrupted or truncated") from None
    models = OuroModels(generator, reconstructor, conditioner, config, meta.get("compat"))
    return models.to(device=device).eval()
