"""``ouro eval-gso``: image-to-3D scored on Google Scanned Objects (paper Tables 1 and 2).

The protocol, written out because the paper's was not published:

1. **Objects.** The names in ``--objects`` (default :data:`ouro.pipelines.gso.DEFAULT_OBJECTS_FILE`,
   100 objects), looked up in the GSO root and downloaded from Gazebo Fuel when missing
   (:mod:`ouro.pipelines.gso`).
2. **Ground truth.** Each object is rendered once with the ``ouro render`` pipeline
   (:mod:`ouro.pipelines.render`): mesh turned +y up (GSO is +z up), bounding-box diagonal
   normalised to 1, one orbit at elevation 0 with the evaluated model's radius and field of view
   (the public checkpoint's: 1.741697, 39.598 deg), RGBA at ``resolution``. With 8 views the orbit
   has 16 frames and frames 0, 2, 4, 6, 8, 10, 12, 15 are the evaluation cameras, exactly the
   public checkpoint's inference cameras (OFFICIAL.md 12.2); with V != 8 views the orbit has V
   frames. Renders are cached in ``<gt-dir>/<tag>/<name>/`` (default ``<output>/gt``), the tag
   naming every setting that changes their pixels (:func:`gt_tag`: engine, Cycles samples,
   resolution, frames, radius, field of view, up axis), and reused by every later run with the same
   settings, for any model.
3. **Condition.** Frame 0 composited on white, used as is: it frames the object as the training
   renders do, so the generated views are pixel-aligned with the ground truth (no segmentation or
   recentring, unlike ``ouro sample`` on a photo). It is saved as ``objects/<name>/input.png``.
4. **Sampling.** ``ouro sample``'s pipeline (Algorithm 2, ``--steps``, ``--seed``, and the sampling
   options ``--sampler``, ``--feedback-every``, ``--feedback-steps``, ``--fast`` or ``--speed``) gives V
   views and the Gaussians; the Gaussians are rendered on white at the V evaluation cameras.
5. **Image metrics** on the 8-bit PNGs as saved (so that other methods' PNGs are treated the same),
   against the ground truth composited on white, per view: PSNR (data range 1, **capped at
   :data:`PSNR_CAP_DB` = 100 dB**: identical images would give +inf; 100 dB is above any real
   method and keeps means and JSON finite), SSIM (Gaussian window 11, sigma 1.5, torchmetrics >=
   1.4.2 reflect borders), LPIPS (AlexNet as the public code; VGG as an option). Images whose size
   differs from ``resolution`` are resized to it (bilinear, antialiased); another method's views
   must be square and all of one size (anything else is that object's failure, never stretched).
   An object's value is the mean over its counted views: all V (``count_input``, the public code's
   choice) or views 1..V-1; and **never view 0 when it is the input itself** (held to the input
   while sampling, ``anchor_input``, or a predicted view 0 equal to the input to within 8-bit
   rounding): a copy of the input would score the PSNR cap and flatter every mean. The splat
   renders count the same views, so the deltas compare like with like.
   The table values are means over objects. **Deltas** (paper Table 2) are ``|views - splats|``:
   per object in the CSV; in the summary ``delta`` is the absolute difference of the two means (the
   paper's numbers), ``mean_abs_delta`` the mean of the per-object deltas.
6. **Geometry** in the normalised object frame (the render's ``meta.json`` normalisation):
   :data:`DEFAULT_POINTS` points sampled uniformly (area-weighted) on the ground-truth mesh against
   as many opacity-weighted Gaussian centres (and the fused mesh with ``mesh=True``):
   Chamfer distance (mean of plain L2 distances, both directions averaged) and F-score at 0.05 and
   0.1 (5 % and 10 % of the unit box); see :mod:`ouro.metrics.geometry`.

Output folder::

    run.json                      what was evaluated (a later run with other settings is refused)
    objects/<name>/               one per scored object, renamed into place when complete:
        input.png views/000.png.. splats/000.png.. gaussians.ply [mesh.obj] strip.png result.json
    metrics.csv                   one row per object: each metric for views and splats, each delta
    summary.json                  means, counts of scored and failed objects, failures
    report.md                     the tables in the paper's format and a strip per object
    gt/                           cached ground-truth renders (unless ``gt_dir`` is elsewhere)

A run resumes: objects with a ``result.json`` of the same settings are not sampled again; a
changed LPIPS backbone, point count or ``mesh`` is filled in from the saved files. ``predictions``
scores another method instead of sampling: ``<predictions>/<name>/views/000.png ..`` (V views at
the evaluation cameras, any size, RGB or RGBA), optionally ``gaussians.ply`` (3DGS PLY, ouro's
frame) and ``mesh.obj`` (normalised object frame, +y up).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

import ouro
from ouro.conventions import check_seed
from ouro.data.preprocess import read_rgba
from ouro.geometry.cameras import OFFICIAL_FOV_DEG, OFFICIAL_FRAME_INDICES, OFFICIAL_RADIUS, intrinsics_from_fov
from ouro.io.files import OutputError, check_output_folder, write_text_atomic
from ouro.metrics import DEFAULT_FSCORE_THRESHOLDS, point_cloud_metrics, psnr, sample_mesh_points, ssim

from . import gso
from .eval_report import CSV_FILE, FORMAT, REPORT, SUMMARY, object_means, report_markdown, summarise, write_csv
from .sample import view_cameras

__all__ = [
    "DEFAULT_POINTS",
    "PSNR_CAP_DB",
    "EvalCameras",
    "EvalError",
    "EvalRun",
    "EvalSettings",
    "load_rgb",
    "run_evaluation",
    "score_images",
]

#: PSNR of identical images (MSE 0) is +inf; every per-view PSNR is capped here (dB).
PSNR_CAP_DB = 100.0
#: Points sampled on each side for Chamfer distance and F-score.
DEFAULT_POINTS = 10_000
OBJECTS = "objects"
RESULT = "result.json"
RUN = "run.json"
STAGING = ".staging"


class EvalError(ValueError):
    """Nothing can be evaluated as asked (one line; the CLI exits 2)."""


@dataclass(frozen=True)
class EvalCameras:
    """The V evaluation cameras: the generated views' (``ouro.pipelines.sample.view_cameras``).

    With 8 views: frames 0, 2, .., 12, 15 of a 16-frame orbit at elevation 0 (OFFICIAL.md 12.2);
    otherwise all frames of a V-frame orbit.
    """

    num_views: int = 8
    radius: float = OFFICIAL_RADIUS
    fov_deg: float = OFFICIAL_FOV_DEG

    @classmethod
    def from_config(cls, camera) -> "EvalCameras":
        return cls(int(camera.num_views), float(camera.radius), float(camera.fov_deg))

    @property
    def orbit_frames(self) -> int:
        return 16 if self.num_views == len(OFFICIAL_FRAME_INDICES) else self.num_views

    @property
    def frame_indices(self) -> tuple[int, ...]:
        return tuple(OFFICIAL_FRAME_INDICES) if self.num_views == len(OFFICIAL_FRAME_INDICES) else tuple(range(self.num_views))

    def c2w(self) -> Tensor:  # [V, 4, 4] OpenCV c2w
        return view_cameras(self.num_views, self.radius, self.fov_deg)[0]

    def K(self, size: int) -> Tensor:  # [V, 3, 3] pixel intrinsics
        return intrinsics_from_fov(self.fov_deg, size, size).expand(self.num_views, 3, 3)


@dataclass(frozen=True)
class EvalSettings:
    """How objects are rendered, sampled and scored.

    Attributes:
        resolution: ground-truth render size and the size metrics are computed at, pixels.
        engine, samples: ``ouro render`` engine (``cycles`` / ``workbench``) and Cycles samples.
        seed: sampling seed (same seed, same views).
        steps: sampling steps; None = the model config's (``paper``: 25).
        feedback: sample with 3D feedback (Algorithm 2); False = the two-stage baseline.
        sampler, feedback_every, feedback_steps, fast, speed: as ``SampleSettings``' ``sampler``,
            ``feedback_every``, ``feedback_steps``, ``decode_reconstructor_views_only`` and ``speed``
            (``ouro sample --sampler/--feedback-every/--feedback-steps/--fast/--speed``).
        anchor_input: hold view 0 to the condition image while sampling; None = the model's
            (``DiffusionConfig.anchor_input``).
        count_input: whether view 0 (the input view) counts in the means.
        lpips_net: ``alex`` (the public code) or ``vgg``.
        points: points per side for the geometry metrics; 0 turns them off.
        mesh: also fuse a mesh from the Gaussians (``ouro export``) and score its surface.
        up_axis: the GSO meshes' up axis (``z``; ``y`` for already +y-up copies).
        render_timeout, workers: per-object render limit (s) and parallel render workers.
    """

    resolution: int = 512
    engine: str = "cycles"
    samples: int = 16
    seed: int = 0
    steps: int | None = None
    feedback: bool = True
    sampler: str = "euler"
    feedback_every: int = 1
    feedback_steps: tuple[int, int] | None = None
    fast: bool = False
    speed: str | None = None
    anchor_input: bool | None = None
    count_input: bool = True
    lpips_net: str = "alex"
    points: int = DEFAULT_POINTS
    mesh: bool = False
    up_axis: str = "z"
    render_timeout: float = 900.0
    workers: int = 1
    thresholds: tuple[float, ...] = DEFAULT_FSCORE_THRESHOLDS


@dataclass
class EvalRun:
    """What one :func:`run_evaluation` call did."""

    output: Path
    requested: list[str]
    scored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    sampled: int = 0  #: objects sampled (or, with predictions, read) by this call
    reused: int = 0  #: objects whose result was already complete
    rescored: int = 0  #: objects completed from their saved files (new LPIPS net, points, mesh)
    rendered_gt: int = 0
    reused_gt: int = 0
    downloaded: list[str] = field(default_factory=list)
    missing_message: str | None = None
    summary: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when every requested object was scored, 1 otherwise."""
        return 1 if self.failed else 0


Log = Callable[[str], None]


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


def _to_uint8(image: Tensor) -> np.ndarray:  # [3, H, W] in [0, 1] -> [H, W, 3]
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def _write_views(folder: Path, views: Tensor) -> None:  # [V, 3, H, W]
    folder.mkdir(parents=True, exist_ok=True)
    for k, view in enumerate(views):
        Image.fromarray(_to_uint8(view)).save(folder / f"{k:03d}.png")


def _read_views(folder: Path, count: int, size: int) -> Tensor:  # [V, 3, size, size]
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
        im = Image.fromarray(_to_uint8(image)).resize((tile, tile), Image.Resampling.LANCZOS)
        canvas.paste(im, (gap + col * (tile + gap), gap + row * (tile + gap)))

    paste(input_image, 0, 0)
    for r, views in enumerate(rows):
        for k, view in enumerate(views):
            paste(view, k + 1, r)
    return canvas


# -- ground truth -------------------------------------------------------------------------------
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
    from .render_inputs import ObjectSource

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
        sources_dir = gt_dir / ".sources" / f"{socket.gethostname()[:32]}.{os.getpid()}"
        sources = []
        try:
            for name, folder in todo.items():
                obj = folder / "meshes" / "model.obj"
                if settings.up_axis == "y":  # already ours: render the file itself, no copy
                    if not obj.is_file():
                        failed[name] = f"cannot read {obj}: no such file"
                        continue
                else:
                    try:
                        obj = gso.convert_obj_up_axis(obj, sources_dir / name / f"{name}.obj", settings.up_axis)
                    except (OSError, ValueError, IndexError) as e:
                        failed[name] = f"cannot read {obj}: {type(e).__name__}: {e}"
                        continue
                textures = tuple(p for p in (folder / "materials" / "textures", folder / "meshes", folder) if p.is_dir())
                # a plain +y-up OBJ now ("file"), so that no GSO-specific handling of the renderer turns it again
                sources.append(ObjectSource(name, "file", str(folder), obj, (obj.parent, *textures)))

            def on_result(result, count: int, total: int) -> None:
                if log is not None:
                    state = f"{result.seconds:.1f} s" if result.status != "failed" else f"failed: {result.reason}"
                    log(f"ground truth {count}/{total} {result.uid}: {state}")

            summary = render_objects(sources, gt_dir, rs, progress=on_result)
            rendered = summary.rendered
            failed.update({f.uid: f"ground-truth render failed: {f.reason}" for f in summary.failures})
        finally:
            shutil.rmtree(sources_dir, ignore_errors=True)
            for folder in (gt_dir / ".sources",):
                try:
                    folder.rmdir()
                except OSError:
                    pass
    ready = {name: gt_dir / name for name in objects if (gt_dir / name / "meta.json").is_file()}
    return ready, {k: v for k, v in failed.items() if k not in ready}, rendered


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


# -- one object ---------------------------------------------------------------------------------
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
        pred = _read_views(folder / sub, cameras.num_views, res)
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
    view0 = _read_views(folder / "views", num_views, size)[0]
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


def _write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


# Copied from ouro.pipelines.render._host
def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:64] or "host"


def _staging(output: Path, name: str) -> Path:
    path = output / STAGING / f"{name}.{_host()}.{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename a finished object folder into place (replacing an outdated one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = staging.with_name(staging.name + ".old")
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_text_atomic(path: Path, text: str) -> None:
    write_text_atomic(path, text)


# -- the run ------------------------------------------------------------------------------------
def _read_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _check_run(output: Path, key: dict) -> None:
    run = _read_result(output / RUN)
    if run is None or run.get("key") == key:
        return
    old = run.get("key", {})
    diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {key.get(k)!r}" for k in diff[:3])
    raise EvalError(f"{output} holds results of other settings ({shown}); choose another --output, or delete {output / RUN} "
                    f"and {output / OBJECTS} to start over")


def run_evaluation(
    names: Sequence[str],
    gso_root: Path,
    output: Path,
    settings: EvalSettings,
    *,
    pipe=None,
    model_description: str | None = None,
    checkpoint: Path | None = None,
    predictions: Path | None = None,
    gt_dir: Path | None = None,
    download: bool = True,
    base_url: str | None = None,
    method: str | None = None,
    log: Log | None = None,
) -> EvalRun:
    """Score ``names`` (see the module docstring); exactly one of ``pipe`` / ``predictions``.

    Raises:
        EvalError: nothing can be scored (no object available, a renderer or LPIPS weights missing,
            ``output`` holding results of other settings); nothing is written to ``output`` then.
    """
    from ouro.metrics.lpips import LPIPS

    start = time.time()
    log = log or (lambda message: None)
    if (pipe is None) == (predictions is None):
        raise ValueError("give exactly one of pipe and predictions")
    output, gso_root = Path(output), Path(gso_root)
    gt_root = Path(gt_dir) if gt_dir is not None else output / "gt"
    if predictions is not None:
        predictions = Path(predictions)
        if not predictions.is_dir():
            raise EvalError(f"--predictions {predictions}: no such folder (expected <object>/views/000.png ..)")
        cameras = EvalCameras()
        steps = anchored = None
    else:
        cameras = EvalCameras.from_config(pipe.config.camera)
        steps = settings.steps or int(pipe.config.diffusion.num_steps)
        anchored = pipe.anchors_input(settings.anchor_input)
    if settings.up_axis not in gso.UP_AXES:
        raise EvalError(f"--up-axis {settings.up_axis!r}: choose z (GSO) or y")
    try:
        check_seed(settings.seed, "--seed")
    except ValueError as e:
        raise EvalError(str(e)) from None
    gt_dir_tagged = gt_root / gt_tag(cameras, settings)
    key = {
        "mode": "predictions" if predictions is not None else "model",
        "model": model_description if checkpoint is None else None,  # the path below names a checkpoint
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint is not None else None,
        "predictions": str(predictions.resolve()) if predictions is not None else None,
        "seed": settings.seed if predictions is None else None,
        "steps": steps,
        "feedback": settings.feedback if predictions is None else None,
        "anchor_input": anchored,
        "resolution": settings.resolution,
        "cameras": asdict(cameras),
        "ground_truth": {"engine": settings.engine, "samples": settings.samples, "normalize": "diagonal",
                         "up_axis": settings.up_axis},
    }
    if predictions is None:  # sampling options other than the defaults (so earlier runs' keys still match)
        key.update({k: v for k, v in sampling_options(settings).items() if v != sampling_options(EvalSettings())[k]})
    method = method or (f"predictions ({predictions.name})" if predictions is not None
                        else f"ouro ({Path(checkpoint).name if checkpoint else model_description})")
    run = EvalRun(output=output, requested=list(names))

    # 1. what is already done (nothing is written before we know something can be scored)
    try:
        check_output_folder(output, "--output")
    except OutputError as e:
        raise EvalError(str(e)) from None
    _check_run(output, key)
    try:
        lpips_model = LPIPS(settings.lpips_net)
    except FileNotFoundError as e:
        raise EvalError(str(e)) from None
    results: dict[str, dict] = {}
    work: dict[str, set[str]] = {}
    for name in names:
        saved = _read_result(output / OBJECTS / name / RESULT)
        needed = needs_work(saved, settings, key)
        if saved is not None and not needed:
            results[name] = saved
        else:
            work[name] = needed
    run.reused = len(results)

    # 2. the predictions, and the GSO objects of the objects to score: on disk, or downloaded
    unavailable: dict[str, str] = {}
    if predictions is not None:
        unavailable = {n: f"no {predictions / n / 'views'} folder" for n in work if not (predictions / n / "views").is_dir()}
        if work and len(unavailable) == len(work) and not results:
            raise EvalError(f"--predictions {predictions}: none of the {len(work)} objects has <object>/views/000.png .. "
                            f"(first expected: {predictions / names[0] / 'views' / '000.png'})")
    todo = [n for n in work if n not in unavailable]
    gt_cached = {name for name in todo if (gt_dir_tagged / name / "meta.json").is_file()}
    ensure = gso.ensure_objects(todo, gso_root, download=download, base_url=base_url,
                                progress=lambda name, status: log(f"GSO {name}: {status}"))
    run.downloaded = ensure.downloaded
    # without its GSO folder an object can still be scored from cached ground truth (no geometry then)
    unavailable.update({n: r for n, r in ensure.missing.items() if n not in gt_cached})
    if ensure.missing:
        run.missing_message = gso.missing_objects_message(gso_root, list(ensure.missing), len(names), ensure.network_error, base_url)
    scorable = [n for n in todo if n not in unavailable]
    if not scorable and not results:
        raise EvalError(run.missing_message or f"none of the {len(names)} objects can be scored: {next(iter(unavailable.values()))}")
    run.failed.update(unavailable)
    if any(n not in gt_cached for n in scorable):  # ground truth to render: its cache must be writable (it may be a read-only share otherwise)
        try:
            check_output_folder(gt_dir_tagged, "--gt-dir")
        except OutputError as e:
            raise EvalError(str(e)) from None

    # 3. output folder, run.json, ground truth
    output.mkdir(parents=True, exist_ok=True)
    if not (output / RUN).is_file():
        _write_json_atomic(output / RUN, {"format": FORMAT, "key": key, "method": method, "ouro_version": ouro.__version__,
                                          "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    from .render import clean_stale_staging

    clean_stale_staging(output)
    gt_ready, gt_failed, run.rendered_gt = render_ground_truth(
        {n: ensure.found.get(n, gso_root / n) for n in scorable if n not in gt_cached}, gt_dir_tagged, cameras, settings, log)
    gt_ready.update({n: gt_dir_tagged / n for n in scorable if n in gt_cached})
    run.reused_gt = len([n for n in scorable if n in gt_cached])
    run.failed.update(gt_failed)

    # 4. each object: sample (or read the predictions), render the splats, score, move into place
    for index, name in enumerate(n for n in scorable if n in gt_ready):
        t0 = time.time()
        folder = output / OBJECTS / name
        gso_folder = ensure.found.get(name, gso_root / name)
        staging = None
        try:
            gt_views, meta = load_ground_truth(gt_ready[name], cameras, settings.resolution)
            gt_points = ((lambda gf=gso_folder, m=meta: gt_surface_points(gf, m, settings.up_axis, settings.points))
                         if gso.is_gso_folder(gso_folder) else None)
            if "sample" in work[name]:
                staging = _staging(output, name)
                base = {"format": FORMAT, "object": name, "key": key, "num_views": cameras.num_views,
                        "resolution": settings.resolution, "ground_truth": str(gt_ready[name]), "gso": str(gso_folder),
                        "up_axis": settings.up_axis}
                if predictions is not None:
                    base.update(_read_predictions(predictions / name, staging, gt_views, cameras, settings))
                else:
                    base.update(_sample_object(pipe, gt_views, staging, cameras, settings, steps))
                result = complete_result(staging, base, settings, gt_views, gt_points, lpips_model, cameras)
                splats = _read_views(staging / "splats", cameras.num_views, settings.resolution) if (staging / "splats").is_dir() else None
                views = _read_views(staging / "views", cameras.num_views, settings.resolution)
                strip_image(load_rgb(staging / "input.png"), [views, splats, gt_views]).save(staging / "strip.png")
                result["seconds"] = {**result.get("seconds", {}), "total": time.time() - t0}
                result["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                _write_json_atomic(staging / RESULT, result)
                _move_into_place(staging, folder)
                staging = None
                run.sampled += 1
                state = "sampled" if predictions is None else "scored"
            else:
                saved = _read_result(folder / RESULT)
                result = complete_result(folder, saved, settings, gt_views, gt_points, lpips_model, cameras)
                _write_json_atomic(folder / RESULT, result)
                run.rescored += 1
                state = "rescored"
            results[name] = result
            m = object_means(result, settings.count_input, settings.lpips_net)
            text = f"PSNR {m['views']['psnr']:.2f} SSIM {m['views']['ssim']:.4f} LPIPS {m['views']['lpips']:.4f}"
            if m["splats"] is not None:
                text += f" | splats {m['splats']['psnr']:.2f} / {m['splats']['ssim']:.4f} / {m['splats']['lpips']:.4f}"
            log(f"{state} {index + 1}/{len(gt_ready)} {name}: {text} ({time.time() - t0:.1f} s)")
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001  (one object's trouble must not stop the others)
            run.failed[name] = f"{type(e).__name__}: {e}"
            log(f"failed {name}: {type(e).__name__}: {e}")
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
    try:
        (output / STAGING).rmdir()
    except OSError:
        pass

    # 5. tables over every requested object (also those scored by earlier runs)
    for name in list(run.failed):
        if name in results:
            del run.failed[name]
    run.scored = [n for n in names if n in results]
    run.seconds = time.time() - start
    extra = {
        "method": method,
        "settings": {"resolution": settings.resolution, "engine": settings.engine, "samples": settings.samples,
                     "seed": key["seed"], "steps": steps, "feedback": key["feedback"],
                     "anchor_input": key["anchor_input"], "points": settings.points, "mesh": settings.mesh,
                     "up_axis": settings.up_axis, "cameras": asdict(cameras), "model": model_description,
                     "checkpoint": key["checkpoint"], "predictions": key["predictions"],
                     "ground_truth": str(gt_dir_tagged),
                     **(sampling_options(settings) if predictions is None else {})},
        "run": {"sampled": run.sampled, "reused": run.reused, "rescored": run.rescored, "rendered_gt": run.rendered_gt,
                "reused_gt": run.reused_gt, "downloaded": len(run.downloaded), "seconds": round(run.seconds, 1)},
        "missing_message": run.missing_message,
        "ouro_version": ouro.__version__,
    }
    summary, rows = summarise(names, results, run.failed, settings.count_input, settings.lpips_net,
                              settings.thresholds, PSNR_CAP_DB, extra)
    run.summary = summary
    write_csv(output / CSV_FILE, rows, settings.thresholds)
    _write_json_atomic(output / SUMMARY, summary)
    what = (f"predictions from {predictions}" if predictions is not None
            else f"{model_description}, seed {settings.seed}, {steps} steps"
            + ("" if settings.feedback else ", no feedback (two-stage)")
            + "".join(f", {k} {v}" for k, v in key.items() if k in sampling_options(settings))
            + (", view 0 anchored to the input" if key["anchor_input"] else ""))
    settings_line = (f"{what}; ground truth: ouro render ({settings.engine}), {cameras.num_views} views at elevation 0, "
                     f"radius {cameras.radius:g}, fov {cameras.fov_deg:.3f} deg, {settings.resolution} px.")
    _write_text_atomic(output / REPORT, report_markdown(summary, rows, method, settings.resolution, settings_line, OBJECTS))
    return run


def sampling_options(settings: EvalSettings) -> dict:
    """The sampling options beyond steps and feedback, as recorded in run.json, summary.json and the report."""
    return {"sampler": settings.sampler, "feedback_every": settings.feedback_every,
            "feedback_steps": list(settings.feedback_steps) if settings.feedback_steps is not None else None,
            "fast": settings.fast, "speed": settings.speed}


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


def _sample_object(pipe, gt_views: Tensor, folder: Path, cameras: EvalCameras, settings: EvalSettings, steps: int) -> dict:
    """Sample from ground-truth view 0 and write input.png, views/, gaussians.ply, splats/."""
    from ouro.gaussians.ply import write_ply

    from .sample import SampleSettings

    cond = condition_view(gt_views, pipe.config.generator.image_size)
    Image.fromarray(_to_uint8(cond)).save(folder / "input.png")
    t0 = time.time()
    out = pipe(cond, SampleSettings(num_steps=steps, feedback=settings.feedback, seed=settings.seed, anchor_input=settings.anchor_input,
                                    sampler=settings.sampler, feedback_every=settings.feedback_every,
                                    feedback_steps=settings.feedback_steps, decode_reconstructor_views_only=settings.fast,
                                    speed=settings.speed))
    t_sample = time.time() - t0
    _write_views(folder / "views", out.views)
    write_ply(folder / "gaussians.ply", out.gaussians)
    t0 = time.time()
    _write_views(folder / "splats", render_splats(out.gaussians, cameras, settings.resolution, device=pipe.device, compat=pipe.compat))
    anchored = pipe.anchors_input(settings.anchor_input)  # then view 0 is the input through the codec
    return {"has_gaussians": True, "view0_is_input": anchored, "seconds": {"sample": t_sample, "splats": time.time() - t0}}


def _read_predictions(src: Path, folder: Path, gt_views: Tensor, cameras: EvalCameras, settings: EvalSettings) -> dict:
    """Copy another method's views (resized to the evaluation size), render its Gaussians if any."""
    from ouro.gaussians.ply import read_finite_ply, write_ply

    res = settings.resolution
    views = _read_views(src / "views", cameras.num_views, res)
    Image.fromarray(_to_uint8(gt_views[0])).save(folder / "input.png")
    _write_views(folder / "views", views)
    out: dict = {"predictions": str(src), "view0_is_input": view0_matches_input(folder, cameras.num_views, res)}
    out["has_gaussians"] = (src / "gaussians.ply").is_file()
    if out["has_gaussians"]:
        gaussians, dropped = read_finite_ply(src / "gaussians.ply")
        if gaussians.num_gaussians == 0:
            raise ValueError(f"{src / 'gaussians.ply'}: no Gaussian without NaN or Inf values")
        out["dropped_nonfinite_gaussians"] = dropped
        write_ply(folder / "gaussians.ply", gaussians, prune_opacity=None)
        _write_views(folder / "splats", render_splats(gaussians, cameras, res))
    if (src / "mesh.obj").is_file():
        shutil.copyfile(src / "mesh.obj", folder / "mesh.obj")
    return out
