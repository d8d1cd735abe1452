"""The one way pipelines and checks build the two trainable models from a preset."""

from __future__ import annotations

import contextlib

import torch

from ouro.config import OuroConfig, get_preset
from ouro.models.mv_unet import MultiViewUNet
from ouro.models.reconstructor import Reconstructor

__all__ = ["build_models", "COMPAT_MODES"]

COMPAT_MODES = (None, "official")


def build_models(
    preset: str | OuroConfig,
    device: torch.device | str = "cpu",
    compat: str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[MultiViewUNet, Reconstructor]:
    """Freshly initialised ``(mv_model, reconstructor)`` = (F, G) of a preset.

    Args:
        preset: ``tiny``, ``small``, ``paper`` or an :class:`~ouro.config.OuroConfig`.
        device: where to build; ``"meta"`` allocates nothing (structure and FLOP checks of ``paper``).
        compat: ``None`` or ``"official"``; recorded on both models as ``model.compat``, the
            default the pipelines pass to the forward passes (the public checkpoint's quirks,
            docs/OFFICIAL.md section 15).
        dtype: optional parameter dtype.
    """
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}, got {compat!r}")
    config = get_preset(preset) if isinstance(preset, str) else preset
    ctx = torch.device(device) if str(device) == "meta" else contextlib.nullcontext()
    with ctx:
        mv_model = MultiViewUNet.from_ouro_config(config.generator)
        reconstructor = Reconstructor.from_ouro_config(config.reconstructor)
    for model in (mv_model, reconstructor):
        if str(device) not in ("cpu", "meta"):
            model.to(device=device)
        if dtype is not None:
            model.to(dtype=dtype)
        model.compat = compat
    return mv_model, reconstructor
