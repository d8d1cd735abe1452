"""CUDA backend of :func:`ouro.gaussians.render`: a thin call to :func:`gsplat.rasterization`.

gsplat is optional (the ``cuda`` extra) and has no CPU kernels, so it is imported lazily here and
only for CUDA tensors. In gsplat's API ``C`` means cameras; ours is V.
"""

from __future__ import annotations

from torch import Tensor

from ._torch_impl import EPS2D

__all__ = ["render_gsplat"]


def _import_gsplat():
    try:
        import gsplat
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backend='gsplat' needs gsplat (pip install 'ouro3d[cuda]'); use backend='torch' instead"
        ) from err
    return gsplat


def render_gsplat(
    means: Tensor,  # [B, N, 3] world, object units
    quats: Tensor,  # [B, N, 4] wxyz (gsplat normalises them)
    scales: Tensor,  # [B, N, 3]
    opacities: Tensor,  # [B, N] in [0, 1]
    colors: Tensor,  # [B, N, 3] RGB
    w2c: Tensor,  # [B, V, 4, 4] world-to-camera, OpenCV axes
    Ks: Tensor,  # [B, V, 3, 3] pixel intrinsics
    width: int,
    height: int,
    background: Tensor,  # [3] RGB
    *,
    covars: Tensor | None = None,  # [B, N, 3, 3]; when given, used instead of quats/scales
    near: float = 0.01,
    far: float = 100.0,
) -> tuple[Tensor, Tensor, Tensor]:  # rgb [B, V, H, W, 3], alpha [B, V, H, W], depth_sum [B, V, H, W]
    """Rasterize with gsplat's ``classic`` mode; returns what the torch backend returns.

    ``rgb`` includes the background; ``depth_sum`` is ``sum(w_i z_i)`` (``render_mode="RGB+D"``,
    background depth 0). Pass ``covars`` to bypass gsplat's quaternion normalisation
    (``compat="official"``). Computed in float32 (gsplat's kernels are float32 only) and returned
    in the input dtype.

    Raises:
        RuntimeError: the tensors are not on a CUDA device.
        ImportError: gsplat is not installed.
    """
    if means.device.type != "cuda":
        raise RuntimeError(f"backend='gsplat' needs CUDA tensors, got device {means.device}; use backend='torch'")
    gsplat = _import_gsplat()
    args = _rasterization_args(
        means, quats, scales, opacities, colors, w2c, Ks, width, height, background, covars, near, far
    )
    render_colors, render_alphas, _ = gsplat.rasterization(**args)
    # render_colors [B, V, H, W, 4] (RGB + accumulated depth), render_alphas [B, V, H, W, 1]
    dtype = means.dtype
    return render_colors[..., :3].to(dtype), render_alphas[..., 0].to(dtype), render_colors[..., 3].to(dtype)


def _rasterization_args(
    means, quats, scales, opacities, colors, w2c, Ks, width, height, background, covars, near, far
) -> dict:
    """Keyword arguments of :func:`gsplat.rasterization`: float32, contiguous, batch dims ``[B]``."""
    B, V = w2c.shape[:2]

    def f32(t: Tensor) -> Tensor:
        return t.float().contiguous()

    return dict(
        means=f32(means),
        quats=f32(quats),
        scales=f32(scales),
        opacities=f32(opacities),
        colors=f32(colors),
        viewmats=f32(w2c),
        Ks=f32(Ks),
        width=width,
        height=height,
        near_plane=near,
        far_plane=far,
        eps2d=EPS2D,
        packed=False,
        backgrounds=f32(background.expand(B, V, 3)),
        render_mode="RGB+D",
        rasterize_mode="classic",
        covars=None if covars is None else f32(covars),
    )
