"""EDM v-prediction maths, samplers (SVD's Euler, EDM Heun, DPM-Solver++(2M)) and per-frame guidance; no weights."""

from ouro.diffusion.edm import (
    COND_SIGMA_LOC,
    COND_SIGMA_SCALE,
    INFERENCE_COND_SIGMA,
    P_MEAN,
    P_STD,
    Preconditioning,
    add_noise,
    denoised,
    loss_weight,
    noise_augment,
    precondition,
    sample_cond_sigmas,
    sample_sigmas,
    v_target,
)
from ouro.diffusion.dpm_solver import DPMSolverSampler
from ouro.diffusion.heun import HeunSampler
from ouro.diffusion.sampler import (
    EulerSampler,
    EulerStepOutput,
    Evaluation,
    StepOutput,
    apply_guidance,
    guidance_scales,
    karras_sigmas,
    svd_scheduler_config,
)
from ouro.diffusion.samplers import SAMPLERS, Sampler, make_sampler, num_evaluations, steps_for_evaluations

__all__ = [
    "COND_SIGMA_LOC",
    "COND_SIGMA_SCALE",
    "INFERENCE_COND_SIGMA",
    "P_MEAN",
    "P_STD",
    "SAMPLERS",
    "DPMSolverSampler",
    "EulerSampler",
    "EulerStepOutput",
    "Evaluation",
    "HeunSampler",
    "Preconditioning",
    "Sampler",
    "StepOutput",
    "add_noise",
    "apply_guidance",
    "denoised",
    "guidance_scales",
    "karras_sigmas",
    "loss_weight",
    "make_sampler",
    "num_evaluations",
    "noise_augment",
    "precondition",
    "sample_cond_sigmas",
    "sample_sigmas",
    "steps_for_evaluations",
    "svd_scheduler_config",
    "v_target",
]
