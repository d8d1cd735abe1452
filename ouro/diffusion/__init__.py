"""EDM v-prediction maths, SVD's Euler sampler and per-frame guidance; no weights (diffusers-style schedulers)."""

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
from ouro.diffusion.sampler import (
    EulerSampler,
    EulerStepOutput,
    apply_guidance,
    guidance_scales,
    karras_sigmas,
    svd_scheduler_config,
)

__all__ = [
    "COND_SIGMA_LOC",
    "COND_SIGMA_SCALE",
    "INFERENCE_COND_SIGMA",
    "P_MEAN",
    "P_STD",
    "EulerSampler",
    "EulerStepOutput",
    "Preconditioning",
    "add_noise",
    "apply_guidance",
    "denoised",
    "guidance_scales",
    "karras_sigmas",
    "loss_weight",
    "noise_augment",
    "precondition",
    "sample_cond_sigmas",
    "sample_sigmas",
    "svd_scheduler_config",
    "v_target",
]
