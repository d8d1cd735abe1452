"""The Gaussian reconstructor G: Ouroboros3D's modified LGM (4 views -> 3D Gaussians).

``Reconstructor`` owns ``unet`` (:class:`ouro.models.lgm_unet.LGMUNet`) and LGM's extra 1x1 ``conv``
(14 -> 14), so its ``state_dict`` is exactly the public ``recon_model.pth`` key set for the ``big``
preset (ouro/assets/official/recon_model_keys.txt). It does its own input preparation as the
public model does (OFFICIAL.md 9.6-9.8): keep views 0, 2, 4, 6 of 8, ImageNet-normalise, resize
bilinearly to ``input_size``, append the 6 Plücker channels, run the U-Net with the noise-level
embedding, and flatten the per-pixel Gaussians view-major.

    >>> model = Reconstructor.from_preset("tiny")
    >>> out = model(images, c2w, K_norm, c_noise=noise_level(sigma))   # images [B, 8, 3, H, W]
    >>> out.raw.shape                                                   # [B, 4 * splat^2, 14]
    >>> gaussians = out.to_gaussians(compat="official")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import Tensor, nn

from ouro.config import PRESETS, ReconstructorConfig
from ouro.gaussians.gaussians import LAYOUT, Compat, Gaussians
from ouro.geometry.rays import camera_rays, plucker_rays
from ouro.models.lgm_unet import LGMUNet

__all__ = ["Reconstructor", "ReconstructorOutput", "noise_level", "RECONSTRUCTOR_PRESETS"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: LGM-style preset names -> the reconstructor of the ouro preset with that size (``big`` = ``paper``).
RECONSTRUCTOR_PRESETS: dict[str, str] = {"tiny": "tiny", "small": "small", "big": "paper", "paper": "paper"}
#: How the xyz channels become positions (:attr:`ouro.config.ReconstructorConfig.positions`).
POSITION_MODES = ("direct", "ray")


def noise_level(sigma: float | Tensor | None) -> Tensor:
    """``c_noise = 0.25 * ln(sigma)``, the noise level G is conditioned on; 0 for clean images.

    Args:
        sigma: EDM noise level(s), a float or a tensor of any shape ``[...]``; ``None`` or ``0``
            means a clean image and gives ``c_noise = 0`` (as in the public training code).

    Returns:
        ``[...]`` float32 tensor (a 0-dim tensor for a float or ``None``).
    """
    if sigma is None:
        return torch.zeros(())
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    if (sigma < 0).any():
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return torch.where(sigma > 0, 0.25 * torch.log(sigma.clamp_min(torch.finfo(torch.float32).tiny)), 0.0)


@dataclass
class ReconstructorOutput(BaseOutput):
    """Output of :class:`Reconstructor`.

    Attributes:
        raw: ``[B, N, 14]`` pre-activation Gaussians, ``N = V * splat^2`` ordered (view, row, column),
            channels per :data:`ouro.gaussians.LAYOUT`; positions in object units after activation
            (with ``positions="ray"`` the xyz channels already hold the pixel-aligned positions).
    """

    raw: Tensor

    def to_gaussians(self, compat: Compat = None) -> Gaussians:
        """LGM's activations (:meth:`Gaussians.from_raw`): ``[B, N, 14]`` -> :class:`Gaussians` with batch ``[B]``.

        ``compat="official"`` reproduces the public weights' rotation normalisation over all
        Gaussians (OFFICIAL.md 9.9); use it with those weights.
        """
        return Gaussians.from_raw(self.raw, compat)


class Reconstructor(ModelMixin, ConfigMixin):
    """LGM with a noise-level embedding: 4 posed views -> ``4 * splat_size^2`` Gaussians.

    Constructor arguments are the fields of :class:`ouro.config.ReconstructorConfig` (see there).
    ``in_channels`` is 9 (RGB + Plücker) and the output 14 Gaussian channels. The U-Net maps
    ``input_size`` to ``input_size * 2^(len(up_channels) - len(down_channels))``, which must equal
    ``splat_size``. ``output_size`` (the training render size) is only recorded.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        input_size: int = 256,
        input_views: Sequence[int] = (0, 2, 4, 6),
        down_channels: Sequence[int] = (64, 128, 256, 512, 1024, 1024),
        down_attention: Sequence[bool] = (False, False, False, True, True, True),
        mid_attention: bool = True,
        up_channels: Sequence[int] = (1024, 1024, 512, 256, 128),
        up_attention: Sequence[bool] = (True, True, True, False, False),
        splat_size: int = 128,
        output_size: int = 512,
        time_embed_dim: int = 128,
        layers_per_block: int = 2,
        attention_heads: int = 16,
        norm_groups: int = 32,
        positions: str = "direct",
    ):
        super().__init__()
        if positions not in POSITION_MODES:
            raise ValueError(f"positions must be one of {', '.join(POSITION_MODES)}, got {positions!r}")
        produced = input_size * 2 ** (len(up_channels) - len(down_channels))
        if produced != splat_size:
            raise ValueError(
                f"splat_size={splat_size}, but {len(down_channels)} down / {len(up_channels)} up blocks "
                f"turn input_size={input_size} into {produced}"
            )
        self.unet = LGMUNet(
            in_channels=9,
            out_channels=LAYOUT.channels,
            down_channels=down_channels,
            down_attention=down_attention,
            mid_attention=mid_attention,
            up_channels=up_channels,
            up_attention=up_attention,
            layers_per_block=layers_per_block,
            num_frames=len(input_views),
            attention_heads=attention_heads,
            norm_groups=norm_groups,
            time_embed_dim=time_embed_dim,
        )
        self.conv = nn.Conv2d(LAYOUT.channels, LAYOUT.channels, kernel_size=1)

    # ----------------------------------------------------------------------------------- builders
    @classmethod
    def from_ouro_config(cls, cfg: ReconstructorConfig) -> "Reconstructor":
        """A freshly initialised model with the sizes of ``cfg``."""
        return cls(**{f: getattr(cfg, f) for f in ReconstructorConfig.__dataclass_fields__})

    @classmethod
    def from_preset(cls, name: str) -> "Reconstructor":
        """A freshly initialised ``tiny``, ``small`` or ``big`` (= ``paper``, the public checkpoint's) model."""
        if name not in RECONSTRUCTOR_PRESETS:
            raise ValueError(f"unknown reconstructor preset {name!r}; choose one of {', '.join(RECONSTRUCTOR_PRESETS)}")
        return cls.from_ouro_config(PRESETS[RECONSTRUCTOR_PRESETS[name]].reconstructor)

    def to_ouro_config(self) -> ReconstructorConfig:
        """This model's sizes as a :class:`ReconstructorConfig` (lists from JSON become tuples)."""
        fields = ReconstructorConfig.__dataclass_fields__
        return ReconstructorConfig(**{f: tuple(v) if isinstance(v, list) else v for f, v in self.config.items() if f in fields})

    # ------------------------------------------------------------------------------------ forward
    def select_views(self, num_views: int) -> list[int]:
        """Indices of the views G reads out of ``num_views`` given ones (``input_views`` of 8, or all 4)."""
        views = list(self.config.input_views)
        if num_views == len(views):
            return list(range(num_views))
        if num_views > max(views):
            return views
        raise ValueError(f"got {num_views} views; expected {len(views)} or at least {max(views) + 1}")

    def prepare_inputs(
        self,
        images: Tensor,  # [B, V, 3, H, W] in [0, 1]
        c2w: Tensor,  # [B, V, 4, 4] camera-to-world, OpenCV
        K_norm: Tensor,  # [B, V, 3, 3] normalised intrinsics
    ) -> Tensor:  # [B * V', 9, S, S]
        """The U-Net input: ImageNet-normalised RGB resized to ``S = input_size``, then Plücker ``(o x d, d)``.

        ``V'`` = ``len(input_views)``: views 0, 2, 4, 6 of 8 (or all when 4 are given). Rows are
        ordered ``b * V' + v``. Normalisation happens at the input resolution, before the bilinear
        resize (``align_corners=False``, no antialiasing), as in the public model.
        """
        return self._network_inputs(*self._selected(images, c2w, K_norm))

    def _selected(self, images: Tensor, c2w: Tensor, K_norm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``images [B, V, 3, H, W]``, ``c2w [B, V, 4, 4]``, ``K_norm [B, V, 3, 3]`` cut to the ``V'`` views G reads."""
        b, v = images.shape[:2]
        assert images.shape[2] == 3, images.shape
        assert c2w.shape == (b, v, 4, 4), c2w.shape
        assert K_norm.shape == (b, v, 3, 3), K_norm.shape
        idx = self.select_views(v)
        return images[:, idx], c2w[:, idx], K_norm[:, idx]

    def _network_inputs(self, images: Tensor, c2w: Tensor, K_norm: Tensor) -> Tensor:  # [B * V', 9, S, S]
        """:meth:`prepare_inputs` of views already selected (``[B, V', ...]``)."""
        h, w = images.shape[-2:]
        size = self.config.input_size
        mean = images.new_tensor(IMAGENET_MEAN)[:, None, None]
        std = images.new_tensor(IMAGENET_STD)[:, None, None]
        # [B, V', 3, H, W] -> [B * V', 3, H, W]
        rgb = ((images - mean) / std).flatten(0, 1)
        if (h, w) != (size, size):
            rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        rays = plucker_rays(c2w, K_norm, size, size).flatten(0, 1)  # [B * V', 6, S, S]
        return torch.cat([rgb, rays.to(rgb.dtype)], dim=1)

    def forward(
        self,
        images: Tensor,  # [B, V, 3, H, W] in [0, 1], V = 8 (views 0, 2, 4, 6 used) or 4
        c2w: Tensor,  # [B, V, 4, 4] camera-to-world, OpenCV
        K_norm: Tensor,  # [B, V, 3, 3] normalised intrinsics
        c_noise: float | Tensor = 0.0,  # [] or [B]; 0.25 ln(sigma), 0 for clean images
        return_dict: bool = True,
    ) -> ReconstructorOutput | tuple[Tensor]:
        """Reconstruct Gaussians from posed views.

        Args:
            images: ``[B, V, 3, H, W]`` RGB in ``[0, 1]``, any ``H, W`` (resized to ``input_size``).
            c2w: ``[B, V, 4, 4]`` camera-to-world poses, OpenCV axes, object units.
            K_norm: ``[B, V, 3, 3]`` intrinsics normalised by the image size.
            c_noise: noise level of ``images`` (:func:`noise_level`): a float, ``[]`` or ``[B]`` tensor.
            return_dict: return a :class:`ReconstructorOutput` (default) or the tuple ``(raw,)``.

        Returns:
            ``raw`` ``[B, V' * splat_size^2, 14]`` with Gaussian index ``(v * splat + row) * splat + col``.
        """
        b = images.shape[0]
        images, c2w, K_norm = self._selected(images, c2w, K_norm)  # [B, V', ...]
        x = self._network_inputs(images, c2w, K_norm).to(self.dtype)  # [B * V', 9, S, S]
        n_views = c2w.shape[1]
        c_noise = torch.as_tensor(c_noise, dtype=torch.float32, device=x.device)
        if c_noise.ndim == 0 or c_noise.shape == (1,):
            c_noise = c_noise.reshape(1).expand(b)
        if c_noise.shape != (b,):
            raise ValueError(f"c_noise must be a float, [] or [B={b}] tensor, got shape {tuple(c_noise.shape)}")
        out = self.conv(self.unet(x, c_noise.repeat_interleave(n_views)))  # [B * V', 14, s, s]
        s = out.shape[-1]
        # [B * V', 14, s, s] -> [B, V', s, s, 14] -> [B, V' * s * s, 14]
        raw = out.reshape(b, n_views, LAYOUT.channels, s, s).permute(0, 1, 3, 4, 2).reshape(b, n_views * s * s, -1)
        if self.config.positions == "ray":
            raw = self._ray_positions(raw, c2w, K_norm, s)
        if not return_dict:
            return (raw,)
        return ReconstructorOutput(raw=raw)

    def _ray_positions(self, raw: Tensor, c2w: Tensor, K_norm: Tensor, size: int) -> Tensor:
        """Pixel-aligned positions: ``raw [B, V' * s * s, 14]`` with its xyz channels replaced by
        ``o + (|o| + tanh(raw_x)) d``, the point on the ray ``(o, d)`` of each splat pixel's centre
        of its input view (cameras look at the object at the origin, so depth ``|o|`` is the centre plane).
        ``c2w [B, V', 4, 4]`` and ``K_norm [B, V', 3, 3]`` are the selected views' cameras."""
        b = raw.shape[0]
        origins, dirs = camera_rays(c2w.float(), K_norm.float(), size, size)  # [B, V', s, s, 3] x 2
        origins, dirs = origins.reshape(b, -1, 3), dirs.reshape(b, -1, 3)
        depth = origins.norm(dim=-1, keepdim=True) + torch.tanh(raw[..., :1].float())
        means = (origins + depth * dirs).to(raw.dtype)
        return torch.cat([means, raw[..., LAYOUT.means.stop:]], dim=-1)

    @property
    def num_gaussians(self) -> int:
        """Gaussians per object: ``len(input_views) * splat_size^2`` (65,536 for ``big``)."""
        return len(self.config.input_views) * self.config.splat_size**2

