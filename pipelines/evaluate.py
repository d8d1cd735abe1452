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

The code: :mod:`~ouro.pipelines.eval_settings` (cameras, settings), :mod:`~ouro.pipelines.eval_ground_truth`
(step 2), :mod:`~ouro.pipelines.eval_predictions` (steps 3-4), :mod:`~ouro.pipelines.eval_scoring` (steps
5-6), :mod:`~ouro.pipelines.eval_report` (tables) and this module (the resumable run: ``run.json``'s key,
what is reused, one object after another, the summary and report). Its names are re-exported here.

A run resumes: objects with a ``result.json`` of the same settings are not sampled again; a
changed LPIPS backbone, point count or ``mesh`` is filled in from the saved files. ``predictions``
scores another method instead of sampling: ``<predictions>/<name>/views/000.png ..`` (V views at
the evaluation cameras, any size, RGB or RGBA), optionally ``gaussians.ply`` (3DGS PLY, ouro's
frame) and ``mesh.obj`` (normalised object frame, +y up).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import ouro
from ouro.conventions import check_seed
from ouro.io.files import (
    OutputError,
    check_output_folder,
    clean_stale_staging,
    remove_staging_area,
    read_json,
    replace_folder,
    staging_folder,
    write_text_atomic,
)

from . import gso
from .eval_ground_truth import gt_surface_points, gt_tag, load_ground_truth, render_ground_truth, render_settings
from .eval_predictions import condition_view, read_predictions, render_splats, sample_object
from .eval_report import CSV_FILE, FORMAT, REPORT, SUMMARY, object_means, report_markdown, summarise, write_csv
from .eval_scoring import (
    complete_result,
    load_rgb,
    needs_work,
    read_views,
    score_images,
    strip_image,
    to_uint8,
    view0_matches_input,
    write_views,
)
from .eval_settings import DEFAULT_POINTS, PSNR_CAP_DB, EvalCameras, EvalError, EvalSettings, Log, sampling_options, settings_line

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
    # re-exported from the eval_* modules (callers import them from here)
    "CSV_FILE",
    "REPORT",
    "SUMMARY",
    "complete_result",
    "condition_view",
    "gt_surface_points",
    "gt_tag",
    "load_ground_truth",
    "needs_work",
    "read_predictions",
    "read_views",
    "render_ground_truth",
    "render_settings",
    "render_splats",
    "run_key",
    "sample_object",
    "sampling_options",
    "strip_image",
    "to_uint8",
    "view0_matches_input",
    "write_views",
]

OBJECTS = "objects"
RESULT = "result.json"
RUN = "run.json"


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


@dataclass
class _Job:
    """One :func:`run_evaluation` call's fixed inputs, as its steps share them."""

    output: Path
    settings: EvalSettings
    cameras: EvalCameras
    key: dict  #: run.json's key: what was evaluated (see :func:`run_key`)
    steps: int | None
    method: str
    model_description: str | None
    pipe: object | None
    predictions: Path | None
    gt_dir: Path  #: the tagged ground-truth cache folder
    log: Log
    lpips_model: object = None


# -- the run key and the saved state ---------------------------------------------------------------
def run_key(settings: EvalSettings, cameras: EvalCameras, *, model_description: str | None, checkpoint: Path | None,
            predictions: Path | None, steps: int | None, anchored: bool | None) -> dict:
    """What a run evaluated, as ``run.json`` and every ``result.json`` record it: a later run must match it."""
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
    return key


def _write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


def _check_run(output: Path, key: dict) -> None:
    run = read_json(output / RUN)
    if run is None or run.get("key") == key:
        return
    old = run.get("key", {})
    diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {key.get(k)!r}" for k in diff[:3])
    raise EvalError(f"{output} holds results of other settings ({shown}); choose another --output, or delete {output / RUN} "
                    f"and {output / OBJECTS} to start over")


# -- the run ------------------------------------------------------------------------------------
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
    start = time.time()
    if (pipe is None) == (predictions is None):
        raise ValueError("give exactly one of pipe and predictions")
    output, gso_root = Path(output), Path(gso_root)
    job = _new_job(output, settings, pipe, model_description, checkpoint, predictions, gt_dir, method,
                   log or (lambda message: None))
    run = EvalRun(output=output, requested=list(names))

    # 1. what is already done (nothing is written before we know something can be scored)
    results, work = _saved_results(job, names)
    run.reused = len(results)
    # 2. the predictions, and the GSO objects of the objects to score: on disk, or downloaded
    scorable, found, gt_cached = _available_objects(job, run, names, results, work, gso_root, download, base_url)
    # 3. output folder, run.json, ground truth
    gt_ready = _start_output(job, run, scorable, {n: found.get(n, gso_root / n) for n in scorable}, gt_cached)
    # 4. each object: sample (or read the predictions), render the splats, score, move into place
    ready = [n for n in scorable if n in gt_ready]
    for index, name in enumerate(ready):
        t0 = time.time()
        try:
            results[name] = _evaluate_object(job, run, name, gt_ready[name], found.get(name, gso_root / name), work[name], t0)
            job.log(f"{_state(job, work[name])} {index + 1}/{len(gt_ready)} {name}: "
                    f"{_means_text(results[name], settings)} ({time.time() - t0:.1f} s)")
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001  (one object's trouble must not stop the others)
            run.failed[name] = f"{type(e).__name__}: {e}"
            job.log(f"failed {name}: {type(e).__name__}: {e}")
    remove_staging_area(output)
    # 5. tables over every requested object (also those scored by earlier runs)
    for name in list(run.failed):
        if name in results:
            del run.failed[name]
    run.scored = [n for n in names if n in results]
    run.seconds = time.time() - start
    _write_tables(job, run, names, results)
    return run


def _new_job(output: Path, settings: EvalSettings, pipe, model_description: str | None, checkpoint: Path | None,
             predictions: Path | None, gt_dir: Path | None, method: str | None, log: Log) -> _Job:
    """Check the request (no file written) and fix what the run evaluates: cameras, steps, key, method."""
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
    gt_root = Path(gt_dir) if gt_dir is not None else output / "gt"
    key = run_key(settings, cameras, model_description=model_description, checkpoint=checkpoint, predictions=predictions,
                  steps=steps, anchored=anchored)
    method = method or (f"predictions ({predictions.name})" if predictions is not None
                        else f"ouro ({Path(checkpoint).name if checkpoint else model_description})")
    return _Job(output, settings, cameras, key, steps, method, model_description, pipe, predictions,
                gt_root / gt_tag(cameras, settings), log)


def _saved_results(job: _Job, names: Sequence[str]) -> tuple[dict[str, dict], dict[str, set[str]]]:
    """Step 1: check the output folder and load LPIPS, then ``({name: complete result}, {name: work it needs})``."""
    from ouro.metrics.lpips import LPIPS

    try:
        check_output_folder(job.output, "--output")
    except OutputError as e:
        raise EvalError(str(e)) from None
    _check_run(job.output, job.key)
    try:
        job.lpips_model = LPIPS(job.settings.lpips_net)
    except FileNotFoundError as e:
        raise EvalError(str(e)) from None
    results: dict[str, dict] = {}
    work: dict[str, set[str]] = {}
    for name in names:
        saved = read_json(job.output / OBJECTS / name / RESULT)
        needed = needs_work(saved, job.settings, job.key)
        if saved is not None and not needed:
            results[name] = saved
        else:
            work[name] = needed
    return results, work


def _available_objects(job: _Job, run: EvalRun, names: Sequence[str], results: dict, work: dict, gso_root: Path,
                       download: bool, base_url: str | None) -> tuple[list[str], dict[str, Path], set[str]]:
    """Step 2: ``(objects to score, {name: GSO folder found}, names with cached ground truth)``; the others go
    to ``run.failed``. Raises :class:`EvalError` when nothing at all can be scored."""
    predictions = job.predictions
    unavailable: dict[str, str] = {}
    if predictions is not None:
        unavailable = {n: f"no {predictions / n / 'views'} folder" for n in work if not (predictions / n / "views").is_dir()}
        if work and len(unavailable) == len(work) and not results:
            raise EvalError(f"--predictions {predictions}: none of the {len(work)} objects has <object>/views/000.png .. "
                            f"(first expected: {predictions / names[0] / 'views' / '000.png'})")
    todo = [n for n in work if n not in unavailable]
    gt_cached = {name for name in todo if (job.gt_dir / name / "meta.json").is_file()}
    ensure = gso.ensure_objects(todo, gso_root, download=download, base_url=base_url,
                                progress=lambda name, status: job.log(f"GSO {name}: {status}"))
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
            check_output_folder(job.gt_dir, "--gt-dir")
        except OutputError as e:
            raise EvalError(str(e)) from None
    return scorable, ensure.found, gt_cached


def _start_output(job: _Job, run: EvalRun, scorable: list[str], gso_folders: dict[str, Path],
                  gt_cached: set[str]) -> dict[str, Path]:
    """Step 3: create the output folder and ``run.json``, render the missing ground truth; ``{name: its folder}``."""
    output = job.output
    output.mkdir(parents=True, exist_ok=True)
    if not (output / RUN).is_file():
        _write_json_atomic(output / RUN, {"format": FORMAT, "key": job.key, "method": job.method, "ouro_version": ouro.__version__,
                                          "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    clean_stale_staging(output)
    gt_ready, gt_failed, run.rendered_gt = render_ground_truth(
        {n: gso_folders[n] for n in scorable if n not in gt_cached}, job.gt_dir, job.cameras, job.settings, job.log)
    gt_ready.update({n: job.gt_dir / n for n in scorable if n in gt_cached})
    run.reused_gt = len([n for n in scorable if n in gt_cached])
    run.failed.update(gt_failed)
    return gt_ready


def _evaluate_object(job: _Job, run: EvalRun, name: str, gt_folder: Path, gso_folder: Path, needed: set[str],
                     t0: float) -> dict:
    """Step 4 for one object (started at ``t0``): sampled (or read) and scored anew, or its saved result completed."""
    settings = job.settings
    gt_views, meta = load_ground_truth(gt_folder, job.cameras, settings.resolution)
    gt_points = ((lambda gf=gso_folder, m=meta: gt_surface_points(gf, m, settings.up_axis, settings.points))
                 if gso.is_gso_folder(gso_folder) else None)
    folder = job.output / OBJECTS / name
    if "sample" in needed:
        result = _new_object(job, name, gt_folder, gso_folder, gt_views, gt_points, t0)
        run.sampled += 1
    else:
        result = complete_result(folder, read_json(folder / RESULT), settings, gt_views, gt_points, job.lpips_model, job.cameras)
        _write_json_atomic(folder / RESULT, result)
        run.rescored += 1
    return result


def _new_object(job: _Job, name: str, gt_folder: Path, gso_folder: Path, gt_views, gt_points, t0: float) -> dict:
    """Sample (or read the predictions of) one object in a staging folder, score it, and rename it into place."""
    settings, cameras = job.settings, job.cameras
    staging = staging_folder(job.output, name)
    try:
        base = {"format": FORMAT, "object": name, "key": job.key, "num_views": cameras.num_views,
                "resolution": settings.resolution, "ground_truth": str(gt_folder), "gso": str(gso_folder),
                "up_axis": settings.up_axis}
        if job.predictions is not None:
            base.update(read_predictions(job.predictions / name, staging, gt_views, cameras, settings))
        else:
            base.update(sample_object(job.pipe, gt_views, staging, cameras, settings, job.steps))
        result = complete_result(staging, base, settings, gt_views, gt_points, job.lpips_model, cameras)
        splats = read_views(staging / "splats", cameras.num_views, settings.resolution) if (staging / "splats").is_dir() else None
        views = read_views(staging / "views", cameras.num_views, settings.resolution)
        strip_image(load_rgb(staging / "input.png"), [views, splats, gt_views]).save(staging / "strip.png")
        result["seconds"] = {**result.get("seconds", {}), "total": time.time() - t0}
        result["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write_json_atomic(staging / RESULT, result)
        replace_folder(staging, job.output / OBJECTS / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _state(job: _Job, needed: set[str]) -> str:
    if "sample" not in needed:
        return "rescored"
    return "sampled" if job.predictions is None else "scored"


def _means_text(result: dict, settings: EvalSettings) -> str:
    """One object's means for the progress line."""
    m = object_means(result, settings.count_input, settings.lpips_net)
    text = f"PSNR {m['views']['psnr']:.2f} SSIM {m['views']['ssim']:.4f} LPIPS {m['views']['lpips']:.4f}"
    if m["splats"] is not None:
        text += f" | splats {m['splats']['psnr']:.2f} / {m['splats']['ssim']:.4f} / {m['splats']['lpips']:.4f}"
    return text


# -- tables -------------------------------------------------------------------------------------
def _write_tables(job: _Job, run: EvalRun, names: Sequence[str], results: dict[str, dict]) -> None:
    """Step 5: metrics.csv, summary.json and report.md over every requested object; sets ``run.summary``."""
    settings = job.settings
    summary, rows = summarise(names, results, run.failed, settings.count_input, settings.lpips_net,
                              settings.thresholds, PSNR_CAP_DB, _summary_extra(job, run))
    run.summary = summary
    write_csv(job.output / CSV_FILE, rows, settings.thresholds)
    _write_json_atomic(job.output / SUMMARY, summary)
    write_text_atomic(job.output / REPORT, report_markdown(summary, rows, job.method, settings.resolution, settings_line(summary["settings"]), OBJECTS))


def _summary_extra(job: _Job, run: EvalRun) -> dict:
    """summary.json's record of the method, the settings and what this call did."""
    settings, key = job.settings, job.key
    return {
        "method": job.method,
        "settings": {"resolution": settings.resolution, "engine": settings.engine, "samples": settings.samples,
                     "seed": key["seed"], "steps": job.steps, "feedback": key["feedback"],
                     "anchor_input": key["anchor_input"], "points": settings.points, "mesh": settings.mesh,
                     "up_axis": settings.up_axis, "cameras": asdict(job.cameras), "model": job.model_description,
                     "checkpoint": key["checkpoint"], "predictions": key["predictions"],
                     "ground_truth": str(job.gt_dir),
                     **(sampling_options(settings) if job.predictions is None else {})},
        "run": {"sampled": run.sampled, "reused": run.reused, "rescored": run.rescored, "rendered_gt": run.rendered_gt,
                "reused_gt": run.reused_gt, "downloaded": len(run.downloaded), "seconds": round(run.seconds, 1)},
        "missing_message": run.missing_message,
        "ouro_version": ouro.__version__,
    }
