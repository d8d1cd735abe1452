"""EDM preconditioning with v-prediction, as SVD (and so Ouroboros3D) uses it. Holds no weights.

With ``x = x0 + sigma * n`` (``n ~ N(0, I)``) the denoiser is

    D(x; sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x; c_noise(sigma))

    c_skip = 1 / (sigma^2 + 1)        c_out   = -sigma / sqrt(sigma^2 + 1)
    c_in   = 1 / sqrt(sigma^2 + 1)    c_noise = 0.25 * ln(sigma)

trained with weight ``lambda(sigma) = (1 + sigma^2) / sigma^2`` on ``||D - x0||^2`` and
``ln sigma ~ N(1.0, 1.6^2)`` (paper supplementary eqs. 3-9; docs/OFFICIAL.md 14).
The network target this implies is ``v = (n - sigma * x0) / sqrt(sigma^2 + 1)``.

These are EDM's coefficients (Karras et al. 2022, Table 1) at data scale ``sigma_data = 1``, SVD's
choice for its latents. Every function takes ``sigma_data`` (default 1, SVD) for data of another
scale; with ``d = sigma_data``:

    c_skip = d^2 / (sigma^2 + d^2)    c_out = -sigma d / sqrt(sigma^2 + d^2)
    c_in   = 1 / sqrt(sigma^2 + d^2)  lambda = (sigma^2 + d^2) / (sigma d)^2

At ``d = 0.5`` (EDM's value for pixels in [-1, 1]) ``c_skip`` passes at most a quarter as much noise
(``c_skip^2 sigma^2 <= d^2 / 4``) into ``D``: what a small network that cannot reproduce the noise
leaves in its estimate.

The condition image is noise-augmented too: ``image + sigma_c * n`` with ``sigma_c = 0.02`` at
inference and ``ln sigma_c ~ N(-3, 0.5^2)`` in training (OFFICIAL.md 11.5, 11.6).

Shapes: a ``sigma`` may be a float, a 0-d tensor or a tensor whose shape is a prefix of the
sample's (``[B]`` or ``[B, F]`` for samples ``[B, F, C, H, W]``); it is right-padded with
singleton dims to broadcast. All coefficients are computed in at least float32.

    >>> pre = precondition(torch.tensor([1.0]))
    >>> [round(float(c), 4) for c in pre]
    [0.5, -0.7071, 0.7071, 0.0]
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "P_MEAN",
    "P_STD",
    "COND_SIGMA_LOC",
    "COND_SIGMA_SCALE",
    "INFERENCE_COND_SIGMA",
    "Preconditioning",
    "precondition",
    "add_noise",
    "denoised",
    "v_target",
    "loss_weight",
    "sample_sigmas",
    "sample_cond_sigmas",
    "noise_augment",
]

P_MEAN = 1.0  #: training ln sigma ~ N(P_MEAN, P_STD^2)
P_STD = 1.6
COND_SIGMA_LOC = -3.0  #: training condition-image noise: ln sigma_c ~ N(COND_SIGMA_LOC, COND_SIGMA_SCALE^2)
COND_SIGMA_SCALE = 0.5
INFERENCE_COND_SIGMA = 0.02  #: condition-image noise at inference (also the UNet's noise_aug added id)


class Preconditioning(NamedTuple):
    """EDM coefficients, each with the shape of the ``sigma`` they came from."""

    c_skip: Tensor  # 1 / (s^2 + 1)
    c_out: Tensor  # -s / sqrt(s^2 + 1)
    c_in: Tensor  # 1 / sqrt(s^2 + 1)
    c_noise: Tensor  # 0.25 ln s  (-inf at s = 0: clean inputs need their own convention)


def _as_sigma(sigma: float | Tensor, like: Tensor | None = None) -> Tensor:
    """``sigma`` as a tensor of at least float32, on ``like``'s device when given."""
    sigma = torch.as_tensor(sigma, device=like.device if like is not None else None)
    if not sigma.is_floating_point() or torch.finfo(sigma.dtype).bits < 32:
        sigma = sigma.float()
    return sigma


def _pad(sigma: Tensor, ndim: int) -> Tensor:
    """``[*P] -> [*P, 1, ..., 1]`` with ``ndim`` dims in all, to broadcast against a sample."""
    assert sigma.ndim <= ndim, (sigma.shape, ndim)
    return sigma.reshape(*sigma.shape, *([1] * (ndim - sigma.ndim)))


def precondition(sigma: float | Tensor, sigma_data: float = 1.0) -> Preconditioning:
    """``(c_skip, c_out, c_in, c_noise)`` of SVD's EDM v-prediction.

    Args:
        sigma: noise level(s), ``>= 0``: a float or a tensor of any shape ``[*S]``.
        sigma_data: the data's scale ``d`` (1 for SVD; see the module docstring).

    Returns:
        :class:`Preconditioning` of four tensors of shape ``[*S]``, dtype at least float32. Use
        ``c_in`` to scale the UNet input and ``c_noise`` as its timestep; broadcast against a sample
        with e.g. ``c.reshape(-1, 1, 1, 1, 1)``, or call :func:`denoised` which does it for you.
    """
    s = _as_sigma(sigma)
    d2 = sigma_data * sigma_data
    s2pd2 = s * s + d2
    return Preconditioning(
        c_skip=d2 / s2pd2,
        c_out=-s * sigma_data / s2pd2.sqrt(),
        c_in=s2pd2.rsqrt(),
        c_noise=0.25 * s.log(),
    )


def add_noise(
    x0: Tensor,  # [B, ...] clean sample
    noise: Tensor,  # [B, ...] standard normal
    sigma: float | Tensor,  # [], [B] or any prefix of x0's shape
) -> Tensor:  # [B, ...]
    """The EDM forward process ``x = x0 + sigma * noise`` (variance-exploding; no scaling of x0)."""
    s = _pad(_as_sigma(sigma, x0), x0.ndim)
    return (x0 + s * noise).to(x0.dtype)


def denoised(
    x_noisy: Tensor,  # [B, ...] the sample at noise level sigma (unscaled; not c_in * x)
    model_output: Tensor,  # [B, ...] the network's v-prediction F
    sigma: float | Tensor,  # [], [B] or any prefix of x_noisy's shape
    sigma_data: float = 1.0,
) -> Tensor:  # [B, ...] x0 estimate D(x; sigma), at least float32
    """The clean-sample estimate ``D = c_skip * x + c_out * F``.

    Computed in at least float32 (the result is not cast back: callers decode or compare it).
    """
    pre = precondition(_as_sigma(sigma, x_noisy), sigma_data)
    c_skip, c_out = _pad(pre.c_skip, x_noisy.ndim), _pad(pre.c_out, x_noisy.ndim)
    dtype = torch.promote_types(c_skip.dtype, x_noisy.dtype)
    return c_skip * x_noisy.to(dtype) + c_out * model_output.to(dtype)


def v_target(
    x0: Tensor,  # [B, ...] clean sample
    noise: Tensor,  # [B, ...] the standard-normal noise of x = x0 + sigma * noise
    sigma: float | Tensor,  # [], [B] or any prefix of x0's shape
    sigma_data: float = 1.0,
) -> Tensor:  # [B, ...]
    """The output ``F`` for which :func:`denoised` returns ``x0`` exactly:
    ``(d noise - sigma x0 / d) / sqrt(sigma^2 + d^2)`` (``d = sigma_data``; at 1,
    ``(noise - sigma x0) / sqrt(sigma^2 + 1)``). Training usually regresses ``D`` on ``x0`` with
    :func:`loss_weight` instead, which is the same loss (``lambda * c_out^2 = 1``)."""
    s = _pad(_as_sigma(sigma, x0), x0.ndim)
    d = sigma_data
    return ((d * noise - s * x0 / d) / (s * s + d * d).sqrt()).to(x0.dtype)


def loss_weight(sigma: float | Tensor, sigma_data: float = 1.0) -> Tensor:  # [*S] -> [*S]
    """EDM loss weight ``lambda(sigma) = (sigma^2 + d^2) / (sigma d)^2`` on ``||D(x; sigma) - x0||^2``
    (``d = sigma_data``; at 1, SVD's ``(1 + sigma^2) / sigma^2``)."""
    s = _as_sigma(sigma)
    d2 = sigma_data * sigma_data
    return (s * s + d2) / (s * s * d2)


def _log_normal(
    n: int, generator: torch.Generator | None, loc: float, scale: float, device, dtype: torch.dtype
) -> Tensor:  # [n]
    if device is None:
        device = generator.device if generator is not None else "cpu"
    return (loc + scale * torch.randn(n, generator=generator, device=device, dtype=dtype)).exp()


def sample_sigmas(
    n: int,
    generator: torch.Generator | None = None,
    p_mean: float = P_MEAN,
    p_std: float = P_STD,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:  # [n]
    """Training noise levels: ``ln sigma ~ N(p_mean, p_std^2)`` (EDM; p_mean 1.0, p_std 1.6 as in
    the paper). Same generator state, same samples. ``device`` defaults to the generator's."""
    return _log_normal(n, generator, p_mean, p_std, device, dtype)


def sample_cond_sigmas(
    n: int,
    generator: torch.Generator | None = None,
    loc: float = COND_SIGMA_LOC,
    scale: float = COND_SIGMA_SCALE,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:  # [n]
    """Training noise levels of the condition image: ``ln sigma_c ~ N(-3, 0.5^2)`` (OFFICIAL.md
    11.5). They also go to the UNet as the ``noise_aug`` added time id; use
    :data:`INFERENCE_COND_SIGMA` (0.02) at inference."""
    return _log_normal(n, generator, loc, scale, device, dtype)


def noise_augment(
    image: Tensor,  # [B, 3, H, W] condition image in [-1, 1]
    sigma: float | Tensor = INFERENCE_COND_SIGMA,  # [] or [B]
    generator: torch.Generator | None = None,
) -> Tensor:  # [B, 3, H, W]
    """``image + sigma_c * n`` with ``n ~ N(0, I)`` drawn from ``generator`` (on ``image``'s device)."""
    noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    return add_noise(image, noise, sigma)
