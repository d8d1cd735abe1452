"""benchmarks/flops.py: the FLOP counter against hand counts, and the per-object accounting at `tiny`."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "flops.py"


@pytest.fixture(scope="module")
def flops():
    spec = importlib.util.spec_from_file_location("ouro_bench_flops", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_counter_equals_hand_counts_on_meta(flops):
    with torch.device("meta"):
        conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        linear = torch.nn.Linear(64, 32)
        x, y = torch.zeros(2, 3, 16, 16), torch.zeros(10, 64)
        q = torch.zeros(2, 4, 128, 16)
    # 2 FLOPs per multiply-add; biases are not counted
    assert flops.count_flops(conv, x) == 2 * (2 * 16 * 16) * 8 * (3 * 3 * 3)
    assert flops.count_flops(linear, y) == 2 * 10 * 64 * 32
    # attention: q k^T and (softmax) v, 2 * L^2 * d each, per batch and head
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert flops.count_flops(sdpa, q, q, q) == 2 * (2 * 4) * (2 * 128 * 128 * 16)


def test_raster_estimate_follows_its_formula(flops):
    total, info = flops.raster_estimate(num_gaussians=100, size=32, views=2, fx=16.0, sigma_world=0.5, depth=1.5, tile=16)
    r = 3 * 0.5 * 16 / 1.5
    k = 100 * (2 * r / 16 + 1) ** 2 * 256 / 32**2
    assert info["radius_px"] == pytest.approx(r) and info["pairs_per_pixel"] == pytest.approx(k)
    assert total == pytest.approx(2 * (32**2 * k * 30 + 100 * 200 + 32**2 * 25))


@pytest.fixture(scope="module")
def tiny_components(flops):
    return flops.component_flops("tiny")


def test_per_object_accounting_at_tiny(flops, tiny_components):
    c = tiny_components
    assert all(v > 0 for v in c.values()), c
    # a guided call is two single calls (the public code also runs the camera MLPs twice)
    assert c["unet_b2_public"] == 2 * c["unet_b1"]
    assert c["unet_b1"] < c["unet_b2"] < c["unet_b2_public"]
    assert c["vae_decode_4"] * 2 == pytest.approx(c["vae_decode_8"], rel=0.02)
    steps = 4
    totals = {s.name: flops.per_object(c, s, steps=steps, frames=8) for s in flops.SCHEDULES}
    a = totals["a"]
    # (a) by hand: every step UNet(b2) + both adapters (b2) + decode 8 + LGM + render, then a final decode
    per_step = c["unet_b2_public"] + c["adapter_rgb_b2"] + c["adapter_ccm_b2"] + c["vae_decode_8"] + c["lgm"] + c["raster"]
    assert a["total"] == pytest.approx(steps * per_step + c["vae_decode_8"] + c["clip"] + c["vae_encode"])
    # ours: adapters at batch 1 from step 1, zero maps once, no render after the last step, no second final decode
    b = totals["b-full"]
    assert b["adapters"] == pytest.approx((steps - 1) * (c["adapter_rgb_b1"] + c["adapter_ccm_b1"]) + c["adapter_zero"])
    assert b["decode"] == pytest.approx(steps * c["vae_decode_8"])
    assert b["render"] == pytest.approx((steps - 1) * c["raster"])
    assert a["total"] > b["total"] > totals["b-fast"]["total"] > totals["b-fast-10"]["total"]
    assert sum(v for k, v in b.items() if k != "total") == pytest.approx(b["total"])


def test_sampler_settings_are_counted_as_the_pipeline_runs_them(flops, tiny_components):
    c = tiny_components
    adapters = c["adapter_rgb_b1"] + c["adapter_ccm_b1"]
    # Heun, 3 steps: 5 guided UNet calls; G (decode + LGM) once per step; maps after steps 0 and 1
    heun = flops.per_object(c, flops.Schedule("h", "h", sampler="heun", steps=3))
    assert heun["unet"] == pytest.approx(5 * c["unet_b2"])
    assert heun["adapters"] == pytest.approx(2 * adapters + c["adapter_zero"])
    assert (heun["decode"], heun["lgm"], heun["render"]) == pytest.approx((3 * c["vae_decode_8"], 3 * c["lgm"], 2 * c["raster"]))
    # DPM-Solver++(2M) costs what Euler does at the same steps
    assert flops.per_object(c, flops.Schedule("d", "d", sampler="dpm++2m", steps=4))["total"] == pytest.approx(
        flops.per_object(c, flops.Schedule("e", "e", steps=4))["total"])
    # Euler 6, maps refreshed every 2nd step (steps 1, 3, 5): G after steps 0, 2, 4 and 5
    sparse = flops.per_object(c, flops.Schedule("s", "s", steps=6, feedback_every=2))
    assert sparse["unet"] == pytest.approx(6 * c["unet_b2"])
    assert sparse["adapters"] == pytest.approx(3 * adapters + c["adapter_zero"])
    assert (sparse["decode"], sparse["lgm"], sparse["render"]) == pytest.approx((4 * c["vae_decode_8"], 4 * c["lgm"], 3 * c["raster"]))
    # K = 1 is the existing (b-full) count
    assert flops.per_object(c, flops.Schedule("k", "k", feedback_every=1), steps=5) == flops.per_object(c, flops.SCHEDULES[1], steps=5)
    assert {s.name for s in flops.SAMPLING_GRID} >= {"euler-20", "heun-5", "dpm-10", "every-2", "window-8", "fast"}
