"""UV unwrapping (xatlas) and texture baking from rendered views of an object.

A texture is baked in three steps:

1. :func:`surface_texels`: the mesh is rasterized in UV space, giving every covered texel its
   surface point and (interpolated) normal.
2. :func:`sample_views`: each texel's colour is the blend of the views that see it. A view sees a
   point when the point is in front of the camera, faces it, and is no farther than the mesh's own
   rendered depth there (the nearest of the four pixels around its projection, plus a tolerance);
   its colour there is read bilinearly and weighted by ``cos(angle)^p`` between the normal and the
   direction to the camera, times the view's alpha.
3. :func:`pad_texture`: every texel that got no colour (chart gutters, unused atlas space) takes the
   colour of the nearest texel that did, so bilinear filtering and mip-mapping at chart borders
   never reach an empty texel (no dark seams).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ouro.geometry.cameras import invert_rigid
from ouro.geometry.triangles import rasterize_mesh, rasterize_triangles

__all__ = ["BakeViews", "UVMesh", "unwrap", "surface_texels", "sample_views", "pad_texture", "bake_texture"]


def import_xatlas():
    try:
        import xatlas
    except ImportError as exc:
        raise ImportError("textured mesh export needs xatlas: pip install 'ouro3d[mesh]'") from exc
    return xatlas


@dataclass
class UVMesh:
    """A mesh cut along UV seams.

    Attributes:
        vertices: ``[M, 3]`` float32 object frame.
        faces: ``[F, 3]`` int64.
        uv: ``[M, 2]`` float32 in ``[0, 1]``, OBJ convention (v up).
        source: ``[M]`` int64 index of each vertex in the mesh before cutting.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    source: np.ndarray


@dataclass
class BakeViews:
    """Rendered views of an object to bake from.

    Attributes:
        colors: ``[V, 3, H, W]`` surface colour seen at each pixel, in [0, 1] (not premultiplied).
        alphas: ``[V, 1, H, W]`` coverage in [0, 1]; weights each pixel's say.
        c2w: ``[V, 4, 4]`` camera-to-world, OpenCV axes.
        K: ``[V, 3, 3]`` pixel intrinsics.
    """

    colors: Tensor
    alphas: Tensor
    c2w: Tensor
    K: Tensor

    def __post_init__(self) -> None:
        V, _, H, W = self.colors.shape
        assert self.colors.shape == (V, 3, H, W), self.colors.shape
        assert self.alphas.shape == (V, 1, H, W), self.alphas.shape
        assert self.c2w.shape == (V, 4, 4) and self.K.shape == (V, 3, 3), (self.c2w.shape, self.K.shape)


def unwrap(vertices: np.ndarray, faces: np.ndarray, size: int, padding: int = 4) -> UVMesh:
    """UV-unwrap a mesh into one ``size x size`` atlas with xatlas.

    Args:
        vertices: ``[M, 3]``; faces: ``[F, 3]``.
        size: atlas resolution in texels (the texture size).
        padding: texels between charts (xatlas ``PackOptions.padding``).
    """
    xatlas = import_xatlas()
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(size)
    pack.padding = int(padding)
    pack.bilinear = True
    pack.blockAlign = True
    atlas.generate(pack_options=pack)
    if atlas.atlas_count != 1:
        raise ValueError(f"xatlas packed the mesh into {atlas.atlas_count} atlases; expected one")
    source, new_faces, uv = atlas.get_mesh(0)
    source = source.astype(np.int64)
    return UVMesh(
        vertices=np.asarray(vertices, dtype=np.float32)[source],
        faces=new_faces.astype(np.int64),
        uv=uv.astype(np.float32),
        source=source,
    )


def surface_texels(
    vertices: Tensor,  # [M, 3]
    faces: Tensor,  # [F, 3] int64
    uv: Tensor,  # [M, 2] OBJ convention
    normals: Tensor,  # [M, 3] unit vertex normals
    size: int,
) -> tuple[Tensor, Tensor, Tensor]:  # texel [T] flat index, points [T, 3], normals [T, 3]
    """The texels whose centres lie inside a UV triangle, with their surface points and normals."""
    xy = torch.stack([uv[:, 0] * size, (1 - uv[:, 1]) * size], dim=-1)
    frags = rasterize_triangles(xy[faces], size, size)
    texel = frags.mask.flatten().nonzero()[:, 0]
    f = frags.face.flatten()[texel]
    b = frags.bary.reshape(-1, 3)[texel].to(vertices.dtype)
    points = (vertices[faces[f]] * b[..., None]).sum(dim=1)
    n = (normals[faces[f]] * b[..., None]).sum(dim=1)
    return texel, points, torch.nn.functional.normalize(n, dim=-1)


def _bilinear_image(image: Tensor, x: Tensor, y: Tensor) -> Tensor:  # [C, H, W], [P] pixels -> [P, C]
    _, h, w = image.shape
    x, y = x - 0.5, y - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(0, w - 1), (y0 + 1).clamp(0, h - 1)
    x0, y0 = x0.clamp(0, w - 1), y0.clamp(0, h - 1)
    img = image.permute(1, 2, 0)
    return img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x1] * fx * (1 - fy) + img[y1, x0] * (1 - fx) * fy + img[y1, x1] * fx * fy


def _nearest_of_four(depth: Tensor, x: Tensor, y: Tensor) -> Tensor:  # [H, W], [P] -> [P] min depth
    h, w = depth.shape
    x0, y0 = (x - 0.5).floor().long(), (y - 0.5).floor().long()
    out = torch.full_like(x, float("inf"))
    for dy in (0, 1):
        for dx in (0, 1):
            out = torch.minimum(out, depth[(y0 + dy).clamp(0, h - 1), (x0 + dx).clamp(0, w - 1)].to(x.dtype))
    return out


def sample_views(
    points: Tensor,  # [P, 3] surface points, object frame
    normals: Tensor,  # [P, 3] unit outward normals
    vertices: Tensor,  # [M, 3] the mesh the points lie on (for the depth test)
    faces: Tensor,  # [F, 3]
    views: BakeViews,
    *,
    angle_power: float = 4.0,
    depth_tolerance: float = 0.01,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, Tensor]:  # colors [P, 3], weight [P]
    """Blend the views' colours at surface points, each weighted by visibility and view angle.

    Args:
        angle_power: ``p`` in the weight ``cos(angle)^p``: higher favours head-on views (sharper,
            fewer blended misalignments), lower averages more views (smoother, less noise).
        depth_tolerance: object units a point may lie behind the mesh's rendered depth and still
            count as seen.

    Returns:
        The weighted mean colour (0 where nothing saw the point) and the total weight.
    """
    V, _, H, W = views.colors.shape
    pts = points.double()
    acc = torch.zeros(len(points), 3, dtype=torch.float64)
    total = torch.zeros(len(points), dtype=torch.float64)
    w2c = invert_rigid(views.c2w.double())
    for v in range(V):
        cam = pts @ w2c[v, :3, :3].T + w2c[v, :3, 3]
        z = cam[:, 2]
        pix = cam @ views.K[v].double().T
        x, y = pix[:, 0] / z, pix[:, 1] / z
        eye = views.c2w[v, :3, 3].double()
        cos = (normals.double() * torch.nn.functional.normalize(eye - pts, dim=-1)).sum(dim=-1)
        cand = (z > 0) & (x >= 0) & (x < W) & (y >= 0) & (y < H) & (cos > 0)
        idx = cand.nonzero()[:, 0]
        if len(idx) == 0:
            continue
        depth = rasterize_mesh(vertices, faces, views.c2w[v], views.K[v], H, W).depth
        seen = z[idx] <= _nearest_of_four(depth, x[idx], y[idx]) + depth_tolerance
        idx = idx[seen]
        xs, ys = x[idx], y[idx]
        color = _bilinear_image(views.colors[v].double(), xs, ys)
        alpha = _bilinear_image(views.alphas[v].double(), xs, ys)[:, 0]
        weight = cos[idx] ** angle_power * alpha
        acc.index_add_(0, idx, weight[:, None] * color)
        total.index_add_(0, idx, weight)
        if progress is not None:
            progress(v + 1, V)
    colors = torch.where(total[:, None] > 0, acc / total.clamp_min(1e-12)[:, None], torch.zeros_like(acc))
    return colors.float(), total.float()


def pad_texture(texture: np.ndarray, filled: np.ndarray) -> np.ndarray:  # [H, W, C], [H, W] bool -> [H, W, C]
    """Give every unfilled texel the colour of the nearest filled one (an unbounded dilation)."""
    from scipy.ndimage import distance_transform_edt

    if filled.all() or not filled.any():
        return texture
    _, (iy, ix) = distance_transform_edt(~filled, return_indices=True)
    return texture[iy, ix]


def bake_texture(
    mesh: UVMesh,
    views: BakeViews,
    size: int,
    *,
    angle_power: float = 4.0,
    depth_tolerance: float = 0.01,
    fallback: Callable[[Tensor], Tensor] | None = None,
    pad: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # texture [size, size, 3] uint8, state [size, size] uint8
    """Bake a ``size x size`` texture for ``mesh`` from ``views``.

    Args:
        fallback: colours ``[P, 3]`` for surface points ``[P, 3]`` that no view sees (e.g. the
            nearest splat's colour); None leaves them to the padding.
        pad: fill the texels outside every chart from the nearest filled texel (see
            :func:`pad_texture`); False leaves them black (for tests that check the padding).

    Returns:
        The texture, and a map of what each texel holds: 0 outside every chart (padding),
        1 seen by some view, 2 on the surface but seen by none.
    """
    from .mesh_cleanup import vertex_normals

    vertices = torch.from_numpy(mesh.vertices).double()
    faces = torch.from_numpy(mesh.faces)
    # normals of the uncut mesh, so that both copies of a seam vertex agree
    n_src = int(mesh.source.max()) + 1 if len(mesh.source) else 0
    src_vertices = np.zeros((n_src, 3), dtype=np.float64)
    src_vertices[mesh.source] = mesh.vertices
    normals = torch.from_numpy(vertex_normals(src_vertices, mesh.source[mesh.faces])[mesh.source]).double()
    texel, points, texel_normals = surface_texels(vertices, faces, torch.from_numpy(mesh.uv).double(), normals, size)
    colors, weight = sample_views(
        points, texel_normals, vertices, faces, views, angle_power=angle_power, depth_tolerance=depth_tolerance, progress=progress
    )
    seen = weight > 0
    if fallback is not None and bool((~seen).any()):
        colors[~seen] = fallback(points[~seen].float()).float()
    texture = np.zeros((size * size, 3), dtype=np.float32)
    state = np.zeros(size * size, dtype=np.uint8)
    texel_np = texel.numpy()
    texture[texel_np] = colors.numpy()
    state[texel_np] = np.where(seen.numpy(), 1, 2)
    texture, state = texture.reshape(size, size, 3), state.reshape(size, size)
    filled = state == 1 if fallback is None else state > 0
    if pad:
        texture = pad_texture(texture, filled)
    return (texture.clip(0, 1) * 255 + 0.5).astype(np.uint8), state
