"""``ouro eval-gso``'s views to score for one object: sampled by ouro from the ground truth's view 0, or
read from another method's folder; either way written as ``input.png``, ``views/``, ``splats/`` (the
Gaussians rendered at the evaluation cameras) and ``gaussians.ply``. See :mod:`ouro.pipelines.evaluate`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .eval_scoring import read_views, to_uint8, view0_matches_input, write_views
from .eval_settings import EvalCameras, EvalSettings

__all__ = ["condition_view", "read_predictions", "render_splats", "sample_object"]


def condition_view(gt_views: Tensor, size: int) -> Tensor:  # [V, 3, H, W] -> [3, size, size]
    """The model's input for an object: ground-truth view 0 in [0, 1], resized (antialiased) to ``size``."""
    cond = gt_views[0]
    if cond.shape[-1] != size:
        cond = F.interpolate(cond[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
    return cond


def render_splats(gaussians, cameras: EvalCameras, resolution: int, *, device=None, compat: str | None = None) -> Tensor:
    """``[V, 3, res, res]`` in [0, 1], on the CPU: Gaussians seen from the evaluation cameras, rendered on
    ``device`` (default: the Gaussians'; gsplat on CUDA, the torch rasterizer on the CPU)."""
    from ouro.gaussians import render

    device = device or gaussians.means.device
    gaussians = gaussians.to(device=device, dtype=torch.float32)
    with torch.no_grad():
        rgb = render(gaussians, cameras.c2w().to(device), cameras.K(resolution).to(device), resolution, resolution, compat=compat).rgb
    return rgb.clamp(0, 1).cpu()


def sample_object(pipe, gt_views: Tensor, folder: Path, cameras: EvalCameras, settings: EvalSettings, steps: int) -> dict:
    """Sample from ground-truth view 0 and write input.png, views/, gaussians.ply, splats/."""
    from ouro.gaussians.ply import write_ply

    from .sample import SampleSettings

    cond = condition_view(gt_views, pipe.config.generator.image_size)
    Image.fromarray(to_uint8(cond)).save(folder / "input.png")
    t0 = time.time()
    out = pipe(cond, SampleSettings(num_steps=steps, feedback=settings.feedback, seed=settings.seed, anchor_input=settings.anchor_input,
                                    sampler=settings.sampler, feedback_every=settings.feedback_every,
                                    feedback_steps=settings.feedback_steps, decode_reconstructor_views_only=settings.fast,
                                    speed=settings.speed))
    t_sample = time.time() - t0
    write_views(folder / "views", out.views)
    write_ply(folder / "gaussians.ply", out.gaussians)
    t0 = time.time()
    write_views(folder / "splats", render_splats(out.gaussians, cameras, settings.resolution, device=pipe.device, compat=pipe.compat))
    anchored = pipe.anchors_input(settings.anchor_input)  # then view 0 is the input through the codec
    return {"has_gaussians": True, "view0_is_input": anchored, "seconds": {"sample": t_sample, "splats": time.time() - t0}}


def read_predictions(src: Path, folder: Path, gt_views: Tensor, cameras: EvalCameras, settings: EvalSettings) -> dict:
    """Copy another method's views (resized to the evaluation size), render its Gaussians if any."""
    from ouro.gaussians.ply import read_finite_ply, write_ply

    res = settings.resolution
    views = read_views(src / "views", cameras.num_views, res)
    Image.fromarray(to_uint8(gt_views[0])).save(folder / "input.png")
    write_views(folder / "views", views)
    out: dict = {"predictions": str(src), "view0_is_input": view0_matches_input(folder, cameras.num_views, res)}
    out["has_gaussians"] = (src / "gaussians.ply").is_file()
    if out["has_gaussians"]:
        gaussians, dropped = read_finite_ply(src / "gaussians.ply")
        if gaussians.num_gaussians == 0:
            raise ValueError(f"{src / 'gaussians.ply'}: no Gaussian without NaN or Inf values")
        out["dropped_nonfinite_gaussians"] = dropped
        write_ply(folder / "gaussians.ply", gaussians, prune_opacity=None)
        write_views(folder / "splats", render_splats(gaussians, cameras, res))
    if (src / "mesh.obj").is_file():
        shutil.copyfile(src / "mesh.obj", folder / "mesh.obj")
    return out

