"""Recursive sampling with 3D-aware feedback (paper Algorithm 2).

At each of the sampler's steps F predicts x0 given the previous step's feedback; x0 is decoded;
G reconstructs Gaussians from 4 of the 8 views at the step's noise level; the Gaussians are
rendered at all 8 cameras into RGB and coordinate maps, which condition the next step. The first
step (and any step outside the feedback window) sees zero maps, as in the paper.

Samplers that call F more than once per step (Heun: its corrector) read feedback **per step**:
every F call of step ``i`` reads the same maps (those rendered after step ``i - 1``), and G runs
once per step, on the x0 of the step's last call (Heun: the corrector's, at ``sigma_{i+1}``, the
noise level G is told). ``feedback_every = K`` refreshes the maps only at every K-th step that
reads feedback (counted from the window's first); the steps between reuse the last
reconstruction's maps (and their adapter features), so decode, G and render run about 1/K as often.

    >>> from ouro.pipelines.sample import SamplePipeline, SampleSettings
    >>> pipe = SamplePipeline.from_checkpoint("runs/demo/final")          # doctest: +SKIP
    >>> result = pipe(prepared.image, SampleSettings(seed=0))            # doctest: +SKIP
    >>> result.views.shape, result.gaussians.means.shape                 # doctest: +SKIP
    (torch.Size([8, 3, 512, 512]), torch.Size([65536, 3]))
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from ouro.conventions import check_seed
from ouro.diffusion.sampler import apply_guidance, guidance_scales
from ouro.diffusion.samplers import SAMPLERS, make_sampler, num_evaluations
from ouro.gaussians import Gaussians, render
from ouro.geometry.cameras import OFFICIAL_FRAME_INDICES, intrinsics_from_fov, orbit_cameras
from ouro.io.checkpoint import OuroModels, load_checkpoint
from ouro.models.feedback import render_feedback
from ouro.models.reconstructor import noise_level

from .offload import ModelPlacer

if TYPE_CHECKING:
    import numpy as np

    from ouro.pipelines.export import MeshSettings, TextureSettings

__all__ = [
    "SampleSettings", "SampleOutput", "StepRecord", "SamplePipeline", "SampleFiles", "view_cameras", "turntable",
    "write_outputs", "background_meta", "NoMeshSurface", "mesh_support_missing", "load_pipeline",
]


@dataclass(frozen=True)
class SampleSettings:
    """How one object is sampled."""

    num_steps: int = 25  #: sampler steps (noise levels before the final 0)
    feedback: bool = True  #: False: the two-stage baseline (denoise fully, then reconstruct once)
    feedback_steps: tuple[int, int] | None = None  #: steps ``[start, end)`` that read feedback; None = all
    #: ``euler`` (SVD's; the default), ``heun`` (EDM, 2nd order, 2 F calls per step but the last) or
    #: ``dpm++2m`` (DPM-Solver++(2M)); see ouro.diffusion.samplers
    sampler: str = "euler"
    #: refresh the feedback maps at every K-th feedback step only; the steps between reuse the maps
    #: of the last reconstruction (1 = every step, the paper's)
    feedback_every: int = 1
    #: the named speed setting these settings were made from (ouro.pipelines.speed), for meta.json
    speed: str | None = None
    #: classifier-free guidance of the first and last view; None = the model config's
    #: ``(guidance_min, guidance_max)`` (1 and 3 for SVD, 2 and 2 for the demo)
    guidance: tuple[float, float] | None = None
    seed: int = 0
    save_intermediate: bool = False  #: keep each step's x0 views and splat renders
    #: fast setting: before the last step decode only the 4 views G reads (SVD's temporal decoder
    #: mixes frames, so they differ slightly from an 8-frame decode; see benchmarks/README.md)
    decode_reconstructor_views_only: bool = False
    #: hold view 0 to the input image at every step (``DiffusionConfig.anchor_input``); None = the
    #: model config's (off for the public weights, on for the demo)
    anchor_input: bool | None = None
    #: frames per VAE decode, as SVD's ``decode_chunk_size`` (None: all views at once). Less memory;
    #: the frames change, as SVD's do: the temporal decoder mixes the frames of one decode
    #: (``SVDConditioner.decode``; by how much: benchmarks/README.md, "Paper size end to end")
    decode_chunk: int | None = None

    def uses_feedback(self, step: int) -> bool:
        """Whether step ``step`` reads the maps rendered after step ``step - 1``."""
        if not self.feedback or step == 0:
            return False
        start, end = self.feedback_steps if self.feedback_steps is not None else (0, self.num_steps)
        return start <= step < end

    def refreshes_feedback(self, step: int) -> bool:
        """Whether step ``step`` reads maps rendered right after step ``step - 1`` (else it reuses older
        ones): every ``feedback_every``-th step from the first that reads feedback."""
        if not self.uses_feedback(step):
            return False
        first = max(1, self.feedback_steps[0] if self.feedback_steps is not None else 0)
        return (step - first) % self.feedback_every == 0

    def reconstructs_after(self, step: int) -> bool:
        """Whether G runs after step ``step``: the last step (the output Gaussians) and every step whose
        next step refreshes its feedback."""
        return self.feedback and (step == self.num_steps - 1 or self.refreshes_feedback(step + 1))


@dataclass
class StepRecord:
    """One step's intermediates (``save_intermediate``): x0 views and what the splats rendered."""

    step: int
    sigma: float
    x0_views: Tensor | None = None  # [V, 3, H, W] in [0, 1]
    renders: Tensor | None = None  # [V, 3, H, W] rendered RGB fed back
    ccm: Tensor | None = None  # [V, 3, H, W]


@dataclass
class SampleOutput:
    """One sampled object.

    Attributes:
        views: ``[V, 3, H, W]`` generated views in [0, 1]; view 0 is the input's view (the
            input itself, through the codec, when the input is anchored).
        gaussians: the final Gaussians, unbatched ``[N, *]``.
        c2w, K_norm: ``[V, 4, 4]`` / ``[V, 3, 3]`` the views' cameras (library convention).
        timings: seconds per stage (``condition``, ``unet``, ``decode``, ``reconstruct``, ``render``).
        steps: per-step records when ``save_intermediate`` is set.
        feedback_inputs: the maps fed to F at each step that read feedback ``{step: [rgb, ccm]}``
            (``[V, 3, H, W]``), kept when ``save_intermediate`` is set.
    """

    views: Tensor
    gaussians: Gaussians
    c2w: Tensor
    K_norm: Tensor
    timings: dict[str, float]
    steps: list[StepRecord] = field(default_factory=list)
    feedback_inputs: dict[int, list[Tensor]] = field(default_factory=dict)


def view_cameras(num_views: int, radius: float, fov_deg: float, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """The generated views' cameras: ``c2w [V, 4, 4]``, ``K_norm [V, 3, 3]``.

    For 8 views these are the public checkpoint's: frames 0, 2, ..., 12, 15 of a 16-frame orbit at
    elevation 0 (OFFICIAL.md 12.2); otherwise ``V`` evenly spaced azimuths. View 0 is the input's.
    """
    if num_views == len(OFFICIAL_FRAME_INDICES):
        c2w = orbit_cameras(16, 0.0, 0.0, radius, dtype=torch.float64)[list(OFFICIAL_FRAME_INDICES)]
    else:
        c2w = orbit_cameras(num_views, 0.0, 0.0, radius, dtype=torch.float64)
    K = intrinsics_from_fov(fov_deg, dtype=torch.float64).expand(num_views, 3, 3)
    return c2w.to(dtype), K.to(dtype)


def turntable(
    gaussians: Gaussians,
    num_frames: int,
    size: int,
    radius: float = 1.5,
    fov_deg: float = 49.1,
    elevation_deg: float = 0.0,
    chunk: int = 8,
    compat: str | None = None,
) -> Tensor:  # [T, 3, size, size]
    """A 360-degree orbit of renders on white (the public inference: radius 1.5, 49.1 deg)."""
    c2w = orbit_cameras(num_frames, elevation_deg, 0.0, radius)
    K = intrinsics_from_fov(fov_deg, size, size).expand(num_frames, 3, 3)
    frames = []
    g = gaussians.to(dtype=torch.float32)
    for i in range(0, num_frames, chunk):
        out = render(g, c2w[i : i + chunk].to(g.means.device), K[i : i + chunk].to(g.means.device), size, size, compat=compat)
        frames.append(out.rgb.clamp(0, 1).cpu())
    return torch.cat(frames)


class SamplePipeline:
    """F, G and SVD's VAE/CLIP composed into Algorithm 2. Owns no weights of its own.

    ``offload=True`` keeps the models on the CPU and moves each to ``device`` only for its stage
    (:class:`~ouro.pipelines.offload.ModelPlacer`): same outputs, less accelerator memory.
    """

    def __init__(self, models: OuroModels, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 offload: bool = False):
        self.device, self.dtype = torch.device(device), dtype
        self.placer = ModelPlacer(self.device, offload=offload)
        self.models = models.to(device="cpu" if self.placer.offload else device, dtype=dtype).eval()
        self.config = models.config
        self.compat = models.compat

    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                        offload: bool = False) -> "SamplePipeline":
        return cls(load_checkpoint(folder, dtype=dtype), device, dtype, offload)

    # ---------------------------------------------------------------------------------- helpers
    def cameras(self) -> tuple[Tensor, Tensor]:
        cam = self.config.camera
        c2w, K = view_cameras(cam.num_views, cam.radius, cam.fov_deg)
        return c2w.to(self.device), K.to(self.device)

    def reconstruct(self, x0_images: Tensor, c2w: Tensor, K_norm: Tensor, sigma: float | None) -> Gaussians:
        """G on decoded views ``[1, V, 3, H, W]`` in [-1, 1] (G picks its 4) -> Gaussians with batch [1].

        ``c2w [V, 4, 4]`` and ``K_norm [V, 3, 3]`` are the views' cameras (:meth:`cameras`); ``sigma``
        the noise level G is told its views carry (None: clean views).
        """
        images = (x0_images * 0.5 + 0.5).to(self.dtype)  # no clamp, as the public code
        self.placer.activate(self.models.reconstructor)
        out = self.models.reconstructor(images, c2w[None].to(self.dtype), K_norm[None].to(self.dtype), noise_level(sigma))
        return out.to_gaussians(self.compat)

    def decode(self, latents: Tensor, settings: SampleSettings) -> Tensor:
        """VAE decode of x0 latents ``[1, V', 4, h, w]`` -> ``[1, V', 3, H, W]`` in about [-1, 1] (float32)."""
        self.placer.activate(self.models.conditioner.vae)
        return self.models.conditioner.decode(latents.to(self.models.conditioner.vae.dtype), chunk_frames=settings.decode_chunk)

    # ------------------------------------------------------------------------------------- call
    @torch.no_grad()
    def __call__(
        self,
        image: Tensor,  # [3, S, S] in [0, 1], prepared (object centred on white)
        settings: SampleSettings = SampleSettings(),
        progress: Callable[[int, int], None] | None = None,
    ) -> SampleOutput:
        """Sample one object from one prepared image. ``progress(step_done, num_steps)`` is called per step."""
        m, cfg = self.models, self.config
        size, frames = cfg.generator.image_size, cfg.camera.num_views
        down = cfg.generator.vae_downsample
        timings: dict[str, float] = defaultdict(float)
        tick = time.perf_counter

        # 1. check inputs
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")
        if settings.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {settings.num_steps}")
        check_seed(settings.seed)
        if settings.decode_chunk is not None and settings.decode_chunk < 1:
            raise ValueError(f"decode_chunk must be >= 1, got {settings.decode_chunk}")
        if settings.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {settings.sampler!r}")
        if settings.feedback_every < 1:
            raise ValueError(f"feedback_every must be >= 1, got {settings.feedback_every}")
        generator = torch.Generator(device="cpu").manual_seed(settings.seed)
        if settings.feedback and not cfg.generator.feedback:
            # a model trained without feedback adapters (paper Table 2 rows 1-2): the two-stage baseline
            settings = replace(settings, feedback=False)

        # 2. cameras and conditioning (CLIP embedding of the clean image, noised condition latent)
        t0 = tick()
        c2w, K_norm = self.cameras()
        cond_image = torch.nn.functional.interpolate(
            image[None].to(self.device, torch.float32) * 2 - 1, size=(size, size), mode="bilinear", align_corners=False
        )
        self.placer.activate(m.conditioner)
        clip = m.conditioner.clip_embedding(cond_image).to(self.dtype)  # [1, 1, D]
        noise = torch.randn(cond_image.shape, generator=generator).to(self.device)
        cond_latent = m.conditioner.vae.encode((cond_image + 0.02 * noise).to(m.conditioner.vae.dtype)).latent_dist.mode()
        cond_latent = cond_latent.to(self.dtype)[:, None].expand(1, frames, -1, -1, -1)  # [1, V, 4, h, w]
        time_ids = m.conditioner.added_time_ids(1, device=self.device, dtype=self.dtype)
        scales = guidance_scales(frames, *self.guidance(settings)).to(self.device)
        guided = bool((scales != 1.0).any())
        if guided:  # batch [uncond, cond]: zero CLIP embedding and zero condition latent
            clip = torch.cat([torch.zeros_like(clip), clip])
            cond_latent = torch.cat([torch.zeros_like(cond_latent), cond_latent])
            time_ids = time_ids.repeat(2, 1)
        timings["condition"] += tick() - t0

        # 3. initial noise
        sampler = make_sampler(settings.sampler, settings.num_steps, cfg.diffusion.sigma_min, cfg.diffusion.sigma_max,
                               sigma_data=cfg.diffusion.sigma_data)
        h = w = size // down
        latents = torch.randn((1, frames, cfg.generator.latent_channels, h, w), generator=generator).to(self.device, torch.float32)
        latents = latents * sampler.init_noise_sigma
        anchored = self.anchors_input(settings.anchor_input)
        if anchored:  # view 0 is the clean input's latent plus this fixed noise at each step's sigma
            vae = m.conditioner.vae
            self.placer.activate(vae)
            anchor = vae.encode(cond_image.to(vae.dtype)).latent_dist.mode().float() * vae.config.scaling_factor  # [1, C, h, w]
            anchor_noise = latents[:, 0] / sampler.init_noise_sigma
            latents[:, 0] = anchor + sampler.sigmas[0] * anchor_noise

        # 4. denoising loop with 3D feedback: one pass per F call (module docstring: a step's calls
        # all read the maps rendered after the step before; G runs after a step's last call)
        maps: list[Tensor] | None = None  # [rgb, ccm] (adapter order), each [1, V, 3, H, W] in the compute dtype
        features = None  # the adapters' features of `maps`: encoded once, read by every call until new maps
        gaussians: Gaussians | None = None
        records: list[StepRecord] = []
        fed: dict[int, list[Tensor]] = {}
        zero_features = None
        final_views: Tensor | None = None
        evaluations = sampler.evaluations
        for k, ev in enumerate(evaluations):
            i, sigma = ev.step, ev.sigma
            t0 = tick()
            x_in = sampler.scale_model_input(latents, k).to(self.dtype)
            sample = torch.cat([x_in.expand(cond_latent.shape[0], -1, -1, -1, -1), cond_latent], dim=2)
            kwargs = dict(c2w=c2w[None].to(self.dtype), K_norm=K_norm[None].to(self.dtype), compat=self.compat)
            self.placer.activate(m.generator)
            if settings.uses_feedback(i) and maps is not None:
                if features is None:
                    features = m.generator.encode_feedback(maps, frames, (h, w), device=self.device)
                if settings.save_intermediate and i not in fed:
                    fed[i] = [t[0].float().cpu() for t in maps]
                model_out = m.generator(sample, ev.timestep, clip, time_ids, adapter_features=features, **kwargs).sample
            else:  # zero maps: their adapter features are the same at every step, so encode once
                if zero_features is None:
                    zero_features = m.generator.encode_feedback(None, frames, (h, w), device=self.device)
                model_out = m.generator(sample, ev.timestep, clip, time_ids, adapter_features=zero_features, **kwargs).sample
            if guided:
                model_out = apply_guidance(model_out[:1], model_out[1:], scales)
            step = sampler.step(model_out.float(), k, latents)
            last = k == len(evaluations) - 1
            if anchored:
                step.pred_original_sample[:, 0] = anchor
                step.prev_sample[:, 0] = anchor + (0.0 if last else evaluations[k + 1].sigma) * anchor_noise
            # the last step lands on x0 (sigma_next = 0); take it exactly, so the decode below is reusable
            latents = (step.pred_original_sample if last else step.prev_sample).float()
            timings["unet"] += tick() - t0
            if not ev.last_in_step:  # Heun's predictor call: the step goes on with the same maps
                continue

            needs_3d = settings.reconstructs_after(i)
            if needs_3d or settings.save_intermediate:
                t0 = tick()
                subset = settings.decode_reconstructor_views_only and not last and not settings.save_intermediate
                views_read = m.reconstructor.select_views(frames) if subset else list(range(frames))
                x0 = self.decode(step.pred_original_sample[:, views_read], settings)  # [1, V or 4, 3, H, W]
                timings["decode"] += tick() - t0
                if last:  # this decode is the output
                    final_views = x0
                record = StepRecord(i, sigma, x0_views=(x0[0] * 0.5 + 0.5).clamp(0, 1).cpu()) if settings.save_intermediate else None
                if needs_3d:
                    t0 = tick()
                    gaussians = self.reconstruct(x0, c2w[views_read], K_norm[views_read], sigma)
                    timings["reconstruct"] += tick() - t0
                    if not last or settings.save_intermediate:
                        t0 = tick()
                        rendered = render_feedback(gaussians, c2w[None].to(self.dtype), K_norm[None].to(self.dtype), size, self.compat)
                        # only what F reads is kept, in the compute dtype (alpha and depth are dropped)
                        maps = [t.to(self.dtype) for t in rendered.as_list(tuple(cfg.generator.feedback))]
                        features = None
                        timings["render"] += tick() - t0
                        if record is not None:
                            record.renders, record.ccm = rendered.rgb[0].float().cpu(), rendered.ccm[0].float().cpu()
                        del rendered
                if record is not None:
                    records.append(record)
            if progress is not None:
                progress(i + 1, settings.num_steps)

        # 5. final views; the two-stage baseline reconstructs once from them (clean, c_noise = 0)
        views = final_views
        if views is None:
            t0 = tick()
            views = self.decode(latents, settings)
            timings["decode"] += tick() - t0
        if not settings.feedback:
            t0 = tick()
            gaussians = self.reconstruct(views, c2w, K_norm, None)
            timings["reconstruct"] += tick() - t0
        assert gaussians is not None
        final = gaussians.batch_item(0)
        return SampleOutput(
            views=(views[0] * 0.5 + 0.5).clamp(0, 1).float().cpu(),
            gaussians=final.to(device="cpu", dtype=torch.float32),
            c2w=c2w.cpu(),
            K_norm=K_norm.cpu(),
            timings=dict(timings),
            steps=records,
            feedback_inputs=fed,
        )

    def guidance(self, settings: SampleSettings) -> tuple[float, float]:
        """The guidance of the first and last view: the settings', else the model config's."""
        if settings.guidance is not None:
            return settings.guidance
        return float(self.config.diffusion.guidance_min), float(self.config.diffusion.guidance_max)

    def anchors_input(self, anchor_input: bool | None) -> bool:
        """Whether view 0 is held to the input: ``anchor_input`` (a setting), else the model config's."""
        if anchor_input is not None:
            return bool(anchor_input)
        return bool(self.config.diffusion.anchor_input)

    def describe(self, settings: SampleSettings) -> dict:
        """Settings (guidance and anchoring resolved) and model facts for meta.json."""
        settings = replace(settings, guidance=self.guidance(settings), anchor_input=self.anchors_input(settings.anchor_input))
        return {
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()},
            "evaluations": num_evaluations(settings.sampler, settings.num_steps),  # F calls per object
            "preset": self.config.name,
            "compat": self.compat,
            "image_size": self.config.generator.image_size,
            "num_views": self.config.camera.num_views,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "offload": self.placer.offload,
        }


# ------------------------------------------------------------------------------------ outputs
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Image files, with folders replaced by the images they hold (sorted, not recursive)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        else:
            files.append(p)
    return files


def _to_uint8(image: Tensor):  # [3, H, W] in [0, 1] -> [H, W, 3] uint8 numpy
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")


def image_grid(views: Tensor, rows: int = 2) -> Tensor:  # [V, 3, H, W] -> [3, rows*H, cols*W]
    v, c, h, w = views.shape
    cols = -(-v // rows)
    padded = torch.cat([views, torch.ones(rows * cols - v, c, h, w)]) if rows * cols > v else views
    return padded.reshape(rows, cols, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, rows * h, cols * w)


def write_video(path: Path, frames: Tensor, fps: int = 30) -> Path:
    """Frames ``[T, 3, H, W]`` in [0, 1] to MP4 (H.264 via imageio-ffmpeg); GIF (looping) when no codec works
    or the frames have an odd side (H.264 in yuv420p needs even ones)."""
    import imageio.v2 as imageio

    arrays = [_to_uint8(f) for f in frames]
    try:
        if frames.shape[-1] % 2 or frames.shape[-2] % 2:
            raise ValueError("H.264 (yuv420p) needs even frame sides")
        with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, ffmpeg_log_level="error",
                                output_params=["-pix_fmt", "yuv420p"]) as writer:
            for a in arrays:
                writer.append_data(a)
        if not path.is_file() or path.stat().st_size == 0:  # ffmpeg can fail without raising
            raise RuntimeError(f"{path}: ffmpeg wrote nothing")
        return path
    except Exception:  # no ffmpeg binary / codec: fall back to GIF
        path.unlink(missing_ok=True)
        gif = path.with_suffix(".gif")
        imageio.mimsave(gif, arrays, duration=1000 / fps, loop=0)
        return gif


#: Side of the turntable video's frames when none is asked for, pixels (the splats render at any size).
DEFAULT_VIDEO_SIZE = 512


class NoMeshSurface(ValueError):
    """The splats hold no surface to mesh (nothing opaque enough); the message says so in one line."""


@dataclass
class SampleFiles:
    """What :func:`write_outputs` wrote for one object (paths inside its folder).

    Attributes:
        folder: the object's output folder.
        input: ``input.png``, the prepared input the models read (RGB on white).
        mask: ``mask.png``, the foreground mask the input was cut with, in the input file's own
            pixel frame; None when no mask was given (``--background keep``).
        views: ``views/000.png ..``, one per generated view; ``grid``: ``views.png``, all of them.
        gaussians: ``gaussians.ply`` (standard 3DGS layout); ``num_gaussians``: the Gaussians in it.
        video: the turntable (``orbit.mp4``, or ``orbit.gif`` without an H.264 encoder).
        mesh: ``mesh.glb`` when a mesh was asked for, else None.
        meta: ``meta.json``.
        timings: seconds per writing stage (``write_images``, ``video``, ``mesh``).
    """

    folder: Path
    input: Path
    mask: Path | None
    views: list[Path]
    grid: Path
    gaussians: Path
    num_gaussians: int
    video: Path
    mesh: Path | None
    meta: Path
    timings: dict[str, float]


def write_outputs(
    folder: Path,
    result: SampleOutput,
    input_image: Tensor,  # [3, S, S] prepared input
    meta: dict,
    *,
    mask: "np.ndarray | None" = None,  # [H, W] float in [0, 1]: the foreground mask in the input's own frame
    video_frames: int = 60,
    video_size: int = DEFAULT_VIDEO_SIZE,
    mesh: "MeshSettings | None" = None,
    texture: "TextureSettings | None" = None,
    compat: str | None = None,
    stage: Callable[[str], None] | None = None,
) -> SampleFiles:
    """Write one object's outputs into ``folder`` (which must exist and be empty).

    The one writer of ``ouro sample`` and ``ouro app``: ``input.png`` (the prepared input the
    models read), ``mask.png`` when ``mask`` is given (the foreground mask the input was cut with,
    in the input file's own pixel frame), ``views/``, ``views.png``, ``gaussians.ply``,
    ``orbit.mp4`` (``video_frames`` renders of the splats, ``video_size`` pixels square, whatever
    the model's view size), ``mesh.glb`` when ``mesh`` settings are given (fused from the splats as
    ``ouro export`` does: vertex-coloured, or UV-textured with ``texture``), ``intermediate/`` when the result holds per-step
    records, and ``meta.json``. ``stage(name)`` is called before each slow stage (``video``, ``mesh``).

    Raises :class:`NoMeshSurface` when a mesh is asked for and none can be extracted (no visible splats).
    """
    import json

    from PIL import Image

    from ouro.gaussians.ply import write_ply

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    Image.fromarray(_to_uint8(input_image)).save(folder / "input.png")
    mask_path = None
    if mask is not None:
        mask_path = folder / "mask.png"
        Image.fromarray((mask.clip(0, 1) * 255 + 0.5).astype("uint8"), "L").save(mask_path)
    (folder / "views").mkdir()
    views = []
    for k, view in enumerate(result.views):
        views.append(folder / "views" / f"{k:03d}.png")
        Image.fromarray(_to_uint8(view)).save(views[-1])
    Image.fromarray(_to_uint8(image_grid(result.views))).save(folder / "views.png")
    num_gaussians = write_ply(folder / "gaussians.ply", result.gaussians)
    if result.steps:
        (folder / "intermediate").mkdir()
        for rec in result.steps:
            Image.fromarray(_to_uint8(image_grid(rec.x0_views))).save(folder / "intermediate" / f"step{rec.step:03d}_x0.png")
            if rec.renders is not None:
                Image.fromarray(_to_uint8(image_grid(rec.renders))).save(folder / "intermediate" / f"step{rec.step:03d}_render.png")
                Image.fromarray(_to_uint8(image_grid(rec.ccm))).save(folder / "intermediate" / f"step{rec.step:03d}_ccm.png")
    timings["write_images"] = time.perf_counter() - t0
    if stage is not None:
        stage("video")
    t0 = time.perf_counter()
    video = write_video(folder / "orbit.mp4", turntable(result.gaussians, video_frames, video_size, compat=compat))
    timings["video"] = time.perf_counter() - t0
    mesh_path = None
    if mesh is not None:
        from ouro.pipelines.export import export_gaussians

        if stage is not None:
            stage("mesh")
        t0 = time.perf_counter()
        try:
            mesh_path = export_gaussians(result.gaussians, folder / "mesh.glb", "glb", mesh, texture)[0]
        except ValueError as exc:  # nothing opaque enough to mesh (NoSurfaceError)
            raise NoMeshSurface(str(exc)) from exc
        timings["mesh"] = time.perf_counter() - t0
    outputs = {"views": len(result.views), "gaussians": num_gaussians, "video": video.name, "video_frames": video_frames,
               "video_size": video_size, "mesh": mesh_path.name if mesh_path else None,
               "mesh_texture": texture.size if mesh_path and texture else None}
    meta = dict(meta, outputs=outputs, timings={**result.timings, **timings})
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return SampleFiles(folder, folder / "input.png", mask_path, views, folder / "views.png", folder / "gaussians.ply",
                       num_gaussians, video, mesh_path, folder / "meta.json", timings)


def mesh_support_missing() -> str | None:
    """The mesh writer's missing package (``open3d`` or ``trimesh``), or None when both import."""
    try:
        import trimesh  # noqa: F401
    except ImportError:
        return "trimesh"
    try:
        from ouro.io.mesh import import_open3d

        import_open3d()
    except ImportError:
        return "open3d"
    return None


def background_meta(prepared) -> dict:
    """meta.json's ``background`` record of a :class:`ouro.data.preprocess.PreparedImage`: the method,
    the mask file and the plausibility check's figures and problems."""
    fg = prepared.foreground
    if fg is None:
        return {"method": "keep"}
    c = fg.check
    figures = {"area": c.area, "border": c.border, "largest_share": c.largest_share, "holes": c.holes, "edge_overlap": c.edge_overlap}
    return {"method": fg.method, "mask": "mask.png", "check": {k: (round(v, 4) if v is not None else None) for k, v in figures.items()},
            "problems": list(c.problems)}


# ------------------------------------------------------------------------------ model choice
class ModelNotFound(FileNotFoundError):
    """No usable model for the requested choice; the message says how to get one."""


def demo_checkpoint() -> Path:
    """The embedded demo checkpoint folder (``ouro/assets/demo``)."""
    import ouro

    return Path(ouro.__file__).resolve().parent / "assets" / "demo"


#: How the demo is named in logs, metadata and reports.
DEMO_DESCRIPTION = "the embedded demo model"
#: What ``--model auto`` adds when it falls back to the demo: how to get the paper's model instead.
DEMO_HINT = (
    "64 px, a small model trained on furniture renders, see ouro/assets/demo/MODEL_CARD.md; the public "
    "Ouroboros3D weights were not found: put huanngzh/Ouroboros3D-SVD-LGM and "
    "stabilityai/stable-video-diffusion-img2vid in the Hugging Face cache or under $OURO_WEIGHTS to use "
    "them (--model official)"
)


def load_pipeline(
    choice: str = "auto",
    checkpoint: Path | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    offload: bool = False,
) -> tuple[SamplePipeline, str]:
    """Load the model to sample with: ``(pipeline, description)``.

    ``checkpoint`` (an ouro checkpoint folder) wins; otherwise ``official`` needs the public
    weights on disk (``$OURO_WEIGHTS`` or the Hugging Face cache), ``demo`` is the embedded model,
    and ``auto`` takes the public weights when found, else the demo. Raises :class:`ModelNotFound`
    with what to do when the choice cannot be met. ``offload``: see :class:`SamplePipeline`.
    """
    from ouro.io.checkpoint import is_checkpoint

    if checkpoint is not None:
        if not Path(checkpoint).is_dir():
            raise ModelNotFound(f"{checkpoint}: no such checkpoint folder")
        return SamplePipeline.from_checkpoint(checkpoint, device, dtype, offload), f"checkpoint {checkpoint}"
    if choice in ("auto", "official"):
        from ouro.io.official import find_official_weights, load_official

        found = find_official_weights()
        if found is not None:
            models = load_official(found, device="cpu" if offload else device, dtype=dtype)
            return SamplePipeline(models, device, dtype, offload), "the public Ouroboros3D weights"
        if choice == "official":
            raise ModelNotFound(
                "the public Ouroboros3D weights were not found: put mv_model_unet.pth and recon_model.pth "
                "(huanngzh/Ouroboros3D-SVD-LGM) and the stabilityai/stable-video-diffusion-img2vid folder under "
                "$OURO_WEIGHTS, or in the Hugging Face cache"
            )
    demo = demo_checkpoint()
    if not is_checkpoint(demo):
        raise ModelNotFound(
            "the embedded demo model is not in this version of ouro; pass --checkpoint DIR (a folder from "
            "`ouro train`) or provide the public weights (see --model official)"
        )
    return SamplePipeline.from_checkpoint(demo, device, dtype, offload), DEMO_DESCRIPTION
