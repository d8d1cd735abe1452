"""Presets round-trip through JSON exactly."""

import json

import pytest

from ouro.config import PRESETS, OuroConfig, ReconstructorConfig, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_json(name, tmp_path):
    cfg = get_preset(name)
    assert cfg.name == name
    assert OuroConfig.from_json(cfg.to_json()) == cfg
    path = tmp_path / "config.json"
    cfg.to_json(path)
    back = OuroConfig.from_json(path)
    assert back == cfg
    assert isinstance(back.reconstructor.down_channels, tuple)
    assert json.loads(path.read_text()) == json.loads(cfg.to_json())


def test_paper_preset_matches_the_public_checkpoint_shapes():
    cfg = get_preset("paper")
    assert cfg.generator.block_out_channels == (320, 640, 1280, 1280)
    assert cfg.generator.num_attention_heads == (5, 10, 20, 20)
    assert cfg.reconstructor.down_channels == (64, 128, 256, 512, 1024, 1024)
    assert cfg.reconstructor.up_channels == (1024, 1024, 512, 256, 128)
    assert cfg.reconstructor.splat_size == 128 and cfg.reconstructor.input_views == (0, 2, 4, 6)
    assert cfg.camera.num_views == 8 and cfg.diffusion.num_steps == 25


def test_unknown_fields_and_presets_are_refused():
    with pytest.raises(ValueError, match="unknown field"):
        OuroConfig.from_dict({"name": "x", "colour": 1})
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        get_preset("huge")
    override = OuroConfig.from_dict({"name": "x", "reconstructor": {"splat_size": 32}})
    assert override.reconstructor == ReconstructorConfig(splat_size=32)


def test_demo_preset_is_pixel_space_and_trains_with_its_own_noise_levels():
    """The demo trains in pixel space: the PixelShuffleVAE's channels, and EDM's pixel-space noise levels
    reach the training step (the paper preset keeps SVD's)."""
    from ouro.pipelines.train import TrainConfig

    demo = get_preset("demo")
    assert demo.generator.codec == "pixel"
    assert demo.generator.latent_channels == 3 * demo.generator.vae_downsample**2
    # conv_in must not squeeze the noisy | condition latents (2 x 48 channels of pixel patches): at 32
    # channels F could neither pass the noise through (denoise) nor copy the condition image
    assert demo.generator.block_out_channels[0] >= 2 * demo.generator.latent_channels
    assert demo.reconstructor.positions == "ray"
    assert demo.reconstructor.input_size * 2 ** (len(demo.reconstructor.up_channels) - len(demo.reconstructor.down_channels)) == demo.reconstructor.splat_size
    settings = TrainConfig.create("demo", output="runs/x").step_settings()
    # SVD's noise levels (sampling stops at 1.5, so the low ones are not needed) at EDM's pixel scale
    assert (settings.p_mean, settings.p_std, settings.sigma_data) == (1.0, 1.6, 0.5)
    settings = TrainConfig.create("paper", output="runs/x").step_settings()
    assert (settings.p_mean, settings.p_std, settings.sigma_data) == (1.0, 1.6, 1.0)  # SVD's
    # sampling: the demo's schedule stops at sigma 1.5 (below it this F adds speckle), SVD's at 0.002
    assert (demo.diffusion.sigma_min, get_preset("paper").diffusion.sigma_min) == (1.5, 0.002)
