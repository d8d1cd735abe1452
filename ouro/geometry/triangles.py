"""A small vectorised triangle rasterizer (pure PyTorch, CPU or any device) and texture lookup.

Used to bake textures (rasterizing a mesh in UV space gives each texel its surface point), to test
visibility against a mesh's depth, and to render textured or vertex-coloured meshes on machines
without OpenGL (pyrender needs EGL or OSMesa; open3d's offscreen renderer needs EGL).

Conventions: pixel ``(row i, col j)`` has its centre at ``(x, y) = (j + 0.5, i + 0.5)``, as in
:func:`ouro.gaussians.render`; a pixel is covered when its centre lies inside the triangle (edges
shared by two triangles are drawn by one of them or both, never by neither). Texture coordinates
``(u, v)`` follow OBJ / OpenGL: ``(0, 0)`` is the bottom-left corner of the image, so texel
``(i, j)`` of an ``[H, W]`` texture sits at ``u = (j + 0.5) / W``, ``v = 1 - (i + 0.5) / H``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .cameras import invert_rigid

__all__ = ["Fragments", "rasterize_triangles", "rasterize_mesh", "sample_texture", "mip_levels", "render_mesh"]

#: Candidate (triangle, pixel) pairs handled at once: bounds memory to a few hundred MB.
_PAIRS_PER_CHUNK = 1 << 22


@dataclass
class Fragments:
    """What a rasterizer found at each pixel.

    Attributes:
        face: ``[H, W]`` int64 index of the front triangle, -1 where no triangle covers the pixel.
        bary: ``[H, W, 3]`` barycentric weights of the pixel centre in that triangle (perspective
            corrected when depths were given), 0 where empty.
        depth: ``[H, W]`` interpolated depth of the front triangle, ``inf`` where empty.
    """

    face: Tensor
    bary: Tensor
    depth: Tensor

    @property
    def mask(self) -> Tensor:  # [H, W] bool
        return self.face >= 0


def rasterize_triangles(
    xy: Tensor,  # [F, 3, 2] vertex positions in pixels (x right, y down)
    height: int,
    width: int,
    depth: Tensor | None = None,  # [F, 3] positive view depth per vertex; None: flat (UV space)
) -> Fragments:
    """Draw triangles given in pixel coordinates, keeping the nearest one per pixel.

    Args:
        xy: triangle corners in pixels; ``(0, 0)`` is the top-left corner of the image.
        height, width: image size H, W.
        depth: per-corner depth (camera z). When given, barycentrics are perspective-corrected
            (``1/z`` is linear on screen) and the nearest triangle wins; triangles with a corner at
            ``z <= 0`` are skipped. When None, all triangles lie at depth 0 and overlaps resolve
            arbitrarily (UV charts do not overlap).

    Returns:
        :class:`Fragments` of size ``[H, W]``.
    """
    assert xy.dim() == 3 and xy.shape[1:] == (3, 2), xy.shape
    assert depth is None or depth.shape == xy.shape[:2], None if depth is None else depth.shape
    device, n_pix = xy.device, height * width
    xy = xy.to(torch.float64)  # edge functions of large images lose precision in float32
    z_buf = torch.full((n_pix,), math.inf, dtype=torch.float64, device=device)
    face_buf = torch.full((n_pix,), -1, dtype=torch.int64, device=device)
    bary_buf = torch.zeros(n_pix, 3, dtype=torch.float64, device=device)

    # 1. triangles worth drawing: in front of the camera, non-degenerate, overlapping the image
    a, b, c = xy[:, 0], xy[:, 1], xy[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep = area.abs() > 1e-12
    if depth is not None:
        depth = depth.to(torch.float64)
        keep &= (depth > 0).all(dim=1)
    # pixel columns j with j + 0.5 in [min x, max x]: j from ceil(min x - 0.5) to floor(max x - 0.5)
    lo = torch.ceil(xy.amin(dim=1) - 0.5).clamp_min(0)
    hi = torch.floor(xy.amax(dim=1) - 0.5)
    hi[:, 0].clamp_(max=width - 1)
    hi[:, 1].clamp_(max=height - 1)
    keep &= (hi >= lo).all(dim=1) & torch.isfinite(xy).all(dim=(1, 2))
    faces = keep.nonzero()[:, 0]
    if len(faces) == 0:
        return _fragments(face_buf, bary_buf, z_buf, height, width)
    lo, hi = lo[faces].long(), hi[faces].long()
    span = hi - lo + 1  # [F', 2] columns, rows
    counts = span[:, 0] * span[:, 1]

    # 2. candidate (triangle, pixel) pairs from each bounding box, in chunks of triangles
    ends = torch.cumsum(counts, 0)
    start = 0
    while start < len(faces):
        stop = int(torch.searchsorted(ends, ends[start] - counts[start] + _PAIRS_PER_CHUNK, right=True))
        stop = max(stop, start + 1)
        _draw_chunk(faces[start:stop], lo[start:stop], span[start:stop], counts[start:stop],
                    xy, area, depth, width, z_buf, face_buf, bary_buf)
        start = stop
    return _fragments(face_buf, bary_buf, z_buf, height, width)


def _fragments(face: Tensor, bary: Tensor, z: Tensor, height: int, width: int) -> Fragments:
    return Fragments(face.view(height, width), bary.float().view(height, width, 3), z.float().view(height, width))


def _draw_chunk(faces, lo, span, counts, xy, area, depth, width, z_buf, face_buf, bary_buf) -> None:
    device = xy.device
    local_face = torch.repeat_interleave(torch.arange(len(faces), device=device), counts)
    offset = torch.cumsum(counts, 0) - counts
    k = torch.arange(int(counts.sum()), device=device) - offset[local_face]
    px = lo[local_face, 0] + k % span[local_face, 0]
    py = lo[local_face, 1] + k // span[local_face, 0]
    f = faces[local_face]
    p = torch.stack([px + 0.5, py + 0.5], dim=-1).to(torch.float64)
    tri = xy[f]  # [P, 3, 2]
    # barycentric weight of corner i = signed area of the sub-triangle opposite it / the area
    def edge(u, v):  # signed doubled area of (u, v, p)
        return (v[:, 0] - u[:, 0]) * (p[:, 1] - u[:, 1]) - (v[:, 1] - u[:, 1]) * (p[:, 0] - u[:, 0])

    w = torch.stack([edge(tri[:, 1], tri[:, 2]), edge(tri[:, 2], tri[:, 0]), edge(tri[:, 0], tri[:, 1])], dim=-1)
    w = w / area[f, None]
    inside = (w >= -1e-9).all(dim=-1)
    f, w, px, py = f[inside], w[inside].clamp_min(0), px[inside], py[inside]
    if depth is None:
        z = torch.zeros(len(f), dtype=torch.float64, device=device)
    else:
        # perspective-correct: interpolate 1/z on screen, then the attributes as w_i/z_i
        w = w / depth[f]
        inv_z = w.sum(dim=-1)
        w = w / inv_z[:, None]
        z = 1.0 / inv_z
    key = py * width + px
    # nearest candidate per pixel within the chunk, then against what earlier chunks drew
    near = torch.full_like(z_buf, math.inf).scatter_reduce_(0, key, z, "amin")
    win = (z <= near[key]) & (z < z_buf[key])
    key, f, w, z = key[win], f[win], w[win], z[win]
    # equal depths (shared edges, flat UV charts): the highest triangle index, so results are deterministic
    top = torch.full_like(face_buf, -1).scatter_reduce_(0, key, f, "amax")
    win = f == top[key]
    key, f, w, z = key[win], f[win], w[win], z[win]
    z_buf[key] = z
    face_buf[key] = f
    bary_buf[key] = w


def rasterize_mesh(
    vertices: Tensor,  # [M, 3] object frame
    faces: Tensor,  # [F, 3] int64
    c2w: Tensor,  # [4, 4] camera-to-world, OpenCV axes
    K: Tensor,  # [3, 3] pixel intrinsics
    height: int,
    width: int,
) -> Fragments:
    """Rasterize a mesh into one pinhole camera (library convention); depth is camera z."""
    w2c = invert_rigid(c2w.to(torch.float64))
    cam = vertices.to(torch.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    pix = cam @ K.to(torch.float64).T
    xy = pix[:, :2] / pix[:, 2:3].clamp_min(1e-12)
    return rasterize_triangles(xy[faces], height, width, depth=cam[faces, 2])


def mip_levels(texture: Tensor, count: int | None = None) -> list[Tensor]:  # [H, W, C] -> [[H/2^k, W/2^k, C]]
    """A box-filtered mip pyramid of ``texture`` down to 1 texel (or ``count`` levels)."""
    levels = [texture]
    while max(levels[-1].shape[:2]) > 1 and (count is None or len(levels) < count):
        t = levels[-1].permute(2, 0, 1)[None]
        levels.append(F.avg_pool2d(t, 2, ceil_mode=True)[0].permute(1, 2, 0))
    return levels


def sample_texture(
    texture: Tensor | list[Tensor],  # [H, W, C], or a mip pyramid from mip_levels
    uv: Tensor,  # [..., 2] OBJ convention (v up)
    level: Tensor | float = 0.0,  # [...] mip level (0 = full size), fractional blends two levels
) -> Tensor:  # [..., C]
    """Bilinear (trilinear with a pyramid and a level) texture lookup, clamped at the borders."""
    levels = texture if isinstance(texture, list) else [texture]
    level = torch.as_tensor(level, dtype=uv.dtype, device=uv.device).expand(uv.shape[:-1]).clamp(0, len(levels) - 1)
    lo = level.floor().long()
    frac = (level - lo)[..., None]
    out = torch.zeros(uv.shape[:-1] + (levels[0].shape[-1],), dtype=levels[0].dtype, device=uv.device)
    for k, tex in enumerate(levels):
        near = lo == k
        above = (lo + 1 == k) & (frac[..., 0] > 0)
        if not bool(near.any() or above.any()):
            continue
        weight = torch.where(near[..., None], 1 - frac, torch.where(above[..., None], frac, torch.zeros_like(frac)))
        sel = near | above
        out[sel] += weight[sel] * _bilinear(tex, uv[sel])
    return out


def _bilinear(tex: Tensor, uv: Tensor) -> Tensor:  # [H, W, C], [P, 2] -> [P, C]
    h, w = tex.shape[:2]
    x = uv[:, 0] * w - 0.5
    y = (1 - uv[:, 1]) * h - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(0, w - 1), (y0 + 1).clamp(0, h - 1)
    x0, y0 = x0.clamp(0, w - 1), y0.clamp(0, h - 1)
    return (tex[y0, x0] * (1 - fx) * (1 - fy) + tex[y0, x1] * fx * (1 - fy)
            + tex[y1, x0] * (1 - fx) * fy + tex[y1, x1] * fx * fy)


@torch.no_grad()
def render_mesh(
    vertices: Tensor,  # [M, 3] object frame
    faces: Tensor,  # [F, 3] int64
    c2w: Tensor,  # [V, 4, 4] camera-to-world, OpenCV
    K: Tensor,  # [V, 3, 3] pixel intrinsics
    width: int,
    height: int,
    *,
    colors: Tensor | None = None,  # [M, 3] vertex colours in [0, 1]
    uv: Tensor | None = None,  # [M, 2] texture coordinates (OBJ convention)
    texture: Tensor | None = None,  # [Ht, Wt, 3] in [0, 1]
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    supersample: int = 2,
    mipmap: bool = True,
) -> tuple[Tensor, Tensor]:  # rgb [V, 3, H, W], alpha [V, 1, H, W]
    """Render an unlit vertex-coloured or textured mesh (its colours as they are, like splats).

    Each view is drawn at ``supersample`` times the size and box-filtered down (anti-aliased
    edges). With ``mipmap`` the texture is looked up trilinearly at a per-triangle level of detail
    (texels per pixel from the triangle's UV and screen areas), as a GPU would with mip-mapping.
    """
    assert (colors is None) != (texture is None), "give vertex colours or a texture"
    assert texture is None or uv is not None, "a texture needs uv"
    s = supersample
    Ks = K.to(torch.float64).clone()
    Ks[:, :2] *= s
    H, W = height * s, width * s
    bg = torch.tensor(background, dtype=torch.float32)
    pyramid = mip_levels(texture.float()) if texture is not None and mipmap else ([texture.float()] if texture is not None else None)
    rgbs, alphas = [], []
    for v in range(len(c2w)):
        frags = rasterize_mesh(vertices, faces, c2w[v], Ks[v], H, W)
        mask = frags.mask
        rgb = bg.expand(H, W, 3).clone()
        f, b = frags.face[mask], frags.bary[mask]
        if texture is None:
            rgb[mask] = (colors.float()[faces[f]] * b[..., None]).sum(dim=1)
        else:
            tuv = (uv.float()[faces[f]] * b[..., None]).sum(dim=1)
            level = _face_lod(vertices, faces, uv, c2w[v], Ks[v], texture.shape[:2])[f] if mipmap else 0.0
            rgb[mask] = sample_texture(pyramid, tuv, level)
        alpha = mask.float()[None, None]
        rgb = rgb.permute(2, 0, 1)[None]
        rgbs.append(F.avg_pool2d(rgb, s)[0])
        alphas.append(F.avg_pool2d(alpha, s)[0])
    return torch.stack(rgbs), torch.stack(alphas)


def _face_lod(vertices, faces, uv, c2w, K, tex_hw) -> Tensor:  # [F] mip level
    """log2 of texels per pixel along a side: half log2 of the UV area (texels) over the screen area (pixels)."""
    w2c = invert_rigid(c2w.to(torch.float64))
    cam = vertices.to(torch.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    pix = cam @ K.T
    xy = (pix[:, :2] / pix[:, 2:3].clamp_min(1e-12))[faces]
    t = uv.to(torch.float64)[faces] * torch.tensor([tex_hw[1], tex_hw[0]], dtype=torch.float64)

    def area(p):
        return 0.5 * ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0])).abs()

    return (0.5 * torch.log2(area(t).clamp_min(1e-12) / area(xy).clamp_min(1e-12))).clamp_min(0).float()
