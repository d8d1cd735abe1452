"""Camera conditioning of the multi-view UNet: per-feature-pixel Plücker rays -> harmonic embedding -> MLP.

At the input of every UNet block (and before the mid block) the generator adds
``PluckerEmbedding(harmonic_embedding(rays))`` to the features (OFFICIAL.md 6.1-6.8):

* :func:`unet_plucker_rays` gives the ``(o x d, d)`` rays at the feature resolution. By default
  (``compat=None``) these are the true pinhole rays of :func:`ouro.geometry.plucker_rays`.
  ``compat="official"`` reproduces the public checkpoint's formula instead (OFFICIAL.md 6.2-6.5):
  a transposed pixel grid and a world transform by ``c2w`` *transposed* without translation.
* :func:`harmonic_embedding` maps the 6-vector to 78 numbers: ``[sin(36) | cos(36) | x]`` with the
  36 products ordered component-major (``x0*1, x0*2, ..., x0*32, x1*1, ...``) (OFFICIAL.md 6.6).
* :class:`PluckerEmbedding` is the per-block MLP ``embed = Linear(78 -> C), SiLU, Linear(C -> C)``
  with PyTorch's default initialisation (OFFICIAL.md 6.7), so its names match the listing
  (``down_plucker.0.embed.0.weight`` ...).

    >>> rays = unet_plucker_rays(c2w, K_norm, 32, 32)            # [B, V, 6, 32, 32]
    >>> emb = harmonic_embedding(rays.movedim(-3, -1))           # [B, V, 32, 32, 78]
    >>> PluckerEmbedding(320)(emb).shape                         # [B, V, 32, 32, 320]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ouro.gaussians.gaussians import Compat
from ouro.geometry.rays import plucker_rays

__all__ = ["harmonic_embedding", "harmonic_dim", "unet_plucker_rays", "PluckerEmbedding"]


def harmonic_dim(in_dim: int = 6, num_frequencies: int = 6) -> int:
    """Width of :func:`harmonic_embedding`: ``in_dim * (2 * num_frequencies + 1)`` (78 for Plücker rays)."""
    return in_dim * (2 * num_frequencies + 1)


def harmonic_embedding(x: Tensor, num_frequencies: int = 6) -> Tensor:  # [..., D] -> [..., D * (2n + 1)]
    """NeRF-style harmonic embedding with frequencies ``2^0 .. 2^(n-1)``, input appended.

    Output ``[sin(p) | cos(p) | x]`` where ``p[..., d * n + k] = x[..., d] * 2^k`` (component-major,
    as the public checkpoint orders it). Computed in at least float32, returned in ``x.dtype``.
    """
    work = torch.promote_types(x.dtype, torch.float32)
    xw = x.to(work)
    freqs = 2.0 ** torch.arange(num_frequencies, device=x.device, dtype=work)  # [n]
    # [..., D, 1] * [n] -> [..., D, n] -> [..., D * n]   (component-major)
    prods = (xw[..., None] * freqs).flatten(-2)
    return torch.cat([prods.sin(), prods.cos(), xw], dim=-1).to(x.dtype)


def _official_plucker_rays(
    c2w: Tensor,  # [..., 4, 4]
    K_norm: Tensor,  # [..., 3, 3]
    resolution: int,
) -> Tensor:  # [..., 6, R, R]
    """The public ``ray_sample`` + ``encode_plucker`` formula (OFFICIAL.md 6.2-6.5), channels first.

    The entry at feature ``(row a, col b)`` uses ``u = (a + 0.5) / R`` (camera-x from the ROW) and
    ``v = (b + 0.5) / R``; the camera point ``((u - cx)/fx, (v - cy)/fy, 1, 1)`` is multiplied by
    ``c2w`` transposed (``R^T p`` with no translation); direction ``normalise(R^T p - C)``; origin
    ``C``; channels ``(C x d, d)``.
    """
    dev, dt = c2w.device, c2w.dtype
    idx = (torch.arange(resolution, device=dev, dtype=dt) + 0.5) / resolution
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")  # [R, R] each; rows[a, b] = (a + 0.5) / R
    fx, fy = K_norm[..., 0, 0, None, None], K_norm[..., 1, 1, None, None]
    cx, cy = K_norm[..., 0, 2, None, None], K_norm[..., 1, 2, None, None]
    x = (rows - cx) / fx  # [..., R, R]  camera-x from the row index (the transposition quirk)
    y = (cols - cy) / fy
    one = torch.ones_like(x)
    p_cam = torch.stack([x, y, one, one], dim=-1)  # [..., R, R, 4]
    # contraction with the first (row) index of c2w: out_j = sum_i c2w[i, j] p_i = (c2w^T p)_j
    world = (c2w[..., None, None, :, :].transpose(-1, -2) @ p_cam[..., None])[..., :3, 0]  # [..., R, R, 3]
    centre = c2w[..., None, None, :3, 3]  # [..., 1, 1, 3]
    dirs = torch.nn.functional.normalize(world - centre, dim=-1)
    moment = torch.linalg.cross(centre.expand_as(dirs), dirs, dim=-1)
    return torch.cat([moment, dirs], dim=-1).movedim(-1, -3)


def unet_plucker_rays(
    c2w: Tensor,  # [..., 4, 4] camera-to-world, OpenCV
    K_norm: Tensor,  # [..., 3, 3] normalised intrinsics
    height: int,
    width: int,
    compat: Compat = None,
) -> Tensor:  # [..., 6, H, W]
    """Plücker rays ``(o x d, d)`` of a ``height x width`` UNet feature map, channels first.

    Args:
        c2w: ``[..., 4, 4]`` camera-to-world poses, OpenCV axes, object units.
        K_norm: ``[..., 3, 3]`` intrinsics normalised by the image size (valid at any resolution).
        height, width: feature-map size (the latent size divided by ``2^level``).
        compat: ``None`` (default): the true ray of every feature-pixel centre
            (:func:`ouro.geometry.plucker_rays`). ``"official"``: the public checkpoint's formula
            (transposed grid, world transform by ``c2w^T`` without translation; OFFICIAL.md 6.2-6.4),
            which needs a square map; use it with the public weights.

    Returns:
        ``[..., 6, H, W]`` in at least float32: channels 0-2 the moment, 3-5 the unit direction.
    """
    work = torch.promote_types(c2w.dtype, torch.float32)
    c2w, K_norm = c2w.to(work), K_norm.to(work)
    if compat is None:
        return plucker_rays(c2w, K_norm, height, width)
    if compat != "official":
        raise ValueError(f"compat must be None or 'official', got {compat!r}")
    if height != width:
        raise ValueError(f"compat='official' rays need a square feature map (its grid is R x R), got {height}x{width}")
    return _official_plucker_rays(c2w, K_norm, height)


class PluckerEmbedding(nn.Module):
    """Per-block camera MLP: ``[..., 78] -> [..., C]`` (``embed`` = Linear -> SiLU -> Linear, default init).

    Its input is :func:`harmonic_embedding` of the Plücker rays, channels last.
    """

    def __init__(self, out_channels: int, num_frequencies: int = 6):
        super().__init__()
        in_channels = harmonic_dim(6, num_frequencies)
        self.embed = nn.Sequential(
            nn.Linear(in_channels, out_channels),
            nn.SiLU(),
            nn.Linear(out_channels, out_channels),
        )

    def forward(self, embedded_rays: Tensor) -> Tensor:  # [..., 78] -> [..., C]
        return self.embed(embedded_rays)
