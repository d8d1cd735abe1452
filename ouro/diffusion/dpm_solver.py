"""DPM-Solver++(2M) on Karras sigmas for SVD's EDM v-prediction: diffusers' EDM scheduler, configured.

DPM-Solver++ (Lu et al. 2022) integrates the probability-flow ODE in ``lambda = -ln sigma`` with the
data prediction ``D``; the 2M variant reuses the previous step's ``D`` for a second-order term:
with ``h = ln(s_i / s_{i+1})``, ``r = ln(s_{i-1} / s_i) / h``,

    x_{i+1} = (s_{i+1} / s_i) x_i + (1 - e^{-h}) ((1 + 1 / (2 r)) D_i - D_{i-1} / (2 r))

first order (``D_{i-1}`` dropped) at the first step and at the last (``s_{i+1} = 0``, which returns
``D(x; sigma_min)`` as Euler's last step does). One evaluation of F per step.

This is diffusers' ``EDMDPMSolverMultistepScheduler`` (0.42), which fits SVD's parametrisation
exactly: it works on the unscaled sample (variance exploding, ``alpha = 1``), preconditions with
EDM's ``c_skip``/``c_out`` for ``prediction_type="v_prediction"`` at any ``sigma_data``, feeds
``c_noise = 0.25 ln sigma`` as the timestep, builds the Karras schedule from ``sigma_min``/
``sigma_max``/``rho`` (computed in float32, so its sigmas may differ from
:func:`ouro.diffusion.sampler.karras_sigmas` in the last float32 bit) and starts from
``sqrt(sigma_max^2 + 1)`` (SVD's "leading" ``init_noise_sigma``). Settings: ``solver_order=2``,
``algorithm_type="dpmsolver++"``, ``solver_type="midpoint"``, ``final_sigmas_type="zero"``.
(The VP ``DPMSolverMultistepScheduler`` does not fit: discrete timesteps and the betas' sigma range.)

The wrapper gives it the interface of :class:`~ouro.diffusion.sampler.EulerSampler`: calls indexed by
the evaluation ``k`` (= the step), the x0 estimate returned with the sample, and a fresh solver
state at ``k = 0``; calls must then follow in order (the multistep term needs the previous ``D``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sampler import Evaluation, KarrasSampler, StepOutput

__all__ = ["DPMSolverSampler", "dpm_solver_scheduler"]


def dpm_solver_scheduler(sigma_min: float, sigma_max: float, rho: float = 7.0, sigma_data: float = 1.0):
    """diffusers' ``EDMDPMSolverMultistepScheduler`` set up as DPM-Solver++(2M) for EDM v-prediction."""
    from diffusers import EDMDPMSolverMultistepScheduler

    return EDMDPMSolverMultistepScheduler(
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        sigma_data=sigma_data,
        sigma_schedule="karras",
        prediction_type="v_prediction",
        rho=rho,
        solver_order=2,
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        lower_order_final=True,
        euler_at_final=False,
        final_sigmas_type="zero",
    )


class DPMSolverSampler(KarrasSampler):
    """DPM-Solver++(2M), deterministic, one F call per step (see the module docstring).

    Args:
        num_steps: steps ``S`` (= F calls), defaults to 25.
        sigma_min, sigma_max, rho: the Karras schedule, defaults 0.002, 700 and 7 (SVD).
        sigma_data: the model's EDM data scale (1 for SVD, 0.5 for the demo).

    Attributes:
        sigmas: ``[S + 1]`` float32 on the CPU, decreasing, ``sigmas[S] = 0`` (the scheduler's).
        timesteps: ``[S]`` float32, ``0.25 ln sigmas[:S]``.
        evaluations: one :class:`~ouro.diffusion.sampler.Evaluation` per step.
        init_noise_sigma: ``sqrt(sigma_max^2 + 1)``.
        scheduler: the diffusers scheduler doing the updates.
    """

    def __init__(
        self,
        num_steps: int = 25,
        sigma_min: float = 0.002,
        sigma_max: float = 700.0,
        rho: float = 7.0,
        sigma_data: float = 1.0,
    ) -> None:
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self._set_arguments(num_steps, sigma_min, sigma_max, rho, sigma_data)
        self.scheduler = dpm_solver_scheduler(sigma_min, sigma_max, rho, self.sigma_data)
        self._reset()
        self.sigmas = self.scheduler.sigmas.clone()
        self.timesteps = self.scheduler.timesteps.clone()
        self.init_noise_sigma = float(self.scheduler.init_noise_sigma)
        self.evaluations = [Evaluation(i, float(self.sigmas[i]), self.timesteps[i], True) for i in range(self.num_steps)]

    def _reset(self) -> None:
        self.scheduler.set_timesteps(self.num_steps)
        self.scheduler.set_begin_index(0)
        self._next = 0

    @property
    def num_evaluations(self) -> int:
        """F calls per sample: ``num_steps``."""
        return self.num_steps

    def step(
        self,
        model_output: Tensor,  # [B, ...] v-prediction at step k (after guidance)
        k: int,
        x: Tensor,  # [B, ...] the (unscaled) sample at sigmas[k]
    ) -> StepOutput:
        """One DPM-Solver++(2M) step from ``sigmas[k]`` to ``sigmas[k + 1]``, in float32; the sample
        is cast back to ``model_output.dtype``, the x0 estimate ``D`` stays float32. ``k = 0``
        starts a new sample; otherwise ``k`` must follow the previous call."""
        k = self._check(k)
        assert model_output.shape == x.shape, (model_output.shape, x.shape)
        if k == 0:
            self._reset()
        elif k != self._next:
            raise ValueError(f"DPM-Solver++(2M) steps must run in order: expected step {self._next} (or 0), got {k}")
        prev = self.scheduler.step(model_output.to(torch.float32), self.scheduler.timesteps[k], x.to(torch.float32)).prev_sample
        pred_x0 = self.scheduler.model_outputs[-1]  # this step's D, as the scheduler converted it
        self._next = k + 1
        return StepOutput(prev.to(model_output.dtype), pred_x0)
