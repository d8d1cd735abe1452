"""The reconstructor G (modified LGM): official key set, noise-level embedding, preprocessing, I/O."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from ouro.config import PRESETS
from ouro.geometry import OFFICIAL_FOV_DEG, intrinsics_from_fov, official_inference_cameras, plucker_rays
from ouro.models import Reconstructor, ReconstructorOutput, noise_level
from ouro.models.lgm_unet import LGMUNet, ResnetBlock
from conftest import official_listing

OFFICIAL_PARAMS = 424_039_200
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def _official_listing() -> list[tuple[str, tuple[int, ...]]]:
    return official_listing("recon_model.pth")


def _randomise_embeddings(model: Reconstructor, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ResnetBlock):
                for p in m.emb_layers.parameters():
                    p.copy_(0.5 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def tiny() -> Reconstructor:
    torch.manual_seed(0)
    return Reconstructor.from_preset("tiny").eval()


@pytest.fixture(scope="module")
def views():
    """Two objects seen by the 8 official cameras: images [2, 8, 3, 48, 48], c2w [2, 8, 4, 4], K [2, 8, 3, 3]."""
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 8, 3, 48, 48, generator=g)
    c2w = official_inference_cameras().expand(2, 8, 4, 4).clone()
    c2w[1, :, :3, 3] *= 1.2  # a different radius for the second object
    K = intrinsics_from_fov(torch.full((2, 8), OFFICIAL_FOV_DEG))
    return images, c2w, K


# ---------------------------------------------------------------------------------- official shapes
def test_big_state_dict_equals_the_official_listing():
    with torch.device("meta"):
        model = Reconstructor.from_preset("big")
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    official = _official_listing()
    assert len(official) == 438
    assert ours == official  # same names, shapes and order
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS
    assert model.num_gaussians == 65_536
    assert model.to_ouro_config() == PRESETS["paper"].reconstructor


def test_constructor_defaults_are_the_public_big_model():
    """`Reconstructor()`, what a config.json without some fields loads as, is the public recon_model.pth
    architecture (its shipped key and shape listing) with the rest of the paper preset's settings."""
    with torch.device("meta"):
        model = Reconstructor()
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == _official_listing()
    assert model.to_ouro_config() == PRESETS["paper"].reconstructor


def test_big_maps_official_input_shapes_on_meta():
    with torch.device("meta"):
        model = Reconstructor.from_preset("big")
        images, c2w, K = torch.rand(1, 8, 3, 512, 512), torch.rand(1, 8, 4, 4), torch.rand(1, 8, 3, 3)
    seen = {}
    model.unet.register_forward_hook(lambda m, args, out: seen.update(x=args[0].shape, y=out.shape))
    raw = model(images, c2w, K, c_noise=torch.tensor(-1.5537, device="meta")).raw
    assert seen == {"x": (4, 9, 256, 256), "y": (4, 14, 128, 128)}
    assert raw.shape == (1, 65_536, 14)


def test_official_state_dict_loads_strictly():
    official = _official_listing()
    with torch.device("meta"):
        model = Reconstructor.from_preset("big")
        sd = {name: torch.empty(shape) for name, shape in official}
    result = model.load_state_dict(sd, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == dict(official)
    # strictness is real: one missing or mis-shaped tensor is refused
    with torch.device("meta"):
        model = Reconstructor.from_preset("big")
        bad = dict(sd, **{"unet.conv_in.weight": torch.empty(64, 6, 3, 3)})
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(bad, strict=True, assign=True)
    sd.pop("unet.time_embed.0.bias")
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(sd, strict=True, assign=True)


def test_real_state_dict_round_trips_at_tiny_size(views):
    images, c2w, K = views
    torch.manual_seed(1)
    a = Reconstructor.from_preset("tiny").eval()
    _randomise_embeddings(a)
    torch.manual_seed(2)
    b = Reconstructor.from_preset("tiny").eval()
    assert not torch.equal(a.unet.conv_in.weight, b.unet.conv_in.weight)
    b.load_state_dict(a.state_dict(), strict=True)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with torch.no_grad():
        assert torch.equal(a(images, c2w, K, 0.7).raw, b(images, c2w, K, 0.7).raw)


def test_presets_and_invalid_sizes():
    assert Reconstructor.from_preset("tiny").to_ouro_config() == PRESETS["tiny"].reconstructor
    with torch.device("meta"):
        small = Reconstructor.from_preset("small")
    assert small.to_ouro_config() == PRESETS["small"].reconstructor
    with pytest.raises(ValueError, match="splat_size"):
        Reconstructor.from_ouro_config(dataclasses.replace(PRESETS["tiny"].reconstructor, splat_size=32))
    with pytest.raises(ValueError, match="mirror"):
        LGMUNet(down_channels=(32, 64), down_attention=(False, False), up_channels=(32,), up_attention=(False,))
    with pytest.raises(ValueError, match="unknown reconstructor preset"):
        Reconstructor.from_preset("huge")


# ---------------------------------------------------------------------------------- noise level
def test_noise_level():
    assert noise_level(700.0).item() == pytest.approx(1.6378, abs=1e-4)
    assert noise_level(0.002).item() == pytest.approx(-1.5537, abs=1e-4)
    assert noise_level(None).item() == 0.0 and noise_level(0.0).item() == 0.0
    sig = torch.tensor([0.0, 1.0, 4.0])
    torch.testing.assert_close(noise_level(sig), torch.tensor([0.0, 0.0, 0.25 * torch.log(torch.tensor(4.0)).item()]))
    with pytest.raises(ValueError):
        noise_level(-1.0)


def test_time_projection_is_cos_then_sin(tiny):
    t = torch.tensor([0.0, -1.5, 1.6])
    emb = tiny.unet.time_proj(t)
    half = tiny.config.time_embed_dim // 2
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(half) / half)
    torch.testing.assert_close(emb, torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], -1))


def test_zero_init_embedding_ignores_the_noise_level(views):
    images, c2w, K = views
    torch.manual_seed(3)
    model = Reconstructor.from_preset("tiny").eval()
    blocks = [m for m in model.modules() if isinstance(m, ResnetBlock)]
    assert blocks and all(not p.any() for m in blocks for p in m.emb_layers.parameters())
    with torch.no_grad():
        outs = [model(images, c2w, K, c).raw for c in (-1.5, 0.0, 1.6)]
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])
        _randomise_embeddings(model)
        moved = [model(images, c2w, K, c).raw for c in (-1.5, 0.0, 1.6)]
    assert not torch.allclose(moved[0], moved[1], atol=1e-3)
    assert not torch.allclose(moved[1], moved[2], atol=1e-3)
    assert torch.equal(moved[1], model(images, c2w, K, torch.zeros(2)).raw.detach())  # float == [B] tensor
    with torch.no_grad():  # no noise level given: clean images, c_noise = 0 (the public training code's clean pass)
        assert torch.equal(moved[1], model(images, c2w, K).raw)


def test_per_sample_noise_levels_apply_to_all_views_of_their_object(views):
    images, c2w, K = views
    torch.manual_seed(4)
    model = Reconstructor.from_preset("tiny").eval()
    _randomise_embeddings(model)
    with torch.no_grad():
        both = model(images, c2w, K, torch.tensor([-1.0, 1.0])).raw
        first = model(images[:1], c2w[:1], K[:1], -1.0).raw
        second = model(images[1:], c2w[1:], K[1:], torch.tensor(1.0)).raw
    torch.testing.assert_close(both, torch.cat([first, second]), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------- output layout
def test_output_shape_and_view_row_column_order(tiny, views):
    images, c2w, K = views
    seen = {}
    handle = tiny.conv.register_forward_hook(lambda m, args, out: seen.update(grid=out))
    try:
        with torch.no_grad():
            out = tiny(images, c2w, K, 0.0)
    finally:
        handle.remove()
    s, b = tiny.config.splat_size, images.shape[0]
    assert isinstance(out, ReconstructorOutput)
    assert out.raw.shape == (b, 4 * s * s, 14) and seen["grid"].shape == (b * 4, 14, s, s)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        bi, v, r, c = (int(torch.randint(n, (), generator=g)) for n in (b, 4, s, s))
        assert torch.equal(out.raw[bi, v * s * s + r * s + c], seen["grid"][bi * 4 + v, :, r, c])
    gs = out.to_gaussians()
    assert gs.means.shape == (b, 4 * s * s, 3) and gs.opacities.shape == (b, 4 * s * s)
    torch.testing.assert_close(gs.rotations.norm(dim=-1), torch.ones(b, 4 * s * s))
    official = out.to_gaussians(compat="official")  # normalised over the Gaussians instead
    torch.testing.assert_close(official.rotations.norm(dim=-2), torch.ones(b, 4))
    assert tiny(images, c2w, K, return_dict=False)[0].shape == out.raw.shape


# ---------------------------------------------------------------------------------- preprocessing
def test_only_views_0_2_4_6_are_read(tiny, views):
    images, c2w, K = views
    with torch.no_grad():
        base = tiny(images, c2w, K).raw
        odd = images.clone()
        odd[:, [1, 3, 5, 7]] = torch.rand_like(odd[:, [1, 3, 5, 7]])
        c2w_odd = c2w.clone()
        c2w_odd[:, 1, :3, 3] += 0.3
        assert torch.equal(tiny(odd, c2w_odd, K).raw, base)
        even = images.clone()
        even[:, 2] = 1.0 - even[:, 2]
        assert not torch.allclose(tiny(even, c2w, K).raw, base, atol=1e-4)
        moved = c2w.clone()
        moved[:, 2, :3, 3] *= 1.1
        assert not torch.allclose(tiny(images, moved, K).raw, base, atol=1e-4)
        idx = [0, 2, 4, 6]
        assert torch.equal(tiny(images[:, idx], c2w[:, idx], K[:, idx]).raw, base)
    with pytest.raises(ValueError, match="views"):
        tiny(images[:, :5], c2w[:, :5], K[:, :5])


def test_unet_input_is_imagenet_rgb_then_plucker(tiny, views):
    images, c2w, K = views
    seen = {}
    handle = tiny.unet.conv_in.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    try:
        with torch.no_grad():
            tiny(images, c2w, K)
    finally:
        handle.remove()
    s, idx = tiny.config.input_size, [0, 2, 4, 6]
    x = seen["x"].reshape(2, 4, 9, s, s)
    rgb = F.interpolate(((images[:, idx] - MEAN) / STD).flatten(0, 1), size=(s, s), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x[:, :, :3], rgb.reshape(2, 4, 3, s, s), rtol=0, atol=1e-6)
    torch.testing.assert_close(x[:, :, 3:], plucker_rays(c2w[:, idx], K[:, idx], s, s), rtol=0, atol=1e-6)
    # channel order [o x d, d]: unit directions, moments = camera centre x direction
    d = x[:, :, 6:].movedim(2, -1)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(2, 4, s, s))
    centres = c2w[:, idx, None, None, :3, 3].expand_as(d)
    torch.testing.assert_close(x[:, :, 3:6].movedim(2, -1), torch.linalg.cross(centres, d), atol=1e-5, rtol=1e-5)
    # the front view (camera at +z looking at -z) sees direction ~ (0, 0, -1) at its centre
    assert x[:, 0, 8, s // 2, s // 2].max() < -0.99


# ---------------------------------------------------------------------------------- checkpoints
def test_save_and_load_pretrained_round_trip(views, tmp_path):
    images, c2w, K = views
    torch.manual_seed(5)
    model = Reconstructor.from_preset("tiny").eval()
    _randomise_embeddings(model)  # would be lost (zero again) if emb_layers were not saved
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["config.json", "diffusion_pytorch_model.safetensors"], files
    loaded = Reconstructor.from_pretrained(tmp_path).eval()
    assert loaded.to_ouro_config() == model.to_ouro_config() == PRESETS["tiny"].reconstructor
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["down_channels"] == list(model.config.down_channels) and saved["_class_name"] == "Reconstructor"
    with torch.no_grad():
        assert torch.equal(loaded(images, c2w, K, 0.4).raw, model(images, c2w, K, 0.4).raw)


# ---------------------------------------------------------------------------------- positions
def test_ray_positions_sit_on_their_pixel_ray_at_the_predicted_depth(tiny, views):
    """``positions="ray"``: Gaussian (v, r, c) projects to the centre of splat pixel (r, c) of input
    view v, at distance ``|o| + tanh(raw_x)`` from that camera; the other 11 channels are untouched."""
    from ouro.geometry import project_points

    images, c2w, K = views
    ray = Reconstructor(**{**tiny.config, "positions": "ray"}).eval()
    ray.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        direct, out = tiny(images, c2w, K, 0.3).raw, ray(images, c2w, K, 0.3).raw
    torch.testing.assert_close(out[..., 3:], direct[..., 3:])
    s = tiny.config.splat_size
    b = images.shape[0]
    means = out[..., :3].reshape(b, 4, s * s, 3)
    centre = torch.stack(torch.meshgrid((torch.arange(s) + 0.5) / s, (torch.arange(s) + 0.5) / s, indexing="xy"), -1).reshape(-1, 2)
    for v, view in enumerate((0, 2, 4, 6)):
        uv, z = project_points(means[:, v], c2w[:, view : view + 1], K[:, view : view + 1])  # [B, 1, s*s, 2], [B, 1, s*s]
        torch.testing.assert_close(uv[:, 0], centre.expand(b, -1, -1), atol=1e-5, rtol=0)
        dist = (means[:, v] - c2w[:, view, None, :3, 3]).norm(dim=-1)
        want = c2w[:, view, None, :3, 3].norm(dim=-1) + torch.tanh(direct.reshape(b, 4, s * s, 14)[:, v, :, 0])
        torch.testing.assert_close(dist, want, atol=1e-5, rtol=0)
        assert (z > 0).all()
    with pytest.raises(ValueError, match="positions must be one of"):
        Reconstructor(**{**tiny.config, "positions": "sideways"})


def test_g_reads_views_0_2_4_6_of_8_by_default():
    """The public LGM keeps views arange(0, 8, 2) of the 8 generated ones (docs/OFFICIAL.md 9.6): the
    constructor's default, and what a config without the field loads as, not only the presets' value."""
    default = Reconstructor(down_channels=(8, 8), down_attention=(False, False), mid_attention=False,
                            up_channels=(8,), up_attention=(False,), input_size=8, splat_size=4, norm_groups=4)
    assert tuple(default.config.input_views) == (0, 2, 4, 6)
    assert default.select_views(8) == [0, 2, 4, 6]
    assert default.select_views(7) == [0, 2, 4, 6] and default.select_views(4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="got 6 views; expected 4 or at least 7"):
        default.select_views(6)
    config = {k: v for k, v in dict(default.config).items() if k != "input_views" and not k.startswith("_")}
    assert Reconstructor.from_config(config).select_views(8) == [0, 2, 4, 6]


def test_a_reconstructor_reading_other_than_four_views_and_one_noise_level_for_the_batch(tiny, views):
    """G with input_views (1, 5) reads two views: 2 * splat^2 Gaussians per object (the view count comes from the
    views, not from the 4 x 4 pose matrices); a [1] noise level applies to every object of the batch, as a float does."""
    images, c2w, K = views
    torch.manual_seed(0)
    two = Reconstructor(**{**{k: v for k, v in tiny.config.items() if not k.startswith("_")}, "input_views": (1, 5)}).eval()
    with torch.no_grad():
        raw = two(images, c2w, K, c_noise=0.3).raw
        assert raw.shape == (2, 2 * two.config.splat_size**2, 14)
        one = tiny(images, c2w, K, c_noise=torch.tensor([0.3])).raw
        torch.testing.assert_close(one, tiny(images, c2w, K, c_noise=0.3).raw, rtol=0, atol=0)
