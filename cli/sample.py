"""`ouro sample`: image to 8 views, 3D Gaussians and a turntable (paper Algorithm 2)."""

from __future__ import annotations

import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ouro.pipelines.choices import BACKGROUND_METHODS, SAMPLERS, SPEEDS

from ._common import checked_output, choice_enum, err_console, fail, resolve_device_dtype, seed_callback

BackgroundChoice = choice_enum("BackgroundChoice", BACKGROUND_METHODS)


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
    seed: Annotated[int, typer.Option(callback=seed_callback, help="Random seed; same seed, same outputs (0 to 2^63 - 1).")] = 0,
    device: Annotated[Optional[str], typer.Option(help="Torch device, e.g. cpu or cuda:0. Default: cuda when available.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="float32, float16 or bfloat16. Default: float16 on CUDA, float32 on CPU.")] = None,
    background: Annotated[BackgroundChoice, typer.Option(help="How the object is cut from its background. `auto`: an RGBA input's alpha, else `rembg` when it and its model are on disk, else `grabcut`. `grabcut`: built in, offline (OpenCV GrabCut seeded from the image border; about 0.5-3 s). `border`: pixels unlike the border's median colour (plain studio backdrops only). `rembg`: rembg's U-2-Net (pip install rembg; its model file must already be in $U2NET_HOME or ~/.u2net: ouro never downloads it). `keep`: no segmentation, crop or recentring. The mask used is written to mask.png; a line warns when it looks wrong.")] = BackgroundChoice("auto"),
    mask: Annotated[Optional[Path], typer.Option(help="Your own foreground mask for the (single) input image: same size, white or opaque = object. Overrides --background.", show_default=False)] = None,
    keep_background: Annotated[bool, typer.Option("--keep-background", help="Deprecated spelling of --background keep.")] = False,
    save_intermediate: Annotated[bool, typer.Option("--save-intermediate", help="Also keep each step's x0 views and splat renders (intermediate/).")] = False,
    video_frames: Annotated[int, typer.Option(min=1, help="Frames of the turntable video (orbit.mp4).")] = 60,
    video_size: Annotated[int, typer.Option(min=16, max=4096, help="Side of the turntable video's frames, pixels, whatever the model's view size (the splats are rendered at it); an odd side writes orbit.gif (H.264 needs even sides).")] = 512,
    mesh: Annotated[bool, typer.Option("--mesh", help="Also write mesh.glb: a mesh fused from the splats, as `ouro export` (vertex colours, or a texture with --texture; needs the mesh extra).")] = False,
    texture: Annotated[Optional[int], typer.Option("--texture", help="With --mesh: bake a TEXTURE x TEXTURE colour texture (a power of two, 64-8192) onto a UV-unwrapped mesh of 50,000 faces instead of vertex colours, as `ouro export --texture` (CPU, minutes).", show_default=False)] = None,
    fast: Annotated[bool, typer.Option("--fast", help="Before the last step decode only the 4 views the reconstructor reads (about 0.72x the FLOPs; outputs change slightly).")] = False,
    decode_chunk: Annotated[Optional[int], typer.Option(min=1, help="Decode the views N at a time (as SVD's decode_chunk_size): less memory; the views change, as SVD's do, since its temporal decoder mixes the frames of one decode. Default: all at once.", show_default=False)] = None,
    offload: Annotated[bool, typer.Option("--offload", help="Keep the models on the CPU and move each to the GPU only for its stage: same outputs, less GPU memory, slower.")] = False,
    sampler: Annotated[Optional[SamplerChoice], typer.Option(help=SAMPLER_HELP, show_default=False)] = None,
    feedback_every: Annotated[Optional[int], typer.Option(min=1, help=FEEDBACK_EVERY_HELP, show_default=False)] = None,
    speed: Annotated[Optional[SpeedChoice], typer.Option(help=SPEED_HELP, show_default=False)] = None,
) -> None:
    """Generate 8 views, 3D Gaussians (.ply) and a turntable video (and a mesh) from one image."""
    from ouro.data.preprocess import InputImageError, prepare_image
    from ouro.data.segment import rembg_unavailable_reason
    from ouro.io.checkpoint import CheckpointError
    from ouro.io.files import check_output_folder
    from ouro.pipelines.sample import (
        DEMO_DESCRIPTION, DEMO_HINT, ModelNotFound, NoMeshSurface, SampleSettings, background_meta, expand_inputs, load_pipeline,
        write_outputs,
    )
    from ouro.pipelines.speed import resolve_sampling

    # 1. options, and the output folder can be written (checked before a model is loaded)
    checked_output(check_output_folder, output)
    mesh_settings = None
    if mesh:  # fail before sampling when the mesh cannot be written
        from ouro.pipelines.export import MeshSettings
        from ouro.pipelines.sample import mesh_support_missing

        missing = mesh_support_missing()
        if missing:
            fail(f"--mesh needs {missing}: pip install 'ouro3d[mesh]'")
        mesh_settings = MeshSettings()
    texture_settings = None
    if texture is not None:
        from ouro.pipelines.export import TextureSettings

        if not mesh:
            fail("--texture bakes the mesh's texture: add --mesh")
        try:
            texture_settings = TextureSettings(size=texture)
        except ValueError as exc:
            fail(str(exc))
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
    method = background.value
    if keep_background:
        if method not in ("auto", "keep"):
            fail(f"--keep-background and --background {method} disagree; give only --background")
        method = "keep"
    if method == "rembg" and mask is None and (reason := rembg_unavailable_reason()) is not None:
        fail(f"--background rembg: {reason}; or use --background grabcut")
    device, torch_dtype = resolve_device_dtype(device, dtype)

    # 2. every input is read and prepared before anything is written
    try:
        files = expand_inputs(list(images))
    except FileNotFoundError as exc:
        fail(str(exc))
    if mask is not None and len(files) != 1:
        fail(f"--mask {mask}: a mask belongs to one image, but {len(files)} were given; run one image at a time")
    try:
        pipe, description = load_pipeline(model.value, checkpoint, device, torch_dtype, offload=offload)
    except (ModelNotFound, CheckpointError) as exc:
        fail(str(exc))
    if steps is None:
        steps = int(pipe.config.diffusion.num_steps)
        check_window(steps, "the model's steps; or pass --steps")
    settings = SampleSettings(num_steps=steps, feedback=not no_feedback, guidance=scales, seed=seed,
                              save_intermediate=save_intermediate, anchor_input=anchor_input, decode_chunk=decode_chunk,
                              **sampling)
    size = pipe.config.generator.image_size
    try:
        prepared = [prepare_image(f, size, background=method, mask=mask) for f in files]
    except InputImageError as exc:
        fail(str(exc))
    names = _unique_names(files) if len(files) > 1 or any(p.is_dir() for p in images) else [None]
    for file, item, name in zip(files, prepared, names):
        warning = item.foreground.warning(str(file), str(output / name / "mask.png" if name else output / "mask.png")) if item.foreground else None
        if warning:
            err_console.print(f"[bold yellow]ouro: warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
    hint = f" ({DEMO_HINT})" if description == DEMO_DESCRIPTION and checkpoint is None else ""
    err_console.print(f"ouro: sampling with {description}{hint}", soft_wrap=True, highlight=False, markup=False)

    # 3. outputs are staged beside the output folder and moved in only when everything worked
    created = not output.exists()
    try:
        output.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    except OSError as exc:
        fail(f"{output}: cannot write there ({exc.strerror}); choose another --output")
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err_console, transient=False) as bar:
            for file, item, name in zip(files, prepared, names):
                task = bar.add_task(f"{file.name}", total=steps)
                result = pipe(item.image, settings, progress=lambda done, total: bar.update(task, completed=done))
                folder = stage / name if name else stage
                folder.mkdir(exist_ok=True)
                meta = {"input": str(file), "model": description, "background": background_meta(item), **pipe.describe(settings)}
                try:
                    write_outputs(folder, result, item.image, meta, mask=item.foreground.mask if item.foreground is not None else None,
                                  video_frames=video_frames, video_size=video_size, mesh=mesh_settings, texture=texture_settings, compat=pipe.compat,
                                  stage=lambda name: bar.update(task, description=f"{file.name}: {name}"))
                except NoMeshSurface as exc:
                    fail(f"{file}: {exc}; drop --mesh")
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
