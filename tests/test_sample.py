"""`ouro sample` (paper Algorithm 2) end to end at `tiny` size, on CPU."""

import contextlib
import json
import time
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import make_tiny_models
from ouro.cli.main import app
from ouro.gaussians.ply import read_ply
from ouro.pipelines.sample import SamplePipeline, SampleSettings

runner = CliRunner()
STEPS = 3


def object_image(path, size=96):
    """An RGBA picture of a two-coloured box on a transparent background."""
    arr = np.zeros((size, size, 4), dtype=np.uint8)
    arr[20:76, 30:66] = (200, 60, 40, 255)
    arr[20:40, 30:66] = (40, 60, 200, 255)
    Image.fromarray(arr, "RGBA").save(path)
    return path


@pytest.fixture(scope="module")
def pipe():
    return SamplePipeline(make_tiny_models())


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 64, 64, generator=g)


def test_cli_writes_every_output(tiny_checkpoint, tmp_path):
    src = object_image(tmp_path / "duck.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["sample", str(src), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--steps", str(STEPS), "--video-frames", "12",
                                 "--video-size", "80", "--anchor-input"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["gaussians.ply", "input.png", "mask.png", "meta.json", "orbit.mp4", "views", "views.png"]
    # the mask it cut with, in the input's frame: an RGBA input's own alpha
    np.testing.assert_array_equal(np.asarray(Image.open(out / "mask.png")), np.asarray(Image.open(src))[..., 3])
    views = sorted((out / "views").iterdir())
    assert [p.name for p in views] == [f"{k:03d}.png" for k in range(8)]
    assert all(Image.open(p).size == (64, 64) for p in views)
    assert Image.open(out / "views.png").size == (4 * 64, 2 * 64)
    assert read_ply(out / "gaussians.ply").num_gaussians > 0
    frames = [f for f in imageio.get_reader(out / "orbit.mp4")]
    assert len(frames) == 12 and frames[0].shape == (80, 80, 3)  # --video-size, not the model's 64 px
    meta = json.loads((out / "meta.json").read_text())
    assert meta["settings"]["num_steps"] == STEPS and meta["settings"]["seed"] == 0
    assert meta["settings"]["guidance"] == [1.0, 3.0]  # the tiny config's, resolved
    assert meta["settings"]["anchor_input"] is True  # the flag, over the tiny config's False
    assert set(meta["timings"]) >= {"unet", "decode", "reconstruct", "render", "video"}
    assert meta["outputs"]["video_size"] == 80 and meta["outputs"]["mesh"] is None
    assert meta["outputs"]["gaussians"] == read_ply(out / "gaussians.ply").num_gaussians
    assert meta["background"]["method"] == "alpha" and meta["background"]["problems"] == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.slow
def test_mesh_flag_writes_a_coloured_glb_in_the_same_run(tmp_path):
    """`--mesh` (the embedded demo, one step): mesh.glb beside the splats, as `ouro export` would fuse it."""
    import trimesh

    out = tmp_path / "out"
    chair = Path(__file__).resolve().parents[1] / "examples" / "chair.png"
    result = runner.invoke(app, ["sample", str(chair), "-o", str(out), "--model", "demo", "--steps", "1", "--video-frames", "2",
                                 "--video-size", "32", "--mesh"])
    assert result.exit_code == 0, result.output
    mesh = trimesh.load(out / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 100 and mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    # inside the splats' extent: the object's unit box, plus the splats' own size
    assert np.abs(mesh.vertices).max() < 1.0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["outputs"]["mesh"] == "mesh.glb" and meta["timings"]["mesh"] > 0


def test_turntable_size_scales_the_intrinsics_not_the_picture():
    """One small dark Gaussian off-centre lands on its projected pixel at every video size."""
    from ouro.gaussians import Gaussians
    from ouro.geometry.cameras import intrinsics_from_fov
    from ouro.pipelines.sample import turntable

    point = torch.tensor([[0.3, 0.2, 0.0]])
    g = Gaussians(point, torch.full((1, 3), 0.01), torch.tensor([[1.0, 0.0, 0.0, 0.0]]), torch.ones(1), torch.zeros(1, 3))
    centres = {}
    for size in (32, 96, 320):
        frame = turntable(g, 1, size)[0]  # frame 0: the camera at (0, 0, 1.5), looking at the origin
        assert frame.shape == (3, size, size)
        dark = (1 - frame.mean(0)).clamp_min(0)
        ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")  # pixel centres
        centre = torch.stack([(dark * xs).sum(), (dark * ys).sum()]) / dark.sum()
        K = intrinsics_from_fov(49.1, size, size)
        # camera axes: x right = world +x, y down = world -y, depth 1.5
        expected = torch.stack([K[0, 0] * 0.3 / 1.5 + K[0, 2], K[1, 1] * -0.2 / 1.5 + K[1, 2]])
        torch.testing.assert_close(centre, expected.float(), rtol=0, atol=0.05 * size / 32)
        centres[size] = centre / size
    torch.testing.assert_close(centres[32], centres[320], rtol=0, atol=0.01)


def test_several_inputs_get_one_folder_each(tiny_checkpoint, tmp_path):
    a, b = object_image(tmp_path / "a.png"), object_image(tmp_path / "b.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["sample", str(a), str(b), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--steps", "1", "--video-frames", "2",
                                 "--video-size", "32"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    assert (out / "b" / "views" / "007.png").is_file()


def test_feedback_reaches_the_unet(pipe, image):
    captured = []
    hook = pipe.models.generator.cond_encoder[0].register_forward_pre_hook(lambda mod, args: captured.append(args[0].clone()))
    try:
        result = pipe(image, SampleSettings(num_steps=STEPS, seed=1, save_intermediate=True))
    finally:
        hook.remove()
    # step 0 runs the adapters once on zero maps; steps 1.. get the maps rendered after the step before
    assert len(captured) == STEPS and captured[0].abs().max() == 0
    for k in range(1, STEPS):
        fed = captured[k].reshape(8, 3, 64, 64)
        torch.testing.assert_close(fed, result.steps[k - 1].renders, rtol=0, atol=0)
        torch.testing.assert_close(result.feedback_inputs[k][1], result.steps[k - 1].ccm, rtol=0, atol=0)
        assert fed.std() > 0.01  # real renders, not blank
    baseline = pipe(image, SampleSettings(num_steps=STEPS, seed=1, feedback=False))
    assert (baseline.views - result.views).abs().max() > 1e-3


def test_zeroed_adapters_make_feedback_irrelevant(image):
    models = make_tiny_models(seed=3)
    for p in models.generator.cond_encoder.parameters():
        torch.nn.init.zeros_(p)
    pipe = SamplePipeline(models)
    with_fb = pipe(image, SampleSettings(num_steps=STEPS, seed=2))
    without = pipe(image, SampleSettings(num_steps=STEPS, seed=2, feedback=False))
    torch.testing.assert_close(with_fb.views, without.views, rtol=0, atol=0)


def test_guidance_defaults_to_the_model_config(image):
    from dataclasses import replace as dc_replace

    pipe = SamplePipeline(make_tiny_models(seed=4))
    assert (pipe.config.diffusion.guidance_min, pipe.config.diffusion.guidance_max) == (1.0, 3.0)
    default = pipe(image, SampleSettings(num_steps=2, seed=0))
    assert torch.equal(default.views, pipe(image, SampleSettings(num_steps=2, seed=0, guidance=(1.0, 3.0))).views)
    pipe.config = dc_replace(pipe.config, diffusion=dc_replace(pipe.config.diffusion, guidance_max=1.0))
    unguided = pipe(image, SampleSettings(num_steps=2, seed=0))
    assert torch.equal(unguided.views, pipe(image, SampleSettings(num_steps=2, seed=0, guidance=(1.0, 1.0))).views)
    assert not torch.equal(unguided.views, default.views)
    assert pipe.describe(SampleSettings())["settings"]["guidance"] == [1.0, 1.0]
    assert pipe.describe(SampleSettings(guidance=(2.0, 4.0)))["settings"]["guidance"] == [2.0, 4.0]


def test_the_schedule_runs_from_the_config_sigma_max_to_its_sigma_min(image):
    from dataclasses import replace as dc_replace

    pipe = SamplePipeline(make_tiny_models(seed=4))
    pipe.config = dc_replace(pipe.config, diffusion=dc_replace(pipe.config.diffusion, sigma_min=1.5, sigma_max=80.0))
    out = pipe(image, SampleSettings(num_steps=4, seed=0, save_intermediate=True))
    sigmas = [r.sigma for r in out.steps]
    assert len(sigmas) == 4 and sigmas[0] == pytest.approx(80.0) and sigmas[-1] == pytest.approx(1.5)
    assert sigmas == sorted(sigmas, reverse=True)


def test_feedback_window(pipe, image):
    settings = SampleSettings(num_steps=6, feedback_steps=(4, 6))
    assert [settings.uses_feedback(i) for i in range(6)] == [False, False, False, False, True, True]
    result = pipe(image, SampleSettings(num_steps=5, seed=0, feedback_steps=(3, 5), save_intermediate=True))
    assert sorted(result.feedback_inputs) == [3, 4]


def test_same_seed_same_outputs(pipe, image):
    a = pipe(image, SampleSettings(num_steps=2, seed=7))
    b = pipe(image, SampleSettings(num_steps=2, seed=7))
    c = pipe(image, SampleSettings(num_steps=2, seed=8))
    assert torch.equal(a.views, b.views) and torch.equal(a.gaussians.means, b.gaussians.means)
    assert not torch.equal(a.views, c.views)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: d / "missing.png", "missing.png: no such file"),
        (lambda d: (d / "notes.png").write_text("hi") and d / "notes.png", "notes.png: not an image"),
        (lambda d: (d / "cut.png").write_bytes(object_image(d / "full.png").read_bytes()[:200]) and d / "cut.png", "cut.png: the image is damaged or truncated"),
        (lambda d: Image.new("RGBA", (64, 64)).save(d / "clear.png") or d / "clear.png", "clear.png: no object found"),
        (lambda d: Image.new("RGB", (8, 8)).save(d / "small.png") or d / "small.png", "small.png: image is 8x8"),
    ],
)
def test_bad_inputs_exit_2_and_leave_nothing(tiny_checkpoint, tmp_path, make, message):
    src = make(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(app, ["sample", str(src), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--steps", "1"])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists()


@pytest.mark.parametrize("extra,message", [
    (["--steps", "4", "--feedback-steps", "2:5"], "need 0 <= START <= END <= --steps (4)"),
    (["--feedback-steps", "0:5"], "need 0 <= START <= END <= the model's steps; or pass --steps (4)"),
])
def test_feedback_window_past_the_steps_exits_2(tiny_checkpoint, tmp_path, extra, message):
    out = tmp_path / "out"
    result = runner.invoke(app, ["sample", str(object_image(tmp_path / "in.png")), "-o", str(out), "--checkpoint", str(tiny_checkpoint), *extra])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not out.exists()


def test_unwritable_output_exits_2(tiny_checkpoint, tmp_path):
    src = object_image(tmp_path / "a.png")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["sample", str(src), "-o", str(blocker / "out"), "--checkpoint", str(tiny_checkpoint), "--steps", "1"])
    assert result.exit_code == 2 and "file is a file, not a folder; choose another --output" in " ".join(result.output.split())


def test_fast_setting_decodes_only_the_views_g_reads(pipe, image):
    decoded = []
    hook = pipe.models.conditioner.vae.decoder.register_forward_pre_hook(lambda mod, args, kw: decoded.append(args[0].shape[0]), with_kwargs=True)
    try:
        fast = pipe(image, SampleSettings(num_steps=3, seed=4, decode_reconstructor_views_only=True))
        decoded_fast, decoded[:] = list(decoded), []
        full = pipe(image, SampleSettings(num_steps=3, seed=4))
    finally:
        hook.remove()
    assert decoded_fast == [4, 4, 8] and decoded == [8, 8, 8]  # steps 0, 1: the 4 views G reads; last: all 8
    assert fast.views.shape == full.views.shape
    # the 4-frame decodes differ a little from the 8-frame ones and the random tiny model amplifies
    # that over the steps: the views differ, on average by little (0.03 measured); a per-pixel max
    # of this chaotic model is no stable bound (0.49 to 0.50 under float-order changes)
    diff = (fast.views - full.views).abs()
    assert diff.max() > 0 and diff.mean() < 0.1


def test_a_model_without_adapters_samples_as_the_two_stage_baseline(image):
    from dataclasses import replace as dc_replace

    from ouro.io.checkpoint import OuroModels
    from ouro.models import build_models

    models = make_tiny_models(seed=5)
    config = dc_replace(models.config, generator=dc_replace(models.config.generator, feedback=()))
    torch.manual_seed(5)
    mv, rec = build_models(config)
    pipe = SamplePipeline(OuroModels(mv, rec, models.conditioner, config))
    t0 = time.perf_counter()
    out = pipe(image, SampleSettings(num_steps=2, seed=0, save_intermediate=True))
    wall = time.perf_counter() - t0
    assert out.feedback_inputs == {} and "render" not in out.timings
    assert out.gaussians.num_gaussians > 0
    assert out.timings["reconstruct"] > 0 and sum(out.timings.values()) <= wall  # G once, after the last step


def test_guided_sample_under_official_compat_differs_and_each_mode_is_deterministic(image, monkeypatch):
    """`compat="official"` (the public code's numerics, its guided calls' mixed temporal context included)
    and `None` give different samples from the same weights; each is the same twice for a seed."""
    import dataclasses

    import ouro.models.mv_unet as mv_unet

    models = make_tiny_models()
    settings = SampleSettings(num_steps=2, seed=5, guidance=(1.0, 3.0))

    def run(compat):
        out = SamplePipeline(dataclasses.replace(models, compat=compat))(image, settings)
        return torch.cat([out.views.flatten(), out.gaussians.means.flatten()])

    official, default = run("official"), run(None)
    assert torch.equal(official, run("official")) and torch.equal(default, run(None))
    assert (official - default).abs().max() > 0.05
    # part of the difference is the guided calls' context order: without it the official sample changes too
    monkeypatch.setattr(mv_unet, "mixed_time_context", lambda unet: contextlib.nullcontext())
    assert (official - run("official")).abs().max() > 0.05


def test_a_feedback_window_ending_before_the_last_step_excludes_its_end(pipe, image):
    """[start, end) with end < num_steps: step `end` reads no maps (windows ending at the last step cannot tell)."""
    settings = SampleSettings(num_steps=5, seed=0, feedback_steps=(1, 3), save_intermediate=True)
    assert [settings.uses_feedback(i) for i in range(5)] == [False, True, True, False, False]
    assert sorted(pipe(image, settings).feedback_inputs) == [1, 2]


def test_the_anchored_view_enters_each_step_at_that_steps_noise_level(image):
    """With --anchor-input, view 0 of F's input at step i is c_in(sigma_i) (anchor + sigma_i n) for one fixed n and
    the clean input's latent as the anchor: recovered here from the inputs F saw at two steps."""
    models = make_tiny_models()
    pipe = SamplePipeline(models)
    seen, decoded, batches = [], [], []

    def spy(module, args, kwargs):
        seen.append(args[0][-1:, 0, :4].clone())
        batches.append(args[0].shape[0])

    hook = models.generator.register_forward_pre_hook(spy, with_kwargs=True)
    decode = models.conditioner.decode
    models.conditioner.decode = lambda latents, *a, **k: decoded.append(latents.clone()) or decode(latents, *a, **k)
    try:
        pipe(image, SampleSettings(num_steps=3, seed=2, anchor_input=True, guidance=(1.0, 1.0)))
    finally:
        hook.remove()
        del models.conditioner.decode
    from ouro.diffusion import EulerSampler

    cfg = models.config.diffusion
    sigmas = EulerSampler(3, cfg.sigma_min, cfg.sigma_max, sigma_data=cfg.sigma_data).sigmas.double()
    x = [seen[i].double() * (sigmas[i] ** 2 + cfg.sigma_data**2).sqrt() for i in range(3)]  # undo c_in
    noise = (x[1] - x[2]) / (sigmas[1] - sigmas[2])
    anchor = x[2] - sigmas[2] * noise
    torch.testing.assert_close(x[0], anchor + sigmas[0] * noise, rtol=1e-4, atol=1e-3)
    vae = models.conditioner.vae
    cond = torch.nn.functional.interpolate(image[None] * 2 - 1, size=(64, 64), mode="bilinear", align_corners=False)
    expected = vae.encode(cond).latent_dist.mode().double() * vae.config.scaling_factor
    torch.testing.assert_close(anchor, expected, rtol=0, atol=1e-3)
    # n is view 0's own initial draw: the seed's second draw (after the condition's noise), frame 0
    gen = torch.Generator().manual_seed(2)
    torch.randn(1, 3, 64, 64, generator=gen)
    draw = torch.randn(1, 8, 4, 8, 8, generator=gen).double()
    torch.testing.assert_close(noise, draw[:, 0], rtol=0, atol=1e-3)
    # every x0 that is decoded (for G, and the output) holds the anchor as view 0, and only there
    assert batches == [1, 1, 1]  # guidance 1 on every frame is the conditional prediction: no unconditional half
    assert len(decoded) == 3
    for latents in decoded:
        torch.testing.assert_close(latents[:, 0].double(), expected, rtol=0, atol=1e-5)
        assert (latents[:, 1].double() - expected).abs().max() > 0.1


@pytest.mark.slow
def test_mesh_flag_with_a_texture_writes_a_textured_glb(tmp_path):
    """`--mesh --texture 64`: mesh.glb is UV-textured (the same bake as `ouro export --texture`); bad sizes exit 2."""
    import trimesh

    chair = Path(__file__).resolve().parents[1] / "examples" / "chair.png"
    bad = runner.invoke(app, ["sample", str(chair), "-o", str(tmp_path / "bad"), "--model", "demo", "--mesh", "--texture", "100"])
    assert bad.exit_code == 2 and "power of two" in bad.output and not (tmp_path / "bad").exists()
    alone = runner.invoke(app, ["sample", str(chair), "-o", str(tmp_path / "alone"), "--model", "demo", "--texture", "64"])
    assert alone.exit_code == 2 and "add --mesh" in alone.output
    out = tmp_path / "out"
    result = runner.invoke(app, ["sample", str(chair), "-o", str(out), "--model", "demo", "--steps", "1", "--video-frames", "2",
                                 "--video-size", "32", "--mesh", "--texture", "64"])
    assert result.exit_code == 0, result.output
    mesh = trimesh.load(out / "mesh.glb", force="mesh")
    assert isinstance(mesh.visual, trimesh.visual.TextureVisuals) and mesh.visual.uv.shape == (len(mesh.vertices), 2)
    assert mesh.visual.material.baseColorTexture.size == (64, 64)
    assert json.loads((out / "meta.json").read_text())["outputs"]["mesh_texture"] == 64

def _device_log(models, log: list):
    """Forward pre-hooks recording, per model call, the device of every model's first parameter."""
    parts = {"F": models.generator, "G": models.reconstructor, "vae": models.conditioner.vae, "clip": models.conditioner.image_encoder}

    def hook(name):
        def record(module, args):
            log.append((name, {k: next(m.parameters()).device.type for k, m in parts.items()}))
        return record

    return [m.register_forward_pre_hook(hook(name)) for name, m in parts.items()]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
def test_offload_gives_identical_outputs_with_one_model_resident(image, device):
    """`--offload`: each stage's model is moved to the device for its stage and the one before goes back to the CPU.

    On a CPU-only machine the moves are within the CPU: this checks which model the pipeline makes
    resident at each stage and that the outputs are bit-identical; on CUDA it also checks that the
    idle models really are on the CPU while another one runs.
    """
    settings = SampleSettings(num_steps=3, seed=2, decode_chunk=4)
    plain = SamplePipeline(make_tiny_models(), device)
    offloaded = SamplePipeline(make_tiny_models(), device, offload=True)
    log: list = []
    hooks = _device_log(offloaded.models, log)
    try:
        a, b = plain(image, settings), offloaded(image, settings)
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(a.views, b.views) and torch.equal(a.gaussians.means, b.gaussians.means)
    assert torch.equal(a.gaussians.opacities, b.gaussians.opacities)
    # stages in order: condition (CLIP + VAE encoder), then per step F, and VAE decode + G while feedback is needed
    assert list(offloaded.placer.history) == ["SVDConditioner"] + ["MultiViewUNet", "AutoencoderKLTemporalDecoder", "Reconstructor"] * 3
    assert offloaded.placer.offload and isinstance(offloaded.placer.resident, torch.nn.Module)
    here = torch.device(device).type
    for name, devices in log:
        assert devices[name] == here, (name, devices)
        if here != "cpu":  # the idle models wait on the CPU (the VAE and CLIP share the conditioning stage)
            idle = {k for k in devices if k != name and not {k, name} <= {"vae", "clip"}}
            assert all(devices[k] == "cpu" for k in idle), (name, devices)
    offloaded.placer.release()
    assert offloaded.placer.resident is None
    assert all(next(m.parameters()).device.type == "cpu" for m in (offloaded.models.generator, offloaded.models.reconstructor))


def test_decode_chunk_option_reaches_the_vae_and_is_recorded(tiny_checkpoint, tmp_path):
    src = object_image(tmp_path / "duck.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["sample", str(src), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--steps", "2",
                                 "--video-frames", "2", "--decode-chunk", "3", "--offload", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["settings"]["decode_chunk"] == 3 and meta["offload"] is True
    result = runner.invoke(app, ["sample", str(src), "-o", str(tmp_path / "bad"), "--checkpoint", str(tiny_checkpoint), "--decode-chunk", "0"])
    assert result.exit_code == 2 and not (tmp_path / "bad").exists()


def test_decode_chunk_decodes_views_in_chunks(pipe, image):
    sizes = []
    hook = pipe.models.conditioner.vae.decoder.register_forward_pre_hook(lambda mod, args, kw: sizes.append(args[0].shape[0]), with_kwargs=True)
    try:
        pipe(image, SampleSettings(num_steps=2, seed=1, decode_chunk=3))
    finally:
        hook.remove()
    assert sizes == [3, 3, 2] * 2  # two steps, each decoding its 8 views as 3 + 3 + 2


def test_feedback_maps_reach_f_in_the_compute_dtype(image):
    """The rendered maps are kept as F's two inputs in the compute dtype (bfloat16 here), not float32."""
    pipe = SamplePipeline(make_tiny_models(), "cpu", torch.bfloat16)
    seen = []
    generator = pipe.models.generator
    encode = generator.encode_feedback

    def recording(feedback, *args, **kwargs):  # records what the adapters are fed, then encodes it as before
        seen.append([t.dtype for t in feedback or []])
        return encode(feedback, *args, **kwargs)

    generator.encode_feedback = recording
    try:
        out = pipe(image, SampleSettings(num_steps=3, seed=0))
    finally:
        del generator.encode_feedback
    assert seen == [[], [torch.bfloat16] * 2, [torch.bfloat16] * 2]  # step 0: zero maps (encoded once)
    assert out.views.dtype == torch.float32 and bool(out.views.isfinite().all())


def test_image_grid_by_hand_pads_with_white():
    """Views laid out row by row; a grid with more cells than views is padded with white."""
    from ouro.pipelines.sample import image_grid

    views = torch.stack([torch.full((3, 2, 2), v) for v in (0.1, 0.2, 0.3)])
    grid = image_grid(views)  # 2 rows x 2 columns
    assert grid.shape == (3, 4, 4)
    torch.testing.assert_close(grid[:, ::2, ::2][0], torch.tensor([[0.1, 0.2], [0.3, 1.0]]))
    eight = image_grid(torch.arange(8.0).view(8, 1, 1, 1).expand(8, 3, 1, 1))
    assert eight.shape == (3, 2, 4) and eight[0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_turntable_defaults_are_the_public_orbit_video():
    """The public inference's orbit video (docs/OFFICIAL.md 13): radius 1.5, fovy 49.1 deg, elevation 0."""
    from ouro.pipelines.sample import turntable
    from test_ply import random_gaussians

    g = random_gaussians(n=200, seed=2)
    default = turntable(g, 3, 32)
    assert torch.equal(default, turntable(g, 3, 32, radius=1.5, fov_deg=49.1, elevation_deg=0.0))
    assert not torch.equal(default, turntable(g, 3, 32, elevation_deg=1.0))


def test_output_views_and_intermediate_files_are_the_decoded_x0(pipe, image, tmp_path):
    """The output views are the last step's decoded x0 mapped from [-1, 1] to [0, 1] (the record of that step holds
    the same decode); write_outputs saves each step's x0, render and coordinate-map grids as 8-bit PNGs."""
    from ouro.pipelines.sample import write_outputs

    calls = []
    result = pipe(image, SampleSettings(num_steps=2, save_intermediate=True), progress=lambda done, n: calls.append((done, n)))
    assert [r.step for r in result.steps] == [0, 1] and calls == [(1, 2), (2, 2)]
    torch.testing.assert_close(result.views, result.steps[-1].x0_views, rtol=0, atol=0)
    assert result.views.mean() > 0.05 and result.views.std() > 0.01  # not clamped flat
    folder = tmp_path / "obj"
    folder.mkdir()
    write_outputs(folder, result, image, {}, video_frames=2, video_size=16)
    names = sorted(p.name for p in (folder / "intermediate").iterdir())
    assert names == [f"step{s:03d}_{k}.png" for s in (0, 1) for k in ("ccm", "render", "x0")]
    ccm = np.asarray(Image.open(folder / "intermediate" / "step001_ccm.png"))
    rec = result.steps[1].ccm  # [8, 3, 64, 64] -> a 2 x 4 grid, rounded to 8 bits
    by_hand = (rec.clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8).view(2, 4, 3, 64, 64).permute(0, 3, 1, 4, 2).reshape(128, 256, 3)
    np.testing.assert_array_equal(ccm, by_hand.numpy())


def test_load_pipeline_keeps_every_model_on_its_device_unless_asked(tiny_checkpoint):
    """Offloading is opt-in (`--offload`): by default every model stays on the device, and meta.json says so."""
    from ouro.pipelines.sample import load_pipeline

    pipe, description = load_pipeline(checkpoint=tiny_checkpoint)
    assert pipe.placer.offload is False and pipe.describe(SampleSettings())["offload"] is False
    assert description == f"checkpoint {tiny_checkpoint}"
    assert load_pipeline(checkpoint=tiny_checkpoint, offload=True)[0].placer.offload is True
    assert SamplePipeline(make_tiny_models()).placer.offload is False
    assert SamplePipeline.from_checkpoint(tiny_checkpoint).placer.offload is False


def test_offloaded_public_weights_are_read_to_the_cpu(monkeypatch):
    """With --offload the public weights are read to the CPU (the pipeline then moves one model at a time to the
    device), never all at once to the accelerator; without it they are read straight to the device. The files on
    disk are stood in for: ``load_official`` records where it is asked to load, then stops the call."""
    import ouro.io.official as official
    from ouro.pipelines.sample import load_pipeline

    asked = []

    class Stop(Exception):
        pass

    def load_official(found, device, dtype):
        asked.append(str(device))
        raise Stop

    monkeypatch.setattr(official, "find_official_weights", lambda: "public weights")
    monkeypatch.setattr(official, "load_official", load_official)
    for offload in (True, False):
        with pytest.raises(Stop):
            load_pipeline("official", device="cuda:1", offload=offload)
    assert asked == ["cpu", "cuda:1"]


def test_view_cameras_other_than_eight_are_an_even_orbit_at_elevation_0():
    """V != 8 views: V evenly spaced azimuths from +z towards +x, elevation 0, at the given radius and fov."""
    import math

    from ouro.pipelines.sample import view_cameras

    c2w, K = view_cameras(4, 2.0, 40.0)
    centres = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [0.0, 0.0, -2.0], [-2.0, 0.0, 0.0]])
    torch.testing.assert_close(c2w[:, :3, 3], centres, atol=1e-6, rtol=0)
    focal = 0.5 / math.tan(math.radians(20.0))  # normalised: f / image size
    torch.testing.assert_close(K[:, 0, 0], torch.full((4,), focal))


def test_decode_chunk_of_one_frame_is_the_smallest(pipe, image):
    """`decode_chunk` 1 (one frame per VAE decode, as SVD's decode_chunk_size=1) runs; 0 is refused."""
    result = pipe(image, SampleSettings(num_steps=1, decode_chunk=1))
    assert result.views.shape == (8, 3, 64, 64)
    with pytest.raises(ValueError, match="decode_chunk must be >= 1, got 0"):
        pipe(image, SampleSettings(num_steps=1, decode_chunk=0))


def test_write_outputs_fuses_mesh_glb_from_the_splats(tmp_path):
    """write_outputs with mesh settings (fast, small fusion): ``mesh.glb`` inside the object's folder, a sphere
    of the splats' radius, named in the returned files and in meta.json."""
    import math

    import trimesh

    from ouro.gaussians import Gaussians
    from ouro.pipelines.export import MeshSettings
    from ouro.pipelines.sample import SampleOutput, view_cameras, write_outputs

    n, radius = 1500, 0.4
    k = torch.arange(n, dtype=torch.float64) + 0.5
    y = 1 - 2 * k / n
    phi = math.pi * (3 - math.sqrt(5)) * k  # Fibonacci lattice on the sphere
    means = radius * torch.stack([(1 - y * y).sqrt() * phi.cos(), y, (1 - y * y).sqrt() * phi.sin()], -1)
    g = Gaussians(means.float(), torch.full((n, 3), 0.03), torch.tensor([1.0, 0, 0, 0]).expand(n, 4).clone(),
                  torch.full((n,), 0.9), torch.full((n, 3), 0.5))
    c2w, K = view_cameras(8, 1.5, 49.1)
    result = SampleOutput(torch.rand(8, 3, 16, 16), g, c2w, K, {})
    folder = tmp_path / "obj"
    folder.mkdir()
    files = write_outputs(folder, result, torch.rand(3, 16, 16), {}, video_frames=2, video_size=16,
                          mesh=MeshSettings(image_size=48, views_per_ring=6, voxels=48))
    assert files.mesh == folder / "mesh.glb" and files.mesh.is_file()
    mesh = trimesh.load(files.mesh, force="mesh", process=False)
    assert abs(np.median(np.linalg.norm(mesh.vertices, axis=1)) - radius) < 0.05
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["outputs"]["mesh"] == "mesh.glb" and meta["timings"]["mesh"] > 0


def test_write_outputs_default_video_is_a_512_px_mp4_and_its_stages_are_timed(tmp_path):
    """Without a size the turntable is rendered at 512 px (the public renderer's output size, docs/OFFICIAL.md
    9.1) into an MP4; each writing stage's seconds are >= 0 and together no more than the call's wall time."""

    from test_ply import random_gaussians

    from ouro.pipelines.sample import SampleOutput, view_cameras, write_outputs

    c2w, K = view_cameras(8, 1.5, 49.1)
    result = SampleOutput(torch.rand(8, 3, 16, 16), random_gaussians(n=50, seed=1), c2w, K, {})
    folder = tmp_path / "obj"
    folder.mkdir()
    t0 = time.perf_counter()
    files = write_outputs(folder, result, torch.rand(3, 16, 16), {}, video_frames=2)
    wall = time.perf_counter() - t0
    assert files.video == folder / "orbit.mp4"
    assert [f.shape for f in imageio.mimread(files.video)] == [(512, 512, 3)] * 2
    assert set(files.timings) == {"write_images", "video"} and all(t >= 0 for t in files.timings.values())
    assert sum(files.timings.values()) <= wall
    assert json.loads((folder / "meta.json").read_text())["outputs"]["video_size"] == 512


def test_each_stage_is_handed_the_values_of_algorithm_2(image, monkeypatch):
    """Spies on the real tiny models (nothing replaced): what the VAE encoder, F and G receive is what SVD's
    pipeline and the paper's Algorithm 2 hand them, computed here by hand from the seed.

    - condition latent: the VAE encodes the resized input in [-1, 1] plus 0.02 x a standard-normal draw (SVD's
      ``noise_aug_strength``; the first draw of ``Generator().manual_seed(seed)``);
    - F's first input: the next draw ``[1, V, C, h, w]`` times ``init_noise_sigma = sqrt(sigma_max^2 + 1)``,
      scaled by ``c_in = 1 / sqrt(sigma_max^2 + 1)`` (diffusers' EulerDiscreteScheduler, "leading"): the draw
      itself; beside it the condition latent on every frame (zeros in the unconditional half of the guided
      batch, as the zero CLIP embedding); timestep ``0.25 ln(sigma_max)``;
    - G: the decoded x0 views mapped from [-1, 1] to [0, 1] (unclamped), their cameras, ``c_noise = 0.25 ln(sigma)``;
    - timings: each stage's seconds, together no more than the call's wall time.
    """
    import math

    from ouro.pipelines.sample import view_cameras

    models = make_tiny_models()
    pipe = SamplePipeline(models)
    cfg, seed = models.config, 3
    vae, cond = models.conditioner.vae, models.conditioner
    encoded, decoded, f_calls, g_calls = [], [], [], []
    encode, decode = vae.encode, cond.decode
    monkeypatch.setattr(vae, "encode", lambda x, *a, **k: encoded.append(x.clone()) or encode(x, *a, **k))
    monkeypatch.setattr(cond, "decode", lambda *a, **k: decoded.append(decode(*a, **k)) or decoded[-1])
    models.generator.register_forward_pre_hook(lambda mod, args, kwargs: f_calls.append((args, kwargs)), with_kwargs=True)
    models.reconstructor.register_forward_pre_hook(lambda mod, args: g_calls.append(args))

    t0 = time.perf_counter()
    result = pipe(image, SampleSettings(num_steps=2, seed=seed))
    wall = time.perf_counter() - t0

    size, frames, C = cfg.generator.image_size, cfg.camera.num_views, cfg.generator.latent_channels
    h = size // cfg.generator.vae_downsample
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 3, size, size, generator=gen)
    draw = torch.randn(1, frames, C, h, h, generator=gen)
    cond_image = torch.nn.functional.interpolate(image[None] * 2 - 1, size=(size, size), mode="bilinear", align_corners=False)
    assert len(encoded) == 1  # the tiny model does not anchor view 0: one encode, the condition
    torch.testing.assert_close(encoded[0], cond_image + 0.02 * noise)
    cond_latent = encode(cond_image + 0.02 * noise).latent_dist.mode()

    (sample, timestep, clip, _), kwargs = f_calls[0]
    sigma_max = cfg.diffusion.sigma_max
    assert sample.shape == (2, frames, 2 * C, h, h)  # guided (tiny: guidance 1 -> 3): [uncond, cond]
    torch.testing.assert_close(sample[:, :, :C], draw.expand(2, -1, -1, -1, -1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sample[1, :, C:], cond_latent.expand(frames, -1, -1, -1))
    assert (sample[0, :, C:] == 0).all() and (clip[0] == 0).all() and clip[1].abs().sum() > 0
    assert float(timestep) == pytest.approx(0.25 * math.log(sigma_max), rel=1e-6)

    c2w, K = view_cameras(frames, cfg.camera.radius, cfg.camera.fov_deg)
    assert len(g_calls) == len(decoded) == 2  # after each step: the feedback maps, then the output Gaussians
    # two Karras steps: sigma_max, then sigma_min
    for (images, g_c2w, g_K, c_noise), x0, sigma in zip(g_calls, decoded, (sigma_max, cfg.diffusion.sigma_min)):
        torch.testing.assert_close(images, x0 * 0.5 + 0.5, rtol=0, atol=0)
        torch.testing.assert_close(g_c2w[0], c2w)
        torch.testing.assert_close(g_K[0], K)
        assert float(c_noise) == pytest.approx(0.25 * math.log(sigma), rel=1e-6)
    torch.testing.assert_close(result.views, (decoded[-1][0] * 0.5 + 0.5).clamp(0, 1))
    assert all(v >= 0 for v in result.timings.values()) and sum(result.timings.values()) <= wall


@pytest.mark.parametrize("height,width", [(15, 15), (16, 15), (15, 16)])
def test_odd_video_sides_fall_back_to_a_looping_gif(tmp_path, capfd, height, width):
    """H.264 in yuv420p needs even sides (ffmpeg refuses an odd one without raising through imageio, leaving an
    empty .mp4): write_video writes a GIF instead, without asking ffmpeg (nothing on the console), looping
    forever (NETSCAPE loop 0) at 1/30 s a frame (GIF delays are in 1/100 s: 30 ms); no empty .mp4 is left
    behind. Even sides give the MP4."""
    from ouro.pipelines.sample import write_video

    frames = torch.rand(3, 3, height, width, generator=torch.Generator().manual_seed(0))
    out = write_video(tmp_path / "orbit.mp4", frames)
    assert out == tmp_path / "orbit.gif" and not (tmp_path / "orbit.mp4").exists()
    assert "libx264" not in capfd.readouterr().err
    gif = Image.open(out)
    assert gif.size == (width, height) and gif.n_frames == 3 and gif.info["loop"] == 0 and gif.info["duration"] == 30
    even = write_video(tmp_path / "even.mp4", torch.rand(3, 3, 16, 16))
    assert even == tmp_path / "even.mp4" and len(imageio.mimread(even)) == 3


def test_images_are_written_as_8_bit_rounded_and_clamped():
    """[0, 1] floats -> uint8 as round(255 x): 0.5 -> 128 (127.5 rounds up), out-of-range values clamp to 0 and
    255 instead of wrapping around."""
    from ouro.pipelines.sample import _to_uint8

    image = torch.tensor([-0.2, 0.0, 0.5, 0.1, 1.0, 1.3]).view(1, 1, 6).expand(3, 1, 6)
    out = _to_uint8(image)
    assert out.shape == (1, 6, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 0, 128, 26, 255, 255]


def test_view_cameras_of_eight_views_are_the_public_frames_at_elevation_0():
    """8 views: frames 0, 2, 4, ..., 12 and 15 of a 16-frame orbit (docs/OFFICIAL.md 12.2), i.e. azimuths
    22.5 deg x frame from +z towards +x, at elevation 0 and the given radius, each looking at the origin."""
    import math

    from ouro.pipelines.sample import view_cameras

    c2w, _ = view_cameras(8, 1.5, 49.1, dtype=torch.float64)
    az = torch.tensor([0, 2, 4, 6, 8, 10, 12, 15], dtype=torch.float64) * math.radians(22.5)
    centres = 1.5 * torch.stack([az.sin(), torch.zeros(8, dtype=torch.float64), az.cos()], -1)
    torch.testing.assert_close(c2w[:, :3, 3], centres, rtol=0, atol=1e-12)
    torch.testing.assert_close(c2w[:, :3, 2], -centres / 1.5, rtol=0, atol=1e-12)  # OpenCV +z looks at the origin


def test_turntable_frames_are_renders_from_cameras_built_by_hand():
    """Frame k of a T-frame turntable: the camera at azimuth 360 k / T deg (from +z towards +x), elevation 0,
    radius 1.5, OpenCV axes (x right = (cos a, 0, -sin a), y down, z towards the origin), fovy 49.1 deg."""
    import math

    from ouro.gaussians import render
    from ouro.geometry.cameras import intrinsics_from_fov
    from ouro.pipelines.sample import turntable
    from test_ply import random_gaussians

    g = random_gaussians(n=200, seed=4)
    frames = turntable(g, 4, 32)
    a = torch.arange(4, dtype=torch.float64) * math.pi / 2
    zero, one = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    c2w = torch.zeros(4, 4, 4, dtype=torch.float64)
    c2w[:, :3, 0] = torch.stack([a.cos(), zero, -a.sin()], -1)
    c2w[:, :3, 1] = torch.stack([zero, -one, zero], -1)
    c2w[:, :3, 2] = -torch.stack([a.sin(), zero, a.cos()], -1)
    c2w[:, :3, 3] = 1.5 * torch.stack([a.sin(), zero, a.cos()], -1)
    c2w[:, 3, 3] = 1
    K = intrinsics_from_fov(49.1, 32, 32).expand(4, 3, 3)
    by_hand = render(g.to(dtype=torch.float32), c2w.float(), K, 32, 32).rgb.clamp(0, 1)
    torch.testing.assert_close(frames, by_hand, rtol=0, atol=1e-4)


def test_sample_settings_are_immutable_and_default_to_the_public_25_steps():
    """SampleSettings is a shared default argument (``SamplePipeline.__call__``): it must not be mutable. The
    public inference runs 25 Euler steps (docs/OFFICIAL.md 11.2)."""
    import dataclasses

    settings = SampleSettings()
    assert settings.num_steps == 25 and settings.sampler == "euler"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.num_steps = 2


def test_load_pipeline_demo_and_official_without_weights(tmp_path, monkeypatch):
    """`--model demo` loads the embedded model; `--model official` without the public weights anywhere stops with
    what to do (name the files and $OURO_WEIGHTS)."""
    from ouro.pipelines.sample import DEMO_DESCRIPTION, ModelNotFound, load_pipeline
    from test_demo import _isolate

    _isolate(monkeypatch, tmp_path)
    pipe, description = load_pipeline("demo")
    assert description == DEMO_DESCRIPTION and pipe.config.name == "demo"
    with pytest.raises(ModelNotFound, match=r"mv_model_unet\.pth.*\$OURO_WEIGHTS"):
        load_pipeline("official")


def test_turntable_frames_are_clamped_to_0_1_whatever_the_colours():
    """Splats from another tool's PLY may hold colours outside [0, 1] (SH band 0 is unbounded): the video's
    frames are clamped to [0, 1], so an opaque Gaussian of colour -0.5 on white shows as 0 at its centre."""
    from ouro.gaussians import Gaussians
    from ouro.pipelines.sample import turntable

    g = Gaussians(torch.zeros(1, 3), torch.full((1, 3), 0.2), torch.tensor([[1.0, 0, 0, 0]]), torch.ones(1),
                  torch.tensor([[-0.5, 2.0, 0.5]]))
    frames = turntable(g, 2, 16)
    assert frames.min() == 0 and frames.max() == 1
    assert (frames[:, 0, 8, 8] == 0).all() and (frames[:, 1, 8, 8] == 1).all()  # -0.5 and 2.0 composited
    assert 0.45 < frames[:, 2, 8, 8].min() and frames[:, 2, 8, 8].max() < 0.6  # 0.5 x alpha + 1 x (1 - alpha)


def test_expand_inputs_lists_a_folders_images_sorted_and_refuses_an_empty_one(tmp_path):
    """Folders become the images they hold (sorted by name, not recursive, suffixes in any case); files pass
    through; a folder without images is refused, naming it."""
    from ouro.pipelines.sample import expand_inputs

    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for name in ("b.png", "a.JPG", "notes.txt", "nested/c.png"):
        (folder / name).write_bytes(b"")
    single = tmp_path / "x.webp"
    assert expand_inputs([folder, single]) == [folder / "a.JPG", folder / "b.png", single]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no pictures")
    with pytest.raises(FileNotFoundError, match="empty: folder holds no images"):
        expand_inputs([single, empty])
