"""Differentiable rendering of 3D Gaussians: one entry point, two backends.

:func:`render` draws :class:`~ouro.gaussians.Gaussians` into pinhole cameras given in the library's
convention (``c2w`` camera-to-world, OpenCV axes, pixel intrinsics; see
:mod:`ouro.geometry.cameras`) and returns RGB, alpha and z-depth maps.

Backends:

* ``"torch"``: :mod:`ouro.gaussians._torch_impl`, a vectorised pure-PyTorch tile rasterizer that runs
  on any device (the CPU path). It agrees with a brute-force per-pixel reference to 1e-5.
* ``"gsplat"``: :func:`gsplat.rasterization` (CUDA only; the ``cuda`` extra).
* ``"auto"``: gsplat when the tensors are on CUDA and gsplat imports, else torch.

Both follow the 3DGS rasterizer's rules (EWA projection with a 0.3 px^2 low-pass, alpha skipped below
1/255, front-to-back compositing stopped before the transmittance drops below 1e-4, pixel centres at
``(j + 0.5, i + 0.5)``). One known difference: alpha is clamped at 0.99 by the torch backend (as in
3DGS and the public Ouroboros3D renderer) and at 0.999 by gsplat, so the two agree exactly only
where ``opacity * exp(-sigma) <= 0.99``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry.cameras import invert_rigid
from . import _torch_impl
from .gaussians import Compat, Gaussians, covariances

__all__ = ["RenderOutput", "render", "render_median_depth", "has_gsplat", "NEAR", "OFFICIAL_NEAR"]

Backend = Literal["auto", "torch", "gsplat"]

#: Default near limit of the drawn Gaussian centres (camera z, object units): the 3DGS projection's znear.
NEAR = 0.01
#: The public renderer's (diff-gaussian-rasterization) frustum test culls centres at ``z <= 0.2``,
#: whatever its znear; ``compat="official"`` draws the same Gaussians.
OFFICIAL_NEAR = 0.2

#: Rendered alpha below which the default (normalised) depth is 0. Any pixel a Gaussian reaches has
#: alpha >= 1/255, so this only separates empty pixels from covered ones.
DEPTH_ALPHA_EPS = 1e-6


@dataclass
class RenderOutput:
    """Rendered maps; ``...`` are the Gaussians' batch dims, V the cameras.

    Attributes:
        rgb: ``[..., V, 3, H, W]`` colour composited over the background, in [0, 1] for colours and
            background in [0, 1].
        alpha: ``[..., V, 1, H, W]`` accumulated opacity ``1 - T_final`` in [0, 1].
        depth: ``[..., V, 1, H, W]`` camera z-depth (along +z, not along the ray), object units;
            by default the expected depth of the visible surface ``sum(w_i z_i) / alpha`` (0 where
            nothing is drawn); under ``compat="official"`` the un-normalised ``sum(w_i z_i)``.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor


def has_gsplat() -> bool:
    """Whether :mod:`gsplat` can be imported (its CUDA kernels are built on first use)."""
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def render(
    gaussians: Gaussians,  # [..., N, *]
    c2w: Tensor,  # [..., V, 4, 4] camera-to-world, OpenCV axes
    K: Tensor,  # [..., V, 3, 3] pixel intrinsics
    width: int,
    height: int,
    background: Sequence[float] | Tensor = (1.0, 1.0, 1.0),  # [3] RGB in [0, 1]
    *,
    backend: Backend = "auto",
    compat: Compat = None,
    near: float | None = None,
    far: float = 100.0,
) -> RenderOutput:  # rgb [..., V, 3, H, W], alpha / depth [..., V, 1, H, W]
    """Render Gaussians into V pinhole cameras (differentiable w.r.t. the Gaussians and poses).

    Args:
        gaussians: activated Gaussians with batch dims ``...`` and N Gaussians (object frame,
            object units; quaternions wxyz).
        c2w: ``[..., V, 4, 4]`` camera-to-world matrices, OpenCV camera axes (x right, y down,
            z forward). Leading dims equal the Gaussians' batch dims, or are absent (``[V, 4, 4]``)
            to use the same cameras for every batch element.
        K: ``[..., V, 3, 3]`` **pixel** intrinsics (``cx = W/2`` is the image centre; pixel
            ``(row i, col j)`` has its centre at ``(j + 0.5, i + 0.5)``), same leading dims as ``c2w``.
        width, height: image size W, H in pixels.
        background: RGB in [0, 1], a sequence of 3 floats or a ``[3]`` tensor.
        backend: ``"auto"`` (gsplat for CUDA tensors when installed, else torch), ``"torch"`` or
            ``"gsplat"``.
        compat: ``None`` (default): quaternions are normalised, depth is the expected depth.
            ``"official"``: the public checkpoint's renderer (OFFICIAL.md 9.10, 10.4): covariances
            built from the quaternions as stored (not normalised), depth ``sum(w_i z_i)`` not
            divided by alpha, Gaussians culled at ``z <= 0.2``.
        near, far: z-range of the Gaussian centres that are drawn, object units; ``near`` defaults
            to :data:`NEAR` (0.01), or :data:`OFFICIAL_NEAR` (0.2) under ``compat="official"``.

    Returns:
        :class:`RenderOutput` with ``rgb = sum(w_i c_i) + T_final * background``, ``alpha`` and
        ``depth``, in the dtype of ``gaussians.means`` (computed in float32, or float64 for float64 inputs).

    Examples:
        >>> from ouro.geometry import orbit_cameras, intrinsics_from_fov
        >>> g = Gaussians(torch.zeros(1, 3), torch.full((1, 3), 0.1), torch.tensor([[1.0, 0, 0, 0]]),
        ...               torch.ones(1), torch.ones(1, 3))
        >>> out = render(g, orbit_cameras(4), intrinsics_from_fov(40.0, 32, 24).expand(4, 3, 3), 32, 24)
        >>> out.rgb.shape, out.depth.shape
        (torch.Size([4, 3, 24, 32]), torch.Size([4, 1, 24, 32]))
    """
    # 1. check inputs
    batch = gaussians.batch_shape
    N = gaussians.num_gaussians
    assert c2w.dim() >= 3 and c2w.shape[-2:] == (4, 4), c2w.shape
    V = c2w.shape[-3]
    assert c2w.shape[:-3] in (batch, torch.Size()), c2w.shape
    assert K.shape == c2w.shape[:-2] + (3, 3), K.shape
    assert width > 0 and height > 0, (width, height)
    assert compat in (None, "official"), compat
    assert backend in ("auto", "torch", "gsplat"), backend
    if near is None:
        near = OFFICIAL_NEAR if compat == "official" else NEAR
    device = gaussians.means.device
    out_dtype = gaussians.means.dtype
    dtype = torch.float64 if out_dtype == torch.float64 else torch.float32
    bg = torch.as_tensor(background, device=device, dtype=dtype)
    assert bg.shape == (3,), bg.shape

    # 2. flatten the batch dims: [..., N, *] -> [B, N, *], cameras -> [B, V, *]
    B = math.prod(batch)
    g = gaussians.to(dtype)
    means = g.means.reshape(B, N, 3)
    quats = g.rotations.reshape(B, N, 4)
    if compat is None:
        quats = F.normalize(quats, dim=-1)
    scales = g.scales.reshape(B, N, 3)
    opacities = g.opacities.reshape(B, N)
    colors = g.colors.reshape(B, N, 3)
    w2c = invert_rigid(c2w.to(device=device, dtype=dtype)).expand(batch + (V, 4, 4)).reshape(B, V, 4, 4)
    Ks = K.to(device=device, dtype=dtype).expand(batch + (V, 3, 3)).reshape(B, V, 3, 3)

    # 3. rasterize: rgb [B, V, H, W, 3] (over the background), alpha and accumulated depth [B, V, H, W]
    if _pick_backend(backend, device) == "gsplat":
        from ._gsplat_backend import render_gsplat

        # official: the covariances of the stored quaternions, bypassing gsplat's normalisation
        covars = covariances(Gaussians(means, scales, quats, opacities, colors)) if compat == "official" else None
        rgb, alpha, depth_sum = render_gsplat(
            means, quats, scales, opacities, colors, w2c, Ks, width, height, bg, covars=covars, near=near, far=far
        )
    else:
        rgb, alpha, depth_sum = _render_torch(
            means, quats, scales, opacities, colors, w2c, Ks, width, height, bg, near, far
        )

    # 4. depth convention, then [B, V, H, W, C] -> [..., V, C, H, W]
    if compat == "official":
        depth = depth_sum
    else:
        # sum(w z) / alpha is a weighted mean of z, bounded wherever alpha >= 1/255; empty pixels
        # have depth_sum = alpha = 0 and get 0 with a finite gradient
        depth = depth_sum / alpha.clamp_min(DEPTH_ALPHA_EPS)

    def to_chw(x: Tensor) -> Tensor:
        return x.permute(0, 1, 4, 2, 3).reshape(batch + (V, x.shape[-1], height, width)).to(out_dtype)

    return RenderOutput(rgb=to_chw(rgb), alpha=to_chw(alpha[..., None]), depth=to_chw(depth[..., None]))


def _pick_backend(backend: Backend, device: torch.device) -> str:
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and has_gsplat() else "torch"
    return backend


def _render_torch(
    means: Tensor,  # [B, N, 3]
    quats: Tensor,  # [B, N, 4] as used for the covariance (already normalised or not)
    scales: Tensor,  # [B, N, 3]
    opacities: Tensor,  # [B, N]
    colors: Tensor,  # [B, N, 3]
    w2c: Tensor,  # [B, V, 4, 4]
    Ks: Tensor,  # [B, V, 3, 3]
    width: int,
    height: int,
    background: Tensor,  # [3]
    near: float,
    far: float,
    **raster_options,  # tile_size, slab, budget of _torch_impl.rasterize
) -> tuple[Tensor, Tensor, Tensor]:  # rgb [B, V, H, W, 3], alpha [B, V, H, W], depth_sum [B, V, H, W]
    B, N = means.shape[:2]
    V = w2c.shape[1]
    proj = _torch_impl.project_gaussians(means, quats, scales, opacities, w2c, Ks, width, height, near, far)
    # features composited per pixel: RGB and camera z-depth, [B*V, N, 4]
    feats = torch.cat([colors[:, None].expand(B, V, N, 3).reshape(B * V, N, 3), proj.depths[..., None]], -1)
    opac = opacities[:, None].expand(B, V, N).reshape(B * V, N)
    accum, trans = _torch_impl.rasterize(proj, opac, feats, width, height, **raster_options)
    rgb = accum[..., :3] + trans[..., None] * background
    shape = (B, V, height, width)
    return rgb.reshape(shape + (3,)), (1.0 - trans).reshape(shape), accum[..., 3].reshape(shape)


@torch.no_grad()
def render_median_depth(
    gaussians: Gaussians,  # [N, *] one object
    c2w: Tensor,  # [V, 4, 4] camera-to-world, OpenCV
    K: Tensor,  # [V, 3, 3] pixel intrinsics
    width: int,
    height: int,
    *,
    threshold: float = 0.5,
    near: float = NEAR,
    far: float = 100.0,
) -> Tensor:  # [V, 1, H, W]
    """z-depth of the first surface: where each pixel's transmittance crosses ``threshold``.

    For meshing (TSDF fusion): unlike :func:`render`'s expected depth, semi-transparent splats
    do not blend it with the surfaces behind them. 0 where the pixel never gets that opaque.
    Torch backend, any device; not differentiable.
    """
    assert gaussians.means.dim() == 2, gaussians.means.shape
    assert c2w.dim() == 3 and c2w.shape[-2:] == (4, 4) and K.shape == c2w.shape[:-2] + (3, 3), (c2w.shape, K.shape)
    device = gaussians.means.device
    g = gaussians.to(torch.float32)
    V, N = c2w.shape[0], g.num_gaussians
    w2c = invert_rigid(c2w.to(device=device, dtype=torch.float32))[None]
    quats = F.normalize(g.rotations, dim=-1)[None]
    proj = _torch_impl.project_gaussians(
        g.means[None], quats, g.scales[None], g.opacities[None], w2c, K.to(device=device, dtype=torch.float32)[None],
        width, height, near, far,
    )
    opac = g.opacities[None, None].expand(1, V, N).reshape(V, N)
    depth = _torch_impl.rasterize_median_depth(proj, opac, width, height, threshold=threshold)
    return depth[:, None]
