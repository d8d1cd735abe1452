"""EDM's deterministic Heun sampler (2nd order) on SVD's Karras sigmas, for EDM v-prediction.

Karras et al. (2022), Algorithm 1 with ``S_churn = 0``: with ``d(x, s) = (x - D(x; s)) / s``,

    x'      = x_i + (s_{i+1} - s_i) d(x_i, s_i)                               (Euler predictor)
    x_{i+1} = x_i + (s_{i+1} - s_i) (d(x_i, s_i) + d(x', s_{i+1})) / 2        (trapezoidal corrector)

and the corrector is skipped where ``s_{i+1} = 0`` (the last step lands on ``D(x; sigma_min)``, as
Euler's does). ``S`` steps make ``2 S - 1`` evaluations of F: step ``i < S - 1`` evaluates at
``(x_i, s_i)`` and ``(x', s_{i+1})``, the last step once.

Why not diffusers' ``HeunDiscreteScheduler`` (0.42): it maps each sigma to a *discrete* training
timestep through the DDPM betas (``_sigma_to_t``) where SVD's UNet reads ``c_noise = 0.25 ln sigma``,
it has no ``sigma_min``/``sigma_max`` settings (its Karras range comes from the betas, about
0.03..14.6, not SVD's 0.002..700 or the demo's 1.5..80), and its v-prediction hard-codes
``sigma_data = 1`` (the demo uses 0.5). diffusers has no EDM Heun scheduler. The schedule,
``init_noise_sigma`` and the coefficients here are :class:`ouro.diffusion.sampler.EulerSampler`'s,
so Euler and Heun at the same ``num_steps`` visit the same noise levels.

Unlike :class:`~ouro.diffusion.sampler.EulerSampler` this sampler keeps state between the two
evaluations of a step (``x_i`` and its derivative, as diffusers' Heun does); calls must follow
``evaluations`` in order within a step (a new sample may start at any step's first evaluation).

    >>> sampler = HeunSampler(num_steps=5)          # 9 evaluations of F
    >>> x = torch.randn(1, 8, 4, 8, 8) * sampler.init_noise_sigma
    >>> for k, ev in enumerate(sampler.evaluations):
    ...     v = torch.zeros_like(x)  # unet(sampler.scale_model_input(x, k), ev.timestep, ...)
    ...     x, x0 = sampler.step(v, k, x)
"""

from __future__ import annotations

import torch
from torch import Tensor

from .edm import denoised, precondition
from .sampler import Evaluation, KarrasSampler, StepOutput

__all__ = ["HeunSampler"]


class HeunSampler(KarrasSampler):
    """Deterministic 2nd-order Heun sampler (EDM Algorithm 1, no churn) for EDM v-prediction.

    Args:
        num_steps: steps ``S`` (noise levels before the final 0), defaults to 25; ``2 S - 1`` F calls.
        sigma_min, sigma_max, rho: the Karras schedule, defaults 0.002, 700 and 7 (SVD).
        sigma_data: the model's EDM data scale (1 for SVD, 0.5 for the demo).

    Attributes:
        sigmas: ``[S + 1]`` float32 on the CPU, decreasing, ``sigmas[S] = 0`` (Euler's).
        timesteps: ``[S]`` float32, ``0.25 ln sigmas[:S]``.
        evaluations: the ``2 S - 1`` F calls in order (:class:`~ouro.diffusion.sampler.Evaluation`).
        init_noise_sigma: ``sqrt(sigma_max^2 + 1)``, as SVD's scheduler.
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
        evaluations: list[Evaluation] = []
        for i in range(self.num_steps):
            last = i == self.num_steps - 1
            evaluations.append(Evaluation(i, float(self.sigmas[i]), self.timesteps[i], last))
            if not last:  # the corrector's call, at the next noise level
                evaluations.append(Evaluation(i, float(self.sigmas[i + 1]), 0.25 * self.sigmas[i + 1].log(), True))
        self.evaluations = evaluations
        self._pending: tuple[int, Tensor, Tensor] | None = None  # (k, x_i, d_i) between a step's two calls

    @property
    def num_evaluations(self) -> int:
        """F calls per sample: ``2 S - 1``."""
        return len(self.evaluations)

    def _is_corrector(self, k: int) -> bool:
        """Whether call ``k`` is a step's second (corrector) evaluation."""
        return k > 0 and self.evaluations[k - 1].step == self.evaluations[k].step

    def scale_model_input(
        self,
        x: Tensor,  # [B, ...] sample at evaluations[k].sigma
        k: int,
    ) -> Tensor:  # [B, ...] x / sqrt(sigma^2 + sigma_data^2), in x's dtype (EDM c_in)
        """The UNet input of evaluation ``k``."""
        sigma = self.evaluations[self._check(k)].sigma
        return x * precondition(sigma, self.sigma_data).c_in.to(x.dtype)

    def step(
        self,
        model_output: Tensor,  # [B, ...] v-prediction of evaluation k (after guidance)
        k: int,
        x: Tensor,  # [B, ...] the (unscaled) sample evaluation k read
    ) -> StepOutput:
        """The update after evaluation ``k`` (float32 inside; the sample is cast back to
        ``model_output.dtype``, the x0 estimate ``D`` stays float32).

        A step's first call returns the Euler predictor ``x'`` (what the corrector call reads); the
        corrector returns ``x_{i+1}``; the last step's single call returns ``D(x; sigma_min)``
        (``sigma_next = 0``) as both outputs' values.
        """
        k = self._check(k)
        assert model_output.shape == x.shape, (model_output.shape, x.shape)
        ev = self.evaluations[k]
        sample = x.to(torch.float32)
        pred_x0 = denoised(sample, model_output.to(torch.float32), ev.sigma, self.sigma_data)
        derivative = (sample - pred_x0) / ev.sigma
        if self._is_corrector(k):
            if self._pending is None or self._pending[0] != k - 1:
                raise ValueError(f"evaluation {k} is step {ev.step}'s corrector: call evaluation {k - 1} first")
            _, x_i, d_i = self._pending
            sigma_i, sigma_next = self.sigmas[ev.step], self.sigmas[ev.step + 1]
            prev = x_i + (d_i + derivative) / 2 * (sigma_next - sigma_i)
            self._pending = None
        else:
            sigma_i, sigma_next = self.sigmas[ev.step], self.sigmas[ev.step + 1]
            prev = sample + derivative * (sigma_next - sigma_i)  # the predictor; at sigma_next = 0, x0
            # a copy: a caller may write into x (e.g. an anchored view) before the corrector call
            self._pending = (k, sample.clone(), derivative) if sigma_next > 0 else None
        return StepOutput(prev.to(model_output.dtype), pred_x0)
