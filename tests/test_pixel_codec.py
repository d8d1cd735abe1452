"""The VAE-free pixel codec: exact round trip, save/load, and sampling in pixel space."""

from dataclasses import replace

import pytest
import torch

from ouro.config import get_preset
from ouro.io.checkpoint import OuroModels, load_checkpoint, save_checkpoint
from ouro.models import build_models
from ouro.models.pixel_codec import PixelShuffleVAE
from ouro.models.svd_parts import SVDConditioner
from ouro.pipelines.sample import SamplePipeline, SampleSettings


def test_encode_decode_is_exact_and_rearranges_pixels():
    vae = PixelShuffleVAE(factor=4)
    x = torch.rand(3, 3, 16, 8) * 2 - 1
    z = vae.encode(x).latent_dist.mode()
    assert z.shape == (3, 48, 4, 2) and vae.latent_channels == 48
    # channel c * 16 + i * 4 + j of latent pixel (a, b) is image channel c at (4a + i, 4b + j)
    assert z[1, 2 * 16 + 3 * 4 + 1, 2, 1] == x[1, 2, 4 * 2 + 3, 4 * 1 + 1]
    assert torch.equal(vae.decode(z, num_frames=3).sample, x)
    assert torch.equal(vae.encode(x).latent_dist.sample(torch.Generator()), z)


def pixel_models(seed=0):
    base = get_preset("tiny")
    config = replace(base, name="pixel-tiny", generator=replace(base.generator, latent_channels=48, vae_downsample=4, codec="pixel"))
    torch.manual_seed(seed)
    mv, rec = build_models(config)
    return OuroModels(mv, rec, SVDConditioner.pixel(4, config.generator.cross_attention_dim), config)


def test_pixel_space_checkpoint_round_trips_and_samples(tmp_path):
    models = pixel_models()
    save_checkpoint(tmp_path / "ckpt", models)
    back = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(back.conditioner.vae, PixelShuffleVAE)
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = SamplePipeline(back)(image, SampleSettings(num_steps=2, seed=0))
    assert out.views.shape == (8, 3, 64, 64) and out.gaussians.num_gaussians > 0
    again = SamplePipeline(models)(image, SampleSettings(num_steps=2, seed=0))
    # same weights; the reloaded CLIP differs by float32 reduction order (~1e-7, see test_svd_parts),
    # which two random-weight denoising steps amplify to ~1e-4
    torch.testing.assert_close(out.views, again.views, rtol=0, atol=1e-3)


def test_training_builds_the_pixel_codec_for_a_pixel_preset(tmp_path):
    from ouro.pipelines.train import TrainConfig, build_models_for

    config = pixel_models().config
    generator, _, conditioner, model_cfg, notes = build_models_for(TrainConfig(model=config, data=str(tmp_path), output=str(tmp_path / "run")))
    assert isinstance(conditioner.vae, PixelShuffleVAE) and generator.config.codec == "pixel"
    assert generator.to_ouro_config() == config.generator


def test_anchoring_holds_view_0_to_the_input_at_every_step():
    models = pixel_models()
    pipe = SamplePipeline(models)
    assert models.config.diffusion.anchor_input is False  # off unless the model or the caller asks
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    free = pipe(image, SampleSettings(num_steps=3, seed=0, save_intermediate=True))
    held = pipe(image, SampleSettings(num_steps=3, seed=0, save_intermediate=True, anchor_input=True))
    # the pixel codec is exact, so every step's x0 estimate of view 0 (what G reads) is the input itself
    for record in held.steps:
        torch.testing.assert_close(record.x0_views[0], image, rtol=0, atol=1e-6)
    torch.testing.assert_close(held.views[0], image, rtol=0, atol=1e-6)
    assert (free.views[0] - image).abs().max() > 0.1  # random weights do not reproduce it by themselves
    assert (free.views[1:] - held.views[1:]).abs().max() > 1e-3  # the other views see the anchored view
    # the model config's default is used when the settings leave it open, and meta.json records it
    pipe.config = replace(models.config, diffusion=replace(models.config.diffusion, anchor_input=True))
    by_config = pipe(image, SampleSettings(num_steps=3, seed=0))
    assert torch.equal(by_config.views, held.views)
    assert pipe.describe(SampleSettings())["settings"]["anchor_input"] is True
    assert pipe.describe(SampleSettings(anchor_input=False))["settings"]["anchor_input"] is False
