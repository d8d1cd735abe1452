"""One training step (pipelines/train_step.py) on synthetic views: which recipe sends which gradient where.

No renders needed: 8 random views at the public checkpoint's inference cameras, tiny random models.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ouro.geometry import OFFICIAL_FOV_DEG, intrinsics_from_fov, official_inference_cameras
from ouro.pipelines.train import TrainConfig
from ouro.pipelines.train_step import JointModel, StepSettings
from conftest import make_tiny_models


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        images=torch.rand(1, 8, 3, 64, 64, generator=g),
        c2w=official_inference_cameras()[None],
        K_norm=intrinsics_from_fov(OFFICIAL_FOV_DEG).expand(1, 8, 3, 3),
        positions=torch.tensor([3]),
        micro_step=torch.tensor(0),
    )


def _reconstructor_gradient(detach_feedback: bool) -> tuple[float, float]:
    """|grad| of G's parameters from the feedback pass's diffusion loss alone (recon weight 0, pass B taken),
    and of F's adapter for the coordinate map (fed in pass B, so it always learns)."""
    models = make_tiny_models(seed=1)
    settings = StepSettings(feedback_prob=1.0, recon_weight=0.0, lpips_weight=0.0, detach_feedback=detach_feedback)
    model = JointModel(models.generator, models.reconstructor, models.conditioner, settings).train()
    out = model(**_batch())
    assert out.feedback.item() == 1.0 and out.diffusion > 0
    out.loss.backward()
    g_grad = sum(p.grad.abs().sum().item() for p in model.reconstructor.parameters() if p.grad is not None)
    adapter = sum(p.grad.abs().sum().item() for p in model.generator.cond_encoder[1].parameters() if p.grad is not None)
    return g_grad, adapter


def test_public_recipe_sends_the_feedback_pass_diffusion_loss_into_the_reconstructor():
    """The public training code does not detach the rendered maps in the feedback pass, so its diffusion
    loss reaches G through the renderer and the coordinate map; `--detach-feedback` (paper) cuts it."""
    through, adapter_through = _reconstructor_gradient(detach_feedback=False)
    detached, adapter_detached = _reconstructor_gradient(detach_feedback=True)
    assert through > 1e-6
    assert detached == 0.0
    assert adapter_through > 0 and adapter_detached > 0  # F's adapters learn either way


def test_train_config_follows_the_public_recipe_from_the_public_weights():
    public = TrainConfig.create("tiny", data="d", output="o", init_official="weights-folder")  # not a checkpoint: the .pth pair
    assert public.compat == "official" and public.recon_loss == "l1" and public.detach_feedback is False
    step = public.step_settings()
    assert step.recon_loss == "l1" and step.detach_feedback is False and step.lpips_weight == 1.0
    paper = TrainConfig.create("tiny", data="d", output="o")
    assert paper.compat is None and paper.recon_loss == "mse" and paper.detach_feedback is True
    # the paper-text variant is one switch away, and is recorded
    both = TrainConfig.create("tiny", data="d", output="o", init_official="weights-folder", detach_feedback=True, recon_loss="mse")
    assert both.detach_feedback is True and both.recon_loss == "mse"
    assert TrainConfig.from_dict(both.to_dict()) == both
    # configs written before the switch existed detached the maps, and keep doing so on resume
    old = public.to_dict()
    del old["detach_feedback"]
    assert TrainConfig.from_dict(old).detach_feedback is True


@pytest.fixture(scope="module")
def public_layout(tmp_path_factory) -> Path:
    """The public release's layout at tiny size: the two ``.pth`` files and an SVD img2vid folder."""
    from ouro.io.official import MV_MODEL_FILE, RECON_MODEL_FILE, SVD_FOLDER_NAME

    folder = tmp_path_factory.mktemp("public")
    models = make_tiny_models(seed=2)
    torch.save(models.generator.state_dict(), folder / MV_MODEL_FILE)
    torch.save(models.reconstructor.state_dict(), folder / RECON_MODEL_FILE)
    models.conditioner.save_pretrained(folder / SVD_FOLDER_NAME)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("flags,expected", [([], (False, "l1")), (["--detach-feedback", "--recon-loss", "mse"], (True, "mse"))])
def test_ouro_train_from_the_public_weights_records_its_recipe(tmp_path, public_layout, flags, expected):
    """One step of `ouro train --init-official` on the held-out chair's renders; config.json says which recipe ran."""
    import json

    from typer.testing import CliRunner

    from ouro.cli.main import app

    run = tmp_path / "run"
    data = Path(__file__).parent / "data" / "demo-heldout"
    args = ["train", "--preset", "tiny", "--init-official", str(public_layout), "--data", str(data), "-o", str(run),
            "--max-steps", "1", "--batch-size", "1", "--workers", "0", "--sample-every", "0", "--lpips-weight", "0",
            "--mixed-precision", "no", *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["compat"] == "official"
    assert (config["detach_feedback"], config["recon_loss"]) == expected


def test_conditioning_dropout_cases_and_their_probabilities():
    """InstructPix2Pix dropout as the public code draws it (p = 0.1): u < 0.1 drops CLIP only, 0.1 <= u < 0.2
    both, 0.2 <= u < 0.3 the latent only, else nothing; each case has probability p."""
    from ouro.pipelines.train_step import conditioning_dropout

    u = torch.tensor([0.05, 0.15, 0.25, 0.35, 0.0999, 0.1, 0.2, 0.3])
    keep_clip, keep_latent = conditioning_dropout(u, 0.1)
    assert keep_clip.tolist() == [False, False, True, True, False, False, True, True]
    assert keep_latent.tolist() == [True, False, False, True, True, False, False, True]
    grid = (torch.arange(100_000) + 0.5) / 100_000
    clip, latent = conditioning_dropout(grid, 0.1)
    for case, share in (((~clip) & latent, 0.1), ((~clip) & (~latent), 0.1), (clip & (~latent), 0.1), (clip & latent, 0.7)):
        assert case.float().mean().item() == pytest.approx(share, abs=1e-4)


def test_training_step_hands_f_the_public_added_time_ids():
    """F gets [fps id 6, motion bucket 127, sigma_c] per sample in training, as at inference (docs/OFFICIAL.md
    11.6, 14): numbers from the public code, not from ouro's constants."""
    models = make_tiny_models(seed=1)
    model = JointModel(models.generator, models.reconstructor, models.conditioner, StepSettings(lpips_weight=0.0))
    seen = []
    hook = model.generator.register_forward_pre_hook(lambda m, args, kwargs: seen.append(args[3].clone()), with_kwargs=True)
    try:
        with torch.no_grad():
            model(**_batch())
    finally:
        hook.remove()
    assert seen
    for ids in seen:
        assert ids.shape == (1, 3) and ids[0, 0].item() == 6.0 and ids[0, 1].item() == 127.0
        assert 0 < ids[0, 2].item() < 1  # sigma_c ~ LogNormal(-3, 0.5)


def test_step_settings_bounds():
    """Probabilities in [0, 1] (both ends allowed), dropout at most 1/3 (three disjoint cases of probability p),
    non-negative weights; the perceptual term exists only for a positive weight."""
    from ouro.pipelines.train_step import make_perceptual

    for ok in (dict(feedback_prob=0.0), dict(feedback_prob=1.0), dict(cfg_dropout=0.0), dict(cfg_dropout=1 / 3),
               dict(lpips_weight=0.0, recon_weight=0.0), dict(recon_loss="l1")):
        StepSettings(**ok).check()
    for bad in (dict(feedback_prob=-0.01), dict(feedback_prob=1.01), dict(cfg_dropout=-0.01), dict(cfg_dropout=0.3334),
                dict(lpips_weight=-0.1), dict(recon_weight=-0.1), dict(recon_loss="l2"), dict(ablation="both")):
        with pytest.raises(ValueError):
            StepSettings(**bad).check()
    assert make_perceptual(0.0) is None and make_perceptual(-1.0) is None
    assert make_perceptual(0.5) is not None


def test_step_settings_defaults_are_the_papers_and_the_helpers_stay_frozen():
    """Defaults from the paper / the public training code (docs/OFFICIAL.md 14): ln sigma ~ N(1.0, 1.6^2),
    sigma_data 1 (SVD), CFG dropout 0.1, pass B with probability 0.5, MSE + LPIPS (weight 1) reconstruction, maps
    detached in pass B (paper Algorithm 1). Settings are immutable; LPIPS and SVD's parts are frozen in the step;
    `train()` trains F and G."""
    import dataclasses

    s = StepSettings()
    assert (s.ablation, s.p_mean, s.p_std, s.sigma_data, s.cfg_dropout, s.feedback_prob) == ("full", 1.0, 1.6, 1.0, 0.1, 0.5)
    assert (s.recon_loss, s.lpips_weight, s.recon_weight, s.detach_feedback, s.compat, s.seed) == ("mse", 1.0, 1.0, True, None, 0)
    # paper Table 2: only the `separate` row leaves G out of training
    from ouro.pipelines.train_step import ABLATIONS

    assert {a: StepSettings(ablation=a).joint for a in ABLATIONS} == dict(separate=False, joint=True, ccm=True, rgb=True, full=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 1  # type: ignore[misc]
    from ouro.pipelines.train_step import make_perceptual

    models = make_tiny_models(seed=1)
    lpips = make_perceptual(1.0)
    model = JointModel(models.generator, models.reconstructor, models.conditioner, s, perceptual=lpips)
    assert not any(p.requires_grad for p in lpips.parameters()) and not lpips.training
    assert not any(p.requires_grad for p in models.conditioner.parameters())
    model.eval()
    assert model.train() is model and model.generator.training and model.reconstructor.training
    # cameras that do not match the views are refused by the step's own check (its message: the two shapes)
    import re

    batch = _batch()
    bad = batch["c2w"][..., :3, :]
    with pytest.raises(AssertionError, match=re.escape(str((batch["images"].shape, bad.shape)))):
        model(**{**batch, "c2w": bad})


def test_separate_row_freezes_g_and_never_feeds_back():
    """Paper Table 2, row 1: F alone (no feedback adapters), G frozen and unused: no pass B even at probability 1,
    no reconstruction loss. F's adapters must match the row."""
    import dataclasses

    from ouro.config import get_preset
    from ouro.models import build_models

    models = make_tiny_models(seed=1)
    with pytest.raises(ValueError, match="feeds"):
        JointModel(models.generator, models.reconstructor, models.conditioner, StepSettings(ablation="separate"))
    config = get_preset("tiny")
    torch.manual_seed(0)
    generator, _ = build_models(dataclasses.replace(config, generator=dataclasses.replace(config.generator, feedback=())))
    settings = StepSettings(ablation="separate", feedback_prob=1.0, lpips_weight=0.0)
    model = JointModel(generator, models.reconstructor, models.conditioner, settings).train()
    assert not any(p.requires_grad for p in models.reconstructor.parameters()) and not models.reconstructor.training
    assert any(p.requires_grad for p in generator.parameters()) and generator.training
    out = model(**_batch())
    assert out.feedback.item() == 0.0 and out.recon.item() == 0.0 and out.loss.item() == out.diffusion.item() > 0


class _Spy:
    """What a training step hands between its stages: the conditioner's calls and F's and G's inputs and
    outputs, recorded on the way (every call goes through to the real model; nothing is replaced)."""

    def __init__(self, model: JointModel):
        self.calls: dict[str, list] = {"encode": [], "clip_embedding": [], "decode": [], "F": [], "G": []}
        cond = model.conditioner
        for name in ("encode", "clip_embedding", "decode"):
            original = getattr(cond, name)

            def spy(*args, _original=original, _name=name, **kwargs):
                out = _original(*args, **kwargs)
                self.calls[_name].append((args, out))
                return out

            object.__setattr__(cond, name, spy)
        self.hooks = [
            model.generator.register_forward_hook(
                lambda m, args, kwargs, out: self.calls["F"].append((args, kwargs, out.sample.detach(), out.sample.requires_grad)),
                with_kwargs=True),
            model.reconstructor.register_forward_hook(lambda m, args, out: self.calls["G"].append((args, out.raw.detach()))),
        ]


def _edm_by_hand(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD's EDM v-prediction coefficients at sigma_data = 1 (paper supplementary eqs. 3-9; Karras et al. Table 1),
    written out here rather than taken from ouro.diffusion: c_skip, c_out, c_in, c_noise, lambda, shaped [B, 1, 1, 1, 1]."""
    s = sigma.double().view(-1, 1, 1, 1, 1)
    return 1 / (s**2 + 1), -s / (s**2 + 1).sqrt(), 1 / (s**2 + 1).sqrt(), 0.25 * s.log(), (1 + s**2) / s**2


def _render_by_hand(raw: torch.Tensor, batch: dict) -> torch.Tensor:
    """G's raw Gaussians rendered at the batch's 8 cameras (white background), as the feedback renderer does."""
    from ouro.gaussians import Gaussians
    from ouro.models.feedback import render_feedback

    return render_feedback(Gaussians.from_raw(raw.float()), batch["c2w"], batch["K_norm"], 64)


def test_training_step_values_between_stages_follow_the_edm_formulas_by_hand():
    """Pass A of one step, every value checked against the paper's formulas written out here: the targets are the
    VAE latents of the views in [-1, 1]; F reads c_in (latents + sigma n) beside the condition latent (of the noised
    view 0, unscaled), timestep 0.25 ln sigma, the CLIP embedding of that same noised view; x0 = c_skip x + c_out F;
    G reads the decoded x0 at 0.25 ln sigma and the clean views at 0; the losses are lambda-weighted MSE and the L1
    of G's renders plus LPIPS (weight 1, the default), mixed with recon_weight."""
    from ouro.pipelines.train_step import make_perceptual

    models = make_tiny_models(seed=1)
    settings = StepSettings(feedback_prob=0.0, cfg_dropout=0.0, recon_loss="l1", lpips_weight=1.0, recon_weight=0.5)
    lpips = make_perceptual(1.0)
    model = JointModel(models.generator, models.reconstructor, models.conditioner, settings, perceptual=lpips).train()
    spy = _Spy(model)
    batch = _batch(seed=4)
    batch["positions"] = torch.tensor([3, 11])
    batch["images"] = torch.rand(2, 8, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    for key in ("c2w", "K_norm"):
        batch[key] = batch[key].expand(2, -1, -1, -1)
    out = model(**batch)
    images, sigma = batch["images"], out.sigma
    c_skip, c_out, c_in, c_noise, weight = _edm_by_hand(sigma)
    assert out.feedback.item() == 0.0 and len(spy.calls["F"]) == 1 and len(spy.calls["G"]) == 2
    assert (sigma - 1).abs().min() > 0.2  # the draws below tell sigma from 1 / sigma

    (targets_in,), latents = spy.calls["encode"][0]
    torch.testing.assert_close(targets_in, images * 2 - 1, rtol=0, atol=0)
    (cond_in,), cond_latent = spy.calls["encode"][1]
    (clip_in,), clip = spy.calls["clip_embedding"][0]
    torch.testing.assert_close(cond_in, clip_in[:, None], rtol=0, atol=0)  # CLIP and VAE see the same noised view 0

    (model_in, timestep, clip_arg, time_ids), kwargs, f_out, f_grad = spy.calls["F"][0]
    assert f_grad and kwargs["feedback"] is None
    torch.testing.assert_close(kwargs["c2w"], batch["c2w"])
    torch.testing.assert_close(kwargs["K_norm"], batch["K_norm"])
    sigma_c = time_ids[:, 2].double()
    aug = (clip_in.double() - (images[:, 0].double() * 2 - 1)) / sigma_c.view(-1, 1, 1, 1)
    assert aug.mean().abs() < 0.05 and (aug.std() - 1).abs() < 0.05  # view 0 + sigma_c * n, n ~ N(0, 1)
    torch.testing.assert_close(clip_arg, clip, rtol=0, atol=0)
    scaling = models.conditioner.vae.config.scaling_factor
    assert model_in.shape == (2, 8, 8, 8, 8)
    torch.testing.assert_close(model_in[:, :, 4:], (cond_latent[:, 0] / scaling)[:, None].expand(-1, 8, -1, -1, -1))
    torch.testing.assert_close(timestep.double(), c_noise.flatten(), rtol=1e-6, atol=1e-6)
    noisy = model_in[:, :, :4].double() / c_in
    n = (noisy - latents.double()) / sigma.double().view(-1, 1, 1, 1, 1)
    assert n.mean().abs() < 0.1 and (n.std() - 1).abs() < 0.1  # latents + sigma n

    x0 = c_skip * noisy + c_out * f_out.double()
    (decode_in,), decoded = spy.calls["decode"][0]
    torch.testing.assert_close(decode_in.double(), x0, rtol=1e-5, atol=1e-5)
    (g_images, g_c2w, g_K, g_noise), raw_x0 = spy.calls["G"][0]
    torch.testing.assert_close(g_images, decoded * 0.5 + 0.5, rtol=0, atol=0)
    torch.testing.assert_close(g_noise.double(), c_noise.flatten(), rtol=1e-6, atol=1e-6)
    (clean_images, _, _, clean_noise), raw_clean = spy.calls["G"][1]
    torch.testing.assert_close(clean_images, images, rtol=0, atol=0)
    assert torch.count_nonzero(torch.as_tensor(clean_noise)) == 0

    diffusion = (weight * (x0 - latents.double()) ** 2).mean()
    with torch.no_grad():
        rgb_x0, rgb_clean = _render_by_hand(raw_x0, batch).rgb, _render_by_hand(raw_clean, batch).rgb
        recon_x0 = (rgb_x0.double() - images.double()).abs().mean() + lpips(rgb_x0, images).double().mean()
        recon_clean = (rgb_clean.double() - images.double()).abs().mean() + lpips(rgb_clean, images).double().mean()
    got = torch.stack([out.diffusion, out.recon_x0, out.recon_clean, out.recon, out.loss]).double()
    want = torch.stack([diffusion, recon_x0, recon_clean, (recon_x0 + recon_clean) / 2,
                        diffusion + 0.5 * (recon_x0 + recon_clean) / 2])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    out.loss.backward()  # pass A's loss is the one used: F learns from it
    assert sum(p.grad.abs().sum().item() for p in model.generator.parameters() if p.grad is not None) > 0


def test_feedback_pass_reads_g_renders_and_dropout_takes_one_of_three_cases():
    """Pass B (feedback probability 1): F's second call reads the RGB and coordinate maps of G's render of the decoded
    x0, in adapter order; pass A then runs without gradient and the loss is pass B's (MSE recon this time; no
    LPIPS module given, so no LPIPS term whatever its weight). With
    p = 1/3 the three InstructPix2Pix cases cover [0, 1): every sample drops the CLIP embedding, the condition latent
    or both, each to exact zeros."""
    models = make_tiny_models(seed=1)
    settings = StepSettings(feedback_prob=1.0, cfg_dropout=1 / 3, recon_loss="mse", lpips_weight=1.0, recon_weight=2.0)
    model = JointModel(models.generator, models.reconstructor, models.conditioner, settings).train()
    spy = _Spy(model)
    batch = _batch(seed=6)
    B = 3
    batch["positions"] = torch.tensor([0, 1, 3])  # one of each case (as found: the draws are the seed's)
    batch["images"] = torch.rand(B, 8, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    for key in ("c2w", "K_norm"):
        batch[key] = batch[key].expand(B, -1, -1, -1)
    with torch.no_grad():
        out = model(**batch)
    assert out.feedback.item() == 1.0 and len(spy.calls["F"]) == 2
    (model_in, _, clip_arg, _), kwargs_a, _, _ = spy.calls["F"][0]
    (model_in_b, _, clip_arg_b, _), kwargs_b, f_out_b, _ = spy.calls["F"][1]
    assert kwargs_a["feedback"] is None
    torch.testing.assert_close(model_in_b, model_in, rtol=0, atol=0)
    torch.testing.assert_close(clip_arg_b, clip_arg, rtol=0, atol=0)
    maps = _render_by_hand(spy.calls["G"][0][1], batch)
    assert models.generator.config.feedback == ("rgb", "ccm")
    torch.testing.assert_close(kwargs_b["feedback"][0], maps.rgb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kwargs_b["feedback"][1], maps.ccm, rtol=1e-5, atol=1e-5)

    (_, clip), (_, cond_latent) = spy.calls["clip_embedding"][0], spy.calls["encode"][1]
    cases = []
    for b in range(B):
        clip_kept = torch.equal(clip_arg[b], clip[b])
        assert clip_kept or torch.count_nonzero(clip_arg[b]) == 0
        latent = model_in[b, :, 4:]
        latent_kept = torch.allclose(latent, (cond_latent[b, 0] / models.conditioner.vae.config.scaling_factor).expand_as(latent))
        assert latent_kept or torch.count_nonzero(latent) == 0
        cases.append((clip_kept, latent_kept))
    assert set(cases) == {(False, True), (False, False), (True, False)}, cases

    sigma = out.sigma
    c_skip, c_out, c_in, _, weight = _edm_by_hand(sigma)
    latents = spy.calls["encode"][0][1].double()
    x0 = c_skip * model_in[:, :, :4].double() / c_in + c_out * f_out_b.double()
    diffusion = (weight * (x0 - latents) ** 2).mean()
    recon_x0 = ((maps.rgb.double() - batch["images"].double()) ** 2).mean()
    recon_clean = ((_render_by_hand(spy.calls["G"][1][1], batch).rgb.double() - batch["images"].double()) ** 2).mean()
    torch.testing.assert_close(torch.stack([out.diffusion, out.recon, out.loss]).double(),
                               torch.stack([diffusion, (recon_x0 + recon_clean) / 2, diffusion + (recon_x0 + recon_clean)]),
                               rtol=1e-4, atol=1e-6)
    # with gradients on, pass A (whose loss is unused) runs without them
    spy.calls["F"].clear()
    model(**{**batch, "positions": torch.tensor([0])} | {k: batch[k][:1] for k in ("images", "c2w", "K_norm")})
    assert [grad for *_, grad in spy.calls["F"]] == [False, True]
