"""`ouro app`: a local web app over the sample pipeline, with interactive splat and mesh viewers.

One request = one call of :class:`~ouro.pipelines.sample.SamplePipeline` and one call of
:func:`~ouro.pipelines.sample.write_outputs`, the writer of ``ouro sample``, into a request folder
of its own under the app's output root::

    <root>/<YYYYmmdd-HHMMSS>-<8 hex>/
        result/                   as `ouro sample -o result/ --mesh`: input.png, mask.png (in the
                                  input file's own frame), views/, views.png, gaussians.ply,
                                  orbit.mp4, mesh.glb, meta.json
        ouro-<name>.zip           result/, zipped (the "everything" download)
        splats-viewer.ply         gaussians.ply turned into the splat viewer's y-down frame (display only)

Requests wait in Gradio's queue and run one at a time (the model is shared, the CPU is small); a
failed request leaves no folder behind. Gradio is imported only by :func:`build_blocks`, so the
request logic (:class:`OuroApp`) runs and is tested without a browser.

    >>> app = OuroApp(Path("out/app"))                                    # doctest: +SKIP
    >>> blocks, url = launch(app, examples=[Path("examples/chair.png")])  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ouro.conventions import check_seed
from ouro.gaussians import rotate
from ouro.gaussians.ply import write_ply
from ouro.pipelines.choices import BACKGROUND_METHODS
from ouro.pipelines.export import MeshSettings
from ouro.pipelines.sample import (
    DEFAULT_VIDEO_SIZE, SampleFiles, SamplePipeline, SampleSettings, background_meta, demo_checkpoint, load_pipeline,
    write_outputs,
)

# Offline by default: no usage statistics, no version check (a user can still opt in with the variable).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

__all__ = [
    "AppRequest", "AppResult", "OuroApp", "BACKGROUNDS", "DEMO_LABEL", "VIEWER_ROTATION", "available_models", "default_examples",
    "build_blocks", "launch",
]

#: Background methods: those of ``ouro sample --background`` (:data:`~ouro.pipelines.choices.BACKGROUND_METHODS`).
BACKGROUNDS = BACKGROUND_METHODS
#: The splat viewer (gsplat.js in Gradio's Model3D) reads the original 3DGS scenes' y-down world; ours
#: is +y up with the input camera on +z. Half a turn about x, ``(w, x, y, z) = (0, 1, 0, 0)``, shows the
#: object upright and facing the viewer's default camera.
VIEWER_ROTATION = torch.tensor([0.0, 1.0, 0.0, 0.0])
#: Bounds of a request's turntable side (pixels) and steps: the page's sliders, enforced for API calls too.
MIN_VIDEO_SIZE, MAX_VIDEO_SIZE, MAX_STEPS = 64, 1024, 100
#: How the page names the embedded demo model.
DEMO_LABEL = "embedded demo model (64 px, under-trained)"


@dataclass(frozen=True)
class AppRequest:
    """One request's inputs, as the form sends them."""

    image: Path  #: the uploaded image file
    model: str  #: a label from :attr:`OuroApp.models`
    steps: int | None = None  #: denoising steps; None = the model's
    seed: int = 0
    feedback: bool = True  #: False: the two-stage baseline (denoise fully, then reconstruct once)
    fast: bool = False  #: decode only the 4 views G reads before the last step
    background: str = "auto"  #: one of :data:`BACKGROUNDS`, as ``ouro sample --background``
    video_size: int = DEFAULT_VIDEO_SIZE  #: turntable side, pixels
    mesh: bool = True  #: also fuse and write mesh.glb


@dataclass
class AppResult:
    """One request's outputs: the writer's files plus what the page needs."""

    folder: Path  #: the request folder
    files: SampleFiles  #: what the writer wrote (in ``folder / "result"``)
    archive: Path  #: the zip of ``files.folder``
    viewer_ply: Path  #: the splats in the viewer's frame
    description: str  #: the model, as reported
    settings: SampleSettings  #: how it was sampled (steps resolved)
    seconds: float  #: wall time of the request
    warning: str | None = None  #: the foreground mask's plausibility warning, as ``ouro sample`` prints it


def default_examples() -> list[Path]:
    """The repository's ``examples/*.png`` beside the package (a source checkout), else none."""
    import ouro

    folder = Path(ouro.__file__).resolve().parents[1] / "examples"
    return sorted(folder.glob("*.png")) if folder.is_dir() else []


def available_models(checkpoints: list[Path] | tuple[Path, ...] = ()) -> dict[str, tuple[str, Path | None]]:
    """The models a request can pick: ``{label: (choice, checkpoint)}`` for :func:`load_pipeline`.

    Checkpoints given on the command line come first, then the public weights when they are on
    disk, then the embedded demo (when this version ships it). Nothing is loaded here.
    """
    from ouro.io.checkpoint import is_checkpoint
    from ouro.io.official import find_official_weights

    models: dict[str, tuple[str, Path | None]] = {f"checkpoint {c}": ("auto", Path(c)) for c in checkpoints}
    if find_official_weights() is not None:
        models["public Ouroboros3D weights"] = ("official", None)
    if is_checkpoint(demo_checkpoint()):
        models[DEMO_LABEL] = ("demo", None)
    return models


class OuroApp:
    """The app's state: the models on offer (loaded on first use, kept), and where requests write.

    Args:
        output_root: parent of the request folders (created when missing).
        models: ``{label: (choice, checkpoint)}`` (:func:`available_models`); the first is the default.
        device, dtype: where the models run.
        video_frames: frames of each turntable.
        mesh_settings: how meshes are fused (:class:`~ouro.pipelines.export.MeshSettings`).
    """

    def __init__(
        self,
        output_root: Path,
        models: dict[str, tuple[str, Path | None]] | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        video_frames: int = 60,
        mesh_settings: MeshSettings = MeshSettings(),
    ):
        self.output_root = Path(output_root)
        self.models = dict(models) if models is not None else available_models()
        if not self.models:
            raise ValueError("no model to serve: pass a checkpoint folder or provide the public weights")
        self.device, self.dtype = device, dtype
        self.video_frames = video_frames
        self.mesh_settings = mesh_settings
        self._pipelines: dict[str, tuple[SamplePipeline, str]] = {}
        self._lock = threading.Lock()

    @property
    def default_model(self) -> str:
        return next(iter(self.models))

    def pipeline(self, label: str) -> tuple[SamplePipeline, str]:
        """The loaded pipeline and its description for a model label (loaded once)."""
        if label not in self.models:
            raise ValueError(f"unknown model {label!r}; choose one of {list(self.models)}")
        with self._lock:
            if label not in self._pipelines:
                choice, checkpoint = self.models[label]
                self._pipelines[label] = load_pipeline(choice, checkpoint, self.device, self.dtype)
            return self._pipelines[label]

    def new_request_folder(self) -> Path:
        """A fresh, empty folder under the output root, unique per request (created with the umask)."""
        self.output_root.mkdir(parents=True, exist_ok=True)
        while True:
            folder = self.output_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
            try:
                folder.mkdir()
                return folder
            except FileExistsError:  # pragma: no cover - a uuid collision
                continue

    def run(
        self,
        request: AppRequest,
        progress: Callable[[int, int], None] | None = None,
        stage: Callable[[str], None] | None = None,
    ) -> AppResult:
        """Prepare the image, sample, write everything; ``progress(done, total)`` per sampler step.

        Raises :class:`~ouro.data.preprocess.InputImageError` for a bad image and
        :class:`~ouro.pipelines.sample.NoMeshSurface` when no mesh can be fused; either way the
        request folder is removed.
        """
        from ouro.data.preprocess import prepare_image

        t0 = time.perf_counter()
        if request.background not in BACKGROUNDS:
            raise ValueError(f"background {request.background!r}: choose one of {BACKGROUNDS}")
        if not MIN_VIDEO_SIZE <= request.video_size <= MAX_VIDEO_SIZE:  # the API takes any number
            raise ValueError(f"turntable size {request.video_size}: choose {MIN_VIDEO_SIZE} to {MAX_VIDEO_SIZE} pixels")
        if request.steps is not None and not 1 <= request.steps <= MAX_STEPS:
            raise ValueError(f"steps {request.steps}: choose 1 to {MAX_STEPS}")
        check_seed(request.seed)
        # 1. model and input (nothing is written before the input is known to be good)
        pipe, description = self.pipeline(request.model)
        steps = request.steps or int(pipe.config.diffusion.num_steps)
        settings = SampleSettings(num_steps=steps, feedback=request.feedback, seed=int(request.seed),
                                  decode_reconstructor_views_only=request.fast)
        item = prepare_image(Path(request.image), pipe.config.generator.image_size, background=request.background)
        # 2. sample, then write into this request's own folder
        folder = self.new_request_folder()
        try:
            result = pipe(item.image, settings, progress=progress)
            (folder / "result").mkdir()
            meta = {"input": Path(request.image).name, "model": description, "background": background_meta(item),
                    **pipe.describe(settings)}
            mask = item.foreground.mask if item.foreground is not None else None  # in the input's own frame, as ouro sample
            files = write_outputs(folder / "result", result, item.image, meta, mask=mask,
                                  video_frames=self.video_frames, video_size=request.video_size,
                                  mesh=self.mesh_settings if request.mesh else None, compat=pipe.compat, stage=stage)
            viewer_ply = folder / "splats-viewer.ply"
            write_ply(viewer_ply, rotate(result.gaussians, VIEWER_ROTATION))
            archive = Path(shutil.make_archive(str(folder / f"ouro-{folder.name}"), "zip", root_dir=files.folder))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        warning = item.foreground.warning(Path(request.image).name, str(files.mask)) if item.foreground is not None else None
        return AppResult(folder, files, archive, viewer_ply, description, settings, time.perf_counter() - t0, warning)


# ------------------------------------------------------------------------------------- the page
#: The model's small views (64 px for the demo) fill their boxes, pixels kept sharp.
CSS = ".ouro-fill img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"
INTRO = """# ouro: image to 3D
Ouroboros3D's recursive sampling: a video diffusion model makes 8 views of the object, and at every
denoising step a Gaussian reconstructor lifts them to 3D and feeds its renders back. Drop an image
(RGBA, or a photo of an object: its background is cut away) or pick an example, then **Generate**.
"""


def build_blocks(app: OuroApp, examples: list[Path] | tuple[Path, ...] = ()):
    """The Gradio page: inputs and options on the left, the results on the right.

    The one event, ``/generate`` (also the API name for ``gradio_client``), takes
    ``(image, model, steps, seed, feedback, fast, background, video_size, mesh)`` and returns
    ``(status, input, mask, views, turntable, splats, mesh, downloads)``.
    """
    import gradio as gr

    from ouro.pipelines.sample import NoMeshSurface

    default_steps = int(app.pipeline(app.default_model)[0].config.diffusion.num_steps)

    def generate(image, model, steps, seed, feedback, fast, background, video_size, mesh, progress=gr.Progress()):
        if not image:
            raise gr.Error("Upload an image or pick an example first.")
        request = AppRequest(Path(image), model, int(steps), int(seed), bool(feedback), bool(fast), background,
                             int(video_size), bool(mesh))
        # one bar: the sampler's steps, then the writer's slow stages
        stages = ["video", "mesh"] if request.mesh else ["video"]
        labels = {"video": "rendering the turntable", "mesh": "fusing the mesh"}
        steps_total = [0]

        def on_step(done: int, total: int) -> None:
            steps_total[0] = total
            progress((done, total + len(stages)), desc="denoising", unit="steps")

        def on_stage(name: str) -> None:
            done = steps_total[0] + stages.index(name)
            progress((done, steps_total[0] + len(stages)), desc=labels[name], unit="steps")

        try:
            result = app.run(request, progress=on_step, stage=on_stage)
        except ValueError as exc:  # a bad image (InputImageError) or option, or no mesh (NoMeshSurface): one line
            raise gr.Error(f"{exc}; untick Mesh" if isinstance(exc, NoMeshSurface) else str(exc)) from None
        files = result.files
        status = (f"Sampled with {result.description}, {result.settings.num_steps} steps, seed {result.settings.seed}, in "
                  f"{result.seconds:.0f} s: {files.num_gaussians} Gaussians. Outputs: `{result.folder}`")
        if result.warning:
            status = f"**Warning:** {result.warning}\n\n{status}"
        views = [(str(p), f"view {k}") for k, p in enumerate(files.views)]
        downloads = [str(p) for p in (files.gaussians, files.mesh, files.video, result.archive) if p is not None]
        return (status, str(files.input), str(files.mask) if files.mask else None, views, str(files.video), str(result.viewer_ply),
                str(files.mesh) if files.mesh else None, downloads)

    # Gradio serves copies of the results from its own cache; copies older than a day go (the request
    # folders under the output root stay)
    with gr.Blocks(title="ouro", analytics_enabled=False, delete_cache=(3600, 86400)) as blocks:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Input image", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                 elem_id="input-image")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[image], label="Examples", cache_examples=False,
                                elem_id="examples")
                run = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Accordion("Options", open=True):
                    model = gr.Dropdown(list(app.models), value=app.default_model, label="Model")
                    steps = gr.Slider(1, MAX_STEPS, value=default_steps, step=1, label="Denoising steps", elem_id="steps")
                    seed = gr.Number(0, precision=0, label="Seed (same seed, same result)")
                    feedback = gr.Checkbox(True, label="3D feedback at every step (off: denoise, then reconstruct once)")
                    fast = gr.Checkbox(False, label="Fast: decode only the 4 views the reconstructor reads before the last step")
                    background = gr.Radio(list(BACKGROUNDS), value="auto", label="Background",
                                          info="as ouro sample --background. auto: an RGBA image's alpha, else rembg (model on "
                                               "disk), else grabcut (built in); border: unlike the border's colour (plain "
                                               "backdrops); keep: as is, no crop")
                    video_size = gr.Slider(MIN_VIDEO_SIZE, MAX_VIDEO_SIZE, value=DEFAULT_VIDEO_SIZE, step=16, label="Turntable size, pixels")
                    mesh = gr.Checkbox(True, label="Mesh (GLB), fused from the splats")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    prepared = gr.Image(label="Input as prepared", interactive=False, height=200, elem_classes="ouro-fill")
                    mask = gr.Image(label="Mask (as cut, in the input's own frame)", interactive=False, height=200,
                                    elem_classes="ouro-fill")
                views = gr.Gallery(label="The 8 generated views (view 0: the input's)", columns=4, rows=2, height=400, object_fit="contain")
                with gr.Row():
                    splats = gr.Model3D(label="3D Gaussians (drag to turn)", elem_id="splats-viewer", height=420)
                    mesh_view = gr.Model3D(label="Mesh (drag to turn)", elem_id="mesh-viewer", height=420,
                                           clear_color=(1.0, 1.0, 1.0, 1.0))
                with gr.Row():
                    video = gr.Video(label="Turntable", autoplay=True, loop=True, height=320, elem_id="turntable")
                    downloads = gr.File(label="Downloads: PLY, GLB, MP4, zip of everything", file_count="multiple",
                                        height=320)
        run.click(
            generate,
            inputs=[image, model, steps, seed, feedback, fast, background, video_size, mesh],
            outputs=[status, prepared, mask, views, video, splats, mesh_view, downloads],
            api_name="generate",
            concurrency_limit=1,
        )
    return blocks


def launch(
    app: OuroApp,
    examples: list[Path] | tuple[Path, ...] = (),
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    max_queue: int | None = 32,
):
    """Build the page and serve it without blocking: ``(blocks, local url)``.

    Binds ``host`` (loopback unless told otherwise) on ``port`` (None: the first free from 7860);
    a public share link only with ``share``. Requests queue (at most ``max_queue`` waiting) and run
    one at a time. ``blocks.block_thread()`` waits until interrupted; ``blocks.close()`` stops it.
    """
    blocks = build_blocks(app, examples)
    blocks.queue(default_concurrency_limit=1, max_size=max_queue)
    allowed = [str(app.output_root.resolve())] + sorted({str(Path(p).resolve().parent) for p in examples})
    _, url, _ = blocks.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True, inbrowser=False,
        allowed_paths=allowed, ssr_mode=False, pwa=False, mcp_server=False, show_error=True, css=CSS,
    )
    return blocks, url
