"""The samplers by name: ``euler`` (the default), ``heun`` and ``dpm++2m``, built from one set of settings.

All three integrate the same probability-flow ODE on the same Karras noise levels (``num_steps``
levels from ``sigma_max`` down to ``sigma_min``, then 0) and share one interface: ``evaluations``
(the F calls in order, :class:`~ouro.diffusion.sampler.Evaluation`), ``scale_model_input(x, k)``,
``step(model_output, k, x) -> (prev_sample, pred_original_sample)``, ``sigmas``,
``init_noise_sigma``, ``num_steps`` and ``num_evaluations``.

=========  ===================================================  ==============  =====================
name       method                                               F calls         code
=========  ===================================================  ==============  =====================
euler      Euler (1st order), SVD's sampler                     ``S``           ours, = diffusers'
                                                                                ``EulerDiscreteScheduler``
heun       EDM Heun (2nd order; Karras et al. 2022, Alg. 1)     ``2 S - 1``     ours (see ouro.diffusion.heun)
dpm++2m    DPM-Solver++(2M) (2nd order, multistep)              ``S``           diffusers'
                                                                                ``EDMDPMSolverMultistepScheduler``
=========  ===================================================  ==============  =====================
"""

from __future__ import annotations

from typing import Union

from .dpm_solver import DPMSolverSampler
from .heun import HeunSampler
from .sampler import EulerSampler

__all__ = ["SAMPLERS", "Sampler", "make_sampler", "num_evaluations", "steps_for_evaluations"]

Sampler = Union[EulerSampler, HeunSampler, DPMSolverSampler]

#: name -> sampler class (``euler`` is the default); the CLI's choices are ouro.pipelines.choices.SAMPLERS
SAMPLERS: dict[str, type] = {"euler": EulerSampler, "heun": HeunSampler, "dpm++2m": DPMSolverSampler}


def _known(name: str) -> str:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return name


def make_sampler(
    name: str,
    num_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 700.0,
    rho: float = 7.0,
    sigma_data: float = 1.0,
) -> Sampler:
    """The sampler ``name`` with ``num_steps`` steps on the Karras schedule ``sigma_max -> sigma_min``."""
    return SAMPLERS[_known(name)](num_steps, sigma_min, sigma_max, rho, sigma_data=sigma_data)


def num_evaluations(name: str, num_steps: int) -> int:
    """F calls of ``num_steps`` steps of sampler ``name`` (Heun: ``2 S - 1``; the others ``S``)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return 2 * num_steps - 1 if _known(name) == "heun" else num_steps


def steps_for_evaluations(name: str, evaluations: int) -> int:
    """The most steps of sampler ``name`` whose F calls do not exceed ``evaluations`` (>= 1)."""
    if evaluations < 1:
        raise ValueError(f"evaluations must be >= 1, got {evaluations}")
    return (evaluations + 1) // 2 if _known(name) == "heun" else evaluations
