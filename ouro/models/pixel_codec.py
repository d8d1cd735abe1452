"""A parameter-free, exactly invertible stand-in for SVD's VAE: pixels rearranged into latents.

For models small enough to train on a CPU (the embedded demo), a VAE is a liability: SVD's real
one is 84M parameters whose weights are not available offline, and a random one loses the image.
:class:`PixelShuffleVAE` makes "latents" by space-to-depth: ``[3, H, W] -> [3 r^2, H/r, W/r]``
(``PixelUnshuffle(r)``), times a fixed scale, and decodes by the exact inverse. It duck-types the
parts of ``AutoencoderKLTemporalDecoder`` that ouro uses (``encode(x).latent_dist.mode()/sample()``,
``decode(z, num_frames).sample``, ``config.scaling_factor``, ``dtype``), so it slots into
:class:`~ouro.models.svd_parts.SVDConditioner` and round-trips through ``save_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

__all__ = ["PixelShuffleVAE"]


@dataclass
class _Deterministic:
    """A point-mass "posterior": mode and samples are the latent itself."""

    latent: Tensor

    def mode(self) -> Tensor:
        return self.latent

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return self.latent


@dataclass
class _Encoded:
    latent_dist: _Deterministic


@dataclass
class _Decoded:
    sample: Tensor


class PixelShuffleVAE(ModelMixin, ConfigMixin):
    """Space-to-depth "VAE": ``[N, 3, H, W]`` in [-1, 1] <-> ``[N, 3 factor^2, H/factor, W/factor]``.

    Args:
        factor: r, the downsampling factor (``GeneratorConfig.vae_downsample``).
        scaling_factor: kept for interface parity; ``encode`` returns unscaled latents as the VAE
            does, and callers multiply by it for diffusion targets (1.0 keeps pixels in [-1, 1]).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, factor: int = 4, scaling_factor: float = 1.0, in_channels: int = 3):
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(factor)
        self.shuffle = nn.PixelShuffle(factor)
        # a buffer so the module has a dtype and device, and save_pretrained has a tensor to write
        self.register_buffer("_anchor", torch.zeros(1), persistent=True)

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * self.config.factor**2

    def encode(self, x: Tensor, return_dict: bool = True) -> _Encoded:  # [N, 3, H, W] -> latents [N, 3 r^2, H/r, W/r]
        return _Encoded(_Deterministic(self.unshuffle(x)))

    def decode(self, z: Tensor, num_frames: int | None = None, return_dict: bool = True) -> _Decoded:  # inverse
        return _Decoded(self.shuffle(z))
