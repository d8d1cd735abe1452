"""The Gaussian container and LGM's 14-channel layout with its activations.

A reconstructor predicts 14 raw channels per Gaussian; :data:`LAYOUT` names them once, and the
model, the renderer and PLY input/output all go through it instead of bare slices.

Activations (LGM, docs/OFFICIAL.md 9.9): position clamp to ``[-1, 1]``, opacity sigmoid,
scale ``0.1 * softplus``, rotation normalised per Gaussian, colour ``0.5 * tanh + 0.5``. Under
``compat="official"`` the rotation is normalised over the Gaussian axis instead (the bug the public
Ouroboros3D weights were trained with), and covariances are built from those un-normalised
quaternions, as its rasterizer did (OFFICIAL.md 9.10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LAYOUT", "Compat", "Gaussians", "quaternion_to_matrix", "quaternion_multiply", "covariances", "rotate"]

Compat = Optional[Literal["official"]]


class _Layout:
    """Channel slices of a raw ``[..., N, 14]`` Gaussian tensor (read-only class attributes)."""

    __slots__ = ()
    means = slice(0, 3)  #: xyz, object units
    opacities = slice(3, 4)  #: 1 channel
    scales = slice(4, 7)  #: per-axis standard deviation, object units
    rotations = slice(7, 11)  #: quaternion (w, x, y, z), real part first
    colors = slice(11, 14)  #: RGB
    channels = 14


LAYOUT = _Layout()


@dataclass
class Gaussians:
    """Activated 3D Gaussians, batched over any leading dims.

    Attributes:
        means: ``[..., N, 3]`` centres, object frame (unit box at the origin), object units.
        scales: ``[..., N, 3]`` standard deviations along the Gaussian's axes, object units, > 0.
        rotations: ``[..., N, 4]`` quaternions (w, x, y, z); unit length unless ``compat="official"``.
        opacities: ``[..., N]`` in ``[0, 1]``.
        colors: ``[..., N, 3]`` RGB in ``[0, 1]`` (SH degree 0).
    """

    means: Tensor
    scales: Tensor
    rotations: Tensor
    opacities: Tensor
    colors: Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[:-1]
        assert self.means.shape[-1] == 3, self.means.shape
        assert self.scales.shape == n + (3,), self.scales.shape
        assert self.rotations.shape == n + (4,), self.rotations.shape
        assert self.opacities.shape == n, self.opacities.shape
        assert self.colors.shape == n + (3,), self.colors.shape

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[-2]

    @property
    def batch_shape(self) -> torch.Size:
        return self.means.shape[:-2]

    @classmethod
    def from_raw(cls, raw: Tensor, compat: Compat = None) -> "Gaussians":
        """Apply LGM's activations to raw network output ``[..., N, 14]`` (channels per :data:`LAYOUT`)."""
        assert raw.shape[-1] == LAYOUT.channels, raw.shape
        rot = raw[..., LAYOUT.rotations]
        # official: F.normalize(x) on [B, N, 4] normalises over dim 1, the Gaussian axis.
        rot = F.normalize(rot, dim=-2 if compat == "official" else -1)
        return cls(
            means=raw[..., LAYOUT.means].clamp(-1.0, 1.0),
            scales=0.1 * F.softplus(raw[..., LAYOUT.scales]),
            rotations=rot,
            opacities=torch.sigmoid(raw[..., LAYOUT.opacities])[..., 0],
            colors=0.5 * torch.tanh(raw[..., LAYOUT.colors]) + 0.5,
        )

    def to_tensor(self) -> Tensor:
        """The activated values packed as ``[..., N, 14]`` in :data:`LAYOUT` order."""
        return torch.cat([self.means, self.opacities[..., None], self.scales, self.rotations, self.colors], dim=-1)

    @classmethod
    def from_tensor(cls, packed: Tensor) -> "Gaussians":
        """Inverse of :meth:`to_tensor` (no activation applied)."""
        return cls(
            means=packed[..., LAYOUT.means],
            scales=packed[..., LAYOUT.scales],
            rotations=packed[..., LAYOUT.rotations],
            opacities=packed[..., LAYOUT.opacities][..., 0],
            colors=packed[..., LAYOUT.colors],
        )

    def index(self, idx) -> "Gaussians":
        """Select Gaussians along the N axis (a mask or indices), for unbatched containers."""
        return Gaussians(self.means[idx], self.scales[idx], self.rotations[idx], self.opacities[idx], self.colors[idx])

    def batch_item(self, b: int) -> "Gaussians":
        """Element ``b`` of a container batched as ``[B, N, ...]``: one object's ``[N, ...]`` Gaussians."""
        return Gaussians(self.means[b], self.scales[b], self.rotations[b], self.opacities[b], self.colors[b])

    def to(self, *args, **kwargs) -> "Gaussians":
        return Gaussians(*(t.to(*args, **kwargs) for t in (self.means, self.scales, self.rotations, self.opacities, self.colors)))

    def detach(self) -> "Gaussians":
        return Gaussians(*(t.detach() for t in (self.means, self.scales, self.rotations, self.opacities, self.colors)))


def quaternion_to_matrix(q: Tensor) -> Tensor:  # [..., 4] (w, x, y, z) -> [..., 3, 3]
    """Rotation matrix by the standard quaternion polynomial, **without** normalising ``q``.

    For unit quaternions this is the rotation; for the un-normalised quaternions of
    ``compat="official"`` it reproduces what the public rasterizer computed.
    """
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))


def covariances(gaussians: Gaussians) -> Tensor:  # [..., N, 3, 3]
    """World-space covariances ``R S S^T R^T`` with ``R`` from :func:`quaternion_to_matrix`."""
    m = quaternion_to_matrix(gaussians.rotations) * gaussians.scales[..., None, :]
    return m @ m.transpose(-1, -2)


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:  # [..., 4] x [..., 4] (w, x, y, z) -> [..., 4]
    """The Hamilton product ``a b``: the rotation ``b`` followed by ``a``."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def rotate(gaussians: Gaussians, q: Tensor) -> Gaussians:
    """The Gaussians turned about the origin by the unit quaternion ``q`` ``[4]`` (w, x, y, z).

    Centres become ``R x`` and each Gaussian's rotation ``q r``, so covariances become ``R C R^T``;
    scales, opacities and colours are kept. For frame converters at the edges (viewers, exports).
    """
    q = q.to(gaussians.rotations)
    R = quaternion_to_matrix(q)
    return Gaussians(
        means=gaussians.means @ R.T,
        scales=gaussians.scales,
        rotations=quaternion_multiply(q.expand_as(gaussians.rotations), gaussians.rotations),
        opacities=gaussians.opacities,
        colors=gaussians.colors,
    )
