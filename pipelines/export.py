"""Export Gaussians: a cleaned 3DGS PLY, or a mesh fused from rendered views, vertex-coloured or textured.

The mesh comes from rendering the splats' colour and depth from rings of cameras around them and
fusing those views in a TSDF (:func:`ouro.io.mesh.tsdf_fuse`): the surface the splats show from
outside, coloured as they look, in the object frame (+y up, as glTF).

With a face budget the fused mesh is cleaned (small pieces dropped, simple holes closed) and
decimated (:func:`ouro.io.mesh_cleanup.clean_mesh`). With a texture it is then UV-unwrapped
(xatlas) and a texture is baked from renders of the splats (:mod:`ouro.io.texture`): per texel, the
views that see its surface point, blended by view angle, gutters padded. All on the CPU.

    >>> from ouro.pipelines.export import export, TextureSettings
    >>> export("out/gaussians.ply", "out/mesh.glb")  # doctest: +SKIP
    >>> export("out/gaussians.ply", "out/mesh.glb", texture=TextureSettings(size=1024))  # doctest: +SKIP

From Python, with Gaussians in memory (as ``ouro sample`` holds them):

    >>> export_gaussians(gaussians, "out/mesh.obj", texture=TextureSettings())  # doctest: +SKIP
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ouro.gaussians import Gaussians, render
from ouro.gaussians.rasterize import render_median_depth
from ouro.gaussians.ply import read_finite_ply, write_ply
from ouro.geometry.cameras import intrinsics_from_fov, orbit_cameras
from ouro.io.files import make_parent
from ouro.io.mesh import ColoredMesh, TexturedMesh, tsdf_fuse, write_mesh, write_textured_mesh
from ouro.io.mesh_cleanup import clean_mesh
from ouro.io.texture import BakeViews

from .choices import EXPORT_FORMATS

__all__ = [
    "MeshSettings", "TextureSettings", "export", "export_gaussians", "gaussians_to_mesh", "gaussians_to_textured_mesh",
    "bake_views", "nearest_splat_colors", "object_extent", "NoSurfaceError",
]


class NoSurfaceError(ValueError):
    """The Gaussians show no surface to mesh (all near-transparent, or nothing survives fusion)."""


@dataclass(frozen=True)
class MeshSettings:
    """How a mesh is extracted from Gaussians."""

    image_size: int = 256  #: rendered view size, pixels
    views_per_ring: int = 12  #: cameras per elevation ring
    elevations_deg: tuple[float, ...] = (-50.0, -15.0, 15.0, 50.0)  #: one ring per elevation, plus top and bottom views
    fov_deg: float = 40.0  #: field of view of the fusion cameras
    voxels: int = 256  #: TSDF voxels per side of the fused cube
    alpha_threshold: float = 0.5  #: the surface is where a ray's accumulated opacity passes this
    chunk_views: int = 8  #: views rendered at once (memory)
    faces: int | None = None  #: face budget: clean and decimate the fused mesh to this many faces; None keeps it as fused
    min_component: float = 0.01  #: with a budget, pieces under this fraction of the largest piece's faces are dropped
    max_hole_edges: int = 64  #: with a budget, boundary loops of at most this many edges are closed


@dataclass(frozen=True)
class TextureSettings:
    """How a texture is baked onto the fused mesh (see :mod:`ouro.io.texture`)."""

    size: int = 1024  #: texture width = height, texels
    faces: int = 50_000  #: face budget of the textured mesh (MeshSettings.faces, when set, wins)
    view_size: int = 512  #: size of the splat renders the texture is baked from, pixels
    angle_power: float = 4.0  #: views are weighted by cos(angle to the normal) ** angle_power
    depth_tolerance: float = 0.02  #: visibility slack behind the mesh's rendered depth, fraction of the object radius
    padding: int = 4  #: texels between UV charts

    def __post_init__(self) -> None:
        if self.size < 64 or self.size > 8192 or self.size & (self.size - 1):
            raise ValueError(f"--texture {self.size}: give a power of two from 64 to 8192 (e.g. 1024)")


def object_extent(gaussians: Gaussians, min_opacity: float = 0.05) -> float:
    """Radius of a sphere at the origin holding the visible Gaussians' 3-sigma ellipsoids."""
    keep = gaussians.opacities >= min_opacity
    if not bool(keep.any()):
        raise NoSurfaceError("no Gaussian has opacity >= %.2f; nothing to mesh" % min_opacity)
    means, scales = gaussians.means[keep], gaussians.scales[keep]
    return float((means.norm(dim=-1) + 3 * scales.max(dim=-1).values).max())


def _fusion_cameras(settings: MeshSettings, radius: float) -> torch.Tensor:  # [V, 4, 4]
    rings = [
        orbit_cameras(settings.views_per_ring, el, (i * 360.0 / settings.views_per_ring) / 2, radius, dtype=torch.float64)
        for i, el in enumerate(settings.elevations_deg)
    ]
    poles = orbit_cameras(2, torch.tensor([85.0, -85.0]), 0.0, radius, dtype=torch.float64)
    return torch.cat(rings + [poles])


def _fusion_radius(extent: float, fov_deg: float) -> float:
    # far enough that the extent sphere fits the field of view with a 10 % margin
    return 1.1 * extent / math.sin(math.radians(fov_deg) / 2)


def gaussians_to_mesh(
    gaussians: Gaussians,  # [N, *] one object
    settings: MeshSettings = MeshSettings(),
    progress: Callable[[int, int], None] | None = None,
) -> ColoredMesh:
    """Fuse rendered colour and depth of one set of Gaussians into a vertex-coloured mesh.

    With ``settings.faces`` the mesh is then cleaned and decimated to that many faces
    (:func:`ouro.io.mesh_cleanup.clean_mesh`). ``progress(done, total)`` is called after each
    chunk of rendered views.
    """
    mesh = _fuse(gaussians, settings, progress)
    if settings.faces is not None:
        mesh = _clean(mesh, settings, settings.faces)
    return mesh


def _clean(mesh: ColoredMesh, settings: MeshSettings, faces: int) -> ColoredMesh:
    return clean_mesh(mesh, faces=faces, min_component=settings.min_component, max_hole_edges=settings.max_hole_edges)[0]


def _fuse(
    gaussians: Gaussians,
    settings: MeshSettings,
    progress: Callable[[int, int], None] | None = None,
    with_color: bool = True,
) -> ColoredMesh:
    """TSDF fusion of the splats' first-surface depth; ``with_color=False`` skips the colour renders
    (a textured export discards vertex colours) and leaves the colours black."""
    gaussians = gaussians.to(dtype=torch.float32)
    extent = object_extent(gaussians)
    c2w = _fusion_cameras(settings, _fusion_radius(extent, settings.fov_deg))
    size = settings.image_size
    K = intrinsics_from_fov(settings.fov_deg, size, size, dtype=torch.float64).expand(len(c2w), 3, 3)
    depths, colors = [], []
    with torch.no_grad():
        for start in range(0, len(c2w), settings.chunk_views):
            views = slice(start, start + settings.chunk_views)
            cams, Ks = c2w[views].float(), K[views].float()
            # the first surface (not the alpha-weighted mean depth, which semi-transparent splats
            # pull towards the far side of the object); 0 = empty
            depths.append(render_median_depth(gaussians, cams, Ks, size, size, threshold=1 - settings.alpha_threshold)[:, 0])
            if with_color:
                out = render(gaussians, cams, Ks, size, size, background=(0.0, 0.0, 0.0))
                # with a black background rgb = alpha * surface colour
                colors.append((out.rgb / out.alpha.clamp_min(1e-6)).clamp(0, 1))
            else:
                colors.append(torch.zeros(len(cams), 3, size, size))
            if progress is not None:
                progress(min(start + settings.chunk_views, len(c2w)), len(c2w))
    return tsdf_fuse(
        torch.cat(depths), torch.cat(colors), c2w, K, bound=1.05 * extent, resolution=settings.voxels
    )


@torch.no_grad()
def bake_views(
    gaussians: Gaussians,  # [N, *] one object
    c2w: torch.Tensor,  # [V, 4, 4] camera-to-world, OpenCV
    size: int,
    fov_deg: float,
    chunk_views: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> BakeViews:
    """Render the splats' surface colour (un-premultiplied) and alpha at ``size x size`` for baking."""
    K = intrinsics_from_fov(fov_deg, size, size, dtype=torch.float64).expand(len(c2w), 3, 3)
    colors, alphas = [], []
    for start in range(0, len(c2w), chunk_views):
        views = slice(start, start + chunk_views)
        out = render(gaussians.to(dtype=torch.float32), c2w[views].float(), K[views].float(), size, size, background=(0.0, 0.0, 0.0))
        # with a black background rgb = alpha * surface colour
        colors.append((out.rgb / out.alpha.clamp_min(1e-6)).clamp(0, 1))
        alphas.append(out.alpha)
        if progress is not None:
            progress(min(start + chunk_views, len(c2w)), len(c2w))
    return BakeViews(torch.cat(colors), torch.cat(alphas), c2w.double(), K.double())


def nearest_splat_colors(gaussians: Gaussians, points: torch.Tensor, min_opacity: float = 0.3) -> torch.Tensor:  # [P, 3] -> [P, 3]
    """The colour of the nearest fairly opaque Gaussian centre to each point (for unseen surface)."""
    from scipy.spatial import cKDTree

    keep = gaussians.opacities >= min_opacity
    if not bool(keep.any()):
        keep = gaussians.opacities >= gaussians.opacities.max()
    tree = cKDTree(gaussians.means[keep].double().numpy())
    _, idx = tree.query(points.double().numpy())
    return gaussians.colors[keep][torch.from_numpy(np.asarray(idx, dtype=np.int64))].float()


def gaussians_to_textured_mesh(
    gaussians: Gaussians,  # [N, *] one object
    settings: MeshSettings = MeshSettings(),
    texture: TextureSettings = TextureSettings(),
    progress: Callable[[int, int], None] | None = None,
    fused: ColoredMesh | None = None,
) -> TexturedMesh:
    """Fuse, clean, decimate, UV-unwrap and texture one set of Gaussians (CPU).

    1. TSDF fusion of rendered depth (as :func:`gaussians_to_mesh`), then cleaning and decimation to
       ``settings.faces`` or else ``texture.faces`` faces.
    2. xatlas UV unwrap into one ``texture.size`` atlas.
    3. The splats rendered from the fusion cameras at ``texture.view_size``; each texel gets the
       blend of the views that see its surface point (:func:`ouro.io.texture.bake_texture`);
       surface no view sees takes the nearest opaque splat's colour; gutters are padded.

    ``fused``: the mesh of step 1 before cleaning, when the caller already fused the same
    Gaussians with the same ``settings`` (e.g. for a vertex-coloured export too); fusion is skipped.
    ``progress(done, total)`` counts rendered and sampled views over all steps.
    """
    from ouro.io.texture import bake_texture, unwrap

    gaussians = gaussians.to(dtype=torch.float32)
    extent = object_extent(gaussians)
    c2w = _fusion_cameras(settings, _fusion_radius(extent, settings.fov_deg))
    n = len(c2w)
    total = 3 * n  # fusion renders, bake renders, bake sampling

    def stage(offset: int) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, _: progress(offset + done, total))

    # 1. fused, cleaned, decimated surface
    mesh = fused if fused is not None else _fuse(gaussians, settings, stage(0), with_color=False)
    if len(mesh.faces) == 0:
        raise NoSurfaceError("no surface could be extracted (are the Gaussians visible?)")
    mesh = _clean(mesh, settings, settings.faces if settings.faces is not None else texture.faces)
    # 2. UV atlas
    uv_mesh = unwrap(mesh.vertices, mesh.faces, texture.size, padding=texture.padding)
    # 3. texture from the splats' renders
    views = bake_views(gaussians, c2w, texture.view_size, settings.fov_deg, settings.chunk_views, stage(n))
    image, _ = bake_texture(
        uv_mesh, views, texture.size,
        angle_power=texture.angle_power,
        depth_tolerance=texture.depth_tolerance * extent,
        fallback=lambda points: nearest_splat_colors(gaussians, points),
        progress=stage(2 * n),
    )
    return TexturedMesh(uv_mesh.vertices, uv_mesh.faces, uv_mesh.uv, image)


def export_gaussians(
    gaussians: Gaussians,  # [N, *] one object
    dst: str | Path,
    format: str | None = None,
    settings: MeshSettings = MeshSettings(),
    texture: TextureSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write one object's Gaussians as splats, a vertex-coloured mesh or a textured mesh.

    Args:
        gaussians: ``[N, *]`` activated Gaussians of one object (as ``ouro sample`` makes them).
        dst: output file; ``format`` defaults to its suffix.
        format: ``ply`` (the splats, pruned of near-transparent Gaussians), ``glb`` or ``obj``
            (a mesh; with ``texture`` a UV-textured one: GLB with the texture embedded, or OBJ with
            ``<stem>.mtl`` and ``<stem>.png`` beside it).
        settings: fusion, cleaning and face budget (``settings.faces``).
        texture: bake a texture with these settings; None writes vertex colours.

    Returns:
        The written files, the main one first. Raises ``ValueError`` for an unknown format or a
        texture asked of a PLY, :class:`NoSurfaceError` (a ``ValueError``) for Gaussians that show
        no surface.
    """
    dst = Path(dst)
    fmt = format or dst.suffix.lower().lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"{dst}: unknown export format {fmt!r}; use ply, glb or obj")
    if gaussians.num_gaussians == 0:
        raise ValueError(f"{dst}: no Gaussians to export")
    if fmt == "ply":
        if texture is not None:
            raise ValueError(f"{dst}: a texture needs a mesh format; use .glb or .obj")
        write_ply(dst, gaussians)
        return [dst]
    if texture is not None:
        return write_textured_mesh(dst, gaussians_to_textured_mesh(gaussians, settings, texture, progress), fmt)
    mesh = gaussians_to_mesh(gaussians, settings, progress)
    if len(mesh.faces) == 0:
        raise NoSurfaceError("no surface could be extracted (are the Gaussians visible?)")
    return [write_mesh(dst, mesh, fmt)]


def export(
    src: str | Path,
    dst: str | Path,
    format: str | None = None,
    settings: MeshSettings = MeshSettings(),
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    texture: TextureSettings | None = None,
) -> Path:
    """Export the Gaussians in the 3DGS PLY ``src`` to ``dst`` (see :func:`export_gaussians`).

    Args:
        src: a 3DGS PLY (as written by ``ouro sample``).
        dst: output file; ``format`` defaults to its suffix. Missing folders above it are created
            (and removed again if the write fails).
        format: ``ply`` (the splats, pruned of near-transparent Gaussians), ``glb`` or ``obj``
            (a mesh, vertex-coloured or, with ``texture``, textured).
        log: told, in one line, how many Gaussians holding NaN or Inf were dropped (if any).

    Returns:
        The written path (an OBJ's MTL and PNG lie beside it). Raises ``ValueError`` for an
        unreadable or empty PLY, one whose every Gaussian holds NaN or Inf, an unknown format, or
        no surface.
    """
    src, dst = Path(src), Path(dst)
    fmt = format or dst.suffix.lower().lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"{dst}: unknown export format {fmt!r}; use ply, glb or obj")
    if fmt == "ply" and texture is not None:
        raise ValueError(f"{dst}: a texture needs a mesh format; use .glb or .obj")
    gaussians, dropped = read_finite_ply(src)
    total = gaussians.num_gaussians + dropped
    if total == 0:
        raise ValueError(f"{src}: the PLY holds no Gaussians")
    if gaussians.num_gaussians == 0:
        raise ValueError(f"{src}: all {total} Gaussians hold NaN or Inf values; nothing to export (re-create the PLY)")
    if dropped and log is not None:
        log(f"{src}: dropped {dropped} of {total} Gaussians holding NaN or Inf values")
    created = make_parent(dst)
    try:
        return export_gaussians(gaussians, dst, fmt, settings, texture, progress)[0]
    except BaseException as exc:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(exc, NoSurfaceError):
            raise NoSurfaceError(f"{src}: {exc}") from exc
        raise
