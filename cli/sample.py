"""`ouro sample`: image to 8 views, 3D Gaussians and a turntable (paper Algorithm 2)."""

from __future__ import annotations

import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ouro.pipelines.choices import SAMPLERS, SPEEDS

from ._common import choice_enum, err_console, fail, resolve_device_dtype


class ModelChoice(str, Enum):
    auto = "auto"
    demo = "demo"
    official = "official"


SamplerChoice = choice_enum("SamplerChoice", SAMPLERS)
SpeedChoice = choice_enum("SpeedChoice", SPEEDS)
#: --help of the options that shape the sampling (shared with `ouro eval-gso`)
SAMPLER_HELP = ("Sampler: `euler` (SVD's, the default), `heun` (EDM, 2nd order: 2 model calls per step but the last) or "
                "`dpm++2m` (DPM-Solver++(2M), 2nd order, 1 call per step). Every call of a step reads the same feedback maps.")
FEEDBACK_EVERY_HELP = ("Refresh the 3D feedback at every K-th feedback step only; the steps between reuse the last "
                       "reconstruction's maps (decode, reconstruction and render run about 1/K as often). Default 1.")
SPEED_HELP = ("A named speed setting (fixes sampler, steps, feedback schedule and decode; benchmarks/README.md): `quality` "
              "(the default settings), `fast` (DPM-Solver++(2M), 4 steps: 0.15x the public pipeline's FLOPs, within the "
              "3-seed noise of `quality` on the demo's held-out objects), `fastest` (DPM-Solver++(2M), 2 steps: 0.08x, "
              "below that noise). Measured on the demo only.")


def _pair(text: str, option: str, cast=float) -> tuple:
    try:
        a, b = (cast(x) for x in text.split(":"))
    except ValueError:
        fail(f"{option} {text!r}: expected START:END, e.g. {'10:25' if cast is int else '1:3'}")
    return a, b


def _unique_names(files: list[Path]) -> list[str]:
    names, seen = [], {}
    for f in files:
        seen[f.stem] = seen.get(f.stem, 0) + 1
        names.append(f.stem if seen[f.stem] == 1 else f"{f.stem}-{seen[f.stem]}")
    return names


def sample(
    images: Annotated[list[Path], typer.Argument(help="Input images (RGBA uses its alpha) or folders of images.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder; one sub-folder per input when several are given.")] = Path("out"),
    model: Annotated[ModelChoice, typer.Option(help="`auto`: the public weights when found locally ($OURO_WEIGHTS or the Hugging Face cache), else the embedded demo model; `demo`; `official`.")] = ModelChoice.auto,
    checkpoint: Annotated[Optional[Path], typer.Option(help="A checkpoint folder (ours, from `ouro train`); overrides --model.")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Sampler steps (noise levels). Default: the model's (25 for the public weights, 20 for the demo).", show_default=False)] = None,
    feedback_steps: Annotated[Optional[str], typer.Option(help="Steps that read 3D feedback, `START:END` (paper Table 3: 0:25, 10:25, 20:25). Default: all.")] = None,
    no_feedback: Annotated[bool, typer.Option("--no-feedback", help="Two-stage baseline: denoise fully, then reconstruct once.")] = False,
    guidance: Annotated[Optional[str], typer.Option(help="Classifier-free guidance `MIN:MAX`, rising linearly across the 8 views. Default: the model's (1:3 for the public weights, 2:2 for the demo).", show_default=False)] = None,
    anchor_input: Annotated[Optional[bool], typer.Option("--anchor-input/--no-anchor-input", help="Hold view 0 to the input image at every step, so F and the reconstructor read the exact input (not in the paper). Default: the model's (off for the public weights, on for the demo).", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same outputs.")] = 0,
    device: Annotated[Optional[str], typer.Option(help="Torch device, e.g. cpu or cuda:0. Default: cuda when available.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="float32, float16 or bfloat16. Default: float16 on CUDA, float32 on CPU.")] = None,
    keep_background: Annotated[bool, typer.Option("--keep-background", help="Use the image as is: no segmentation, crop or recentring.")] = False,
    save_intermediate: Annotated[bool, typer.Option("--save-intermediate", help="Also keep each step's x0 views and splat renders (intermediate/).")] = False,
    video_frames: Annotated[int, typer.Option(min=1, help="Frames of the turntable video (orbit.mp4).")] = 60,
    fast: Annotated[bool, typer.Option("--fast", help="Before the last step decode only the 4 views the reconstructor reads (about 0.72x the FLOPs; outputs change slightly).")] = False,
    sampler: Annotated[Optional[SamplerChoice], typer.Option(help=SAMPLER_HELP, show_default=False)] = None,
    feedback_every: Annotated[Optional[int], typer.Option(min=1, help=FEEDBACK_EVERY_HELP, show_default=False)] = None,
    speed: Annotated[Optional[SpeedChoice], typer.Option(help=SPEED_HELP, show_default=False)] = None,
) -> None:
    """Generate 8 views, 3D Gaussians (.ply) and a turntable video from one image."""
    from ouro.data.preprocess import InputImageError, prepare_image
    from ouro.io.checkpoint import CheckpointError
    from ouro.pipelines.sample import (
        DEMO_DESCRIPTION, DEMO_HINT, ModelNotFound, SampleSettings, expand_inputs, load_pipeline, write_outputs,
    )
    from ouro.pipelines.speed import resolve_sampling

    # 1. options
    window = _pair(feedback_steps, "--feedback-steps", int) if feedback_steps else None
    try:
        sampling = resolve_sampling(speed.value if speed else None, sampler=sampler.value if sampler else None, steps=steps,
                                    feedback_every=feedback_every, feedback_steps=window, fast=fast)
    except ValueError as exc:
        fail(str(exc))
    steps = sampling.pop("num_steps")

    def check_window(total: int, what: str) -> None:
        if window is not None and not (0 <= window[0] <= window[1] <= total):
            fail(f"--feedback-steps {feedback_steps}: need 0 <= START <= END <= {what} ({total})")

    if steps is not None:  # fail before loading a large model
        check_window(steps, "--steps")
    scales = _pair(guidance, "--guidance") if guidance else None
    device, torch_dtype = resolve_device_dtype(device, dtype)

    # 2. every input is read and prepared before anything is written
    try:
        files = expand_inputs(list(images))
    except FileNotFoundError as exc:
        fail(str(exc))
    try:
        pipe, description = load_pipeline(model.value, checkpoint, device, torch_dtype)
    except (ModelNotFound, CheckpointError) as exc:
        fail(str(exc))
    if steps is None:
        steps = int(pipe.config.diffusion.num_steps)
        check_window(steps, "the model's steps; or pass --steps")
    settings = SampleSettings(num_steps=steps, feedback=not no_feedback, guidance=scales, seed=seed,
                              save_intermediate=save_intermediate, anchor_input=anchor_input, **sampling)
    size = pipe.config.generator.image_size
    try:
        prepared = [prepare_image(f, size, keep_background=keep_background) for f in files]
    except InputImageError as exc:
        fail(str(exc))
    hint = f" ({DEMO_HINT})" if description == DEMO_DESCRIPTION and checkpoint is None else ""
    err_console.print(f"ouro: sampling with {description}{hint}", soft_wrap=True, highlight=False, markup=False)

    # 3. outputs are staged beside the output folder and moved in only when everything worked
    created = not output.exists()
    try:
        output.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    except OSError as exc:
        fail(f"{output}: cannot write there ({exc.strerror}); choose another --output")
    names = _unique_names(files) if len(files) > 1 or any(p.is_dir() for p in images) else [None]
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err_console, transient=False) as bar:
            for file, item, name in zip(files, prepared, names):
                task = bar.add_task(f"{file.name}", total=steps)
                result = pipe(item.image, settings, progress=lambda done, total: bar.update(task, completed=done))
                folder = stage / name if name else stage
                folder.mkdir(exist_ok=True)
                meta = {"input": str(file), "model": description, **pipe.describe(settings)}
                write_outputs(folder, result, item.image, meta, video_frames=video_frames, compat=pipe.compat)
        for entry in stage.iterdir():
            target = output / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            entry.rename(target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    typer.echo(f"wrote {output}")
