"""EDM maths and the Euler sampler: hand values, identities, and agreement with diffusers' scheduler."""

import math

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from ouro.diffusion import (
    INFERENCE_COND_SIGMA,
    EulerSampler,
    add_noise,
    apply_guidance,
    denoised,
    guidance_scales,
    karras_sigmas,
    loss_weight,
    noise_augment,
    precondition,
    sample_cond_sigmas,
    sample_sigmas,
    svd_scheduler_config,
    v_target,
)

# OFFICIAL.md 11.3, as printed (diffusers 0.25, 25 steps). "0.0078819" there is a slip: the Karras
# formula gives 0.00788250 in float64 (0.007882495 in float32, what diffusers 0.42 stores), so the
# table below carries the corrected value; test_official_sigma_table_slip pins the difference.
OFFICIAL_SIGMAS_25 = (
    "700 545.73 421.57 322.45 244.02 182.55 134.85 98.267 70.541 49.810 34.537 23.468 15.590 10.097 "
    "6.3543 3.8697 2.2691 1.2732 0.67815 0.33938 0.15741 0.066399 0.024803 0.0078825 0.002"
).split()


def _diffusers(num_steps: int) -> EulerDiscreteScheduler:
    scheduler = EulerDiscreteScheduler.from_config(svd_scheduler_config())
    scheduler.set_timesteps(num_steps)
    return scheduler


def _last_digit(text: str) -> float:
    """One unit in the last printed digit ("545.73" -> 0.01, "700" -> 1)."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 10.0**-decimals


# ----------------------------------------------------------------------------- schedule


def test_svd_scheduler_config_builds_the_svd_scheduler():
    config = EulerDiscreteScheduler.from_config(svd_scheduler_config()).config
    assert config.prediction_type == "v_prediction" and config.use_karras_sigmas is True
    assert (config.sigma_min, config.sigma_max) == (0.002, 700.0)
    assert (config.timestep_type, config.timestep_spacing, config.steps_offset) == ("continuous", "leading", 1)
    assert (config.beta_schedule, config.beta_start, config.beta_end) == ("scaled_linear", 0.00085, 0.012)
    assert config.num_train_timesteps == 1000 and config.interpolation_type == "linear"
    assert svd_scheduler_config(sigma_max=80.0)["sigma_max"] == 80.0


@pytest.mark.parametrize("num_steps", [1, 4, 25, 50])
def test_schedule_equals_diffusers(num_steps):
    ref, ours = _diffusers(num_steps), EulerSampler(num_steps)
    assert ours.sigmas.dtype == ours.timesteps.dtype == torch.float32
    assert ours.sigmas.shape == (num_steps + 1,) and ours.timesteps.shape == (num_steps,)
    torch.testing.assert_close(ours.sigmas, ref.sigmas, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ours.timesteps, ref.timesteps, rtol=0, atol=1e-6)
    assert ours.init_noise_sigma == pytest.approx(float(ref.init_noise_sigma), rel=1e-6)
    torch.testing.assert_close(karras_sigmas(num_steps), ours.sigmas, rtol=0, atol=0)


def test_schedule_hand_values():
    sampler = EulerSampler(25)
    assert sampler.sigmas[0] == 700.0 and sampler.sigmas[-1] == 0.0
    assert sampler.sigmas[-2].item() == pytest.approx(0.002, rel=1e-6)
    assert bool((sampler.sigmas[1:] < sampler.sigmas[:-1]).all())
    # "leading" spacing: sqrt(700^2 + 1), not 700 (OFFICIAL.md 11.2)
    assert sampler.init_noise_sigma == pytest.approx(math.sqrt(700.0**2 + 1), rel=1e-7)
    assert sampler.init_noise_sigma > 700.0
    # timesteps = c_noise = 0.25 ln sigma: 1.6378 ... -1.5537 (OFFICIAL.md 11.3)
    assert sampler.timesteps[0].item() == pytest.approx(0.25 * math.log(700.0), abs=1e-6)
    assert round(sampler.timesteps[0].item(), 4) == 1.6378 and round(sampler.timesteps[-1].item(), 4) == -1.5537
    # 4 steps (the tiny preset): the float64 Karras formula by hand
    lo, hi = 0.002 ** (1 / 7), 700 ** (1 / 7)
    expected = [(hi + k / 3 * (lo - hi)) ** 7 for k in range(4)] + [0.0]
    torch.testing.assert_close(EulerSampler(4).sigmas, torch.tensor(expected), rtol=1e-6, atol=0)


def test_sigmas_match_official_table():
    sigmas = EulerSampler(25).sigmas
    assert len(OFFICIAL_SIGMAS_25) == 25
    for got, text in zip(sigmas[:-1].tolist(), OFFICIAL_SIGMAS_25):
        # within one unit of the last digit: the table was rounded twice (0.1574046 is printed 0.15741)
        assert abs(got - float(text)) <= _last_digit(text), (got, text)
    assert sigmas[-1] == 0


def test_official_sigma_table_slip():
    """OFFICIAL.md 11.3 prints sigma_23 = 0.0078819; the schedule's value is 0.0078825 (a 6e-7 slip)."""
    got = EulerSampler(25).sigmas[23].item()
    assert abs(got - 0.0078825) <= 5e-8 and abs(got - 0.0078819) > 5e-7


def test_sampler_config_round_trips():
    sampler = EulerSampler(num_steps=7, sigma_min=0.01, sigma_max=80.0)
    again = EulerSampler.from_config(sampler.config)
    assert again.config == sampler.config == {"num_steps": 7, "sigma_min": 0.01, "sigma_max": 80.0, "rho": 7.0, "sigma_data": 1.0}
    assert torch.equal(again.sigmas, sampler.sigmas) and len(again) == 7
    with pytest.raises(ValueError, match="step index"):
        sampler.step(torch.zeros(1), 7, torch.zeros(1))
    with pytest.raises(ValueError, match="num_steps"):
        karras_sigmas(0)


# ----------------------------------------------------------------------------- Euler steps


def _fake_v(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for the UNet: a smooth function of the scaled input and sigma."""
    c_in = 1 / torch.sqrt(sigma**2 + 1)
    return torch.tanh(0.7 * x * c_in) + 0.1 * torch.sin(3 * torch.log(sigma)) * x * c_in


def test_trajectory_equals_diffusers():
    num_steps = 25
    ref, ours = _diffusers(num_steps), EulerSampler(num_steps)
    noise = torch.randn(2, 8, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    x_ref = noise * ref.init_noise_sigma
    x = noise * ours.init_noise_sigma
    torch.testing.assert_close(x, x_ref, rtol=1e-6, atol=0)
    for i, t in enumerate(ref.timesteps):
        assert ours.timesteps[i].item() == pytest.approx(t.item(), abs=1e-6)
        inp_ref = ref.scale_model_input(x_ref, t)
        inp = ours.scale_model_input(x, i)
        torch.testing.assert_close(inp, inp_ref, rtol=1e-6, atol=1e-6)
        # the network sees the scaled input, as in the pipeline
        out_ref = _fake_v(inp_ref, ref.sigmas[i])
        out = _fake_v(inp, ours.sigmas[i])
        x_ref, x0_ref = ref.step(out_ref, t, x_ref, return_dict=False)
        x_before = x
        x, x0 = ours.step(out, i, x)
        assert x.dtype == x0.dtype == torch.float32
        scale = max(1.0, x_ref.abs().max().item())  # relative where the values are large
        torch.testing.assert_close(x, x_ref, rtol=1e-6, atol=1e-6 * scale)
        torch.testing.assert_close(x0, x0_ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(denoised(x_before, out, ours.sigmas[i]), x0)  # the sampler's x0 is EDM's D
    assert x.abs().max() < 10  # it did denoise from sigma 700 down to 0
    torch.testing.assert_close(x, x0)  # last step: sigma_next = 0, so x_next = x0


def test_trajectory_can_start_and_stop_at_any_index():
    ref, ours = _diffusers(25), EulerSampler(25)
    start, stop = 10, 18
    gen = torch.Generator().manual_seed(1)
    x0, noise = torch.rand(1, 8, 4, 4, 4, generator=gen) * 2 - 1, torch.randn(1, 8, 4, 4, 4, generator=gen)
    x = ours.add_noise(x0, noise, start)
    torch.testing.assert_close(x, x0 + ref.sigmas[start] * noise)
    ref.set_begin_index(start)
    x_ref = x.clone()
    for i in range(start, stop):
        t = ref.timesteps[i]
        x_ref = ref.step(_fake_v(ref.scale_model_input(x_ref, t), ref.sigmas[i]), t, x_ref).prev_sample
        x = ours.step(_fake_v(ours.scale_model_input(x, i), ours.sigmas[i]), i, x).prev_sample
    torch.testing.assert_close(x, x_ref, rtol=1e-6, atol=1e-6)
    # stopping and resuming is the same as running through: no hidden state
    y = ours.add_noise(x0, noise, start)
    for i in range(start, stop):
        y, _ = ours.step(_fake_v(ours.scale_model_input(y, i), ours.sigmas[i]), i, y)
    assert torch.equal(x, y)


def test_step_by_hand_and_dtypes():
    sampler = EulerSampler(4)
    s, s_next = sampler.sigmas[1].item(), sampler.sigmas[2].item()
    x, out = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5, 0.25]])
    x0 = -s / math.sqrt(s * s + 1) * out + x / (s * s + 1)
    prev, pred = sampler.step(out, 1, x)
    torch.testing.assert_close(pred, x0)
    torch.testing.assert_close(prev, x + (x - x0) / s * (s_next - s))
    torch.testing.assert_close(sampler.scale_model_input(x, 1), x / math.sqrt(s * s + 1))
    prev16, pred16 = sampler.step(out.half(), 1, x.half())
    assert prev16.dtype == torch.float16 and pred16.dtype == torch.float32  # as diffusers: sample cast back
    torch.testing.assert_close(prev16.float(), prev, rtol=2e-3, atol=2e-3)


# ----------------------------------------------------------------------------- EDM


def test_preconditioning_hand_values():
    c_skip, c_out, c_in, c_noise = precondition(1.0)
    assert c_skip.item() == pytest.approx(0.5)
    assert c_out.item() == pytest.approx(-1 / math.sqrt(2))
    assert c_in.item() == pytest.approx(1 / math.sqrt(2))
    assert c_noise.item() == 0.0
    pre = precondition(torch.tensor([[2.0, 700.0, 0.002]]))
    assert all(c.shape == (1, 3) and c.dtype == torch.float32 for c in pre)
    torch.testing.assert_close(pre.c_skip[0, 0], torch.tensor(1 / 5))
    torch.testing.assert_close(pre.c_out[0, 0], torch.tensor(-2 / math.sqrt(5)))
    torch.testing.assert_close(pre.c_in[0, 0], torch.tensor(1 / math.sqrt(5)))
    torch.testing.assert_close(pre.c_noise[0], torch.tensor([0.25 * math.log(2), 1.637770, -1.553652]))
    torch.testing.assert_close(pre.c_in**2, pre.c_skip)  # c_in^2 = c_skip
    torch.testing.assert_close(pre.c_skip + pre.c_out**2, torch.ones(1, 3))  # unit-variance target
    assert precondition(torch.tensor(1.0, dtype=torch.float16)).c_skip.dtype == torch.float32
    torch.testing.assert_close(loss_weight(torch.tensor([1.0, 2.0, 0.5])), torch.tensor([2.0, 1.25, 5.0]))
    weight = loss_weight(torch.tensor([2.0, 700.0, 0.002]))
    torch.testing.assert_close(weight * pre.c_out[0] ** 2, torch.ones(3))  # lambda c_out^2 = 1: loss = ||F - v||^2


def test_denoised_recovers_x0_from_the_ideal_v():
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(5, 8, 4, 3, 3, generator=gen, dtype=torch.float64)
    n = torch.randn(5, 8, 4, 3, 3, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.002, 0.3, 1.0, 14.6, 700.0], dtype=torch.float64)
    x_noisy = add_noise(x0, n, sigma)
    torch.testing.assert_close(x_noisy, x0 + sigma[:, None, None, None, None] * n)
    # v-parameterisation of a variance-preserving process (Salimans & Ho): z = alpha x0 + s_vp n with
    # alpha = 1/sqrt(1+s^2), s_vp = s/sqrt(1+s^2) is x_noisy * alpha, and v = alpha n - s_vp x0.
    s = sigma.reshape(-1, 1, 1, 1, 1)
    alpha, s_vp = 1 / torch.sqrt(1 + s**2), s / torch.sqrt(1 + s**2)
    v = alpha * n - s_vp * x0
    torch.testing.assert_close(v_target(x0, n, sigma), v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(denoised(x_noisy, v, sigma), x0, rtol=1e-9, atol=1e-9)
    # per-frame sigmas [B, F] broadcast too
    sigma_bf = torch.full((5, 8), 3.0, dtype=torch.float64)
    torch.testing.assert_close(denoised(add_noise(x0, n, sigma_bf), v_target(x0, n, sigma_bf), sigma_bf), x0)


def test_sigma_data_coefficients_identities_and_the_sampler():
    """EDM at data scale d = 0.5 (the demo's): Karras et al. Table 1 by hand, the identities that make
    the target unit-variance for data of std d, and the sampler's x0 equal to D."""
    d = 0.5
    c_skip, c_out, c_in, c_noise = precondition(1.0, sigma_data=d)
    assert c_skip.item() == pytest.approx(0.2)  # d^2 / (s^2 + d^2) = 0.25 / 1.25
    assert c_out.item() == pytest.approx(-0.5 / math.sqrt(1.25))
    assert c_in.item() == pytest.approx(1 / math.sqrt(1.25))
    assert c_noise.item() == 0.0
    sigma = torch.tensor([0.002, 0.3, 1.0, 14.6, 80.0], dtype=torch.float64)
    pre = precondition(sigma, d)
    torch.testing.assert_close(pre.c_skip * d**2 + pre.c_out**2, torch.full_like(sigma, d**2))  # Var[target] = d^2 ...
    torch.testing.assert_close(loss_weight(sigma, d) * pre.c_out**2, torch.ones_like(sigma))  # ... weighted to 1
    # the noise D keeps when F cannot model it: c_skip sigma, at most d / 2 (0.25 at d = 1 -> 0.0625 at d = 0.5)
    grid = torch.logspace(-3, 2, 2001, dtype=torch.float64)
    worst = (precondition(grid, d).c_skip * grid).max()
    assert worst.item() == pytest.approx(d / 2, rel=1e-3)
    gen = torch.Generator().manual_seed(3)
    x0, n = torch.randn(5, 2, 3, generator=gen, dtype=torch.float64), torch.randn(5, 2, 3, generator=gen, dtype=torch.float64)
    x = add_noise(x0, n, sigma)
    torch.testing.assert_close(denoised(x, v_target(x0, n, sigma, d), sigma, d), x0, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(denoised(x, v_target(x0, n, sigma, d), sigma), x0)  # d matters
    sampler = EulerSampler(6, sigma_max=80.0, sigma_data=d)
    assert EulerSampler.from_config(sampler.config).sigma_data == d
    xs, out = torch.randn(1, 4, generator=gen), torch.randn(1, 4, generator=gen)
    s = sampler.sigmas[2]
    # by hand (the sampler calls ouro.diffusion.edm, so comparing with it would check nothing)
    s = float(s)
    by_hand = xs * d**2 / (s**2 + d**2) - out * s * d / math.sqrt(s**2 + d**2)
    torch.testing.assert_close(sampler.step(out, 2, xs).pred_original_sample, by_hand)
    torch.testing.assert_close(sampler.scale_model_input(xs, 2), xs / math.sqrt(s**2 + d**2))


def test_training_sigma_samples():
    gen = torch.Generator().manual_seed(0)
    sigmas = sample_sigmas(200_000, gen)
    assert sigmas.shape == (200_000,) and sigmas.dtype == torch.float32 and bool((sigmas > 0).all())
    log_s = sigmas.double().log()
    # standard errors: 1.6 / sqrt(2e5) = 0.0036 on the mean, ~0.0025 on the std
    assert abs(log_s.mean().item() - 1.0) < 0.02 and abs(log_s.std().item() - 1.6) < 0.02
    assert torch.equal(sample_sigmas(1000, torch.Generator().manual_seed(5)),
                       sample_sigmas(1000, torch.Generator().manual_seed(5)))
    assert not torch.equal(sample_sigmas(1000, torch.Generator().manual_seed(5)),
                           sample_sigmas(1000, torch.Generator().manual_seed(6)))
    log_c = sample_cond_sigmas(200_000, torch.Generator().manual_seed(0)).double().log()
    assert abs(log_c.mean().item() + 3.0) < 0.01 and abs(log_c.std().item() - 0.5) < 0.01
    # condition-image noise augmentation: image + sigma_c * N(0, I) from the given generator
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    noisy = noise_augment(image, INFERENCE_COND_SIGMA, torch.Generator().manual_seed(3))
    expected = image + 0.02 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(noisy, expected)
    per_sample = noise_augment(image, torch.tensor([0.0, 0.1]), torch.Generator().manual_seed(3))
    assert torch.equal(per_sample[0], image[0]) and not torch.equal(per_sample[1], image[1])


# ----------------------------------------------------------------------------- guidance


def test_guidance_scales_and_apply_guidance():
    g = guidance_scales(8, 1.0, 3.0)
    torch.testing.assert_close(g, torch.tensor([1 + 2 * k / 7 for k in range(8)]))
    assert g[1].item() == pytest.approx(1.2857142857, rel=1e-6) and g[0] == 1.0 and g[-1] == 3.0
    uncond = torch.zeros(2, 8, 4, 2, 2)
    cond = torch.ones(2, 8, 4, 2, 2)
    out = apply_guidance(uncond, cond, g)
    for f in range(8):  # u + g_f (c - u) = g_f
        assert torch.equal(out[:, f], torch.full((2, 4, 2, 2), g[f].item()))
    gen = torch.Generator().manual_seed(4)
    u, c = torch.randn(2, 8, 4, 2, 2, generator=gen), torch.randn(2, 8, 4, 2, 2, generator=gen)
    by_hand = torch.stack([u[:, f] + g[f] * (c[:, f] - u[:, f]) for f in range(8)], dim=1)
    torch.testing.assert_close(apply_guidance(u, c, g), by_hand)
    torch.testing.assert_close(apply_guidance(u, c, g[None].repeat(2, 1)), by_hand)  # [B, F] scales
    torch.testing.assert_close(apply_guidance(u, c, 1.0), c)  # scale 1 = the conditional prediction
    assert apply_guidance(u.half(), c.half(), g).dtype == torch.float16


def test_training_sigmas_are_the_log_normal_of_the_generators_draws():
    """ln sigma = p_mean + p_std z and ln sigma_c = -3 + 0.5 z (paper; OFFICIAL.md 11.6, 14) with z the generator's
    standard-normal draws, value for value; without a generator (global RNG) and on another device they work too."""
    z = torch.randn(6, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(sample_sigmas(6, torch.Generator().manual_seed(4)), (1.0 + 1.6 * z).exp())
    torch.testing.assert_close(sample_cond_sigmas(6, torch.Generator().manual_seed(4)), (-3.0 + 0.5 * z).exp())
    torch.testing.assert_close(sample_sigmas(6, torch.Generator().manual_seed(4), 0.5, 2.0), (0.5 + 2.0 * z).exp())
    free = sample_sigmas(3)
    assert free.shape == (3,) and bool((free > 0).all())
    assert sample_sigmas(3, device="meta").device.type == "meta"  # the requested device, not the generator's


def test_sigma_of_the_samples_full_shape_broadcasts():
    """A per-element sigma (shape = the sample's, the longest prefix) is accepted by add_noise / denoised /
    v_target; one dim more is refused."""
    gen = torch.Generator().manual_seed(1)
    x0, n = torch.randn(2, 3, generator=gen, dtype=torch.float64), torch.randn(2, 3, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([[0.5, 1.0, 2.0], [3.0, 4.0, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(add_noise(x0, n, sigma), x0 + sigma * n)
    torch.testing.assert_close(denoised(add_noise(x0, n, sigma), v_target(x0, n, sigma), sigma), x0)
    with pytest.raises(AssertionError):
        add_noise(x0, n, sigma[None])


def test_sampler_defaults_bounds_and_guidance_by_hand():
    """The public defaults (25 steps; guidance rising 1 -> 3 over 8 frames, SVD's pipeline), the schedule's
    bounds (0 < sigma_min < sigma_max, each side refused at equality), the F-call index range, and
    guidance with [F] and [B, F] scales written out."""
    assert len(EulerSampler()) == 25 and EulerSampler().num_evaluations == 25
    torch.testing.assert_close(guidance_scales(), torch.tensor([1.0, 1 + 2 / 7, 1 + 4 / 7, 1 + 6 / 7, 1 + 8 / 7, 1 + 10 / 7, 1 + 12 / 7, 3.0]))
    for lo, hi in ((0.0, 1.0), (1.0, 1.0), (2.0, 1.0), (-1.0, 1.0)):
        with pytest.raises(ValueError, match="need 0 < sigma_min < sigma_max"):
            karras_sigmas(4, lo, hi)
    assert karras_sigmas(4, 1e-3, 1.0).shape == (5,)
    s = EulerSampler(3)
    x = torch.ones(1, 2)
    assert s.scale_model_input(x, 0).shape == (1, 2) and s.scale_model_input(x, 2).shape == (1, 2)
    for k in (-1, 3):
        with pytest.raises(ValueError, match=r"step index must be in \[0, 3\)"):
            s.scale_model_input(x, k)
    uncond = torch.zeros(2, 3, 1, 1, 1)
    cond = torch.ones(2, 3, 1, 1, 1)
    out = apply_guidance(uncond, cond, torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(out[:, :, 0, 0, 0], torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    per_item = apply_guidance(uncond, cond, torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    torch.testing.assert_close(per_item[:, :, 0, 0, 0], torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    flat = apply_guidance(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([1.0, 2.0, 3.0]))  # [B, F] predictions
    torch.testing.assert_close(flat, torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))


@pytest.mark.parametrize(
    "uncond_shape,cond_shape,scales",
    [
        ((8,), (8,), torch.ones(8)),  # no frame axis: predictions are [B, F, ...]
        ((1, 8, 4, 2, 2), (1, 8, 4, 1, 2), torch.ones(8)),  # broadcastable but not the same shape
        ((1, 8, 4, 2, 2), (1, 8, 4, 2, 2), torch.ones(1, 1, 8)),  # scales [F] or [B, F], not 3-D
        ((1, 8, 4, 2, 2), (1, 8, 4, 2, 2), torch.ones(1)),  # one scale per frame, not one in all
        ((1, 8, 4, 2, 2), (1, 8, 4, 2, 2), torch.ones(1, 4)),  # 4 scales for 8 frames
    ],
)
def test_apply_guidance_refuses_shapes_outside_its_contract(uncond_shape, cond_shape, scales):
    """Shapes that would broadcast silently into another guidance (or fail later) stop at the door."""
    with pytest.raises(AssertionError):
        apply_guidance(torch.zeros(uncond_shape), torch.ones(cond_shape), scales)
