"""3D Gaussian Splatting PLY files, the layout splat viewers and the 3DGS tools read.

One ``vertex`` element, binary little-endian float32 properties, stored **pre-activation**:

=============================  ==========================================================
``x y z``                      centre, object units
``f_dc_0 f_dc_1 f_dc_2``       degree-0 spherical-harmonic colour: ``(rgb - 0.5) / C0``
``opacity``                    logit of the opacity
``scale_0 scale_1 scale_2``    log of the per-axis standard deviation
``rot_0 rot_1 rot_2 rot_3``    quaternion (w, x, y, z) as held (viewers normalise it)
=============================  ==========================================================

with ``C0 = 0.28209479177387814`` (the SH degree-0 constant). Writing prunes Gaussians whose
opacity is below 0.005 by default, as LGM and the public Ouroboros3D code do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from ouro.gaussians.gaussians import Gaussians

__all__ = ["SH_C0", "PLY_PROPERTIES", "gaussians_to_ply_arrays", "write_ply", "read_ply", "read_ply_arrays"]

SH_C0 = 0.28209479177387814
PLY_PROPERTIES = (
    ("x", "y", "z"),
    ("f_dc_0", "f_dc_1", "f_dc_2"),
    ("opacity",),
    ("scale_0", "scale_1", "scale_2"),
    ("rot_0", "rot_1", "rot_2", "rot_3"),
)
_NAMES = tuple(n for group in PLY_PROPERTIES for n in group)
_MIN_SCALE = 1e-8  # log(s + eps) as LGM, so a zero scale stays finite


def gaussians_to_ply_arrays(gaussians: Gaussians) -> dict[str, np.ndarray]:
    """Pre-activation float32 columns ``{name: [N]}`` of one unbatched set of Gaussians."""
    assert gaussians.means.dim() == 2, f"write one object at a time, got batch {tuple(gaussians.batch_shape)}"
    g = gaussians.detach().to(device="cpu", dtype=torch.float64)
    opacity = g.opacities.clamp(1e-7, 1 - 1e-7)
    cols = torch.cat(
        [
            g.means,
            (g.colors - 0.5) / SH_C0,
            torch.log(opacity / (1 - opacity))[:, None],
            torch.log(g.scales + _MIN_SCALE),
            g.rotations,
        ],
        dim=1,
    ).numpy().astype("<f4")
    return {name: cols[:, i] for i, name in enumerate(_NAMES)}


def write_ply(path: str | os.PathLike, gaussians: Gaussians, prune_opacity: float | None = 0.005) -> int:
    """Write ``gaussians`` (unbatched, ``[N, ...]``) as a 3DGS PLY; return the number written.

    Gaussians with opacity below ``prune_opacity`` are dropped (``None`` keeps all). The file is
    written to a temporary name beside ``path`` and renamed, so no partial file is left behind.
    """
    assert gaussians.means.dim() == 2, f"write one object at a time, got batch {tuple(gaussians.batch_shape)}"
    if prune_opacity is not None:
        gaussians = gaussians.index(gaussians.opacities.detach() >= prune_opacity)
    cols = gaussians_to_ply_arrays(gaussians)
    n = len(cols["x"])
    data = np.empty(n, dtype=[(name, "<f4") for name in _NAMES])
    for name in _NAMES:
        data[name] = cols[name]
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # opened plainly: the user's umask decides the mode (mkstemp's is 0600)
    try:
        with open(tmp, "wb") as f:
            PlyData([PlyElement.describe(data, "vertex")], text=False, byte_order="<").write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def read_ply_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The stored (pre-activation) float32 columns of a 3DGS PLY, exactly as in the file.

    Raises ``ValueError`` naming the file and the missing properties if it is not a 3DGS PLY.
    """
    try:
        ply = PlyData.read(str(path))
    except Exception as exc:  # plyfile raises several types for corrupt files
        raise ValueError(f"{path}: not a readable PLY file ({exc})") from exc
    if "vertex" not in ply:
        raise ValueError(f"{path}: no 'vertex' element; not a 3D Gaussian Splatting PLY")
    vertex = ply["vertex"]
    have = {p.name for p in vertex.properties}
    missing = [n for n in _NAMES if n not in have]
    if missing:
        raise ValueError(f"{path}: missing 3DGS properties {missing}; expected {list(_NAMES)}")
    return {name: np.asarray(vertex[name], dtype=np.float32) for name in _NAMES}


def read_ply(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Gaussians:
    """Read a 3DGS PLY into activated :class:`Gaussians` (``[N, ...]``, quaternions as stored)."""
    cols = read_ply_arrays(path)
    stack = lambda names: torch.from_numpy(np.stack([cols[n] for n in names], axis=1)).to(torch.float64)  # noqa: E731
    means, f_dc, opacity, log_scale, rot = (stack(group) for group in PLY_PROPERTIES)
    g = Gaussians(
        means=means,
        scales=torch.exp(log_scale) - _MIN_SCALE,
        rotations=rot,
        opacities=torch.sigmoid(opacity[:, 0]),
        colors=f_dc * SH_C0 + 0.5,
    )
    return g.to(dtype=dtype)
