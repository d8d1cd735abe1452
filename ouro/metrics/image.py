"""Per-image PSNR and SSIM, batched over any leading dims.

Images are float tensors ``[..., C, H, W]`` (``C = 3`` in ouro) with values in ``[0, data_range]``
(``[0, 1]`` by default). Every function returns one value per image, shape ``[...]``; averaging
over views and objects is left to the caller.

Conventions (what the numbers mean, so that they compare with published tables):

- **PSNR** is ``10 log10(data_range^2 / MSE)`` with the MSE over all channels and pixels of one
  image. Identical images give ``+inf``; pass ``max_db`` to cap it (a finite value is needed for
  means). torchmetrics' ``PeakSignalNoiseRatio(data_range=1.0)`` with its default ``dim=None``
  pools the MSE over the whole batch before the log; that is :func:`psnr_from_mse` applied to
  ``mse(pred, target).mean()``, not the mean of the per-image values.
- **SSIM** is Wang et al. (2004) with an 11-tap Gaussian window (sigma 1.5), ``K1 = 0.01``,
  ``K2 = 0.03``, variances with the ``1/N`` (population) normalisation and clamped at 0, computed
  per channel and averaged over channels and pixels. The border handling follows torchmetrics'
  ``StructuralSimilarityIndexMeasure``, whose behaviour changed in 1.4.2 (PR #2721):

  * ``border="reflect"`` (default) = torchmetrics >= 1.4.2: the image is reflect-padded by the
    window radius (``torch.nn.functional.pad(mode="reflect")``, edge pixel not repeated) and the
    SSIM map is averaged over all ``H x W`` pixels.
  * ``border="valid"`` = torchmetrics <= 1.4.1, scikit-image's ``structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` and Wang et al.'s MATLAB
    code: only the ``(H - 10) x (W - 10)`` positions whose window lies inside the image count.

  The two differ by 1e-5 to 1e-3 (more on smooth images), well above rounding, so say which.
  torchmetrics' default ``data_range=None`` infers the range from the data; ``data_range=None``
  here does the same (``max(range(pred), range(target))`` over the whole input, as one
  torchmetrics ``update`` call). The public Ouroboros3D evaluation used that default; ouro's
  evaluation uses the fixed range 1.

Both are computed by torchmetrics' functional metrics (``peak_signal_noise_ratio`` with
``dim=(1, 2, 3)``, ``structural_similarity_index_measure`` with ``reduction="none"``); this module
only fixes the per-image reduction, the cap and the ``"valid"`` border, which torchmetrics >= 1.4.2
no longer offers: it is the mean of torchmetrics' full SSIM map with the window radius cropped off
each side (the map at those positions only sees pixels inside the image, so it is exactly the
unpadded computation). Images are handed to torchmetrics in float64 and the values returned in the
input's float dtype (float32 for half): torchmetrics convolves with the full 11 x 11 window, whose
float32 rounding would put SSIM of identical images with flat regions (white backgrounds) near
``1 - 2e-6`` instead of 1; in float64 every value is the exact one rounded once.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["mse", "psnr", "psnr_from_mse", "ssim"]


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.ndim < 3:
        raise ValueError(f"expected images [..., C, H, W], got shape {tuple(pred.shape)}")


def _float(x: Tensor) -> Tensor:
    """At least float32 (half inputs are upcast; float64 stays float64)."""
    return x.float() if x.dtype not in (torch.float32, torch.float64) else x


def _as_images(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``[..., C, H, W]`` -> ``[B, C, H, W]`` in float64, as torchmetrics gets them (see the module docstring)."""
    c, h, w = pred.shape[-3:]
    return pred.double().reshape(-1, c, h, w), target.double().reshape(-1, c, h, w)


def mse(
    pred: Tensor,  # [..., C, H, W]
    target: Tensor,  # [..., C, H, W]
) -> Tensor:  # [...]
    """Mean squared error per image, over channels and pixels."""
    _check_pair(pred, target)
    pred, target = _float(pred), _float(target)
    return (pred - target).square().mean(dim=(-3, -2, -1))


def psnr_from_mse(mse_value: Tensor, data_range: float = 1.0, max_db: float | None = None) -> Tensor:
    """``10 log10(data_range^2 / mse)``, elementwise; ``+inf`` where ``mse == 0`` unless capped at ``max_db``."""
    out = 10.0 * torch.log10(data_range**2 / mse_value)
    return out if max_db is None else out.clamp(max=max_db)


def psnr(
    pred: Tensor,  # [..., C, H, W] in [0, data_range]
    target: Tensor,  # [..., C, H, W] in [0, data_range]
    data_range: float = 1.0,
    max_db: float | None = None,
) -> Tensor:  # [...] dB
    """Peak signal-to-noise ratio per image, in dB (torchmetrics' ``peak_signal_noise_ratio`` per image).

    Args:
        pred: ``[..., C, H, W]`` images, values in ``[0, data_range]``.
        target: same shape as ``pred``.
        data_range: the peak value (1.0 for ``[0, 1]`` images, as torchmetrics' ``data_range=1.0``).
        max_db: *optional*. When given, values are capped at ``max_db``. Identical images have
            ``MSE = 0`` and PSNR ``+inf`` without a cap (``max_db=None``, the default).

    Returns:
        ``[...]`` float tensor, one PSNR per image. A constant error of 0.1 on ``[0, 1]`` images
        gives ``10 log10(1 / 0.01) = 20`` dB.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_pair(pred, target)
    x, y = _as_images(pred, target)
    out = peak_signal_noise_ratio(x, y, data_range=data_range, reduction="none", dim=(1, 2, 3))  # [B]
    out = out.reshape(pred.shape[:-3]).to(_float(pred).dtype)
    return out if max_db is None else out.clamp(max=max_db)


def ssim(
    pred: Tensor,  # [..., C, H, W] in [0, data_range]
    target: Tensor,  # [..., C, H, W] in [0, data_range]
    data_range: float | None = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    border: Literal["reflect", "valid"] = "reflect",
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:  # [...]
    """Structural similarity per image (Gaussian window): torchmetrics' ``structural_similarity_index_measure``.

    Args:
        pred: ``[..., C, H, W]`` images, values in ``[0, data_range]``.
        target: same shape as ``pred``.
        data_range: the value range (1.0 for ``[0, 1]`` images). ``None`` infers it as torchmetrics
            does: ``max(pred.max() - pred.min(), target.max() - target.min())`` over the whole input.
        window: Gaussian window size; must be torchmetrics' ``int(3.5 * sigma + 0.5) * 2 + 1`` (11 for
            sigma 1.5), which torchmetrics derives from sigma, ignoring its ``kernel_size`` argument
            (scikit-image uses the same formula).
        sigma: Gaussian standard deviation in pixels; 1.5.
        border: ``"reflect"`` (torchmetrics >= 1.4.2, the default) or ``"valid"`` (torchmetrics
            <= 1.4.1, scikit-image, Wang et al.); see the module docstring.
        k1, k2: SSIM constants, ``C1 = (k1 * data_range)^2``, ``C2 = (k2 * data_range)^2``.

    Returns:
        ``[...]`` float tensor; 1 for identical images.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_pair(pred, target)
    if border not in ("reflect", "valid"):
        raise ValueError(f"border must be 'reflect' or 'valid', got {border!r}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if window != int(3.5 * sigma + 0.5) * 2 + 1:
        raise ValueError(f"window {window} with sigma {sigma}: torchmetrics uses int(3.5 * sigma + 0.5) * 2 + 1 = "
                         f"{int(3.5 * sigma + 0.5) * 2 + 1}")
    *batch, c, h, w = pred.shape
    pad = window // 2
    if border == "reflect" and min(h, w) <= pad:
        raise ValueError(f"images must be larger than {pad} pixels for border='reflect', got {h}x{w}")
    if border == "valid" and min(h, w) < window:
        raise ValueError(f"images must be at least {window}x{window} for border='valid', got {h}x{w}")
    x, y = _as_images(pred, target)
    if data_range is None:  # over the whole input, as one torchmetrics update (torchmetrics wants a float here)
        data_range = max((x.max() - x.min()).item(), (y.max() - y.min()).item())
    kwargs = dict(gaussian_kernel=True, sigma=sigma, kernel_size=window, data_range=data_range, k1=k1, k2=k2,
                  reduction="none")
    if border == "reflect":
        out = structural_similarity_index_measure(x, y, **kwargs)  # [B]
    else:
        _, ssim_map = structural_similarity_index_measure(x, y, return_full_image=True, **kwargs)  # [B, C, H, W]
        out = ssim_map[..., pad:-pad, pad:-pad].mean(dim=(-3, -2, -1))
    return out.reshape(batch).to(_float(pred).dtype)
