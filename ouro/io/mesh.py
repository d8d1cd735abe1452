"""Meshes from rendered depth and colour: TSDF fusion (open3d) and GLB/OBJ/PLY writing (trimesh).

Vertex-coloured meshes (:class:`ColoredMesh`, :func:`write_mesh`) and UV-textured ones
(:class:`TexturedMesh`, :func:`write_textured_mesh`: a GLB with the texture embedded, or OBJ + MTL +
PNG).

open3d 0.20's ``ScalableTSDFVolume`` returns empty meshes (measured on this stack), so the
fusion uses ``UniformTSDFVolume`` over a fixed cube. open3d cannot read back its own GLB files, so
meshes are written with trimesh.
"""

from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from ouro.geometry.cameras import invert_rigid
from ouro.io.files import atomic_path, atomic_write

__all__ = ["ColoredMesh", "TexturedMesh", "import_open3d", "tsdf_fuse", "write_mesh", "write_textured_mesh"]


@dataclass
class ColoredMesh:
    """A triangle mesh with per-vertex colours.

    Attributes:
        vertices: ``[M, 3]`` float32, object frame (+y up, as glTF).
        faces: ``[F, 3]`` int64 vertex indices, counter-clockwise seen from outside.
        colors: ``[M, 3]`` float32 RGB in ``[0, 1]``.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray


@dataclass
class TexturedMesh:
    """A triangle mesh with one UV-mapped colour texture.

    Attributes:
        vertices: ``[M, 3]`` float32, object frame (+y up, as glTF). Vertices on UV seams are
            duplicated (one per chart).
        faces: ``[F, 3]`` int64 vertex indices, counter-clockwise seen from outside.
        uv: ``[M, 2]`` float32 texture coordinates in ``[0, 1]``, OBJ convention (``(0, 0)`` the
            bottom-left corner of the image; the GLB writer flips v as glTF wants).
        texture: ``[H, W, 3]`` uint8 RGB, row 0 at the top.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    texture: np.ndarray


def import_open3d():
    """Import open3d, first loading the libusb that its 0.20 wheel links (absent from slim images)."""
    try:
        import libusb_package

        ctypes.CDLL(str(libusb_package.get_library_path()), mode=ctypes.RTLD_GLOBAL)
    except (ImportError, OSError, TypeError):
        pass  # a system libusb (or an open3d build without it) is fine
    try:
        import open3d
    except ImportError as exc:
        raise ImportError("mesh export needs open3d: pip install 'ouro3d[mesh]'") from exc
    return open3d


def tsdf_fuse(
    depth: Tensor,  # [V, H, W] z-depth, 0 where empty
    color: Tensor,  # [V, 3, H, W] RGB in [0, 1]
    c2w: Tensor,  # [V, 4, 4] camera-to-world, OpenCV
    K: Tensor,  # [V, 3, 3] pixel intrinsics (pixel centres at j + 0.5)
    *,
    bound: float = 1.0,
    resolution: int = 256,
    trunc_voxels: float = 4.0,
) -> ColoredMesh:
    """Fuse depth and colour views into a coloured mesh with a TSDF over ``[-bound, bound]^3``.

    Args:
        depth: per-view z-depth in object units; pixels with 0 are not integrated.
        color: per-view colour of the surface seen at each pixel.
        c2w, K: the views' cameras in the library's convention.
        bound: half-size of the fused cube.
        resolution: voxels per side (voxel size ``2 * bound / resolution``).
        trunc_voxels: TSDF truncation distance, in voxels.
    """
    o3d = import_open3d()
    integration = o3d.pipelines.integration
    length = 2.0 * bound
    volume = integration.UniformTSDFVolume(
        length=length,
        resolution=resolution,
        sdf_trunc=trunc_voxels * length / resolution,
        color_type=integration.TSDFVolumeColorType.RGB8,
        origin=np.full((3, 1), -bound, dtype=np.float64),
    )
    height, width = depth.shape[-2:]
    w2c = invert_rigid(c2w.double()).cpu().numpy()
    depth_np = depth.detach().float().cpu().numpy()
    color_np = (color.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    for v in range(depth_np.shape[0]):
        k = K[v].detach().double().cpu().numpy()
        # open3d puts pixel centres at integer coordinates; ours are at j + 0.5.
        intrinsic = o3d.camera.PinholeCameraIntrinsic(width, height, k[0, 0], k[1, 1], k[0, 2] - 0.5, k[1, 2] - 0.5)
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(color_np[v])),
            o3d.geometry.Image(np.ascontiguousarray(depth_np[v])),
            depth_scale=1.0,
            depth_trunc=float(depth_np[v].max()) + 1.0,
            convert_rgb_to_intensity=False,
        )
        volume.integrate(rgbd, intrinsic, w2c[v])
    mesh = volume.extract_triangle_mesh()
    return ColoredMesh(
        vertices=np.asarray(mesh.vertices, dtype=np.float32),
        faces=np.asarray(mesh.triangles, dtype=np.int64),
        colors=np.asarray(mesh.vertex_colors, dtype=np.float32),
    )


def write_mesh(path: str | os.PathLike, mesh: ColoredMesh, fmt: str | None = None) -> Path:
    """Write a vertex-coloured mesh as GLB, OBJ or PLY (``fmt``, else the suffix), atomically."""
    import trimesh

    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in ("glb", "obj", "ply"):
        raise ValueError(f"{path}: unsupported mesh format {fmt!r}; use .glb, .obj or .ply")
    rgba = np.concatenate([mesh.colors, np.ones_like(mesh.colors[:, :1])], axis=1)
    tri = trimesh.Trimesh(
        vertices=mesh.vertices,
        faces=mesh.faces,
        vertex_colors=(rgba * 255 + 0.5).clip(0, 255).astype(np.uint8),
        process=False,
    )
    with atomic_path(path) as tmp:
        tri.export(str(tmp), file_type=fmt)
    return path


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def write_textured_mesh(path: str | os.PathLike, mesh: TexturedMesh, fmt: str | None = None) -> list[Path]:
    """Write a textured mesh as GLB (texture embedded) or OBJ + MTL + PNG (``fmt``, else the suffix).

    The OBJ's material and texture are ``<stem>.mtl`` and ``<stem>.png`` beside it (characters
    other than letters, digits, ``.``, ``_`` and ``-`` in the stem become ``_``). The material is
    white (``Kd 1 1 1``, glTF base colour 1, metallic 0, roughness 1), so viewers show the texture's
    colours. Every file is written to a temporary name first and renamed.

    Returns:
        The written files, the mesh first.
    """
    import trimesh
    from PIL import Image
    from trimesh.exchange.obj import export_obj

    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in ("glb", "obj"):
        raise ValueError(f"{path}: unsupported textured mesh format {fmt!r}; use .glb or .obj")
    assert mesh.texture.dtype == np.uint8 and mesh.texture.ndim == 3, (mesh.texture.dtype, mesh.texture.shape)
    image = Image.fromarray(mesh.texture, mode="RGB")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem) or "mesh"
    if fmt == "glb":
        material = trimesh.visual.material.PBRMaterial(
            name=name, baseColorTexture=image, baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0, roughnessFactor=1.0
        )
    else:
        white = [255, 255, 255, 255]
        material = trimesh.visual.material.SimpleMaterial(name=name, image=image, diffuse=white, ambient=white, specular=[0, 0, 0, 255])
    tri = trimesh.Trimesh(
        vertices=mesh.vertices, faces=mesh.faces, visual=trimesh.visual.TextureVisuals(uv=mesh.uv, material=material), process=False
    )
    if fmt == "glb":
        _write_bytes(path, tri.export(file_type="glb"))
        return [path]
    text, files = export_obj(tri, include_normals=False, return_texture=True, mtl_name=f"{name}.mtl")
    # the side files first, so that a mesh on disk always has its material and texture
    written: list[Path] = []
    try:
        for file_name, data in files.items():
            side = path.parent / file_name
            assert side.parent == path.parent, side  # names come from our own material, never from input files
            _write_bytes(side, data)
            written.append(side)
        _write_bytes(path, text.encode())
    except BaseException:
        for side in written:  # no material without its mesh
            side.unlink(missing_ok=True)
        raise
    return [path] + written
