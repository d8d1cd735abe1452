"""FLOPs of ouro's components and per-3D-object totals for the public and our sampling schedules.

Counting: ``torch.utils.flop_counter.FlopCounterMode`` around forward passes of models built on the
``meta`` device (no memory, no real compute). It counts matrix multiplies, convolutions and
attention (``2 * M * N * K``: a multiply-add is 2 FLOPs); element-wise ops, norms, softmax,
resizing and the rasterizer are not counted (the rasterizer gets an explicit estimate below).

Components (``paper`` preset = the public checkpoint's sizes; SVD's VAE and CLIP with their real
configs): the multi-view UNet per call (8 frames, 64x64 latents, batch 1 and batch 2 for
classifier-free guidance; Plücker MLPs included, adapters excluded), each feedback adapter per call,
the VAE decode of 8 and of 4 frames at 512x512, the VAE encode of the condition image, the CLIP
image encoder (ViT-H/14 at 224), the LGM reconstructor (4 views at 256 -> 4 x 128^2 Gaussians) and a
rasterization estimate.

Schedules (``SCHEDULES``; S = 25 steps, step indices 0..S-1):

* ``a`` the public pipeline (OFFICIAL.md 11.7): every step runs the guided UNet at batch 2, both
  adapters at batch 2 (zero maps at step 0), a VAE decode of all 8 frames, LGM and a render of the
  8 views; then a separate decode of the final latents.
* ``b-full`` ours, same outputs: adapters once per step at batch 1 (both guidance halves get the
  same maps; ``MultiViewUNet`` broadcasts batch-1 features); zero-map features encoded once (one
  frame) and cached; no render after the last step (nothing reads it); the last step's 8-view
  decode of x0 is the output (at sigma = 0 the Euler step returns x0, so the public final decode
  repeats it).
* ``b-fast`` as ``b-full`` but intermediate steps decode only the 4 views G reads (SVD's temporal
  decoder mixes frames, so this changes the maps slightly; its quality cost is to be measured);
  the last step decodes all 8.
* ``b-full-10``: ``b-full`` with feedback only in steps 10-25 (paper Table 3; read here as step
  indices 10..24 using feedback, so decode + LGM + render run only from step 9 on).
* ``b-fast-10`` / ``b-fast-20``: ``b-fast`` with feedback only in steps 10-25 / 20-25.

Sampler settings (``Schedule.sampler``, ``steps``, ``feedback_every``, issue #28): ours counts what
``ouro.pipelines.sample`` runs, from its own ``SampleSettings`` rules: one guided UNet call per F
evaluation (Heun: ``2 S - 1`` for ``S`` steps), the adapters once per set of fresh maps
(``refreshes_feedback``), decode + LGM + render after each step that ``reconstructs_after`` (the
last step: decode + LGM only). ``--grid`` prints the settings measured on the demo
(``SAMPLING_GRID``) at paper size.

    .venv/bin/python benchmarks/flops.py                 # paper preset, markdown tables
    .venv/bin/python benchmarks/flops.py --readme-rows   # the rows of benchmarks/README.md
    .venv/bin/python benchmarks/flops.py --grid          # the sampling settings of issue #28, paper size
    .venv/bin/python benchmarks/flops.py --preset tiny   # seconds; what tests/test_flops.py runs
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ouro.config import OuroConfig, get_preset

T = 1e12  # FLOP per TFLOP
H100_BF16 = 800e12  #: FLOP/s used for the lower bound on time (an H100, dense bf16, rounded)
#: figures measured by the issue (issue 4), TFLOP
REFERENCE = {"svd_unet_b1": 10.17, "vae_decode_8": 24.34, "lgm": 1.78, "a": 1257.0}

__all__ = [
    "count_flops",
    "component_flops",
    "raster_estimate",
    "Schedule",
    "SCHEDULES",
    "SAMPLING_GRID",
    "per_object",
    "sample_settings",
]


def count_flops(fn, *args, **kwargs) -> int:
    """FLOPs counted by ``FlopCounterMode`` for one call ``fn(*args, **kwargs)`` under ``no_grad``."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def _vae_config(config: OuroConfig) -> dict:
    if config.name == "paper":  # stabilityai/stable-video-diffusion-img2vid vae/config.json
        return dict(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=768,
        )
    # the tiny/small stand-in, as SVDConditioner.tiny
    return dict(block_out_channels=(32,) * 4, down_block_types=("DownEncoderBlock2D",) * 4, layers_per_block=1, latent_channels=4)


def _clip_config(config: OuroConfig):
    from transformers import CLIPVisionConfig

    if config.name == "paper":  # SVD's image_encoder: OpenCLIP ViT-H/14
        return CLIPVisionConfig(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
            patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu",
        )
    return CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        patch_size=32, image_size=224, projection_dim=config.generator.cross_attention_dim,
    )


def raster_estimate(
    num_gaussians: int,
    size: int,
    views: int,
    fx: float,
    sigma_world: float = 0.01,
    depth: float = 1.24,
    tile: int = 16,
    ops_per_pair: int = 30,
    ops_per_gaussian: int = 200,
    ops_per_pixel: int = 25,
) -> tuple[float, dict]:
    """An **estimate** (not a count) of one feedback render: ``views`` views of ``size^2`` pixels.

    Formula: ``views * (P * K * ops_per_pair + N * ops_per_gaussian + P * ops_per_pixel)`` with
    P = pixels, N = Gaussians, K = (pixel, Gaussian) pairs a tile rasterizer evaluates per pixel
    without early termination (an upper estimate): every Gaussian is evaluated at every pixel of
    every 16x16 tile its 3-sigma footprint touches, ``K = N * (2 r / tile + 1)^2 * tile^2 / P``,
    ``r = 3 sigma_world fx / depth`` pixels. ``ops_per_pair`` ~ 30 (conic quadratic form, exp,
    alpha, colour + depth + transmittance update), ``ops_per_gaussian`` ~ 200 (projection, 2D
    covariance, conic, bounds), ``ops_per_pixel`` ~ 25 (background, the coordinate map). Defaults:
    an LGM-like object (scales ~0.01, front surface ~1.24 from a camera at radius 1.74).
    """
    pixels = size * size
    r = 3 * sigma_world * fx / depth
    tiles = (2 * r / tile + 1) ** 2
    k = num_gaussians * tiles * tile * tile / pixels
    flops = views * (pixels * k * ops_per_pair + num_gaussians * ops_per_gaussian + pixels * ops_per_pixel)
    return flops, {"radius_px": r, "tiles_per_gaussian": tiles, "pairs_per_pixel": k}


def component_flops(preset: str | OuroConfig = "paper") -> dict[str, float]:
    """FLOPs of one call of each component at ``preset``, counted on the meta device.

    Keys: ``unet_b1``, ``unet_b2`` (ours: cameras at batch 1, broadcast), ``unet_b2_public`` (cameras
    duplicated per guidance half, as the public code), ``svd_unet_b1`` (the plain diffusers UNet
    forward), ``adapter_rgb_b1/b2``, ``adapter_ccm_b1/b2`` (all frames), ``adapter_zero`` (both
    adapters on one zero frame, the cached no-feedback features), ``vae_decode_<n>`` for n = all
    frames and the views G reads, ``vae_encode``, ``clip``, ``lgm``, ``raster`` (estimate).
    """
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionModelWithProjection

    from ouro.models import build_models

    config = get_preset(preset) if isinstance(preset, str) else preset
    gen, rec = config.generator, config.reconstructor
    frames, size = gen.num_frames, gen.image_size
    h = size // gen.vae_downsample
    views = len(rec.input_views)
    meta = torch.device("meta")

    mv, lgm = build_models(config, device=meta, compat="official")
    mv.to(meta)  # diffusers' scalar mix factors are built on the CPU even under the meta device
    lgm.to(meta)
    with meta:
        vae = AutoencoderKLTemporalDecoder(**_vae_config(config))
        clip = CLIPVisionModelWithProjection(_clip_config(config))
    vae.to(meta)
    clip.to(meta)

    def t(*shape):
        return torch.zeros(shape, device=meta)

    c2w = torch.eye(4, device=meta).expand(1, frames, 4, 4)
    K = torch.eye(3, device=meta).expand(1, frames, 3, 3)
    out: dict[str, float] = {}
    # adapters: [n * F, 3, H, W] -> 4 features
    for i, name in enumerate(gen.feedback):
        for b in (1, 2):
            out[f"adapter_{name}_b{b}"] = count_flops(mv.cond_encoder[i], t(b * frames, 3, size, size))
    out["adapter_zero"] = sum(count_flops(enc, t(1, 3, size, size)) for enc in mv.cond_encoder)
    feats = [f.unflatten(0, (1, frames)) for f in mv.cond_encoder[0](t(frames, 3, size, size))] if len(mv.cond_encoder) else None

    def unet(b: int, cam_batch: int) -> float:
        return count_flops(
            mv, t(b, frames, 2 * gen.latent_channels, h, h), torch.zeros((), device=meta), t(b, 1, gen.cross_attention_dim),
            t(b, 3), c2w.expand(cam_batch, -1, -1, -1), K.expand(cam_batch, -1, -1, -1),
            adapter_features=feats, compat="official",
        )

    out["unet_b1"] = unet(1, 1)
    out["unet_b2"] = unet(2, 1)
    out["unet_b2_public"] = unet(2, 2)
    out["svd_unet_b1"] = count_flops(
        mv.unet, t(1, frames, 2 * gen.latent_channels, h, h), torch.zeros((), device=meta),
        t(1, 1, gen.cross_attention_dim), t(1, 3),
    )
    for n in sorted({frames, views}):
        out[f"vae_decode_{n}"] = count_flops(vae.decode, t(n, gen.latent_channels, h, h), num_frames=n)
    out["vae_encode"] = count_flops(lambda x: vae.encode(x).latent_dist.mode(), t(1, 3, size, size))
    out["clip"] = count_flops(lambda x: clip(x).image_embeds, t(1, 3, 224, 224))
    out["lgm"] = count_flops(lgm, t(1, frames, 3, size, size), c2w, K, torch.zeros((), device=meta))
    fx = size / (2 * math.tan(math.radians(config.camera.fov_deg) / 2))
    out["raster"], _ = raster_estimate(views * rec.splat_size**2, size, frames, fx)
    return out


@dataclass(frozen=True)
class Schedule:
    """What one 3D object's sampling runs, per step (see the module docstring).

    Attributes:
        name, label: short key and table label.
        public: the public code's work pattern (adapters at batch 2 every step including zero maps,
            render every step, separate final decode); otherwise ours.
        feedback_from: first step index whose UNet call reads feedback (1 = every step after the
            first, the paper's "0-25").
        decode_views: views decoded at intermediate steps (the last step always decodes all frames).
        sampler: ``euler``, ``heun`` or ``dpm++2m`` (ours only; the public code is Euler).
        steps: sampler steps; None = ``per_object``'s ``steps``.
        feedback_every: maps refreshed at every K-th feedback step (``SampleSettings.feedback_every``).
    """

    name: str
    label: str
    public: bool = False
    feedback_from: int = 1
    decode_views: int | None = None  # None = all frames
    sampler: str = "euler"
    steps: int | None = None
    feedback_every: int = 1


SCHEDULES = (
    Schedule("a", "(a) public pipeline", public=True),
    Schedule("b-full", "(b) ours, same outputs"),
    Schedule("b-fast", "(b) ours fast: 4-view intermediate decode", decode_views=4),
    Schedule("b-full-10", "(b) ours, feedback in steps 10-25 only", feedback_from=10),
    Schedule("b-fast-10", "(b) ours fast + feedback in steps 10-25", decode_views=4, feedback_from=10),
    Schedule("b-fast-20", "(b) ours fast + feedback in steps 20-25", decode_views=4, feedback_from=20),
)


#: The sampling settings measured on the demo (benchmarks/README.md, "Sampling: quality against cost"): the
#: demo samples 20 steps by default, so its feedback windows are 8-20 and 16-20 (the paper's 10-25 and
#: 20-25 scaled); names are the eval folders' under the demo data folder.
SAMPLING_GRID = (
    Schedule("euler-20", "Euler 20 (demo default = `quality`)", steps=20),
    Schedule("euler-10", "Euler 10", steps=10),
    Schedule("euler-6", "Euler 6", steps=6),
    Schedule("heun-5", "Heun 5 steps (9 calls)", sampler="heun", steps=5),
    Schedule("heun-3", "Heun 3 steps (5 calls)", sampler="heun", steps=3),
    Schedule("heun-2", "Heun 2 steps (3 calls)", sampler="heun", steps=2),
    Schedule("dpm-10", "DPM-Solver++(2M) 10", sampler="dpm++2m", steps=10),
    Schedule("dpm-6", "DPM-Solver++(2M) 6", sampler="dpm++2m", steps=6),
    Schedule("dpm-4", "DPM-Solver++(2M) 4", sampler="dpm++2m", steps=4),
    Schedule("every-2", "Euler 20, feedback every 2", steps=20, feedback_every=2),
    Schedule("every-4", "Euler 20, feedback every 4", steps=20, feedback_every=4),
    Schedule("window-8", "Euler 20, feedback in steps 8-20", steps=20, feedback_from=8),
    Schedule("window-16", "Euler 20, feedback in steps 16-20", steps=20, feedback_from=16),
    Schedule("fast", "Euler 20, `--fast` (4-view decode)", steps=20, decode_views=4),
    # beyond the grid: Euler 4, and fewer than 4 F calls (what `fastest` was chosen from)
    Schedule("euler-4", "Euler 4", steps=4),
    Schedule("dpm-3", "DPM-Solver++(2M) 3", sampler="dpm++2m", steps=3),
    Schedule("dpm-2", "DPM-Solver++(2M) 2", sampler="dpm++2m", steps=2),
)


def sample_settings(schedule: Schedule, steps: int = 25):
    """The ``ouro.pipelines.sample.SampleSettings`` that run ``schedule`` (ours)."""
    from ouro.pipelines.sample import SampleSettings

    n = schedule.steps or steps
    window = None if schedule.feedback_from <= 1 else (schedule.feedback_from, n)
    return SampleSettings(num_steps=n, feedback_steps=window, sampler=schedule.sampler, feedback_every=schedule.feedback_every,
                          decode_reconstructor_views_only=schedule.decode_views is not None)


def per_object(components: dict[str, float], schedule: Schedule, steps: int = 25, frames: int = 8) -> dict[str, float]:
    """FLOPs per 3D object by part (``unet``, ``adapters``, ``decode``, ``lgm``, ``render``, ``once``) and ``total``."""
    from ouro.diffusion.samplers import num_evaluations

    c = components
    adapters = [k for k in c if k.startswith("adapter_") and k.endswith("_b1")]
    dec_all = c[f"vae_decode_{frames}"]
    parts: dict[str, float] = {}
    if schedule.public:
        parts["unet"] = steps * c["unet_b2_public"]
        parts["adapters"] = steps * sum(c[k.replace("_b1", "_b2")] for k in adapters)
        parts["decode"] = steps * dec_all + dec_all  # every step's x0, then the final latents again
        parts["lgm"] = steps * c["lgm"]
        parts["render"] = steps * c["raster"]
    else:  # what ouro.pipelines.sample runs for these settings
        settings = sample_settings(schedule, steps)
        n = settings.num_steps
        fresh = sum(settings.refreshes_feedback(i) for i in range(n))  # sets of maps the adapters encode
        recon = [settings.reconstructs_after(i) for i in range(n)]  # the last step: output views + final 3DGS
        dec_mid = c[f"vae_decode_{schedule.decode_views or frames}"]
        parts["unet"] = num_evaluations(schedule.sampler, n) * c["unet_b2"]
        parts["adapters"] = fresh * sum(c[k] for k in adapters) + c["adapter_zero"]
        parts["decode"] = sum(recon[:-1]) * dec_mid + dec_all
        parts["lgm"] = sum(recon) * c["lgm"]
        parts["render"] = sum(recon[:-1]) * c["raster"]
    parts["once"] = c["clip"] + c["vae_encode"]
    parts["total"] = sum(parts.values())
    return parts


def _fmt(x: float, digits: int, scale: float = T) -> str:
    return f"{x / scale:,.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--readme-rows", action="store_true", help="print rows for benchmarks/README.md")
    parser.add_argument("--grid", action="store_true", help="print the sampling settings of issue #28 (SAMPLING_GRID)")
    parser.add_argument("--date", default="2026-11-21")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = get_preset(args.preset)
    gen, rec = config.generator, config.reconstructor
    steps, frames, size, views = config.diffusion.num_steps, gen.num_frames, gen.image_size, len(rec.input_views)
    h = size // gen.vae_downsample
    unit, scale = ("TFLOP", T) if config.name == "paper" else ("MFLOP", 1e6)  # tiny/small in readable numbers
    c = component_flops(config)
    totals = {s.name: per_object(c, s, steps, frames) for s in SCHEDULES}
    a = totals["a"]["total"]
    fx = size / (2 * math.tan(math.radians(config.camera.fov_deg) / 2))
    _, rinfo = raster_estimate(views * rec.splat_size**2, size, frames, fx)

    rows = [
        (
            "SVD UNet alone (diffusers forward)",
            f"batch 1, {frames} frames, {h}x{h} latents",
            c["svd_unet_b1"],
            REFERENCE["svd_unet_b1"],
        ),
        ("MultiViewUNet (UNet + Plücker MLPs)", f"batch 1, {frames} frames, {h}x{h}", c["unet_b1"], None),
        ("MultiViewUNet, guided (ours: cameras batch 1)", f"batch 2, {frames} frames, {h}x{h}", c["unet_b2"], None),
        ("MultiViewUNet, guided (public: cameras batch 2)", f"batch 2, {frames} frames, {h}x{h}", c["unet_b2_public"], None),
        *[
            (f"feedback adapter `{n}`", f"batch {b}, {frames} maps {size}x{size}", c[f"adapter_{n}_b{b}"], None)
            for n in gen.feedback
            for b in (1, 2)
        ],
        ("both adapters on a zero map (cached)", f"1 map {size}x{size}", c["adapter_zero"], None),
        (f"VAE decode, {frames} frames", f"{h}x{h} -> {size}x{size}", c[f"vae_decode_{frames}"], REFERENCE["vae_decode_8"]),
        (f"VAE decode, {views} frames", f"{h}x{h} -> {size}x{size}", c[f"vae_decode_{views}"], None),
        ("VAE encode, condition image", f"1 x {size}x{size}", c["vae_encode"], None),
        ("CLIP image encoder", "1 x 224x224", c["clip"], None),
        (
            "LGM reconstructor",
            f"{views} views at {rec.input_size} -> {views}x{rec.splat_size}^2 Gaussians",
            c["lgm"],
            REFERENCE["lgm"],
        ),
        (
            "rasterization + coordinate map (ESTIMATE)",
            f"{views * rec.splat_size**2:,} Gaussians, {frames} views {size}x{size}, "
            f"K={rinfo['pairs_per_pixel']:.0f} pairs/px x 30",
            c["raster"],
            None,
        ),
    ]
    if args.grid:
        from ouro.diffusion.samplers import num_evaluations

        print(f"## FLOPs per 3D object of the sampling settings, preset `{config.name}` ({unit}; (a) = {_fmt(a, 0, scale)})\n")
        print(f"| setting | F calls | reconstructions | UNet | decode | total | x (a) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for s in SAMPLING_GRID:
            p = per_object(c, s, steps, frames)
            st = sample_settings(s, steps)
            recon = sum(st.reconstructs_after(i) for i in range(st.num_steps))
            print(f"| {s.label} | {num_evaluations(s.sampler, st.num_steps)} | {recon} | {_fmt(p['unet'], 1, scale)} | "
                  f"{_fmt(p['decode'], 1, scale)} | **{_fmt(p['total'], 1, scale)}** | {p['total'] / a:.3f} |")
        return
    if args.readme_rows:
        cmd = "`.venv/bin/python benchmarks/flops.py`"
        machine = "cpu2 (meta device, no compute)"
        for name, shape, flops, _ in rows:
            print(f"| FLOPs: {name} ({shape}) | {_fmt(flops, 3, scale)} {unit} | {machine} | {args.date} | {cmd} |")
        for s in SCHEDULES:
            tot = totals[s.name]["total"]
            print(
                f"| FLOPs per object: {s.label} ({steps} steps) | {_fmt(tot, 0, scale)} {unit} = {tot / a:.2f}x (a); "
                f">= {tot / H100_BF16:.2f} s at 800 TFLOP/s | {machine} | {args.date} | {cmd} |"
            )
        return

    print(f"## FLOPs per call, preset `{config.name}` (meta device, FlopCounterMode; {unit})\n")
    print(f"| component | call | {unit} | issue 4 measured (TFLOP, paper) |")
    print("|---|---|---:|---:|")
    for name, shape, flops, ref in rows:
        ref = "" if ref is None or config.name != "paper" else f"{ref:,.2f}"
        print(f"| {name} | {shape} | {_fmt(flops, 3, scale)} | {ref} |")
    ratio, ratio_public = c["unet_b2"] / c["unet_b1"], c["unet_b2_public"] / c["unet_b1"]
    print(f"\nguided / single UNet call: {ratio:.4f} (public cameras: {ratio_public:.4f})")
    print(
        f"rasterization estimate: 3-sigma radius {rinfo['radius_px']:.1f} px, {rinfo['tiles_per_gaussian']:.1f} tiles per "
        f"Gaussian, K = {rinfo['pairs_per_pixel']:.0f} (pixel, Gaussian) pairs per pixel, 30 FLOP each"
    )
    print(f"\n## FLOPs per 3D object, {steps} steps ({unit}; time = lower bound at 800 TFLOP/s)\n")
    print("| schedule | UNet | adapters | VAE decode | LGM | render (est.) | CLIP + encode | total | x (a) | >= time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in SCHEDULES:
        p = totals[s.name]
        cells = " | ".join(_fmt(p[k], 1, scale) for k in ("unet", "adapters", "decode", "lgm", "render", "once"))
        time_s = p["total"] / H100_BF16
        print(f"| {s.label} | {cells} | **{_fmt(p['total'], 1, scale)}** | {p['total'] / a:.3f} | {time_s:.3g} s |")
    if config.name == "paper":
        print(f"\nissue 4 measured (a): {REFERENCE['a']:,.0f} TFLOP")


if __name__ == "__main__":
    main()
