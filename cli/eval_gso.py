"""`ouro eval-gso`: PSNR/SSIM/LPIPS on Google Scanned Objects, for views and splats."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ouro.paths import GSO_ROOT_ENV, resolve_gso_root
from ouro.pipelines.choices import UP_AXES

from ._common import checked_output, choice_enum, err_console, fail, resolve_device_dtype, seed_callback
from .render import Engine
from .sample import FEEDBACK_EVERY_HELP, SAMPLER_HELP, SPEED_HELP, ModelChoice, SamplerChoice, SpeedChoice, _pair


class LpipsNet(str, Enum):
    alex = "alex"
    vgg = "vgg"


UpAxis = choice_enum("UpAxis", UP_AXES)


def _means_line(label: str, means: dict | None) -> str:
    if not means:
        return f"{label}: -"
    return f"{label}: PSNR {means['psnr']:.3f}  SSIM {means['ssim']:.4f}  LPIPS {means['lpips']:.4f}"


def eval_gso(
    gso_root: Annotated[Optional[Path], typer.Option(help=f"Folder of GSO objects (<name>/meshes/model.obj, <name>/materials/textures/texture.png); missing objects are downloaded into it. Default: ${GSO_ROOT_ENV}, else ~/.cache/ouro/gso.", show_default=False)] = None,
    objects: Annotated[Optional[Path], typer.Option(help="Object names to score, one per line. Default: the 100-object list shipped with ouro (ouro/assets/gso_eval_objects.txt).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="Model to evaluate (as `ouro sample --checkpoint`); overrides --model.")] = None,
    model: Annotated[ModelChoice, typer.Option(help="Without --checkpoint: `auto` (the public weights when found locally, else the embedded demo model), `demo` or `official` (as `ouro sample --model`).")] = ModelChoice.auto,
    predictions: Annotated[Optional[Path], typer.Option(help="Score another method's saved views (<object>/views/000.png..007.png at the evaluation cameras; optional gaussians.ply, mesh.obj) instead of sampling.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder: per-object CSV, summary.json, report.md, objects/<name>/; a rerun resumes.")] = Path("eval/gso"),
    limit: Annotated[Optional[int], typer.Option(min=1, help="Score only the first N objects.")] = None,
    seed: Annotated[int, typer.Option(callback=seed_callback, help="Sampling seed (0 to 2^63 - 1).")] = 0,
    lpips_net: Annotated[LpipsNet, typer.Option(help="LPIPS backbone (the public code uses alex).")] = LpipsNet.alex,
    count_input: Annotated[bool, typer.Option("--count-input/--skip-input", help="Whether view 0 (at the input's camera) counts in the metrics (the public code counts it). A view 0 that is the input itself (--anchor-input, or a predicted view 0 equal to the input) never counts.")] = True,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Sampler steps. Default: the model's (25 for the paper preset).")] = None,
    feedback: Annotated[bool, typer.Option("--feedback/--no-feedback", help="Sample with 3D feedback (Algorithm 2), or the two-stage baseline: denoise fully, then reconstruct once.")] = True,
    sampler: Annotated[Optional[SamplerChoice], typer.Option(help=SAMPLER_HELP, show_default=False)] = None,
    feedback_every: Annotated[Optional[int], typer.Option(min=1, help=FEEDBACK_EVERY_HELP, show_default=False)] = None,
    feedback_steps: Annotated[Optional[str], typer.Option(help="Steps that read 3D feedback, `START:END` (as `ouro sample`). Default: all.", show_default=False)] = None,
    fast: Annotated[bool, typer.Option("--fast", help="Before the last step decode only the 4 views the reconstructor reads (as `ouro sample --fast`).")] = False,
    speed: Annotated[Optional[SpeedChoice], typer.Option(help=SPEED_HELP, show_default=False)] = None,
    anchor_input: Annotated[Optional[bool], typer.Option("--anchor-input/--no-anchor-input", help="Hold view 0 to the condition image while sampling (`ouro sample --anchor-input`). Default: the model's.", show_default=False)] = None,
    resolution: Annotated[Optional[int], typer.Option(min=32, help="Ground-truth render and metric size, pixels. Default: the model's view size (512), or 512 with --predictions.")] = None,
    gt_dir: Annotated[Optional[Path], typer.Option(help="Cache of ground-truth renders, shared between runs. Default: <output>/gt.")] = None,
    engine: Annotated[Engine, typer.Option(help="Ground-truth renderer (`ouro render --engine`): cycles, or workbench for quick checks.")] = Engine.cycles,
    samples: Annotated[int, typer.Option(min=1, help="Cycles samples per pixel for the ground truth.")] = 16,
    workers: Annotated[int, typer.Option(min=1, help="Ground-truth renders in parallel.")] = 1,
    points: Annotated[int, typer.Option(min=0, help="Points per side for Chamfer distance and F-score (0: no geometry metrics).")] = 10_000,
    mesh: Annotated[bool, typer.Option("--mesh", help="Also fuse a mesh from the Gaussians (as `ouro export`) and score its surface.")] = False,
    up_axis: Annotated[UpAxis, typer.Option(help="Up axis of the meshes under --gso-root (GSO: z).")] = UpAxis.z,
    download: Annotated[bool, typer.Option("--download/--no-download", help="Download objects missing from --gso-root from Gazebo Fuel ($OURO_GSO_URL overrides the address).")] = True,
    method_name: Annotated[Optional[str], typer.Option(help="Method name in the report's tables.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Torch device for sampling. Default: cuda when available.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="float32, float16 or bfloat16. Default: float16 on CUDA, float32 on CPU.")] = None,
    shard: Annotated[Optional[str], typer.Option(help="Score only shard I of N (`I/N`, I from 0: every N-th object from object I) into <output>/shard-I-of-N/, sharing <output>/gt; run one per GPU or machine, then --merge.", show_default=False)] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Write the one metrics.csv, summary.json and report.md into --output from its finished shard-I-of-N/ folders (nothing is sampled).")] = False,
) -> None:
    """Score image-to-3D on 100 GSO objects: views, splat renders and their deltas (paper Tables 1-2).

    Ground truth: `ouro render` at the evaluation cameras (the public checkpoint's 8 inference
    cameras), cached; frame 0 is the condition image. Writes metrics.csv, summary.json and
    report.md under --output. Exit code 0 if every object was scored, 1 if some failed, 2 when
    nothing can be scored.
    """
    from ouro.io.checkpoint import CheckpointError
    from ouro.io.files import check_output_folder
    from ouro.pipelines import eval_shards, evaluate, gso
    from ouro.pipelines.sample import ModelNotFound, load_pipeline
    from ouro.pipelines.speed import resolve_sampling

    if merge:  # 0. the shards' tables as one
        if shard is not None:
            fail("--merge combines finished shards; give it without --shard")
        try:
            merged = eval_shards.merge_shards(output)
        except eval_shards.ShardError as e:
            fail(escape(str(e)))
        means, objects_count = merged.summary["means"], merged.summary["objects"]
        typer.echo(f"merged {merged.shards} shards: scored {objects_count['scored']} of {objects_count['requested']} objects "
                   f"({objects_count['failed']} failed)")
        typer.echo(_means_line("views ", means["views"]))
        typer.echo(_means_line("splats", means["splats"]))
        typer.echo(f"wrote {output / evaluate.REPORT}, {output / evaluate.SUMMARY}, {output / evaluate.CSV_FILE}")
        raise typer.Exit(merged.exit_code)

    # 1. what to score
    try:
        names = gso.read_object_list(objects or gso.DEFAULT_OBJECTS_FILE)
    except ValueError as e:
        fail(str(e))
    names = names[:limit] if limit else names
    all_names, top = names, output
    if shard is not None:  # this shard's objects, into its own folder; ground truth shared by the shards
        try:
            part = eval_shards.parse_shard(shard)
            names = eval_shards.shard_names(all_names, part)
            output = eval_shards.shard_folder(top, part)
            eval_shards.check_shard_info(output, part, all_names)
        except eval_shards.ShardError as e:
            fail(escape(str(e)))
        gt_dir = gt_dir or top / "gt"
    if predictions is not None and checkpoint is not None:
        fail("give --checkpoint (sample a model) or --predictions (score saved views), not both")
    checked_output(check_output_folder, top)  # before a model is loaded or anything rendered (the shards' folders are inside)
    window = _pair(feedback_steps, "--feedback-steps", int) if feedback_steps else None
    try:
        sampling = resolve_sampling(speed.value if speed else None, sampler=sampler.value if sampler else None, steps=steps,
                                    feedback_every=feedback_every, feedback_steps=window, fast=fast)
    except ValueError as e:
        fail(escape(str(e)))
    if predictions is not None and (speed or sampler or feedback_every or feedback_steps or fast):
        fail("--predictions scores saved views: --speed, --sampler, --feedback-every, --feedback-steps and --fast do not apply")

    # 2. the model (unless scoring saved predictions)
    pipe, description = None, None
    if predictions is None:
        device, torch_dtype = resolve_device_dtype(device, dtype)
        try:
            pipe, description = load_pipeline(model.value, checkpoint, device, torch_dtype)
        except (ModelNotFound, CheckpointError) as e:
            fail(str(e))
    size = resolution or (pipe.config.generator.image_size if pipe is not None else 512)
    if window is not None and pipe is not None:
        total = sampling["num_steps"] or int(pipe.config.diffusion.num_steps)
        if not 0 <= window[0] <= window[1] <= total:
            fail(f"--feedback-steps {feedback_steps}: need 0 <= START <= END <= the steps ({total})")
    settings = evaluate.EvalSettings(
        resolution=size, engine=engine.value, samples=samples, seed=seed, steps=sampling["num_steps"], feedback=feedback,
        anchor_input=anchor_input, count_input=count_input, sampler=sampling["sampler"],
        feedback_every=sampling["feedback_every"], feedback_steps=sampling["feedback_steps"],
        fast=sampling["decode_reconstructor_views_only"], speed=sampling["speed"],
        lpips_net=lpips_net.value, points=points, mesh=mesh, up_axis=up_axis.value, workers=workers,
    )
    root = resolve_gso_root(gso_root)
    err_console.print(f"ouro eval-gso: {len(names)} objects from {root}"
                      + (f", sampling with {description}" if description else f", predictions from {predictions}")
                      + f", {size} px -> {output}", soft_wrap=True)

    # 3. evaluate
    try:
        run = evaluate.run_evaluation(
            names, root, output, settings, pipe=pipe, model_description=description, checkpoint=checkpoint,
            predictions=predictions, gt_dir=gt_dir, download=download, method=method_name,
            log=lambda line: err_console.print(f"  {line}", soft_wrap=True, highlight=False, markup=False),
        )
    except evaluate.EvalError as e:
        fail(str(e))
    except KeyboardInterrupt:
        err_console.print("ouro eval-gso: interrupted; scored objects are kept, rerun to continue")
        raise typer.Exit(130) from None
    if shard is not None:
        eval_shards.write_shard_info(output, part, all_names)

    # 4. report
    if run.missing_message:
        err_console.print(f"[yellow]ouro: warning:[/] {escape(run.missing_message)}", soft_wrap=True)
    means = run.summary["means"]
    typer.echo(f"scored {len(run.scored)} of {len(names)} objects ({run.sampled} new, {run.reused} reused, "
               f"{run.rescored} rescored; {len(run.failed)} failed); ground truth: {run.rendered_gt} rendered, "
               f"{run.reused_gt} reused; {run.seconds:.1f} s")
    typer.echo(_means_line("views ", means["views"]))
    typer.echo(_means_line("splats", means["splats"]))
    if means["delta"]:
        d = means["delta"]
        typer.echo(f"delta : PSNR {d['psnr']:.3f}  SSIM {d['ssim']:.4f}  LPIPS {d['lpips']:.4f}")
    geometry = means["geometry"].get("gaussians")
    if geometry:
        fs = "  ".join(f"F@{k.split('@')[1]} {v:.4f}" for k, v in geometry.items() if k.startswith("fscore@"))
        typer.echo(f"geometry (Gaussian centres): Chamfer {geometry['chamfer']:.4f}  {fs}")
    for name, reason in run.failed.items():
        err_console.print(f"[red]failed[/] {escape(name)}: {escape(reason)}", soft_wrap=True, highlight=False)
    typer.echo(f"wrote {output / evaluate.REPORT}, {output / evaluate.SUMMARY}, {output / evaluate.CSV_FILE}")
    raise typer.Exit(run.exit_code)
