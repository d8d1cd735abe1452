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
