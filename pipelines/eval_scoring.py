"""``ouro eval-gso``'s scoring of one object: its views read as the metrics see them, per-view PSNR / SSIM /
LPIPS, the geometry metrics, and what a saved result still lacks.

Images are 8-bit PNGs read as RGB on white in [0, 1] (:func:`load_rgb`), ``[V, 3, H, W]`` per set of
views; see :mod:`ouro.pipelines.evaluate` for the protocol.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ouro.data.preprocess import read_rgba
from ouro.metrics import point_cloud_metrics, psnr, sample_mesh_points, ssim

from . import gso
from .eval_settings import PSNR_CAP_DB, EvalCameras, EvalSettings

__all__ = [
    "complete_result",
    "load_rgb",
    "needs_work",
    "read_views",
    "score_images",
    "strip_image",
    "to_uint8",
    "view0_matches_input",
    "write_views",
]


# -- images -------------------------------------------------------------------------------------
def load_rgb(path: str | os.PathLike, size: int | None = None) -> Tensor:  # [3, H, W] in [0, 1]
    """An image file as 8-bit RGB on white, in [0, 1], resized to ``size`` if given and different.

    RGBA is composited over white and rounded to 8 bits, so a render and its RGB copy on white
    (as another method would save it) are the same image. Every Pillow mode is read at its own
    scale (:func:`ouro.data.preprocess.image_to_rgba`: 16-bit grey / 65535, ...).
    """
    rgba = read_rgba(path)  # any mode at its own scale; InputImageError (a ValueError) names the file
    rgb = np.round((rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])) * 255.0) / 255.0
    out = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    if size is not None and tuple(out.shape[-2:]) != (size, size):
        out = F.interpolate(out[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp(0, 1)


def to_uint8(image: Tensor) -> np.ndarray:  # [3, H, W] in [0, 1] -> [H, W, 3]
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def write_views(folder: Path, views: Tensor) -> None:  # [V, 3, H, W]
    folder.mkdir(parents=True, exist_ok=True)
    for k, view in enumerate(views):
        Image.fromarray(to_uint8(view)).save(folder / f"{k:03d}.png")


def read_views(folder: Path, count: int, size: int) -> Tensor:  # [V, 3, size, size]
    """Views ``000.png ..`` of ``folder``: square, all one size (then resized to ``size``), else ``ValueError`` naming the file."""
    files = [folder / f"{k:03d}.png" for k in range(count)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing {', '.join(missing)} (need {count} views 000.png..{count - 1:03d}.png)")
    views = [load_rgb(f) for f in files]
    first = tuple(views[0].shape[-2:])
    for f, view in zip(files, views):
        h, w = view.shape[-2:]
        if h != w:
            raise ValueError(f"{f}: {w}x{h} px, not square; save every view square and at one size (views are not stretched)")
        if (h, w) != first:
            raise ValueError(f"{f}: {w}x{h} px, but {files[0].name} is {first[1]}x{first[0]}; save every view at one "
                             "square size (views are not stretched)")
    return torch.stack([load_rgb(f, size) for f in files]) if first != (size, size) else torch.stack(views)


def score_images(pred: Tensor, target: Tensor, lpips_model, cap_db: float = PSNR_CAP_DB) -> dict[str, list[float]]:
    """Per-view PSNR (capped), SSIM and LPIPS of ``pred`` against ``target`` (``[V, 3, H, W]`` in [0, 1])."""
    with torch.no_grad():
        return {
            "psnr": psnr(pred, target, max_db=cap_db).tolist(),
            "ssim": ssim(pred, target).tolist(),
            "lpips": lpips_model(pred, target).tolist(),
        }


def strip_image(input_image: Tensor, rows: Sequence[Tensor | None], tile: int = 128, gap: int = 2) -> Image.Image:
    """Input in the first column, then one row per ``[V, 3, H, W]`` set (views, splats, ground truth)."""
    rows = [r for r in rows if r is not None]
    v = max(len(r) for r in rows)
    tile = min(tile, max(int(r.shape[-1]) for r in rows))
    width, height = (v + 1) * (tile + gap) + gap, len(rows) * (tile + gap) + gap
    canvas = Image.new("RGB", (width, height), (200, 200, 200))

    def paste(image: Tensor, col: int, row: int) -> None:
        im = Image.fromarray(to_uint8(image)).resize((tile, tile), Image.Resampling.LANCZOS)
        canvas.paste(im, (gap + col * (tile + gap), gap + row * (tile + gap)))

    paste(input_image, 0, 0)
    for r, views in enumerate(rows):
        for k, view in enumerate(views):
            paste(view, k + 1, r)
    return canvas



# -- one object's metrics -----------------------------------------------------------------------
def _geometry(pred: Tensor, gt: Tensor, thresholds: Sequence[float]) -> dict:
    m = point_cloud_metrics(pred, gt, thresholds)
    return {"chamfer": m.chamfer, "accuracy": m.accuracy, "completeness": m.completeness,
            "fscore": {f"{t:g}": v for t, v in zip(m.thresholds, m.fscore)}}


def needs_work(result: dict | None, settings: EvalSettings, key: dict) -> set[str]:
    """What a saved result lacks for these settings: ``{"sample"}`` or parts to fill in."""
    if result is None or result.get("key") != key:
        return {"sample"}
    missing = set()
    if "view0_is_input" not in result:  # written before view 0 was checked against the input
        missing.add("input_view")
    for part in ("views", "splats"):
        if result.get(part) is not None and settings.lpips_net not in result[part]["lpips"]:
            missing.add("lpips")
    geometry = result.get("geometry") or {}
    if settings.points > 0 and any(geometry.get(k) != v for k, v in _geometry_params(settings).items()):
        missing.add("geometry")
    if settings.points > 0 and settings.mesh and result.get("has_gaussians") and not geometry.get("mesh_fused"):
        missing.add("geometry")
    return missing


def complete_result(
    folder: Path,
    result: dict,
    settings: EvalSettings,
    gt_views: Tensor | None,
    gt_points: Callable[[], Tensor] | None,
    lpips_model,
    cameras: EvalCameras,
) -> dict:
    """Fill in the metrics ``result`` lacks from the files in ``folder``; returns the updated result."""
    result = json.loads(json.dumps(result))  # a copy
    res, net = settings.resolution, settings.lpips_net
    if "view0_is_input" not in result:
        result["view0_is_input"] = view0_matches_input(folder, cameras.num_views, res) or bool((result.get("key") or {}).get("anchor_input"))
    for part, sub in (("views", "views"), ("splats", "splats")):
        if part == "splats" and not (folder / sub).is_dir():
            result["splats"] = None
            continue
        entry = result.get(part)
        if entry is not None and net in entry["lpips"]:
            continue
        if gt_views is None:
            raise ValueError("the ground truth is needed to score and is not available")
        pred = read_views(folder / sub, cameras.num_views, res)
        scores = score_images(pred, gt_views, lpips_model, PSNR_CAP_DB)
        if entry is None:
            result[part] = {"psnr": scores["psnr"], "ssim": scores["ssim"], "lpips": {net: scores["lpips"]}}
        else:
            entry["lpips"][net] = scores["lpips"]
    if settings.points > 0:
        result["geometry"] = _complete_geometry(folder, result, settings, gt_points)
    elif "geometry" not in result:
        result["geometry"] = None
    return result


def view0_matches_input(folder: Path, num_views: int, size: int) -> bool:
    """Whether ``folder``'s ``views/000.png`` is its ``input.png`` (to within 8-bit rounding, at ``size``):
    a method that pastes its input as view 0 generated nothing there."""
    if not (folder / "input.png").is_file():
        return False
    view0 = read_views(folder / "views", num_views, size)[0]
    return bool((view0 - load_rgb(folder / "input.png", size)).abs().max() <= 1.5 / 255)


def _geometry_params(settings: EvalSettings) -> dict:
    return {"points": settings.points, "thresholds": [float(t) for t in settings.thresholds], "seed": 0}


def _complete_geometry(folder: Path, result: dict, settings: EvalSettings, gt_points: Callable[[], Tensor] | None) -> dict:
    """Chamfer / F-score of the Gaussians (and the mesh) in ``folder`` against the ground-truth surface."""
    from ouro.gaussians.ply import read_ply
    from ouro.metrics import gaussian_points

    params = _geometry_params(settings)
    geometry = dict(result.get("geometry") or {})
    stale = any(geometry.get(k) != v for k, v in params.items())
    want_mesh = settings.mesh and bool(result.get("has_gaussians")) and not geometry.get("mesh_fused")
    if not (stale or want_mesh):
        return geometry
    if stale:
        geometry = dict(params, gaussians=None, mesh=None)
    if gt_points is None:  # recorded, not retried: the object keeps its image metrics
        geometry["error"] = "the ground-truth mesh (GSO folder) is not available"
        return geometry
    target = gt_points()
    ply = folder / "gaussians.ply"
    gaussians = read_ply(ply) if ply.is_file() else None
    if stale and gaussians is not None:
        try:
            geometry["gaussians"] = _geometry(gaussian_points(gaussians, settings.points, seed=0), target, settings.thresholds)
        except ValueError as e:  # no visible Gaussian
            geometry["error"] = str(e)
    mesh_file = folder / "mesh.obj"
    if want_mesh:
        from ouro.io.mesh import write_mesh

        from .export import gaussians_to_mesh

        geometry["mesh_fused"] = True
        if not mesh_file.is_file() and gaussians is not None:
            try:
                mesh = gaussians_to_mesh(gaussians)
                if len(mesh.faces):
                    write_mesh(mesh_file, mesh, "obj")
            except ValueError as e:  # nothing visible to fuse
                geometry["error"] = str(e)
    if (stale or want_mesh) and mesh_file.is_file():
        try:
            vertices, faces = gso.read_obj_geometry(mesh_file)
            geometry["mesh"] = _geometry(sample_mesh_points(vertices, faces, settings.points, seed=0), target, settings.thresholds)
        except ValueError as e:
            geometry["error"] = str(e)
    return geometry

