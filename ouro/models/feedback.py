"""3D-aware feedback: render G's Gaussians at the generated views into F's condition maps.

Training (paper Algorithm 1) and sampling (Algorithm 2) both turn Gaussians into the two maps the
adapters read, ``[rendered RGB, canonical coordinate map]``, here and nowhere else.

* ``compat=None``: expected depth from the rasterizer, :func:`ouro.geometry.coordinate_maps` with
  one global cube ``[-bound, bound]^3 -> [0, 1]`` (supplementary 1.2), background 0.
* ``compat="official"``: the public checkpoint's recipe (OFFICIAL.md 8): alpha-weighted,
  un-normalised depth; integer pixel indices mixed with normalised intrinsics;
  ``clamp(0.001 * X + 0.5, 0, 1)``; background 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ouro.gaussians import Gaussians, render
from ouro.gaussians.gaussians import Compat
from ouro.geometry.cameras import denormalize_intrinsics
from ouro.geometry.coordinate_maps import coordinate_maps

__all__ = ["FeedbackMaps", "render_feedback", "official_coordinate_maps"]


@dataclass
class FeedbackMaps:
    """What G's Gaussians look like from F's views.

    Attributes:
        rgb: ``[B, V, 3, H, W]`` rendered colour on white, in [0, 1] (adapter 0's input).
        ccm: ``[B, V, 3, H, W]`` canonical coordinate map in [0, 1] (adapter 1's input).
        alpha: ``[B, V, 1, H, W]`` rendered opacity.
        depth: ``[B, V, 1, H, W]`` rendered z-depth (see :func:`ouro.gaussians.render`).
    """

    rgb: Tensor
    ccm: Tensor
    alpha: Tensor
    depth: Tensor

    def as_list(self, names: tuple[str, ...] = ("rgb", "ccm")) -> list[Tensor]:
        """The maps in adapter order (``GeneratorConfig.feedback``)."""
        return [getattr(self, n) for n in names]


def official_coordinate_maps(
    depth: Tensor,  # [..., 1, H, W] alpha-weighted depth
    c2w: Tensor,  # [..., 4, 4]
    K_norm: Tensor,  # [..., 3, 3]
) -> Tensor:  # [..., 3, H, W]
    """The public checkpoint's coordinate maps, quirks included (OFFICIAL.md 8.2-8.5)."""
    height, width = depth.shape[-2:]
    d = depth[..., 0, :, :]
    v, u = torch.meshgrid(
        torch.arange(height, device=d.device, dtype=d.dtype), torch.arange(width, device=d.device, dtype=d.dtype), indexing="ij"
    )
    fx, fy = K_norm[..., 0, 0, None, None], K_norm[..., 1, 1, None, None]
    cx, cy = K_norm[..., 0, 2, None, None], K_norm[..., 1, 2, None, None]
    cam = torch.stack([(u - cx) * d / fx, (v - cy) * d / fy, d], dim=-1)  # [..., H, W, 3]
    world = (c2w[..., None, None, :3, :3] @ cam.unsqueeze(-1))[..., 0] + c2w[..., None, None, :3, 3]
    world = world * (d > 0).unsqueeze(-1).to(world.dtype)
    return (0.001 * world + 0.5).clamp(0, 1).movedim(-1, -3)


def render_feedback(
    gaussians: Gaussians,  # batch [B]
    c2w: Tensor,  # [B, V, 4, 4] or [V, 4, 4]
    K_norm: Tensor,  # same leading dims, normalised intrinsics
    size: int,
    compat: Compat = None,
    bound: float = 1.0,
    backend: str = "auto",
) -> FeedbackMaps:
    """Render the feedback maps at ``size x size`` on a white background (differentiable)."""
    K = denormalize_intrinsics(K_norm, size, size)
    out = render(gaussians, c2w, K, size, size, background=(1.0, 1.0, 1.0), backend=backend, compat=compat)
    lead = out.depth.shape[:-3]
    cams = c2w.expand(lead + (4, 4)).to(out.depth.dtype)
    Ks = K_norm.expand(lead + (3, 3)).to(out.depth.dtype)
    if compat == "official":
        ccm = official_coordinate_maps(out.depth, cams, Ks)
    else:
        ccm = coordinate_maps(out.depth, cams, Ks, mask=out.alpha > 0.5, bound=bound)
    return FeedbackMaps(rgb=out.rgb.clamp(0, 1), ccm=ccm, alpha=out.alpha, depth=out.depth)
