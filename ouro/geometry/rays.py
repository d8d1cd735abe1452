"""Per-pixel camera rays and their Plücker coordinates.

Conventions are those of :mod:`ouro.geometry.cameras`: OpenCV camera-to-world poses, normalised
intrinsics (so rays exist at any resolution) and pixel centres at ``(j + 0.5) / W, (i + 0.5) / H``.
The public checkpoint's transposed/un-translated Plücker grid is a quirk of its models and lives
behind ``compat="official"`` there, not here.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pixel_centers", "camera_rays", "plucker_rays"]


def pixel_centers(
    height: int, width: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:  # [H, W, 2]
    """Normalised image coordinates ``(u, v)`` of every pixel centre: ``((j+0.5)/W, (i+0.5)/H)``."""
    v = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    u = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def _camera_directions(K_norm: Tensor, height: int, width: int) -> Tensor:  # [..., 3, 3] -> [..., H, W, 3]
    """Un-normalised camera-space directions ``((u - cx)/fx, (v - cy)/fy, 1)`` (z = 1)."""
    uv = pixel_centers(height, width, device=K_norm.device, dtype=K_norm.dtype)
    fx, fy = K_norm[..., 0, 0, None, None], K_norm[..., 1, 1, None, None]
    cx, cy = K_norm[..., 0, 2, None, None], K_norm[..., 1, 2, None, None]
    x = (uv[..., 0] - cx) / fx
    y = (uv[..., 1] - cy) / fy
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def camera_rays(
    c2w: Tensor,  # [..., 4, 4] camera-to-world, OpenCV
    K_norm: Tensor,  # [..., 3, 3] normalised intrinsics
    height: int,
    width: int,
) -> tuple[Tensor, Tensor]:  # origins [..., H, W, 3], directions [..., H, W, 3]
    """World-space ray of every pixel centre: origin = camera centre, unit direction."""
    dirs_cam = _camera_directions(K_norm, height, width)
    rot = c2w[..., None, None, :3, :3]  # [..., 1, 1, 3, 3]
    dirs = torch.nn.functional.normalize((rot @ dirs_cam.unsqueeze(-1))[..., 0], dim=-1)
    origins = c2w[..., None, None, :3, 3].expand_as(dirs)
    return origins, dirs


def plucker_rays(
    c2w: Tensor,  # [..., 4, 4] camera-to-world, OpenCV
    K_norm: Tensor,  # [..., 3, 3] normalised intrinsics
    height: int,
    width: int,
) -> Tensor:  # [..., 6, H, W]
    """Plücker coordinates ``(o x d, d)`` of every pixel's ray, channels first.

    Channels 0-2 are the moment ``o x d`` (o the camera centre), 3-5 the unit direction ``d``, as
    LGM and Ouroboros3D order them. Computed in at least float32.
    """
    work = torch.promote_types(c2w.dtype, torch.float32)
    origins, dirs = camera_rays(c2w.to(work), K_norm.to(work), height, width)
    moment = torch.linalg.cross(origins, dirs, dim=-1)
    return torch.cat([moment, dirs], dim=-1).movedim(-1, -3).to(c2w.dtype)
