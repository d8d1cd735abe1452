"""Canonical coordinate maps (CCM): world XYZ per pixel, globally normalised into [0, 1].

The paper (supplementary 1.2) back-projects each view's depth into one world frame and applies
**one** scale and offset shared by all views, so the same surface point has the same value in
every view (unlike per-view normalised depth). Here the world is the library's object frame
(unit box at the origin), and the normalisation maps the cube ``[-bound, bound]^3`` onto
``[0, 1]^3``: ``ccm = (X / bound + 1) / 2``, clamped. Background pixels are 0.

The public checkpoint's recipe (integer pixel indices with normalised K, ``0.001 X + 0.5``, grey
background) is a quirk reproduced by the models under ``compat="official"``, not here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ouro.geometry.rays import _camera_directions

__all__ = ["unproject_depth", "coordinate_maps"]


def unproject_depth(
    depth: Tensor,  # [..., H, W] z-depth
    c2w: Tensor,  # [..., 4, 4] camera-to-world, OpenCV
    K_norm: Tensor,  # [..., 3, 3] normalised intrinsics
) -> Tensor:  # [..., H, W, 3] world points
    """World position of every pixel centre at its z-depth: ``c2w @ (K^-1 (u, v, 1) * z)``."""
    height, width = depth.shape[-2:]
    cam = _camera_directions(K_norm, height, width) * depth.unsqueeze(-1)
    rot, trans = c2w[..., None, None, :3, :3], c2w[..., None, None, :3, 3]
    return (rot @ cam.unsqueeze(-1))[..., 0] + trans


def coordinate_maps(
    depth: Tensor,  # [..., 1, H, W] z-depth, object units
    c2w: Tensor,  # [..., 4, 4] camera-to-world, OpenCV
    K_norm: Tensor,  # [..., 3, 3] normalised intrinsics
    mask: Tensor | None = None,  # [..., 1, H, W] bool or {0,1}; default depth > 0
    bound: float = 1.0,
) -> Tensor:  # [..., 3, H, W] in [0, 1]
    """Canonical coordinate maps of a batch of views.

    Args:
        depth: z-depth per pixel (0 on the background unless ``mask`` says otherwise).
        c2w, K_norm: the views' poses and normalised intrinsics.
        mask: foreground pixels; others are set to 0.
        bound: half-size of the world cube mapped onto ``[0, 1]``; one value for all views.

    Returns:
        ``(X / bound + 1) / 2`` clamped to ``[0, 1]``, channels (X, Y, Z), 0 on the background.
    """
    if depth.shape[-3] != 1:
        raise ValueError(f"depth must have one channel, got shape {tuple(depth.shape)}")
    if mask is None:
        mask = depth > 0
    xyz = unproject_depth(depth[..., 0, :, :], c2w, K_norm).movedim(-1, -3)
    ccm = ((xyz / bound + 1.0) * 0.5).clamp(0.0, 1.0)
    return ccm * mask.to(ccm.dtype)
