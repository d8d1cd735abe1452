"""Pure-PyTorch tile rasterizer for 3D Gaussians: runs on any device, differentiable.

The reference CPU backend of :func:`ouro.gaussians.render`. It follows the semantics of the 3DGS
rasterizer (diff-gaussian-rasterization, which the public Ouroboros3D checkpoint used) and of
gsplat's ``classic`` mode:

1. **Projection** (:func:`project_gaussians`, plain autograd): camera-space means and EWA
   splatting ``cov2d = J R cov3d R^T J^T`` with the perspective Jacobian ``J`` evaluated at the
   mean, whose ``x/z`` and ``y/z`` are clamped to the view frustum widened by 30 % of the half
   field of view (``lim = 1.3 tan(fov/2)`` for a centred camera; gsplat's form, which also covers
   off-centre principal points), then a ``0.3 px^2`` low-pass added to the diagonal. Gaussians
   with ``z <= near`` or ``z >= far`` are culled.
2. **Binning** (:func:`_plan`, no grad): each Gaussian covers the tiles overlapped by the bounding
   box of the ellipse where its alpha reaches ``1/255`` (opacity-aware, half-width
   ``sqrt(2 ln(255 o) cov2d_xx)``, as gsplat). That box is *exact*: no pixel whose alpha passes
   the ``1/255`` test lies outside it, so tiling changes nothing in the result. The
   (tile, Gaussian) pairs are sorted by tile, then by camera z-depth (ties by Gaussian index).
3. **Compositing** (:class:`_Composite`, a custom autograd function with an analytic backward): at
   pixel centres ``(j + 0.5, i + 0.5)``, ``alpha = min(0.99, o exp(-0.5 d^T cov2d^-1 d))``; alphas
   below ``1/255`` are skipped; Gaussians are composited front to back, and a Gaussian whose
   inclusion would bring the transmittance below ``1e-4`` is not composited, nor is anything
   behind it (3DGS's early stop). The work is a wavefront over depth: blocks of
   ``[tiles, slab, pixels]`` take the next ``slab`` Gaussians of up to ``budget / (slab * P)``
   tiles, carrying each pixel's transmittance from block to block; tiles whose pixels have all
   stopped drop out. Memory stays bounded by ``budget`` elements per block, and the backward
   replays the blocks in reverse order (recomputing alphas instead of storing them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .gaussians import quaternion_to_matrix

__all__ = ["ALPHA_MIN", "ALPHA_MAX", "T_MIN", "EPS2D", "Projection", "project_gaussians", "rasterize"]

#: Alphas below this are skipped (3DGS, gsplat).
ALPHA_MIN = 1.0 / 255.0
#: Alphas are clamped to this (3DGS; gsplat uses 0.999).
ALPHA_MAX = 0.99
#: Compositing stops before the transmittance would fall below this (3DGS, gsplat).
T_MIN = 1e-4
#: Low-pass filter added to the projected covariance's diagonal, px^2 (3DGS, gsplat ``eps2d``).
EPS2D = 0.3
#: Widening of the clamp on x/z and y/z used for the Jacobian, as a fraction of tan(fov/2).
FRUSTUM_MARGIN = 0.3


@dataclass
class Projection:
    """Gaussians projected into I images (I = B*V), flattened over images.

    Attributes:
        means2d: ``[I, N, 2]`` centres ``(u, v) = (column, row)`` in pixels, ``(0, 0)`` the top-left corner.
        conics: ``[I, N, 3]`` ``(a, b, c)``: the inverse 2D covariance ``[[a, b], [b, c]]``, px^-2.
        depths: ``[I, N]`` camera z-depth, object units.
        radii: ``[I, N, 2]`` half-widths of the opacity-aware bounding box, px (no grad).
        valid: ``[I, N]`` bool; False for culled Gaussians (their other values are finite but meaningless).
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor
    valid: Tensor


def project_gaussians(
    means: Tensor,  # [B, N, 3] world, object units
    quats: Tensor,  # [B, N, 4] wxyz, used as given (not normalised here)
    scales: Tensor,  # [B, N, 3] object units
    opacities: Tensor,  # [B, N] in [0, 1]
    w2c: Tensor,  # [B, V, 4, 4] world-to-camera, OpenCV axes
    Ks: Tensor,  # [B, V, 3, 3] pixel intrinsics
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 100.0,
    eps2d: float = EPS2D,
) -> Projection:  # fields [B*V, N, ...]
    """EWA projection of 3D Gaussians into every camera (differentiable w.r.t. all float inputs).

    The world covariance is ``M M^T`` with ``M = quaternion_to_matrix(quats) diag(scales)`` (as
    :func:`ouro.gaussians.covariances`), so ``cov2d = (J R M)(J R M)^T + eps2d I`` with ``R`` the
    camera rotation and ``J`` the perspective Jacobian. Culls Gaussians outside ``near < z < far``,
    with a degenerate 2D covariance, with opacity below ``1/255``, or whose bounding box misses the
    image.
    """
    B, N = means.shape[:2]
    V = w2c.shape[1]
    rot, trans = w2c[..., :3, :3], w2c[..., :3, 3]  # [B, V, 3, 3], [B, V, 3]
    # [B, 1, N, 3] x [B, V, 3, 3]^T -> [B, V, N, 3]
    p_cam = means[:, None] @ rot.transpose(-1, -2) + trans[:, :, None]

    x, y, z = p_cam.unbind(-1)  # [B, V, N]
    valid = (z > near) & (z < far)
    # double-where: culled entries get z = 1 so that no inf/NaN reaches the backward pass
    z = torch.where(valid, z, torch.ones_like(z))
    fx, fy, cx, cy = (Ks[..., i, j, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))  # [B, V, 1]
    u, v = x / z, y / z
    # frustum-clamped x/z, y/z for the Jacobian only (the mean itself is not clamped)
    margin_x, margin_y = FRUSTUM_MARGIN * 0.5 * width / fx, FRUSTUM_MARGIN * 0.5 * height / fy
    uc = torch.minimum(torch.maximum(u, -(cx / fx + margin_x)), (width - cx) / fx + margin_x)
    vc = torch.minimum(torch.maximum(v, -(cy / fy + margin_y)), (height - cy) / fy + margin_y)
    # rows of J R, with J = [[fx/z, 0, -fx uc/z], [0, fy/z, -fy vc/z]]; the small matrix products
    # are written out on [B, V, N] tensors (batched matmuls of 3x3 matrices are slow on the CPU)
    r0, r1, r2 = (rot[:, :, None, i] for i in range(3))  # [B, V, 1, 3]
    jr0 = ((fx / z)[..., None] * (r0 - uc[..., None] * r2)).unbind(-1)  # 3 x [B, V, N]
    jr1 = ((fy / z)[..., None] * (r1 - vc[..., None] * r2)).unbind(-1)
    m = quaternion_to_matrix(quats) * scales[..., None, :]  # [B, N, 3, 3], cov3d = m m^T
    m = [[m[:, None, :, k, j] for j in range(3)] for k in range(3)]  # m[k][j]: [B, 1, N]
    # rows of J R m: 3 x [B, V, N] each
    u0 = [jr0[0] * m[0][j] + jr0[1] * m[1][j] + jr0[2] * m[2][j] for j in range(3)]
    u1 = [jr1[0] * m[0][j] + jr1[1] * m[1][j] + jr1[2] * m[2][j] for j in range(3)]
    a = u0[0] * u0[0] + u0[1] * u0[1] + u0[2] * u0[2] + eps2d
    b = u0[0] * u1[0] + u0[1] * u1[1] + u0[2] * u1[2]
    c = u1[0] * u1[0] + u1[1] * u1[1] + u1[2] * u1[2] + eps2d
    det = a * c - b * b
    valid = valid & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * u + cx, fy * v + cy], -1)

    with torch.no_grad():
        opac = opacities[:, None].expand(B, V, N)
        valid = valid & (opac >= ALPHA_MIN)
        # alpha >= 1/255  <=>  d^T cov2d^-1 d <= 2 ln(255 o): the ellipse's bounding box, padded a
        # hair against rounding so the box stays conservative
        extent = torch.sqrt(2.0 * torch.log((opac / ALPHA_MIN).clamp_min(1.0)))
        radii = torch.stack([extent * a.clamp_min(0).sqrt(), extent * c.clamp_min(0).sqrt()], -1) * 1.001 + 0.01
        m = means2d.detach()
        size = torch.tensor([width, height], device=m.device, dtype=m.dtype)
        valid = valid & ((m + radii) > 0).all(-1) & ((m - radii) < size).all(-1)

    def flat(t: Tensor) -> Tensor:
        return t.reshape((B * V, N) + t.shape[3:])

    return Projection(flat(means2d), flat(conics), flat(p_cam[..., 2]), flat(radii), flat(valid))


# ----------------------------------------------------------------------------------------------
# binning


@dataclass
class _Plan:
    """Non-differentiable bookkeeping shared by the forward and backward of :class:`_Composite`."""

    flat_ids: Tensor  # [M] int32: entry (image * N + gaussian) of each (tile, Gaussian) pair, sorted
    tile_start: Tensor  # [num_tiles] int64 offset of each tile's pairs in flat_ids
    tile_count: Tensor  # [num_tiles] int64 number of pairs per tile
    centre: Tensor  # [num_tiles, 2] tile centres, px
    basis: Tensor  # [6, P] (x^2, xy, y^2, x, y, 1) of the pixel centres relative to the tile centre
    nonempty: Tensor  # [T] ids of the tiles with at least one Gaussian
    tiles_per_block: int  # tiles per [tiles, slab, P] block, from the memory budget
    dummy: int  # index of the padding entry (= I * N)
    slab: int  # Gaussians per tile handled per block
    num_tiles: int
    tiles_x: int
    tiles_y: int
    tile_size: int
    alpha_floor: float  # the largest float of the inputs' dtype below ALPHA_MIN


@torch.no_grad()
def _plan(proj: Projection, width: int, height: int, tile_size: int, slab: int, budget: int) -> _Plan:
    I, N = proj.depths.shape
    device, dtype = proj.depths.device, proj.means2d.dtype
    ts = tile_size
    tiles_x, tiles_y = -(-width // ts), -(-height // ts)
    per_image = tiles_x * tiles_y
    num_tiles = I * per_image

    vis = proj.valid.reshape(-1).nonzero()[:, 0]  # [G] visible entries
    # depth order first; the stable sort by tile below keeps it within each tile
    vis = vis[torch.sort(proj.depths.detach().reshape(-1)[vis], stable=True).indices]
    m = proj.means2d.detach().reshape(-1, 2)[vis]
    r = proj.radii.reshape(-1, 2)[vis]
    limit = torch.tensor([tiles_x - 1, tiles_y - 1], device=device)
    lo = torch.minimum(torch.floor((m - r) / ts).long().clamp_min(0), limit)  # [G, 2] first tile (x, y)
    hi = torch.minimum(torch.floor((m + r) / ts).long().clamp_min(0), limit)
    span = hi - lo + 1  # [G, 2]

    # expand each Gaussian's tile rectangle, rows then columns (no integer division)
    # rows: one entry per (Gaussian, tile row)
    row_owner = torch.repeat_interleave(torch.arange(len(vis), device=device), span[:, 1])
    row_first = torch.cumsum(span[:, 1], 0) - span[:, 1]
    row_y = lo[row_owner, 1] + torch.arange(len(row_owner), device=device) - row_first[row_owner]
    row_x0 = lo[row_owner, 0]
    row_span = span[row_owner, 0]
    row_tile0 = (vis[row_owner] // N) * per_image + row_y * tiles_x + row_x0  # the row's first tile
    # columns: one entry per (Gaussian, tile); int32 keys sort faster (num_tiles < 2^31)
    col_first = torch.cumsum(row_span, 0) - row_span
    tile_id = torch.repeat_interleave((row_tile0 - col_first).int(), row_span)
    tile_id += torch.arange(len(tile_id), device=device, dtype=torch.int32)
    tile_id, order = torch.sort(tile_id, stable=True)
    # int32 entries: smaller and faster to move around (I * N < 2^31)
    flat_ids = torch.repeat_interleave(vis[row_owner].int(), row_span).index_select(0, order)

    tile_count = torch.bincount(tile_id, minlength=num_tiles)
    tile_start = torch.cumsum(tile_count, 0) - tile_count

    t = torch.arange(per_image, device=device)
    centre = (torch.stack([t % tiles_x, t // tiles_x], -1).to(dtype) + 0.5) * ts
    centre = centre.repeat(I, 1)
    # pixel centres (j + 0.5, i + 0.5) relative to the tile centre, row-major within the tile
    off = torch.arange(ts, device=device, dtype=dtype) + 0.5 - ts / 2
    y, x = torch.meshgrid(off, off, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    basis = torch.stack([x * x, x * y, y * y, x, y, torch.ones_like(x)])

    nonempty = (tile_count > 0).nonzero()[:, 0]
    tiles_per_block = max(1, budget // (slab * ts * ts))
    floor = torch.nextafter(torch.tensor(ALPHA_MIN, dtype=dtype), torch.tensor(0.0, dtype=dtype)).item()
    return _Plan(
        flat_ids, tile_start, tile_count, centre, basis, nonempty, tiles_per_block,
        dummy=I * N, slab=slab, num_tiles=num_tiles, tiles_x=tiles_x, tiles_y=tiles_y, tile_size=ts, alpha_floor=floor,
    )


# ----------------------------------------------------------------------------------------------
# compositing
#
# Per pixel p and Gaussian i, with d = p - mean_i relative to the tile centre,
#   sigma' = 0.5 a dx^2 + b dx dy + 0.5 c dy^2 - ln(o) = coef_i . basis_p,
# a quadratic form in the pixel coordinates: one [slots, 6] x [6, P] matrix product gives every
# exponent of a block, and its gradient is the transposed product. alpha = min(0.99, exp(-sigma')).


def _coefficients(params: Tensor, centre: Tensor) -> Tensor:  # [Ta, S, 6 + C], [Ta, 2] -> [Ta, S, 6]
    """Coefficients of ``-sigma'`` on :attr:`_Plan.basis` (x^2, xy, y^2, x, y, 1)."""
    mx = params[..., 0] - centre[:, None, 0]
    my = params[..., 1] - centre[:, None, 1]
    a, b, c, o = params[..., 2], params[..., 3], params[..., 4], params[..., 5]
    ha, hc = 0.5 * a, 0.5 * c
    # the padding entry has o = 0: the clamp keeps its exponent finite (alpha ~ 1e-30, skipped)
    const = torch.log(o.clamp_min(1e-30)) - ((ha * mx + b * my) * mx + hc * my * my)
    return torch.stack([-ha, -b, -hc, a * mx + b * my, b * mx + c * my, const], -1)


def _coefficient_grad(params: Tensor, centre: Tensor, g: Tensor) -> Tensor:  # -> [Ta, S, 6]
    """Chain rule from dL/dcoef ``g [Ta, S, 6]`` (of :func:`_coefficients`) to dL/d(mx, my, a, b, c, o)."""
    mx = params[..., 0] - centre[:, None, 0]
    my = params[..., 1] - centre[:, None, 1]
    a, b, c, o = params[..., 2], params[..., 3], params[..., 4], params[..., 5]
    gxx, gxy, gyy, gx, gy, g0 = g.unbind(-1)
    return torch.stack(
        [
            a * gx + b * gy - (a * mx + b * my) * g0,
            b * gx + c * gy - (b * mx + c * my) * g0,
            mx * gx - 0.5 * (gxx + mx * mx * g0),
            my * gx + mx * gy - gxy - mx * my * g0,
            my * gy - 0.5 * (gyy + my * my * g0),
            g0 / o.clamp_min(1e-30),
        ],
        -1,
    )


def _gather(packed: Tensor, plan: _Plan, tiles: Tensor, k0: int) -> tuple[Tensor, Tensor]:
    """Entries ``[Ta, S]`` in slots ``k0 .. k0 + slab`` of ``tiles`` and their rows ``[Ta, S, 6 + C]``."""
    slots = k0 + torch.arange(plan.slab, device=tiles.device)  # [S]
    # only non-empty tiles get here, so flat_ids is not empty
    pos = (plan.tile_start[tiles, None] + slots).clamp_max(len(plan.flat_ids) - 1)
    idx = torch.where(slots < plan.tile_count[tiles, None], plan.flat_ids[pos], plan.dummy)
    # index_select: much faster than advanced indexing for row gathers on the CPU
    return idx, packed.index_select(0, idx.reshape(-1)).reshape(idx.shape + packed.shape[-1:])


def _alphas(params: Tensor, plan: _Plan, tiles: Tensor) -> Tensor:  # -> [Ta, S, P]
    """``min(0.99, o exp(-sigma))`` of every slot and pixel, 0 where it is below 1/255."""
    Ta, S = params.shape[:2]
    coef = _coefficients(params, plan.centre.index_select(0, tiles))
    alpha = (coef.reshape(Ta * S, 6) @ plan.basis).exp_().clamp_max_(ALPHA_MAX).reshape(Ta, S, -1)
    # `alpha < 1/255` is skipped (threshold_ keeps x > alpha_floor, the float just below 1/255)
    return torch.nn.functional.threshold_(alpha, plan.alpha_floor, 0.0)


def _transmittance(alpha: Tensor, t_in: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Apply the early stop to ``alpha [Ta, S, P]`` in place.

    ``t_in [Ta, P]`` is the transmittance entering the slab, 0 for pixels that already stopped.
    Returns ``alpha``, the transmittance in front of each Gaussian ``[Ta, S, P]``, and
    ``t_in prod(1 - alpha)`` over the whole slab before the stop ``[Ta, P]``: the pixel has
    stopped where it is below ``T_MIN``, else it is the transmittance leaving the slab.
    """
    Ta, S, P = alpha.shape
    # [t_in, 1 - alpha_0, 1 - alpha_1, ...] -> cumprod -> [T_0, T_1, ..., T_S]: T_i in front of i
    trans = alpha.new_empty(Ta, S + 1, P)
    trans[:, 0] = t_in
    torch.sub(1.0, alpha, out=trans[:, 1:])
    trans.cumprod_(dim=1)
    # T_{i+1} never increases, so the kept Gaussians are a prefix: 3DGS's early stop
    alpha.masked_fill_(trans[:, 1:] < T_MIN, 0.0)
    return alpha, trans[:, :-1], trans[:, -1]


def _wavefront(plan: _Plan, packed: Tensor, t: Tensor, block: Callable[..., Tensor]) -> None:
    """Front-to-back sweep over slabs: every tile with Gaussians left and live pixels, a block at a time.

    ``t [num_tiles, P]`` is the transmittance entering the current slab; ``block(tiles, k0, t_in,
    params, alpha, t_excl, t_end)`` composites one block of tiles, updates ``t`` for them and returns
    which of them go on ``[Ta]`` (bool).
    """
    active, k0 = plan.nonempty, 0
    while len(active):
        survivors = []
        for tiles in torch.split(active, plan.tiles_per_block):
            t_in = t.index_select(0, tiles)
            _, params = _gather(packed, plan, tiles, k0)
            alpha, t_excl, t_end = _transmittance(_alphas(params, plan, tiles), t_in)
            survivors.append(tiles[block(tiles, k0, t_in, params, alpha, t_excl, t_end)])
        k0 += plan.slab
        active = torch.cat(survivors)
        active = active[plan.tile_count[active] > k0]


class _Composite(torch.autograd.Function):
    """Front-to-back alpha compositing of binned Gaussians, with an analytic backward.

    Inputs are flattened over (image, Gaussian) entries, E = I*N: ``means2d [E, 2]``,
    ``conics [E, 3]``, ``opacities [E]``, ``features [E, C]``. Outputs, tile-major:
    ``accum [num_tiles, P, C]`` = sum_i w_i f_i and ``transmittance [num_tiles, P]`` = T_final.
    """

    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, plan: _Plan):
        packed = _pack(means2d, conics, opacities, features)
        C = features.shape[-1]
        P = plan.tile_size**2
        t = features.new_ones(plan.num_tiles, P)  # transmittance of live pixels, 0 once stopped
        trans = features.new_ones(plan.num_tiles, P)  # transmittance after the last composited Gaussian
        acc = features.new_zeros(plan.num_tiles, P, C + 1)
        steps = []  # the blocks' (tiles, k0, t_in), replayed by the backward
        record = any(ctx.needs_input_grad[:4])

        def block(tiles, k0, t_in, params, alpha, t_excl, t_end):
            stopped = t_end < T_MIN
            if record:
                steps.append((tiles, k0, t_in))
            # sum_i w_i [f_i, 1]: [Ta, S, P]^T @ [Ta, S, C + 1] -> [Ta, P, C + 1]
            feats1 = torch.cat([params[..., 6:], params.new_ones(params.shape[:2] + (1,))], -1)
            slab_acc = alpha.mul_(t_excl).transpose(1, 2) @ feats1
            acc.index_add_(0, tiles, slab_acc)
            # leaving transmittance: the product where the pixel goes on, t_in - sum(w) where it stopped
            t_out = torch.where(stopped, t_in - slab_acc[..., -1], t_end)
            trans[tiles] = torch.where(t_in > 0, t_out, trans.index_select(0, tiles))
            t[tiles] = torch.where(stopped, torch.zeros_like(t_out), t_out)
            return ~stopped.all(dim=1)

        _wavefront(plan, packed, t, block)
        ctx.plan, ctx.steps = plan, steps
        ctx.save_for_backward(packed, trans)
        return acc[..., :C], trans

    @staticmethod
    def backward(ctx, grad_accum, grad_trans):
        plan, steps = ctx.plan, ctx.steps
        packed, trans = ctx.saved_tensors
        C = packed.shape[-1] - 6
        grad = torch.zeros_like(packed)
        # per pixel: sum over the Gaussians behind of w_j (f_j . g), plus T_final dL/dT_final
        behind = trans * grad_trans  # [num_tiles, P]
        for tiles, k0, t_in in reversed(steps):
            idx, params = _gather(packed, plan, tiles, k0)
            alpha, t_excl, _ = _transmittance(_alphas(params, plan, tiles), t_in)
            g = grad_accum.index_select(0, tiles)  # [Ta, P, C]
            fg = params[..., 6:] @ g.transpose(1, 2)  # [Ta, S, P]: f_i . dL/dF_p
            w = alpha * t_excl
            g_feat = w @ g  # [Ta, S, C]
            csum = torch.cumsum(w.mul_(fg), dim=1)
            total = csum[:, -1] + behind.index_select(0, tiles)  # [Ta, P]
            behind[tiles] = total
            # dL/dalpha_i = T_i f_i.g - (sum_{j>i} w_j f_j.g + T_final dL/dT) / (1 - alpha_i)
            later = torch.sub(total[:, None], csum, out=csum)
            g_alpha = t_excl.mul_(fg).sub_(later.div_(torch.sub(1.0, alpha, out=w)))
            # alpha = exp(-sigma') where composited and below the clamp: dL/d(-sigma') = alpha dL/dalpha
            g_exponent = g_alpha.mul_(alpha).masked_fill_(alpha >= ALPHA_MAX, 0.0)
            Ta, S, P = g_exponent.shape
            g_coef = (g_exponent.reshape(Ta * S, P) @ plan.basis.T).reshape(Ta, S, 6)
            g_params = _coefficient_grad(params, plan.centre.index_select(0, tiles), g_coef)
            rows_grad = torch.cat([g_params, g_feat], -1)
            grad.index_add_(0, idx.reshape(-1), rows_grad.reshape(-1, 6 + C))
        grad = grad[:-1]
        return grad[:, 0:2], grad[:, 2:5], grad[:, 5], grad[:, 6:], None


def _pack(means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor) -> Tensor:
    """``[E + 1, 6 + C]`` rows (mx, my, a, b, c, o, f...), the last one all-zero padding (alpha 0)."""
    rows = torch.cat([means2d, conics, opacities[:, None], features], dim=-1)
    return torch.cat([rows, rows.new_zeros(1, rows.shape[-1])], dim=0)


def rasterize(
    proj: Projection,  # fields [I, N, ...]
    opacities: Tensor,  # [I, N] in [0, 1]
    features: Tensor,  # [I, N, C] per-image features to composite (colour, depth, ...)
    width: int,
    height: int,
    *,
    tile_size: int = 8,
    slab: int = 32,
    budget: int = 1 << 18,
) -> tuple[Tensor, Tensor]:  # accum [I, H, W, C], transmittance [I, H, W]
    """Alpha-composite projected Gaussians into I images of ``height x width`` pixels.

    Args:
        proj: the output of :func:`project_gaussians`.
        opacities: per-image opacities (the Gaussians' opacities repeated over views).
        features: values composited per pixel, e.g. RGB and camera z-depth.
        tile_size: tile edge, px.
        slab: Gaussians per tile processed per block.
        budget: elements per ``[tiles, slab, tile_size^2]`` block. A block holds about ten such
            buffers (~10 MB in float32 at the default 2^18); the bookkeeping adds a few int32/int64
            arrays with one entry per (tile, Gaussian) pair.
        The defaults were about the fastest on a 2-core CPU (benchmarks/rasterizer.py); smaller
        tiles mean fewer wasted pixel evaluations but more pairs to sort.

    Returns:
        ``accum``: sum_i w_i f_i with w_i = alpha_i T_i (no background), ``[I, H, W, C]``;
        ``transmittance``: T after the last composited Gaussian, ``[I, H, W]`` (1 - alpha).
    """
    I, N = proj.depths.shape
    C = features.shape[-1]
    plan = _plan(proj, width, height, tile_size, slab, budget)
    accum, trans = _Composite.apply(
        proj.means2d.reshape(I * N, 2),
        proj.conics.reshape(I * N, 3),
        opacities.reshape(I * N),
        features.reshape(I * N, C),
        plan,
    )
    ts, tx, ty = tile_size, plan.tiles_x, plan.tiles_y
    # tile-major [I * ty * tx, ts * ts, ...] -> [I, ty * ts, tx * ts, ...] -> crop
    accum = accum.reshape(I, ty, tx, ts, ts, C).permute(0, 1, 3, 2, 4, 5).reshape(I, ty * ts, tx * ts, C)
    trans = trans.reshape(I, ty, tx, ts, ts).permute(0, 1, 3, 2, 4).reshape(I, ty * ts, tx * ts)
    return accum[:, :height, :width], trans[:, :height, :width]


@torch.no_grad()
def rasterize_median_depth(
    proj: Projection,  # fields [I, N, ...]
    opacities: Tensor,  # [I, N]
    width: int,
    height: int,
    *,
    threshold: float = 0.5,
    tile_size: int = 8,
    slab: int = 32,
    budget: int = 1 << 18,
) -> Tensor:  # [I, H, W]
    """Depth of the Gaussian at which each pixel's transmittance first drops below ``threshold``.

    The "median depth" of the pixel's compositing (2DGS, gsplat): the first surface, not the
    alpha-weighted mean, so semi-transparent splats do not pull it towards what lies behind.
    0 where the transmittance never drops below ``threshold``. Not differentiable.
    """
    I, N = proj.depths.shape
    plan = _plan(proj, width, height, tile_size, slab, budget)
    packed = _pack(proj.means2d.reshape(I * N, 2), proj.conics.reshape(I * N, 3), opacities.reshape(I * N), proj.depths.reshape(I * N, 1))
    P = plan.tile_size**2
    t = packed.new_ones(plan.num_tiles, P)
    out = packed.new_zeros(plan.num_tiles, P)

    def block(tiles, k0, t_in, params, alpha, t_excl, t_end):
        # the one Gaussian (if any) in this slab where T crosses the threshold
        cross = (t_excl >= threshold) & (t_excl * (1 - alpha) < threshold)  # [Ta, S, P]
        out.index_add_(0, tiles, (cross.to(params.dtype) * params[..., 6:7]).sum(1))
        t_next = torch.where(t_end < T_MIN, torch.zeros_like(t_end), t_end)
        t[tiles] = t_next
        return (t_next >= threshold).any(dim=1)

    _wavefront(plan, packed, t, block)
    ts, tx, ty = tile_size, plan.tiles_x, plan.tiles_y
    out = out.reshape(I, ty, tx, ts, ts).permute(0, 1, 3, 2, 4).reshape(I, ty * ts, tx * ts)
    return out[:, :height, :width]
