"""``ouro eval-gso``'s ground truth: the GSO objects rendered once by ``ouro render`` at the evaluation cameras,
cached under a tag naming every setting that changes their pixels, read back as ``[V, 3, H, W]`` on white,
and points on the ground-truth surface for the geometry metrics. See :mod:`ouro.pipelines.evaluate`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ouro.io.files import remove_staging_area, staging_folder
from ouro.metrics import sample_mesh_points

from . import gso
from .eval_scoring import load_rgb
from .eval_settings import EvalCameras, EvalError, EvalSettings, Log

__all__ = ["gt_surface_points", "gt_tag", "load_ground_truth", "render_ground_truth", "render_settings"]

_SOURCES = ".sources"  # <gt-dir>/.sources/meshes.<host>.<pid>/<name>/<name>.obj while rendering


def gt_tag(cameras: EvalCameras, settings: EvalSettings) -> str:
    """The cache folder name of one render setting: every setting that changes the ground truth's pixels.

    Engine and (Cycles only: the workbench engine takes none) samples per pixel, resolution, orbit
    frames, radius, field of view, and the up axis the GSO meshes are read with. (Normalisation,
    elevation 0, lighting and the seed are fixed by :func:`render_settings`.)
    """
    samples = f"-{settings.samples}spp" if settings.engine == "cycles" else ""
    return (f"{settings.engine}{samples}-{settings.resolution}px-{cameras.orbit_frames}f-r{cameras.radius:g}"
            f"-fov{cameras.fov_deg:.3f}-up{settings.up_axis}")


def render_settings(cameras: EvalCameras, settings: EvalSettings):
    from .render import RenderSettings

    return RenderSettings(
        engine=settings.engine, resolution=settings.resolution, orbits=1, frames=cameras.orbit_frames,
        elevation_min=0.0, elevation_max=0.0, radius=cameras.radius, fov_deg=cameras.fov_deg, depth=False,
        seed=0, samples=settings.samples, normalize="diagonal", timeout=settings.render_timeout,
        workers=settings.workers,
    )


def render_ground_truth(
    objects: dict[str, Path],
    gt_dir: Path,
    cameras: EvalCameras,
    settings: EvalSettings,
    log: Log | None = None,
) -> tuple[dict[str, Path], dict[str, str], int]:
    """Render the objects not cached yet; returns ``({name: render folder}, {name: reason}, rendered)``."""
    import importlib.util

    from .render import finished_uids, render_objects

    done = finished_uids(gt_dir)
    todo = {name: folder for name, folder in objects.items() if name not in done}
    failed: dict[str, str] = {}
    rendered = 0
    if todo:
        missing = [m for m in ("bpy", "blenderproc") if importlib.util.find_spec(m) is None]
        if missing:
            raise EvalError(f"{' and '.join(missing)} not installed in this Python, needed to render the ground truth of "
                            f"{len(todo)} objects: pip install 'ouro3d[render]' (bpy 4.2 needs Python 3.11)")
        rs = render_settings(cameras, settings)
        rs.check()
        sources_dir = staging_folder(gt_dir, "meshes", _SOURCES)  # +y-up copies of the meshes
        try:
            sources = _render_sources(todo, sources_dir, settings.up_axis, failed)

            def on_result(result, count: int, total: int) -> None:
                if log is not None:
                    state = f"{result.seconds:.1f} s" if result.status != "failed" else f"failed: {result.reason}"
                    log(f"ground truth {count}/{total} {result.uid}: {state}")

            summary = render_objects(sources, gt_dir, rs, progress=on_result)
            rendered = summary.rendered
            failed.update({f.uid: f"ground-truth render failed: {f.reason}" for f in summary.failures})
        finally:
            shutil.rmtree(sources_dir, ignore_errors=True)
            remove_staging_area(gt_dir, _SOURCES)
    ready = {name: gt_dir / name for name in objects if (gt_dir / name / "meta.json").is_file()}
    return ready, {k: v for k, v in failed.items() if k not in ready}, rendered


def _render_sources(objects: dict[str, Path], sources_dir: Path, up_axis: str, failed: dict[str, str]) -> list:
    """``ouro render`` sources of GSO folders: their meshes turned +y up into ``sources_dir`` (``up_axis`` z), or
    the files themselves (y); an unreadable mesh is recorded in ``failed``."""
    from .render_inputs import ObjectSource

    sources = []
    for name, folder in objects.items():
        obj = folder / "meshes" / "model.obj"
        if up_axis == "y":  # already ours: render the file itself, no copy
            if not obj.is_file():
                failed[name] = f"cannot read {obj}: no such file"
                continue
        else:
            try:
                obj = gso.convert_obj_up_axis(obj, sources_dir / name / f"{name}.obj", up_axis)
            except (OSError, ValueError, IndexError) as e:
                failed[name] = f"cannot read {obj}: {type(e).__name__}: {e}"
                continue
        textures = tuple(p for p in (folder / "materials" / "textures", folder / "meshes", folder) if p.is_dir())
        # a plain +y-up OBJ now ("file"), so that no GSO-specific handling of the renderer turns it again
        sources.append(ObjectSource(name, "file", str(folder), obj, (obj.parent, *textures)))
    return sources


def load_ground_truth(folder: Path, cameras: EvalCameras, size: int) -> tuple[Tensor, dict]:
    """The V ground-truth views ``[V, 3, size, size]`` on white, and the render's meta.json."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    frames = {(loc["orbit"], loc["frame"]): loc for loc in meta["locations"]}
    views = []
    for f in cameras.frame_indices:
        loc = frames[(0, f)]
        if abs(loc["elevation"]) > 1e-6 or abs(float(meta["radius"]) - cameras.radius) > 1e-6:
            raise ValueError(f"{folder}: frame {f} is not at elevation 0 / radius {cameras.radius}; delete it to re-render")
        views.append(load_rgb(folder / loc["frames"][0]["name"], size))
    return torch.stack(views), meta


def gt_surface_points(gso_folder: Path, meta: dict, up_axis: str, n: int, seed: int = 0) -> Tensor:
    """``n`` points on the ground-truth mesh in the normalised object frame of the render."""
    vertices, faces = gso.read_obj_geometry(gso_folder / "meshes" / "model.obj")
    norm = meta["normalization"]
    vertices = float(norm["scale"]) * gso.up_axis_to_ours(vertices, up_axis) + np.asarray(norm["offset"], dtype=np.float64)
    return sample_mesh_points(vertices, faces, n, seed=seed)

