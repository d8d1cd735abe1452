"""Euler sampling on Karras sigmas, reproducing SVD's diffusers ``EulerDiscreteScheduler``.

SVD's scheduler (docs/OFFICIAL.md 11.1, :func:`svd_scheduler_config`) uses
``use_karras_sigmas=True`` with an explicit ``sigma_min``/``sigma_max``, so its whole schedule is

    sigma_i = (sigma_max^(1/rho) + i / (S - 1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0 .. S-1, then sigma_S = 0                      (rho = 7, computed in float64, stored float32)

and the training betas, ``timestep_spacing``, ``steps_offset`` and ``interpolation_type`` do not
change it. Two things in that config still matter:

* ``timestep_type="continuous"`` with v-prediction makes the model timesteps ``0.25 ln sigma``
  (EDM's ``c_noise``), computed from the float32 sigmas;
* ``timestep_spacing="leading"`` makes ``init_noise_sigma = sqrt(sigma_max^2 + 1)`` (700.0007),
  not ``sigma_max`` as for "linspace"/"trailing" (OFFICIAL.md 11.2).

:class:`EulerSampler` is stateless: every call takes the step index ``i``, so a loop may start or
stop at any index (feedback windows, image-to-image). Its coefficients are :mod:`ouro.diffusion.edm`'s
(one copy of the preconditioning for training and sampling), in float32 as diffusers computes them;
tests check it against diffusers to 1e-6.

    >>> sampler = EulerSampler(num_steps=25)
    >>> x = torch.randn(1, 8, 4, 8, 8) * sampler.init_noise_sigma
    >>> for i in range(len(sampler)):
    ...     v = torch.zeros_like(x)  # unet(sampler.scale_model_input(x, i), sampler.timesteps[i], ...)
    ...     x, x0 = sampler.step(v, i, x)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from .edm import denoised, precondition

__all__ = [
    "svd_scheduler_config",
    "karras_sigmas",
    "Evaluation",
    "KarrasSampler",
    "StepOutput",
    "EulerStepOutput",
    "EulerSampler",
    "guidance_scales",
    "apply_guidance",
]


def svd_scheduler_config(**overrides: Any) -> dict[str, Any]:
    """SVD img2vid's scheduler settings (OFFICIAL.md 11.1), ready for
    ``diffusers.EulerDiscreteScheduler.from_config``; keyword arguments override entries."""
    config: dict[str, Any] = {
        "_class_name": "EulerDiscreteScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "trained_betas": None,
        "prediction_type": "v_prediction",
        "interpolation_type": "linear",
        "use_karras_sigmas": True,
        "sigma_min": 0.002,
        "sigma_max": 700.0,
        "timestep_spacing": "leading",
        "timestep_type": "continuous",
        "steps_offset": 1,
    }
    config.update(overrides)
    return config


def karras_sigmas(
    num_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 700.0,
    rho: float = 7.0,
) -> Tensor:  # [num_steps + 1] float32, decreasing, last entry 0
    """Karras et al. (2022) noise levels, evenly spaced in ``sigma^(1/rho)`` from ``sigma_max`` to
    ``sigma_min``, then a final 0. Computed in float64 and rounded to float32, like diffusers."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


class Evaluation(NamedTuple):
    """One call of the denoiser F in a sampler's schedule (``sampler.evaluations[k]``).

    Every sampler of :mod:`ouro.diffusion` indexes ``scale_model_input`` and ``step`` by the
    evaluation ``k``; for Euler and DPM-Solver++(2M) (one call per step) ``k`` is the step index.
    """

    step: int  #: the sampler step ``i`` the call belongs to (``0 .. num_steps - 1``)
    sigma: float  #: noise level of the sample F reads
    timestep: Tensor  #: ``[]`` float32, ``0.25 ln sigma`` (EDM's c_noise): the UNet's and LGM's ``t``
    last_in_step: bool  #: this call completes step ``i``: its x0 is the step's estimate


class StepOutput(NamedTuple):
    """One sampler update after evaluation ``k``; unpacks as ``prev_sample, pred_original_sample``."""

    prev_sample: Tensor  # [B, ...] the sample evaluation k + 1 reads (after the last: the result), in model_output's dtype
    pred_original_sample: Tensor  # [B, ...] x0 estimate D of evaluation k, float32


#: Euler's name for :class:`StepOutput` (``prev_sample`` at ``sigmas[i + 1]``, x0 at ``sigmas[i]``).
EulerStepOutput = StepOutput


class KarrasSampler:
    """What the samplers share: the Karras schedule's arguments (``config`` round-trips through
    ``from_config``), ``len`` (steps) and the index check of ``step`` / ``scale_model_input``.

    Subclasses call :meth:`_set_arguments` first and define ``num_evaluations`` (F calls per sample).
    """

    num_steps: int
    sigmas: Tensor  # [S + 1]
    sigma_min: float
    sigma_max: float
    rho: float
    sigma_data: float

    def _set_arguments(self, num_steps: int, sigma_min: float, sigma_max: float, rho: float, sigma_data: float) -> None:
        self.num_steps, self.sigma_min, self.sigma_max, self.rho = int(num_steps), sigma_min, sigma_max, rho
        self.sigma_data = float(sigma_data)

    def _set_karras_schedule(self) -> None:
        """``sigmas`` ``[S + 1]`` (Karras, then 0), ``timesteps`` ``0.25 ln sigmas[:S]`` and
        ``init_noise_sigma``, as SVD's ``EulerDiscreteScheduler`` computes them (Euler and Heun)."""
        self.sigmas = karras_sigmas(self.num_steps, self.sigma_min, self.sigma_max, self.rho)
        self.timesteps = 0.25 * self.sigmas[:-1].log()
        # diffusers, timestep_spacing "leading": sqrt(max(sigmas)^2 + 1) in float32
        self.init_noise_sigma = float((self.sigmas.max() ** 2 + 1) ** 0.5)

    @property
    def num_evaluations(self) -> int:
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments; ``type(s).from_config(s.config).config == s.config``."""
        return {
            "num_steps": self.num_steps,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "rho": self.rho,
            "sigma_data": self.sigma_data,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        return cls(**config)

    def __len__(self) -> int:
        return self.num_steps

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config.items())})"

    def scale_model_input(
        self,
        x: Tensor,  # [B, ...] sample at sigmas[k]
        k: int,
    ) -> Tensor:  # [B, ...] x / sqrt(sigmas[k]^2 + sigma_data^2), in x's dtype (EDM c_in)
        """The UNet input of F call ``k`` (Euler, DPM-Solver++: step ``k``; Heun overrides it)."""
        return x * precondition(self.sigmas[self._check(k)], self.sigma_data).c_in.to(x.dtype)

    def _check(self, k: int) -> int:
        """``k`` as an int, if it indexes an F call (for Euler and DPM-Solver++ a step)."""
        if not 0 <= k < self.num_evaluations:
            what = "step" if self.num_evaluations == self.num_steps else "evaluation"
            raise ValueError(f"{what} index must be in [0, {self.num_evaluations}), got {k}")
        return int(k)


class EulerSampler(KarrasSampler):
    """Deterministic Euler sampler (no churn) for EDM v-prediction; owns no weights and no state.

    Args:
        num_steps: denoising steps ``S``, defaults to 25.
        sigma_min, sigma_max: ends of the Karras schedule, defaults 0.002 and 700 (SVD).
        rho: Karras exponent, defaults to 7.
        sigma_data: the data scale of the model's EDM preconditioning (1 for SVD; see
            :mod:`ouro.diffusion.edm`). Only ``scale_model_input`` and ``step`` use it.

    Attributes:
        sigmas: ``[S + 1]`` float32 on the CPU, decreasing, ``sigmas[S] = 0``.
        timesteps: ``[S]`` float32, ``0.25 ln sigmas[:S]`` (what the UNet and LGM get as ``t``).
        init_noise_sigma: ``sqrt(sigma_max^2 + 1)``: initial latents are ``randn * init_noise_sigma``.
    """

    def __init__(
        self,
        num_steps: int = 25,
        sigma_min: float = 0.002,
        sigma_max: float = 700.0,
        rho: float = 7.0,
        sigma_data: float = 1.0,
    ) -> None:
        self._set_arguments(num_steps, sigma_min, sigma_max, rho, sigma_data)
        self._set_karras_schedule()

    @property
    def evaluations(self) -> list[Evaluation]:
        """One F call per step: ``Evaluation(i, sigmas[i], timesteps[i], True)``."""
        return [Evaluation(i, float(self.sigmas[i]), self.timesteps[i], True) for i in range(self.num_steps)]

    @property
    def num_evaluations(self) -> int:
        """F calls per sample: ``num_steps``."""
        return self.num_steps

    def add_noise(
        self,
        x0: Tensor,  # [B, ...] clean sample
        noise: Tensor,  # [B, ...] standard normal
        i: int,
    ) -> Tensor:  # [B, ...] x0 + sigmas[i] * noise, in x0's dtype
        """Noise a clean sample to the level of step ``i``, to start sampling there."""
        return x0 + self.sigmas[self._check(i)] * noise

    def step(
        self,
        model_output: Tensor,  # [B, ...] v-prediction at step i (after guidance)
        i: int,
        x: Tensor,  # [B, ...] the (unscaled) sample at sigmas[i]
    ) -> EulerStepOutput:
        """One Euler step from ``sigmas[i]`` to ``sigmas[i + 1]``.

        ``x0 = c_skip x + c_out out`` (:func:`ouro.diffusion.edm.denoised` at this sampler's
        ``sigma_data``; at 1, ``-s / sqrt(s^2 + 1) * out + x / (s^2 + 1)`` as in diffusers) and
        ``x_next = x + (x - x0) / s * (s_next - s)``,
        in float32 (``x`` is upcast as in diffusers; ``model_output`` is upcast too, where diffusers
        would multiply an fp16 output in fp16). The next sample is cast back to
        ``model_output.dtype``; the x0 estimate stays float32. At the last step ``x_next = x0``.
        """
        i = self._check(i)
        assert model_output.shape == x.shape, (model_output.shape, x.shape)
        sample = x.to(torch.float32)
        out = model_output.to(torch.float32)
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        pred_x0 = denoised(sample, out, sigma, self.sigma_data)
        derivative = (sample - pred_x0) / sigma
        prev = sample + derivative * (sigma_next - sigma)
        return EulerStepOutput(prev.to(model_output.dtype), pred_x0)


def guidance_scales(
    num_frames: int = 8,
    min_scale: float = 1.0,
    max_scale: float = 3.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:  # [F]
    """Per-frame classifier-free guidance scales rising linearly from ``min_scale`` (frame 0, the
    input view) to ``max_scale`` (last frame), as in SVD and OFFICIAL.md 11.4."""
    return torch.linspace(min_scale, max_scale, num_frames, device=device, dtype=dtype)


def apply_guidance(
    uncond: Tensor,  # [B, F, C, H, W] prediction without the image condition
    cond: Tensor,  # [B, F, C, H, W] prediction with it
    scales: Tensor | float,  # [F], [B, F] or a float
) -> Tensor:  # [B, F, C, H, W]
    """Classifier-free guidance ``u + g_f * (c - u)`` with one scale per frame (frames on dim 1).
    ``scales`` is cast to ``uncond``'s dtype and device, as the SVD pipeline does."""
    assert uncond.shape == cond.shape and uncond.ndim >= 2, (uncond.shape, cond.shape)
    g = torch.as_tensor(scales, device=uncond.device, dtype=uncond.dtype)
    if g.ndim:
        assert g.shape[-1] == uncond.shape[1] and g.ndim <= 2, (g.shape, uncond.shape)
        if g.ndim == 1:  # [F] -> [1, F]
            g = g[None]
        g = g.reshape(*g.shape, *([1] * (uncond.ndim - 2)))  # [B|1, F] -> [B|1, F, 1, 1, 1]
    return uncond + g * (cond - uncond)
