"""Cameras: the library's one convention, orbits, intrinsics and the converters at its edges.

The convention (used everywhere inside ouro; converters exist only for data coming in or going out)
--------------------------------------------------------------------------------------------------
* Poses are **camera-to-world** 4x4 matrices ``c2w`` (column vectors: ``X_world = c2w @ X_cam``).
  World-to-camera matrices are always named ``w2c``.
* Camera axes are **OpenCV**: +x right, +y down, +z forward (the viewing direction).
* World: **+y up**, the object normalised to a unit box centred at the origin.
* The condition (input) camera sits at ``(0, 0, r)`` looking at the origin. Azimuth is measured
  from +z towards +x (azimuth 90 deg puts the camera at ``(r, 0, 0)``); positive elevation puts the
  camera above the object (``y > 0``). This is the frame of the public Ouroboros3D checkpoint
  (docs/OFFICIAL.md section 12), so its cameras need no conversion.
* Intrinsics come in two forms. **Pixel** ``K``: ``fx, fy, cx, cy`` in pixels, where pixel
  ``(col j, row i)`` covers ``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``, so the
  principal point of a centred camera is ``(W/2, H/2)``. **Normalised** ``K``: the same divided by
  the image size (``fx/W, fy/H, cx/W, cy/H``), valid at any resolution; the public checkpoint uses
  it (``fx = fy = 1.388889, cx = cy = 0.5`` for its 39.6 deg field of view).
* Fields of view are in degrees at API boundaries and are the full angle across the image width.
* Depth is z-depth along the camera's +z axis (not distance along the ray).

Converters at the edges
-----------------------
* OpenGL / Blender camera axes (+x right, +y up, +z backward) differ from OpenCV by the sign of the
  camera's y and z columns: :func:`opengl_to_opencv` (its own inverse).
* Blender's world is +z up; ours is +y up and equals glTF's world (Blender's glTF importer maps
  glTF ``(x, y, z)`` to Blender ``(x, -z, y)``): :func:`blender_to_ours` / :func:`ours_to_blender`.
* The public checkpoint trains on poses made **relative to the condition view**, so that the
  condition camera sits at ``(0, 0, d)`` with rotation ``diag(1, -1, -1)`` whatever its elevation:
  :func:`to_condition_frame` / :func:`from_condition_frame`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ouro.conventions import OFFICIAL_FOV_DEG, OFFICIAL_FRAME_INDICES, OFFICIAL_RADIUS

__all__ = [
    "BLENDER_TO_OURS",
    "OFFICIAL_FOV_DEG",
    "OFFICIAL_RADIUS",
    "OFFICIAL_FRAME_INDICES",
    "look_at",
    "orbit_cameras",
    "official_inference_cameras",
    "invert_rigid",
    "intrinsics_from_fov",
    "normalize_intrinsics",
    "denormalize_intrinsics",
    "fov_from_intrinsics",
    "project_points",
    "opengl_to_opencv",
    "blender_to_ours",
    "ours_to_blender",
    "to_condition_frame",
    "from_condition_frame",
]


#: Rotation taking Blender world coordinates (+z up, front view looks along +y) to ours (+y up):
#: ``(x, y, z)_blender -> (x, z, -y)_ours``.
BLENDER_TO_OURS = torch.tensor(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]],
    dtype=torch.float64,
)
_FLIP_YZ = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)


def _like(t: Tensor, ref: Tensor) -> Tensor:
    return t.to(device=ref.device, dtype=ref.dtype)


def look_at(
    eye: Tensor,  # [..., 3] camera centres, world
    target: Tensor | None = None,  # [..., 3] point looked at; default the origin
    up: Sequence[float] = (0.0, 1.0, 0.0),
) -> Tensor:  # [..., 4, 4] c2w, OpenCV axes
    """Camera-to-world matrices of cameras at ``eye`` looking at ``target`` with world ``up`` up.

    The camera's +z axis points at the target, +x is ``normalise(z x up)`` (to the right in the
    image) and +y is ``z x x`` (down in the image). Undefined when the view direction is parallel
    to ``up`` (elevation +-90 deg).
    """
    if target is None:
        target = torch.zeros_like(eye)
    up_t = torch.tensor(up, device=eye.device, dtype=eye.dtype).expand_as(eye)
    z = torch.nn.functional.normalize(target - eye, dim=-1)
    x = torch.nn.functional.normalize(torch.linalg.cross(z, up_t, dim=-1), dim=-1)
    y = torch.linalg.cross(z, x, dim=-1)
    c2w = torch.zeros(eye.shape[:-1] + (4, 4), device=eye.device, dtype=eye.dtype)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = x, y, z, eye
    c2w[..., 3, 3] = 1.0
    return c2w


def orbit_cameras(
    num_views: int,
    elevation_deg: float | Tensor = 0.0,
    azimuth_start_deg: float = 0.0,
    radius: float = OFFICIAL_RADIUS,
    *,
    azimuths_deg: Tensor | Sequence[float] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:  # [V, 4, 4] c2w, OpenCV axes
    """Cameras evenly spaced on a circle around the origin, all looking at it.

    Args:
        num_views: V, the number of cameras; azimuths ``start + 360 * k / V`` for ``k = 0..V-1``.
        elevation_deg: elevation above the horizontal plane in degrees, a float or a ``[V]`` tensor.
        azimuth_start_deg: azimuth of camera 0 (deg, from +z towards +x).
        radius: distance from the origin, object units.
        azimuths_deg: explicit ``[V]`` azimuths, overriding the even spacing.

    Returns:
        ``[V, 4, 4]`` camera-to-world matrices; camera ``k`` sits at
        ``r * (cos(el) sin(az), sin(el), cos(el) cos(az))``.
    """
    if azimuths_deg is None:
        az = azimuth_start_deg + 360.0 * torch.arange(num_views, dtype=torch.float64) / num_views
    else:
        az = torch.as_tensor(azimuths_deg, dtype=torch.float64)
        if az.shape != (num_views,):
            raise ValueError(f"azimuths_deg must have shape ({num_views},), got {tuple(az.shape)}")
    el = torch.as_tensor(elevation_deg, dtype=torch.float64).expand(num_views)
    if bool((el.abs() >= 90).any()):
        raise ValueError(f"elevation must lie strictly between -90 and 90 deg, got {el.tolist()}")
    az, el = torch.deg2rad(az), torch.deg2rad(el)
    eye = radius * torch.stack([el.cos() * az.sin(), el.sin(), el.cos() * az.cos()], dim=-1)
    return look_at(eye).to(device=device, dtype=dtype)


def official_inference_cameras(
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:  # [8, 4, 4] c2w
    """The public checkpoint's 8 fixed inference cameras (OFFICIAL.md 12.2, ``hyper/c2w.npy``).

    Frames 0, 2, 4, 6, 8, 10, 12 and 15 of a 16-frame orbit at elevation 0 and radius 1.741697:
    azimuths 0, 45, ..., 270 and 337.5 deg. View 0 is the input view.
    """
    orbit = orbit_cameras(16, 0.0, 0.0, OFFICIAL_RADIUS, dtype=torch.float64)
    return orbit[list(OFFICIAL_FRAME_INDICES)].to(device=device, dtype=dtype)


def invert_rigid(m: Tensor) -> Tensor:  # [..., 4, 4] -> [..., 4, 4]
    """Inverse of rigid transforms ``[R | t]`` (``c2w <-> w2c``), exact for orthonormal ``R``."""
    rot_t = m[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(m)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ m[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def intrinsics_from_fov(
    fov_deg: float | Tensor,
    width: int | None = None,
    height: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:  # [..., 3, 3]
    """Pinhole intrinsics of a centred camera with square pixels.

    Args:
        fov_deg: full horizontal field of view in degrees (float or tensor of any shape).
        width, height: image size in pixels. Omit both for the **normalised** form
            (``fx = fy = 1 / (2 tan(fov/2))``, ``cx = cy = 0.5``, the vertical field of view then
            equals the horizontal one); give both for the **pixel** form
            (``fx = fy = W / (2 tan(fov/2))``, ``cx = W/2``, ``cy = H/2``).
    """
    if (width is None) != (height is None):
        raise ValueError("give both width and height (pixel intrinsics) or neither (normalised)")
    fov = torch.deg2rad(torch.as_tensor(fov_deg, dtype=torch.float64))
    f = 0.5 / torch.tan(0.5 * fov)
    K = torch.zeros(fov.shape + (3, 3), dtype=torch.float64)
    if width is None:
        K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2] = f, f, 0.5, 0.5
    else:
        K[..., 0, 0], K[..., 1, 1] = f * width, f * width
        K[..., 0, 2], K[..., 1, 2] = width / 2.0, height / 2.0
    K[..., 2, 2] = 1.0
    return K.to(device=device, dtype=dtype)


def normalize_intrinsics(K: Tensor, width: int, height: int) -> Tensor:  # [..., 3, 3] px -> normalised
    """Pixel intrinsics to the resolution-free form: row 0 divided by W, row 1 by H."""
    scale = torch.tensor([1.0 / width, 1.0 / height, 1.0], device=K.device, dtype=K.dtype)
    return K * scale[:, None]


def denormalize_intrinsics(K_norm: Tensor, width: int, height: int) -> Tensor:  # [..., 3, 3]
    """Normalised intrinsics to pixels at ``width x height``."""
    scale = torch.tensor([float(width), float(height), 1.0], device=K_norm.device, dtype=K_norm.dtype)
    return K_norm * scale[:, None]


def fov_from_intrinsics(K: Tensor, width: int | None = None) -> Tensor:  # [..., 3, 3] -> [...] deg
    """Horizontal field of view in degrees; pass ``width`` for pixel intrinsics."""
    fx = K[..., 0, 0] / (width if width is not None else 1.0)
    return torch.rad2deg(2 * torch.atan(0.5 / fx))


def project_points(
    points: Tensor,  # [..., N, 3] world
    c2w: Tensor,  # [..., V, 4, 4] camera-to-world, OpenCV
    K: Tensor,  # [..., V, 3, 3] pixel (or normalised) intrinsics
) -> tuple[Tensor, Tensor]:  # uv [..., V, N, 2], depth [..., V, N]
    """Project world points into every camera.

    Returns image coordinates ``(u, v) = (column, row)`` in the units of ``K`` (pixels, with
    ``(0, 0)`` the top-left corner of the top-left pixel, or normalised ``[0, 1]``) and z-depth.
    Points behind a camera get negative depth and meaningless ``uv``.
    """
    w2c = invert_rigid(c2w)
    # [..., 1, N, 3] x [..., V, 3, 3]^T -> [..., V, N, 3] camera-space points
    cam = points.unsqueeze(-3) @ w2c[..., :3, :3].transpose(-1, -2) + w2c[..., None, :3, 3]
    depth = cam[..., 2]
    pix = cam @ K.transpose(-1, -2)
    return pix[..., :2] / pix[..., 2:3], depth


def opengl_to_opencv(c2w: Tensor) -> Tensor:  # [..., 4, 4] -> [..., 4, 4]
    """Swap camera axes between OpenGL/Blender (+y up, +z back) and OpenCV (+y down, +z forward).

    Negates the camera's y and z columns; the world frame is unchanged. Its own inverse.
    """
    return c2w * _like(_FLIP_YZ, c2w)


def blender_to_ours(c2w_blender: Tensor) -> Tensor:  # [..., 4, 4] -> [..., 4, 4]
    """A Blender camera's ``matrix_world`` (Blender world +z up, OpenGL camera axes) to ours.

    ``c2w = BLENDER_TO_OURS @ c2w_blender @ diag(1, -1, -1, 1)``: the world rotated to +y up (glTF's
    frame) and the camera axes turned to OpenCV. A Blender camera at ``(0, -d, 0)`` looking along
    +y with +z up becomes ours at ``(0, 0, d)`` with rotation ``diag(1, -1, -1)``.
    """
    return _like(BLENDER_TO_OURS, c2w_blender) @ opengl_to_opencv(c2w_blender)


def ours_to_blender(c2w: Tensor) -> Tensor:  # [..., 4, 4] -> [..., 4, 4]
    """Inverse of :func:`blender_to_ours`: ours to a Blender camera ``matrix_world``."""
    return opengl_to_opencv(_like(BLENDER_TO_OURS, c2w).transpose(-1, -2) @ c2w)


def _condition_shift(distance: Tensor) -> Tensor:  # [...] -> [..., 4, 4]
    shift = torch.zeros(distance.shape + (4, 4), device=distance.device, dtype=distance.dtype)
    shift[..., 0, 0], shift[..., 1, 1], shift[..., 2, 2], shift[..., 3, 3] = 1.0, -1.0, -1.0, 1.0
    shift[..., 2, 3] = distance
    return shift


def to_condition_frame(
    c2w: Tensor,  # [..., V, 4, 4] OpenCV c2w in any world frame
    ref_index: int = 0,
) -> Tensor:  # [..., V, 4, 4]
    """Poses relative to view ``ref_index``, as the public checkpoint was trained on.

    ``shift @ inv(c2w_ref) @ c2w`` with ``shift = [[1,0,0,0],[0,-1,0,0],[0,0,-1,d],[0,0,0,1]]`` and
    ``d = |C_ref|`` the reference camera's distance from the world origin (OFFICIAL.md 12.3): the
    reference camera lands at ``(0, 0, d)`` looking at the origin, with its image-up along +y, and
    every other camera keeps its pose relative to it. For cameras that look at the origin the
    origin stays fixed. Undo with :func:`from_condition_frame` and the reference pose.
    """
    ref = c2w[..., ref_index, :, :]
    shift = _condition_shift(ref[..., :3, 3].norm(dim=-1))
    return (shift @ invert_rigid(ref)).unsqueeze(-3) @ c2w


def from_condition_frame(
    rel_c2w: Tensor,  # [..., V, 4, 4] poses in the condition frame
    ref_c2w: Tensor,  # [..., 4, 4] the reference camera's pose in the target world frame
) -> Tensor:  # [..., V, 4, 4]
    """Inverse of :func:`to_condition_frame`: ``c2w_ref @ inv(shift) @ rel``."""
    shift = _condition_shift(ref_c2w[..., :3, 3].norm(dim=-1))
    return (ref_c2w @ invert_rigid(shift)).unsqueeze(-3) @ rel_c2w
