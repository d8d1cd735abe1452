"""The embedded demo model's recipe: held-out GSO-layout folder, trivial baselines, packing, figure.

The demo (``ouro/assets/demo/``, see its MODEL_CARD.md) is trained and scored with the same
commands users run; this script only does the glue around them::

    # data: the textured models of Debian's sweethome3d-furniture, rendered and filtered
    python benchmarks/demo_model.py models -o models  # apt-get download; models/<catalogue>/<model>/
    ouro render models -o renders --engine workbench --resolution 128 --workers 2 --seed 0
    ouro filter renders --holdout 0.1                # renders/kept.txt (train), renders/heldout.txt
    ouro train --preset demo --data renders --kept renders/kept.txt ...   (flags in MODEL_CARD.md)

    # held-out scores (benchmarks/README.md)
    python benchmarks/demo_model.py gso-layout renders renders/heldout.txt -o heldout-gso
    python benchmarks/demo_model.py baselines --objects renders/heldout.txt -o baselines  # white views
    ouro eval-gso --gso-root heldout-gso --objects renders/heldout.txt --up-axis y --no-download \
        --engine workbench --predictions baselines/white --resolution 64 --gt-dir gt -o eval/white
    python benchmarks/demo_model.py baselines --objects renders/heldout.txt --inputs eval/white -o baselines
    ouro eval-gso ... --predictions baselines/copy-input -o eval/copy-input
    ouro eval-gso ... --model demo -o eval/demo            (and --no-feedback -o eval/demo-no-feedback)
    python benchmarks/demo_model.py table eval/white eval/copy-input eval/demo eval/demo-no-feedback
    python benchmarks/demo_model.py compare eval/demo eval/copy-input      # per object: wins, medians; pooled MSE
    python benchmarks/demo_model.py reconstruct-gt --gt-root gt/<tag> --objects renders/heldout.txt -o oracle
    ouro eval-gso ... --predictions oracle -o eval/oracle  # G's splats from the ground-truth views

    # shipping
    python benchmarks/demo_model.py pack runs/demo/final -o ouro/assets/demo
    python benchmarks/demo_model.py figure out/ -o docs/demo.png

Sub-commands:

* ``models``: every model of the package's ``.sh3f`` catalogues (zip files) whose material names an
  image texture that ships with it, unpacked as ``<out>/<catalogue>/<model>/`` (OBJ, MTL, images,
  licence files) with the catalogue's ``LICENSE.TXT``. Uses the installed package, else fetches the
  ``.deb`` with ``apt-get download`` (no root needed) and unpacks it with ``dpkg-deb -x``.
* ``gso-layout``: one GSO-style folder per held-out object (``<uid>/meshes/model.obj``,
  ``model.mtl``, textures in ``materials/textures/``) from the OBJ each render's ``meta.json``
  names, so ``ouro eval-gso`` renders its ground truth with the loaders GSO uses. The files keep
  their +y up (score with ``--up-axis y``).
* ``baselines``: ``white/<uid>/views/000..007.png`` (blank white views) and, given an eval run's
  ``objects/<uid>/input.png``, ``copy-input/<uid>/views/*`` (the input view copied to every view),
  for ``ouro eval-gso --predictions``. A baseline's views stand in for its splat renders too.
* ``pack``: an ``ouro train`` checkpoint (``final/``) rewritten with float16 weights (the demo
  loads them as float32), so the package stays small.
* ``figure``: the README figure from an ``ouro sample`` output folder: input, the 8 views, and
  turntable frames.
* ``denoise-check``: a cheap progress probe on held-out orbits (F's one-step denoising error on all
  views, on view 0 and on the novel views, against copying the input), for checkpoints between full
  evaluations (a run's ``checkpoint-N`` becomes a loadable ``final/`` with ``--resume --max-steps N``).
* ``reconstruct-gt``: G's ceiling: G reading the ground-truth views (a perfect generator) of the
  held-out objects, written as a ``--predictions`` folder so ``ouro eval-gso`` scores its splats.
* ``sweep``: sampling settings (lowest sigma, steps, seed, guidance) scored on held-out objects (the
  chair whose ground truth the tests ship, or the first N of a held-out list with eval-gso's ground
  truth), and view 0 against the input: does the model reproduce the view it was given?
* ``table``: the benchmarks/README.md rows from ``ouro eval-gso`` output folders; ``compare``: per
  object, how often one folder beats another (a baseline) and the medians of both.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ouro.data.furniture import PACKAGE as FURNITURE_PACKAGE, TEXTURE_MAPS
from ouro.paths import cache_dir

MTLLIB = re.compile(r"^\s*mtllib\s+(.+?)\s*$", re.MULTILINE)


def read_uids(path: Path) -> list[str]:
    """A uid list (``ouro filter``'s kept / held-out files), validated by the training loader's reader."""
    from ouro.data.dataset import DatasetError, read_kept

    try:
        return read_kept(path)
    except DatasetError as exc:
        sys.exit(str(exc))


def furniture_models(out: Path, cache: Path, catalogues: list[str] | None = None) -> list[Path]:
    """Unpack the image-textured models of every (or each named) catalogue into ``out``; their OBJs."""
    from ouro.data import furniture

    try:
        found = furniture.catalogues(cache)
    except furniture.FurnitureError as exc:
        sys.exit(str(exc))
    if catalogues:
        missing = set(catalogues) - {c.stem for c in found}
        if missing:
            sys.exit(f"no catalogue(s) {sorted(missing)} in {furniture.PACKAGE}; it has {[c.stem for c in found]}")
        found = [c for c in found if c.stem in catalogues]
    objs: list[Path] = []
    for catalogue in found:
        got = furniture.textured_models(catalogue, out)
        print(f"{catalogue.stem}: {len(got)} models with an image texture -> {out / catalogue.stem}")
        objs += got
    return objs


def gso_layout(renders: Path, objects: Path, out: Path) -> None:
    """GSO-style folders (meshes/model.obj + model.mtl, materials/textures/*) of the listed renders' sources."""
    out.mkdir(parents=True, exist_ok=True)
    for uid in read_uids(objects):
        meta = json.loads((renders / uid / "meta.json").read_text())
        src = Path(meta["source"]["path"])
        if src.suffix.lower() != ".obj":
            sys.exit(f"{uid}: source {src} is not an OBJ; only OBJ sources map onto the GSO layout")
        target = out / uid
        tmp = out / f".{uid}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "meshes").mkdir(parents=True)
        (tmp / "materials" / "textures").mkdir(parents=True)
        obj = src.read_text(errors="replace")
        libs = MTLLIB.findall(obj)
        mtl_text = "\n".join((src.parent / lib).read_text(errors="replace") for lib in libs if (src.parent / lib).is_file())
        (tmp / "meshes" / "model.obj").write_text(MTLLIB.sub("mtllib model.mtl", obj, count=1) if libs else obj)
        (tmp / "meshes" / "model.mtl").write_text(mtl_text + "\n")
        textures = {m[1] for m in TEXTURE_MAPS.findall(mtl_text)}
        for name in sorted(textures):
            file = (src.parent / name).resolve()
            if file.is_file() and src.parent.resolve() in file.parents:
                shutil.copyfile(file, tmp / "materials" / "textures" / file.name)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        print(f"{uid}: {len(textures)} texture(s) -> {target}")


def baselines(objects: Path, inputs: Path | None, out: Path, size: int, views: int = 8) -> None:
    """``white/`` and, with ``inputs`` (an eval run folder), ``copy-input/`` prediction folders."""
    white = Image.fromarray(np.full((size, size, 3), 255, np.uint8))
    uids = read_uids(objects)
    for uid in uids:
        folder = out / "white" / uid / "views"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(views):
            white.save(folder / f"{i:03d}.png")
        if inputs is not None:
            image = Image.open(inputs / "objects" / uid / "input.png").convert("RGB")
            folder = out / "copy-input" / uid / "views"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(views):
                image.save(folder / f"{i:03d}.png")
    print(f"baselines for {len(uids)} objects -> {out}")


def pack(final: Path, out: Path) -> None:
    """Rewrite an ouro checkpoint with float16 weights (F, G and the frozen pixel-codec CLIP)."""
    import torch

    from ouro.io.checkpoint import load_checkpoint, save_checkpoint

    models = load_checkpoint(final)
    for m in (models.generator, models.reconstructor, models.conditioner):
        m.to(torch.float16)
    save_checkpoint(out, models)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packed {final} -> {out}: {size / 2**20:.1f} MiB")


def figure(sample_dir: Path, out: Path, tile: int = 128, turntable: int = 4) -> None:
    """Input | 8 views (top row) and ``turntable`` frames of orbit.mp4 (bottom row), one PNG."""
    import imageio.v3 as iio

    def load(path_or_array) -> Image.Image:
        image = path_or_array if isinstance(path_or_array, Image.Image) else Image.open(path_or_array)
        return image.convert("RGB").resize((tile, tile), Image.Resampling.LANCZOS)

    top = [load(sample_dir / "input.png")] + [load(p) for p in sorted((sample_dir / "views").glob("*.png"))]
    frames = iio.imread(sample_dir / "orbit.mp4")  # [T, H, W, 3] uint8
    picks = np.linspace(0, len(frames), turntable, endpoint=False).astype(int)
    bottom = [load(Image.fromarray(frames[i])) for i in picks]
    gap = 4
    width = len(top) * (tile + gap) - gap
    canvas = Image.new("RGB", (width, 2 * tile + gap), "white")
    for i, image in enumerate(top):
        canvas.paste(image, (i * (tile + gap), 0))
    for i, image in enumerate(bottom):
        canvas.paste(image, (i * (tile + gap), tile + gap))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    print(f"figure -> {out}")


def denoise_check(checkpoint: Path, renders: Path, objects: Path, sigmas: tuple[float, ...] = (0.2, 1.0, 3.0, 10.0, 80.0)) -> None:
    """A cheap progress probe between full evaluations: F's one-step denoising error on held-out orbits.

    For each noise level, the mean squared error (pixels in [-1, 1]) of ``D(x + sigma * n)`` against
    the clean 8 views: on all of them, on view 0 (the condition's own view, which copying the input
    gets exactly) and on the 7 novel views, beside copying the input to the novel views. A model that
    uses its condition image beats the copy at high sigma, and its view-0 error falls towards 0 there.
    Deterministic: each object's orbit 0 from frame 0 and orbit 1 from frame 4, noise seeded 0.
    """
    import torch

    from ouro.data.dataset import RenderFolderDataset, collate_samples
    from ouro.diffusion import denoised, precondition
    from ouro.io.checkpoint import load_checkpoint

    m = load_checkpoint(checkpoint, dtype=torch.float32)
    F, cond = m.generator, m.conditioner
    data = RenderFolderDataset(renders, image_size=m.config.generator.image_size, kept=objects)
    batch = collate_samples([data.load(i, orbit=o, start=4 * o) for i in range(len(data)) for o in (0, 1)])
    x = batch["images"] * 2 - 1  # [B, V, 3, H, W]
    B, V = x.shape[:2]
    g = torch.Generator().manual_seed(0)
    mse = lambda a, b: float(((a - b) ** 2).mean())  # noqa: E731
    print(f"{checkpoint}: {B} held-out orbits")
    print("| sigma | MSE of D | view 0 | novel views | copying the input (novel views) |")
    print("|---|---|---|---|---|")
    with torch.no_grad():
        latents = cond.encode(x).float()
        clip = cond.clip_embedding(x[:, 0]).float()
        cond_latent = cond.encode(x[:, :1])[:, 0].float() / cond.vae.config.scaling_factor
        time_ids = cond.added_time_ids(B)  # as `ouro sample` conditions F
        copy = mse(x[:, :1], x[:, 1:])
        data_scale = m.config.diffusion.sigma_data
        for s in sigmas:
            sigma = torch.full((B,), s)
            noisy = latents + s * torch.randn(latents.shape, generator=g)
            pre = precondition(sigma, data_scale)
            model_in = torch.cat([noisy * pre.c_in.view(B, 1, 1, 1, 1), cond_latent[:, None].expand(-1, V, -1, -1, -1)], 2)
            out = F(model_in, pre.c_noise, clip, time_ids, feedback=None, c2w=batch["c2w"], K_norm=batch["K_norm"]).sample
            views = cond.decode(denoised(noisy, out.float(), sigma, data_scale))
            print(f"| {s:g} | {mse(views, x):.4f} | {mse(views[:, 0], x[:, 0]):.4f} | {mse(views[:, 1:], x[:, 1:]):.4f} | {copy:.4f} |")


def sweep(checkpoint: Path | None, specs: list[str], gt_root: Path | None = None, objects: Path | None = None,
          limit: int | None = None) -> None:
    """Sampling settings scored on held-out objects: means of the 7 novel views and of the splats over
    the objects, and how well view 0 reproduces the input itself. ``specs``:
    ``SIGMA_MIN,STEPS,SEED,GUIDANCE_MIN,GUIDANCE_MAX[,anchor|no-anchor]`` each (the last: hold view 0
    to the input or not; the model's setting when left out).

    The objects: by default the held-out chair shipped with the tests; else the first ``limit`` of
    ``objects`` (a uid list) with their ground truth in ``gt_root`` (an ``ouro eval-gso --gt-dir``
    render folder at the 8 evaluation cameras, e.g. ``gt/workbench-64px-16f-r1.7417-fov39.598-upy``).
    """
    import dataclasses

    import torch

    from ouro.metrics import psnr
    from ouro.metrics.lpips import LPIPS
    from ouro.pipelines.evaluate import EvalCameras, condition_view, load_ground_truth, render_splats, score_images
    from ouro.pipelines.sample import SamplePipeline, SampleSettings, demo_checkpoint

    torch.set_num_threads(1)
    pipe = SamplePipeline.from_checkpoint(checkpoint or demo_checkpoint())
    cams = EvalCameras.from_config(pipe.config.camera)
    if gt_root is None:
        folders = [Path(__file__).resolve().parents[1] / "tests" / "data" / "demo-heldout" / "kitchenChair"]
    else:
        if objects is None:
            sys.exit("sweep: --gt-root needs --objects (a uid list, e.g. renders/heldout.txt)")
        folders = [gt_root / uid for uid in read_uids(objects)[:limit]]
    gts = [load_ground_truth(f, cams, 64)[0] for f in folders]  # [8, 3, 64, 64] each
    conds = [condition_view(gt, pipe.config.generator.image_size) for gt in gts]
    lpips = LPIPS("alex")
    print(f"{len(gts)} object(s): {', '.join(f.name for f in folders)}")

    def scores(per_object) -> str:  # [(images [7, 3, H, W], gt [8, ...])] -> "PSNR / SSIM / LPIPS"
        rows = [{k: sum(v) / len(v) for k, v in score_images(images, gt[1:], lpips).items()} for images, gt in per_object]
        means = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        return f"{means['psnr']:.2f} / {means['ssim']:.4f} / {means['lpips']:.4f}"

    def view0(images) -> str:  # mean PSNR of view 0 against the ground-truth view 0 (the input's view)
        return f"{sum(float(psnr(v[:1], gt[:1])) for v, gt in zip(images, gts)) / len(gts):.2f}"

    print("| setting | views PSNR / SSIM / LPIPS | splats PSNR / SSIM / LPIPS | view 0 vs input, dB |")
    print("|---|---|---|---|")
    whites = [torch.ones_like(gt) for gt in gts]
    print(f"| blank white | {scores([(w[1:], gt) for w, gt in zip(whites, gts)])} | - | {view0(whites)} |")
    print(f"| input copied | {scores([(gt[:1].expand(7, -1, -1, -1), gt) for gt in gts])} | - | - |")
    base = pipe.config
    for spec in specs:
        smin, steps, seed, gmin, gmax, *extra = spec.split(",")
        anchoring = {"anchor": True, "no-anchor": False}
        if len(extra) > 1 or (extra and extra[0] not in anchoring):
            sys.exit(f"sweep: {spec}: the sixth field, if any, is anchor or no-anchor")
        pipe.config = dataclasses.replace(base, diffusion=dataclasses.replace(base.diffusion, sigma_min=float(smin)))
        settings = SampleSettings(num_steps=int(steps), seed=int(seed), guidance=(float(gmin), float(gmax)),
                                   anchor_input=anchoring[extra[0]] if extra else None)
        outs = [pipe(cond, settings) for cond in conds]
        splats = [render_splats(out.gaussians, cams, 64, compat=pipe.compat) for out in outs]
        print(f"| sigma_min {smin}, {steps} steps, seed {seed}, guidance {gmin}-{gmax}{''.join(', ' + e for e in extra)} "
              f"| {scores([(o.views[1:], gt) for o, gt in zip(outs, gts)])} "
              f"| {scores([(sp[1:], gt) for sp, gt in zip(splats, gts)])} | {view0([o.views for o in outs])} |", flush=True)


def reconstruct_gt(checkpoint: Path | None, gt_root: Path, objects: Path, out: Path, sigma: float | None = None) -> None:
    """G's ceiling: Gaussians reconstructed from the **ground-truth** views (a perfect F), as an
    ``ouro eval-gso --predictions`` folder ``<out>/<uid>/{views/000..007.png, gaussians.ply}``.

    G reads its 4 views of the 8 ground-truth renders in ``gt_root`` (the evaluation cameras, as
    ``sweep``'s ``--gt-root``) at noise level ``sigma`` (None: clean, as the two-stage baseline and
    training's clean pass; the sampler's last feedback step reads ``sigma_min``). The views written are
    the ground truth itself, so only the splat scores of the evaluation mean anything: they bound what
    this G can score from any generator's views.
    """
    import torch

    from ouro.gaussians.ply import write_ply
    from ouro.pipelines.evaluate import EvalCameras, load_ground_truth, write_views
    from ouro.pipelines.sample import SamplePipeline, demo_checkpoint

    torch.set_num_threads(1)
    pipe = SamplePipeline.from_checkpoint(checkpoint or demo_checkpoint())
    cams = EvalCameras.from_config(pipe.config.camera)
    size = pipe.config.generator.image_size
    c2w, K_norm = pipe.cameras()
    uids = read_uids(objects)
    for uid in uids:
        gt, _ = load_ground_truth(gt_root / uid, cams, size)  # [8, 3, S, S] in [0, 1]
        with torch.no_grad():
            gaussians = pipe.reconstruct(gt[None].to(pipe.device) * 2 - 1, c2w, K_norm, sigma)
        write_views(out / uid / "views", gt)  # eval-gso's own PNG writer
        write_ply(out / uid / "gaussians.ply", gaussians.batch_item(0).to(device="cpu", dtype=torch.float32))
    print(f"G on the ground-truth views ({'clean' if sigma is None else f'noise level {sigma:g}'}) of {len(uids)} "
          f"objects -> {out} (score with `ouro eval-gso --predictions {out}`)")


def table(runs: list[Path], baselines: set[str]) -> None:
    """Markdown rows from ``ouro eval-gso`` summaries; a baseline's views stand in for its splats."""
    print("| method | views PSNR | views SSIM | views LPIPS | splats PSNR | splats SSIM | splats LPIPS |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        views, splats = summary["means"]["views"], summary["means"]["splats"]
        if splats is None and run.name in baselines:
            splats = views
        cells = [f"{views['psnr']:.2f}", f"{views['ssim']:.4f}", f"{views['lpips']:.4f}"]
        cells += [f"{splats['psnr']:.2f}", f"{splats['ssim']:.4f}", f"{splats['lpips']:.4f}"] if splats else ["-"] * 3
        print(f"| {run.name} ({len(summary['scored'])} objects) | " + " | ".join(cells) + " |")


def compare(run: Path, baseline: Path, worst: int = 5) -> None:
    """Per-object comparison of two ``ouro eval-gso`` folders (``metrics.csv``): for each score, the
    objects on which ``run`` is better, and both medians; then the objects where ``baseline`` leads
    most on view PSNR. A baseline without splat scores (white, copy-input) uses its views for both."""

    def rows(folder: Path) -> dict[str, dict[str, str]]:
        with open(folder / "metrics.csv", newline="", encoding="utf-8") as f:
            return {r["object"]: r for r in csv.DictReader(f) if r["status"] == "scored"}

    ours, theirs = rows(run), rows(baseline)
    common = sorted(ours.keys() & theirs.keys())
    if not common:
        raise SystemExit(f"{run} and {baseline} score no object in common")
    print(f"| score ({len(common)} objects) | {run.name} better on | median {run.name} | median {baseline.name} |")
    print("|---|---|---|---|")
    for part in ("views", "splats"):
        for metric in ("psnr", "ssim", "lpips"):
            key = f"{metric}_{part}"
            other = key if theirs[common[0]][key] else f"{metric}_views"
            a = [float(ours[o][key]) for o in common]
            b = [float(theirs[o][other]) for o in common]
            better = sum((x < y) if metric == "lpips" else (x > y) for x, y in zip(a, b))
            print(f"| {part} {metric.upper()} | {better} | {statistics.median(a):.4g} | {statistics.median(b):.4g} |")
    lead = {o: float(theirs[o]["psnr_views"]) - float(ours[o]["psnr_views"]) for o in common}
    gap = [o for o in sorted(common, key=lead.get, reverse=True) if lead[o] > 0][:worst]
    print(f"\nlargest view-PSNR leads of {baseline.name}: " + (", ".join(
        f"{o} {float(theirs[o]['psnr_views']):.1f} vs {float(ours[o]['psnr_views']):.1f}" for o in gap) or "none"))
    # a mean of per-object PSNRs is carried by the objects a method gets nearly exact (copying the
    # input of a near-symmetric object scores 30-50 dB): say how much of the mean gap they make
    mean_gap = statistics.fmean(lead.values())
    print(f"mean view-PSNR lead of {baseline.name}: {mean_gap:.2f} dB, of which {sum(lead[o] for o in gap) / len(common):.2f} dB "
          f"from those {len(gap)} objects")
    pooled = {(f.name, part): pooled_mse(f, common, part) for f in (run, baseline) for part in ("views", "splats")}
    print("squared error pooled over every scored view of every object (MSE, [0, 1] pixels): " + ", ".join(
        f"{name} {part} {mse:.4f}" for (name, part), mse in pooled.items() if mse is not None))


def pooled_mse(folder: Path, objects: list[str], part: str) -> float | None:
    """Mean squared error of ``part`` (``views`` or ``splats``) over all scored views of ``objects``
    of an ``ouro eval-gso`` folder, against the ground truth its results name (relative paths: from
    the working directory, else from the folder's parent's parent). Views counted as the run counted
    them (view 0 left out with ``--skip-input`` or when it is the input). None when the folder has no such images."""
    from ouro.pipelines.eval_report import counted_views
    from ouro.pipelines.evaluate import EvalCameras, load_ground_truth, load_rgb

    count_input = json.loads((folder / "summary.json").read_text(encoding="utf-8"))["count_input"]
    total, count = 0.0, 0
    for name in objects:
        result = json.loads((folder / "objects" / name / "result.json").read_text(encoding="utf-8"))
        first = counted_views(result, count_input).start
        images = folder / "objects" / name / part
        if not images.is_dir():
            return None
        key, size = result["key"], int(result["resolution"])
        gt_dir = Path(result["ground_truth"])
        if not gt_dir.is_absolute() and not gt_dir.is_dir():
            gt_dir = folder.parent.parent / gt_dir
        cams = EvalCameras(**key["cameras"])
        gt, _ = load_ground_truth(gt_dir, cams, size)  # [V, 3, S, S]
        for v in range(first, cams.num_views):
            err = (load_rgb(images / f"{v:03d}.png", size) - gt[v]).square()
            total, count = total + float(err.sum()), count + err.numel()
    return total / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="unpack the image-textured models of Debian's sweethome3d-furniture")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=cache_dir() / FURNITURE_PACKAGE,
                   help="where the .deb is unpacked when the package is not installed")
    p.add_argument("--catalogue", action="append", help="only this catalogue (e.g. BlendSwap-CC-0); repeatable")
    p = sub.add_parser("gso-layout", help="GSO-style folders of the held-out objects")
    p.add_argument("renders", type=Path)
    p.add_argument("objects", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p = sub.add_parser("baselines", help="white / copy-input prediction folders")
    p.add_argument("--objects", type=Path, required=True)
    p.add_argument("--inputs", type=Path, help="an eval-gso output folder (objects/<uid>/input.png)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("-o", "--output", type=Path, required=True)
    p = sub.add_parser("pack", help="float16 copy of a checkpoint")
    p.add_argument("final", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p = sub.add_parser("figure", help="README figure from an `ouro sample` folder")
    p.add_argument("sample_dir", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p = sub.add_parser("sweep", help="sampling settings scored on held-out objects (default: the chair the tests ship)")
    p.add_argument("specs", nargs="+", help="SIGMA_MIN,STEPS,SEED,GUIDANCE_MIN,GUIDANCE_MAX[,anchor|no-anchor], e.g. 0.002,20,0,1,3")
    p.add_argument("--checkpoint", type=Path, help="default: the embedded demo")
    p.add_argument("--gt-root", type=Path, help="ground-truth renders at the evaluation cameras (eval-gso --gt-dir's tag folder)")
    p.add_argument("--objects", type=Path, help="uid list of the objects to score, with --gt-root")
    p.add_argument("--limit", type=int, help="only the first LIMIT objects")
    p = sub.add_parser("denoise-check", help="one-step denoising error on held-out orbits (progress probe)")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--renders", type=Path, required=True)
    p.add_argument("--objects", type=Path, required=True)
    p = sub.add_parser("reconstruct-gt", help="G on the ground-truth views: the splats' ceiling, as a predictions folder")
    p.add_argument("--checkpoint", type=Path, help="default: the embedded demo")
    p.add_argument("--gt-root", type=Path, required=True, help="ground-truth renders at the evaluation cameras (eval-gso --gt-dir's tag folder)")
    p.add_argument("--objects", type=Path, required=True, help="uid list of the objects")
    p.add_argument("--sigma", type=float, help="noise level G is told its views carry (default: clean)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p = sub.add_parser("table", help="markdown rows from eval-gso output folders")
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--baselines", default="white,copy-input", help="runs whose views stand in for splats")
    p = sub.add_parser("compare", help="per-object wins and medians of an eval-gso folder against another (a baseline)")
    p.add_argument("run", type=Path)
    p.add_argument("baseline", type=Path)
    args = parser.parse_args(argv)
    if args.command == "models":
        objs = furniture_models(args.output, args.cache, args.catalogue)
        print(f"{len(objs)} models -> {args.output} (render them with `ouro render {args.output} ...`)")
    elif args.command == "gso-layout":
        gso_layout(args.renders, args.objects, args.output)
    elif args.command == "baselines":
        baselines(args.objects, args.inputs, args.output, args.size)
    elif args.command == "pack":
        pack(args.final, args.output)
    elif args.command == "sweep":
        sweep(args.checkpoint, args.specs, args.gt_root, args.objects, args.limit)
    elif args.command == "denoise-check":
        denoise_check(args.checkpoint, args.renders, args.objects)
    elif args.command == "reconstruct-gt":
        reconstruct_gt(args.checkpoint, args.gt_root, args.objects, args.output, args.sigma)
    elif args.command == "figure":
        figure(args.sample_dir, args.output)
    elif args.command == "compare":
        compare(args.run, args.baseline)
    else:
        table(args.runs, set(args.baselines.split(",")))


if __name__ == "__main__":
    main()
