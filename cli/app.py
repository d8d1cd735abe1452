"""`ouro app`: a local web app (Gradio) over `ouro sample`, with interactive splat and mesh viewers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import checked_output, err_console, fail, resolve_device_dtype
from .sample import ModelChoice


def app_(
    host: Annotated[str, typer.Option(help="Address to bind. The default serves this machine only; 0.0.0.0 serves the network (no login: mind who can reach it).")] = "127.0.0.1",
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Port. Default: the first free one from 7860.", show_default=False)] = None,
    share: Annotated[bool, typer.Option("--share", help="Also open a public gradio.live link (goes through Gradio's servers; off by default).")] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Parent of the request folders: one <time>-<id>/ per request, each with result/ (as `ouro sample --mesh`) and its zip.")] = Path("out/app"),
    model: Annotated[ModelChoice, typer.Option(help="Default model: `auto` (the public weights when found locally, else the embedded demo), `demo` or `official`. The page offers every model found.")] = ModelChoice.auto,
    checkpoint: Annotated[Optional[list[Path]], typer.Option(help="A checkpoint folder (from `ouro train`) to offer, first and as the default; repeat for several.", show_default=False)] = None,
    examples: Annotated[Optional[Path], typer.Option(help="A folder of example images to offer. Default: the repository's examples/ when present.", show_default=False)] = None,
    device: Annotated[Optional[str], typer.Option(help="Torch device, e.g. cpu or cuda:0. Default: cuda when available.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="float32, float16 or bfloat16. Default: float16 on CUDA, float32 on CPU.")] = None,
    video_frames: Annotated[int, typer.Option(min=1, help="Frames of each turntable video.")] = 60,
) -> None:
    """Serve a local web page: drop an image, watch the steps, turn the splats and the mesh in 3D, download them."""
    if importlib.util.find_spec("gradio") is None:
        fail("`ouro app` needs Gradio: pip install 'ouro3d[app]'")
    from ouro.io.checkpoint import CheckpointError, is_checkpoint
    from ouro.io.files import check_output_folder
    from ouro.pipelines.app import OuroApp, available_models, default_examples, launch
    from ouro.pipelines.sample import ModelNotFound, expand_inputs, mesh_support_missing

    # 1. options: everything is checked before the page is served
    checked_output(check_output_folder, output)
    missing = mesh_support_missing()
    if missing:
        fail(f"`ouro app` writes meshes and needs {missing}: pip install 'ouro3d[app]'")
    checkpoints = list(checkpoint or [])
    for c in checkpoints:
        if not is_checkpoint(c):
            fail(f"--checkpoint {c}: not a checkpoint folder (config.json + *.safetensors, as `ouro train` writes)")
    if examples is None:
        example_files = default_examples()
    elif not examples.is_dir():
        fail(f"--examples {examples}: no such folder; give a folder of images")
    else:
        try:
            example_files = expand_inputs([examples])
        except FileNotFoundError as exc:
            fail(str(exc))
    models = available_models(checkpoints)
    if not checkpoints and model != ModelChoice.auto:  # the asked-for model first, as the default
        wanted = {label: entry for label, entry in models.items() if entry[0] == model.value}
        if not wanted:
            fail("the public Ouroboros3D weights were not found: put them under $OURO_WEIGHTS or in the Hugging Face cache"
                 if model == ModelChoice.official else "the embedded demo model is not in this version of ouro")
        models = {**wanted, **models}
    if not models:
        fail("no model to serve: pass --checkpoint DIR or provide the public weights (see `ouro sample --help`)")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{output}: cannot write there ({exc.strerror}); choose another --output")
    device, torch_dtype = resolve_device_dtype(device, dtype)

    # 2. serve until interrupted
    app = OuroApp(output, models, device, torch_dtype, video_frames=video_frames)
    try:
        blocks, url = launch(app, example_files, host=host, port=port, share=share)
    except (ModelNotFound, CheckpointError) as exc:
        fail(str(exc))
    except OSError as exc:  # the port is taken
        fail(f"cannot serve on {host}:{port or '7860+'} ({exc}); pass another --port")
    err_console.print(f"ouro app: serving {url} with {app.default_model}; request folders under {output}/ (Ctrl+C stops it)",
                      soft_wrap=True, markup=False)
    blocks.block_thread()
