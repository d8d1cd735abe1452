"""Export Gaussians: a cleaned 3DGS PLY, or a vertex-coloured mesh fused from rendered views.

The mesh comes from rendering the splats' colour and depth from rings of cameras around them and
fusing those views in a TSDF (:func:`ouro.io.mesh.tsdf_fuse`): the surface the splats show from
outside, coloured as they look, in the object frame (+y up, as glTF).

    >>> from ouro.pipelines.export import export
    >>> export("out/gaussians.ply", "out/mesh.glb")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ouro.gaussians import Gaussians, render
from ouro.gaussians.rasterize import render_median_depth
from ouro.gaussians.ply import read_finite_ply, write_ply
from ouro.geometry.cameras import intrinsics_from_fov, orbit_cameras
from ouro.io.files import make_parent
from ouro.io.mesh import ColoredMesh, tsdf_fuse, write_mesh

from .choices import EXPORT_FORMATS

__all__ = ["MeshSettings", "export", "gaussians_to_mesh", "object_extent"]


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


def object_extent(gaussians: Gaussians, min_opacity: float = 0.05) -> float:
    """Radius of a sphere at the origin holding the visible Gaussians' 3-sigma ellipsoids."""
    keep = gaussians.opacities >= min_opacity
    if not bool(keep.any()):
        raise ValueError("no Gaussian has opacity >= %.2f; nothing to mesh" % min_opacity)
    means, scales = gaussians.means[keep], gaussians.scales[keep]
    return float((means.norm(dim=-1) + 3 * scales.max(dim=-1).values).max())


def _fusion_cameras(settings: MeshSettings, radius: float) -> torch.Tensor:  # [V, 4, 4]
    rings = [
        orbit_cameras(settings.views_per_ring, el, (i * 360.0 / settings.views_per_ring) / 2, radius, dtype=torch.float64)
        for i, el in enumerate(settings.elevations_deg)
    ]
    poles = orbit_cameras(2, torch.tensor([85.0, -85.0]), 0.0, radius, dtype=torch.float64)
    return torch.cat(rings + [poles])


def gaussians_to_mesh(
    gaussians: Gaussians,  # [N, *] one object
    settings: MeshSettings = MeshSettings(),
    progress: Callable[[int, int], None] | None = None,
) -> ColoredMesh:
    """Fuse rendered colour and depth of one set of Gaussians into a vertex-coloured mesh.

    ``progress(done, total)`` is called after each chunk of rendered views.
    """
    gaussians = gaussians.to(dtype=torch.float32)
    extent = object_extent(gaussians)
    # Far enough that the extent sphere fits the field of view with a 10 % margin.
    radius = 1.1 * extent / math.sin(math.radians(settings.fov_deg) / 2)
    c2w = _fusion_cameras(settings, radius)
    size = settings.image_size
    K = intrinsics_from_fov(settings.fov_deg, size, size, dtype=torch.float64).expand(len(c2w), 3, 3)
    depths, colors = [], []
    with torch.no_grad():
        for start in range(0, len(c2w), settings.chunk_views):
            views = slice(start, start + settings.chunk_views)
            cams, Ks = c2w[views].float(), K[views].float()
            out = render(gaussians, cams, Ks, size, size, background=(0.0, 0.0, 0.0))
            # the first surface (not the alpha-weighted mean depth, which semi-transparent splats
            # pull towards the far side of the object); 0 = empty
            depths.append(render_median_depth(gaussians, cams, Ks, size, size, threshold=1 - settings.alpha_threshold)[:, 0])
            # with a black background rgb = alpha * surface colour
            colors.append((out.rgb / out.alpha.clamp_min(1e-6)).clamp(0, 1))
            if progress is not None:
                progress(min(start + settings.chunk_views, len(c2w)), len(c2w))
    return tsdf_fuse(
        torch.cat(depths), torch.cat(colors), c2w, K, bound=1.05 * extent, resolution=settings.voxels
    )


def export(
    src: str | Path,
    dst: str | Path,
    format: str | None = None,
    settings: MeshSettings = MeshSettings(),
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Export the Gaussians in the 3DGS PLY ``src`` to ``dst``.

    Args:
        src: a 3DGS PLY (as written by ``ouro sample``).
        dst: output file; ``format`` defaults to its suffix. Missing folders above it are created
            (and removed again if the write fails).
        format: ``ply`` (the splats, pruned of near-transparent Gaussians), ``glb`` or ``obj``
            (a vertex-coloured mesh).
        log: told, in one line, how many Gaussians holding NaN or Inf were dropped (if any).

    Returns:
        The written path. Raises ``ValueError`` for an unreadable or empty PLY, one whose every
        Gaussian holds NaN or Inf, or an unknown format.
    """
    src, dst = Path(src), Path(dst)
    fmt = format or dst.suffix.lower().lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"{dst}: unknown export format {fmt!r}; use ply, glb or obj")
    gaussians, dropped = read_finite_ply(src)
    total = gaussians.num_gaussians + dropped
    if total == 0:
        raise ValueError(f"{src}: the PLY holds no Gaussians")
    if gaussians.num_gaussians == 0:
        raise ValueError(f"{src}: all {total} Gaussians hold NaN or Inf values; nothing to export (re-create the PLY)")
    if dropped and log is not None:
        log(f"{src}: dropped {dropped} of {total} Gaussians holding NaN or Inf values")
    mesh = gaussians_to_mesh(gaussians, settings, progress) if fmt != "ply" else None
    if mesh is not None and len(mesh.faces) == 0:
        raise ValueError(f"{src}: no surface could be extracted (are the Gaussians visible?)")
    created = make_parent(dst)
    try:
        if mesh is None:
            write_ply(dst, gaussians)
            return dst
        return write_mesh(dst, mesh, fmt)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
