"""Geometry metrics between point sets: Chamfer distance and F-score, plus point sampling.

Both point sets must be in the **normalised object frame** (the object's bounding box scaled to a
unit cube centred at the origin, as rendering does), so distances are fractions of the object size.

Definitions (``P`` = predicted points, ``G`` = ground-truth points, ``d(x, S) = min_{s in S} ||x - s||``
the Euclidean distance to the nearest neighbour):

- accuracy ``= mean_{p in P} d(p, G)``; completeness ``= mean_{g in G} d(g, P)``.
- **Chamfer distance** ``= (accuracy + completeness) / 2``: the mean of *plain* (not squared) L2
  distances, averaged over both directions, which is what most image-to-3D papers report as
  "CD". ``squared=True`` uses ``d^2`` instead (the PyTorch3D / point-cloud-completion convention);
  note that some papers *sum* the two directions instead of averaging (twice our value).
- **F-score** at threshold ``t`` (Tatarchenko et al., 2019): precision ``= |{p : d(p, G) < t}| / |P|``,
  recall ``= |{g : d(g, P) < t}| / |G|``, ``F = 2 P R / (P + R)`` (0 when both are 0). Default
  thresholds 0.05 and 0.1, i.e. 5 % and 10 % of the unit box.

Nearest neighbours are exact: scipy's ``cKDTree`` (float64) for CPU tensors, chunked ``torch.cdist``
without the matrix-product shortcut on other devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEFAULT_FSCORE_THRESHOLDS",
    "PointCloudMetrics",
    "nearest_neighbor_distances",
    "chamfer_distance",
    "f_score",
    "point_cloud_metrics",
    "sample_mesh_points",
    "gaussian_points",
]

#: F-score thresholds, in normalised object units (fractions of the unit bounding box).
DEFAULT_FSCORE_THRESHOLDS = (0.05, 0.1)


def _points(x, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[-1] != 3 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [N, 3] point set, got shape {tuple(x.shape)}")
    return x


def nearest_neighbor_distances(
    query: Tensor,  # [N, 3]
    reference: Tensor,  # [M, 3]
    backend: Literal["auto", "kdtree", "cdist"] = "auto",
    chunk_size: int = 4096,
) -> Tensor:  # [N]
    """Euclidean distance from each query point to its nearest reference point (exact).

    Args:
        query: ``[N, 3]`` points.
        reference: ``[M, 3]`` points.
        backend: ``"kdtree"`` (scipy ``cKDTree``, float64, on the CPU), ``"cdist"`` (``torch.cdist``
            in chunks of ``chunk_size`` queries, on the inputs' device), or ``"auto"``: kdtree for
            CPU tensors, cdist otherwise.

    Returns:
        ``[N]`` distances, dtype of ``query`` (at least float32), on ``query``'s device.
    """
    query, reference = _points(query, "query"), _points(reference, "reference")
    dtype = query.dtype if query.dtype in (torch.float32, torch.float64) else torch.float32
    if backend == "auto":
        backend = "kdtree" if query.device.type == "cpu" else "cdist"
    if backend == "kdtree":
        from scipy.spatial import cKDTree

        ref = reference.detach().cpu().double().numpy()
        dist, _ = cKDTree(ref).query(query.detach().cpu().double().numpy(), k=1)
        return torch.from_numpy(np.asarray(dist)).to(device=query.device, dtype=dtype)
    if backend != "cdist":
        raise ValueError(f"backend must be 'auto', 'kdtree' or 'cdist', got {backend!r}")
    reference = reference.to(device=query.device, dtype=dtype)
    out = []
    for q in query.to(dtype).split(chunk_size):
        # the matrix-product form loses precision for near-identical points: compute differences directly
        d = torch.cdist(q[None], reference[None], compute_mode="donot_use_mm_for_euclid_dist")[0]  # [n, M]
        out.append(d.min(dim=1).values)
    return torch.cat(out)


@dataclass
class PointCloudMetrics:
    """Geometry metrics between predicted and ground-truth point sets (normalised object units).

    Attributes:
        chamfer: ``(accuracy + completeness) / 2``.
        accuracy: mean distance from predicted points to the ground truth.
        completeness: mean distance from ground-truth points to the prediction.
        thresholds: the F-score thresholds ``t``.
        precision: per threshold, fraction of predicted points within ``t`` of the ground truth.
        recall: per threshold, fraction of ground-truth points within ``t`` of the prediction.
        fscore: per threshold, ``2 P R / (P + R)``.
        squared: whether the distances in ``chamfer``/``accuracy``/``completeness`` are squared.
    """

    chamfer: float
    accuracy: float
    completeness: float
    thresholds: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    fscore: tuple[float, ...]
    squared: bool = False

    def fscore_at(self, threshold: float) -> float:
        return self.fscore[self.thresholds.index(threshold)]


def _fscore(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def point_cloud_metrics(
    pred: Tensor,  # [N, 3] normalised object frame
    target: Tensor,  # [M, 3] normalised object frame
    thresholds: Sequence[float] = DEFAULT_FSCORE_THRESHOLDS,
    squared: bool = False,
    backend: Literal["auto", "kdtree", "cdist"] = "auto",
) -> PointCloudMetrics:
    """Chamfer distance, accuracy, completeness and F-scores in one nearest-neighbour pass each way."""
    d_pred = nearest_neighbor_distances(pred, target, backend).double()  # [N]
    d_target = nearest_neighbor_distances(target, pred, backend).double()  # [M]
    acc = (d_pred.square() if squared else d_pred).mean().item()
    comp = (d_target.square() if squared else d_target).mean().item()
    thresholds = tuple(float(t) for t in thresholds)
    precision = tuple((d_pred < t).double().mean().item() for t in thresholds)
    recall = tuple((d_target < t).double().mean().item() for t in thresholds)
    return PointCloudMetrics(
        chamfer=0.5 * (acc + comp),
        accuracy=acc,
        completeness=comp,
        thresholds=thresholds,
        precision=precision,
        recall=recall,
        fscore=tuple(_fscore(p, r) for p, r in zip(precision, recall)),
        squared=squared,
    )


def chamfer_distance(
    pred: Tensor,  # [N, 3]
    target: Tensor,  # [M, 3]
    squared: bool = False,
) -> float:
    """``(mean_p d(p, G) + mean_g d(g, P)) / 2`` with plain L2 distances (``squared=True``: ``d^2``)."""
    return point_cloud_metrics(pred, target, thresholds=(), squared=squared).chamfer


def f_score(
    pred: Tensor,  # [N, 3]
    target: Tensor,  # [M, 3]
    threshold: float = 0.1,
) -> float:
    """F-score at distance ``threshold`` (normalised object units); 1 when both sets coincide."""
    return point_cloud_metrics(pred, target, thresholds=(threshold,)).fscore[0]


def sample_mesh_points(
    vertices,  # [V, 3] array or tensor
    faces,  # [F, 3] integer vertex indices
    n: int,
    seed: int = 0,
) -> Tensor:  # [n, 3] float32
    """``n`` points uniformly distributed over a triangle mesh's surface (area-weighted), reproducibly.

    Faces are drawn with probability proportional to their area (with replacement), then a point
    uniformly inside each drawn triangle (the reflected barycentric square). The same seed, mesh
    and ``n`` give the same points; translating the mesh translates them.

    Args:
        vertices: ``[V, 3]`` positions (numpy or torch; e.g. ``trimesh.Trimesh.vertices``).
        faces: ``[F, 3]`` vertex indices.
        n: number of points.
        seed: seed of the ``numpy.random.default_rng`` used.

    Returns:
        ``[n, 3]`` float32 tensor on the CPU.
    """
    v = torch.as_tensor(np.asarray(vertices), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(faces), dtype=torch.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"expected vertices [V, 3] and faces [F, 3], got {tuple(v.shape)} and {tuple(f.shape)}")
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]  # each [F, 3]
    area = 0.5 * torch.linalg.cross(b - a, c - a).norm(dim=-1)  # [F]
    if not area.sum() > 0:
        raise ValueError("the mesh has zero surface area")
    rng = np.random.default_rng(seed)
    idx = torch.from_numpy(rng.choice(len(area), size=n, p=(area / area.sum()).numpy()))  # [n]
    uv = torch.from_numpy(rng.random((n, 2)))  # [n, 2] float64
    flip = uv.sum(dim=1) > 1
    uv[flip] = 1 - uv[flip]  # fold the upper triangle of the unit square onto the lower one
    u, w = uv[:, :1], uv[:, 1:]
    points = a[idx] + u * (b[idx] - a[idx]) + w * (c[idx] - a[idx])
    return points.float()


def gaussian_points(
    gaussians,  # ouro.gaussians.Gaussians, unbatched: means [N, 3], opacities [N]
    n: int,
    min_opacity: float = 0.005,
    seed: int = 0,
) -> Tensor:  # [n, 3]
    """``n`` Gaussian centres drawn with probability proportional to opacity (with replacement).

    Gaussians with opacity below ``min_opacity`` are left out (0.005: the threshold PLY export
    prunes at, as LGM). Centres are in the Gaussians' frame (the normalised object frame for
    ouro's reconstructions).

    Returns:
        ``[n, 3]`` points on the Gaussians' device.
    """
    means, opacities = gaussians.means.detach(), gaussians.opacities.detach()
    if means.ndim != 2:
        raise ValueError(f"expected unbatched Gaussians (means [N, 3]), got means {tuple(means.shape)}")
    weights = torch.where(opacities >= min_opacity, opacities, torch.zeros_like(opacities)).double().cpu()
    if not weights.sum() > 0:
        raise ValueError(f"no Gaussian has opacity >= {min_opacity}")
    rng = np.random.default_rng(seed)
    idx = torch.from_numpy(rng.choice(len(weights), size=n, p=(weights / weights.sum()).numpy()))  # [n]
    return means[idx.to(means.device)]
