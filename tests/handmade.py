"""Hand-written data folders in the real layouts, for tests that need no renderer.

* :func:`render_folder_object`: one object of an ``ouro render`` folder (``meta.json`` + RGBA PNG
  orbits at elevation ``elevation``, cameras from :func:`ouro.geometry.orbit_cameras` stored as
  Blender ``transform_matrix`` as the renderer stores them), read by ``ouro train`` and ``ouro filter``.
* :func:`gt_object`: the same at ``eval-gso``'s evaluation cameras (one orbit of 16 frames at
  elevation 0, the public radius), i.e. a cached ground-truth render.
* :func:`object_frame`: the picture of every frame: a textured disc on a transparent background.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ouro.conventions import OFFICIAL_FOV_DEG, OFFICIAL_RADIUS
from ouro.geometry.cameras import orbit_cameras, ours_to_blender


def object_frame(size: int, shift: int = 0) -> np.ndarray:
    """``[size, size, 4]`` uint8 RGBA: a textured disc (radius 0.3 size) moved right by ``shift`` px."""
    ys, xs = np.mgrid[0:size, 0:size]
    inside = (ys + 0.5 - size / 2) ** 2 + (xs + 0.5 - size / 2 - shift) ** 2 < (0.3 * size) ** 2
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., 0] = (xs * 255 // size).astype(np.uint8)
    rgba[..., 1] = (ys * 255 // size).astype(np.uint8)
    rgba[..., 2] = 90
    rgba[..., 3] = inside * 255
    return rgba


def render_folder_object(root: Path, uid: str, size: int = 64, orbits: int = 1, frames: int = 16,
                         elevation: float = 10.0, radius: float = OFFICIAL_RADIUS) -> Path:
    """``<root>/<uid>/`` as ``ouro render`` writes it: meta.json and ``<orbit>/<frame>.png``."""
    folder = root / uid
    locations = []
    for o in range(orbits):
        c2w = ours_to_blender(orbit_cameras(frames, elevation, 0.0, radius, dtype=torch.float64))
        (folder / f"{o:03d}").mkdir(parents=True, exist_ok=True)
        for f in range(frames):
            name = f"{o:03d}/{f:03d}.png"
            Image.fromarray(object_frame(size, shift=f % 3), "RGBA").save(folder / name)
            locations.append({"index": f"{o:03d}_{f:03d}", "orbit": o, "frame": f, "elevation": elevation,
                              "azimuth": 360.0 * f / frames, "transform_matrix": c2w[f].tolist(), "frames": [{"name": name}]})
    meta = {
        "camera_angle_x": float(np.deg2rad(OFFICIAL_FOV_DEG)), "locations": locations, "format": "ouro-render/1",
        "uid": uid, "source": {"kind": "file", "sha256": f"{uid:0>64}"[-64:], "annotations": None},
        "resolution": size, "fov_deg": OFFICIAL_FOV_DEG, "radius": radius, "frames_per_orbit": frames,
        "orbits": [{"index": o, "elevation": elevation} for o in range(orbits)],
        "normalization": {"mode": "diagonal", "scale": 1.0, "offset": [0.0, 0.0, 0.0], "up_axis": "y"},
        "mesh": {"faces": 1000, "vertices": 600, "animated": False, "image_textures": 1, "missing_textures": 0,
                 "vertex_colors": False, "base_colors": 1},
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def gt_object(gt_dir: Path, name: str, size: int) -> Path:
    """A cached ``eval-gso`` ground truth of ``name`` in ``gt_dir`` (one orbit, 16 frames, elevation 0)."""
    return render_folder_object(gt_dir, name, size=size, orbits=1, frames=16, elevation=0.0)


def gt_view(gt_dir: Path, name: str, k: int) -> np.ndarray:
    """Evaluation view ``k`` (of 8) of a :func:`gt_object` as 8-bit RGB on white ``[H, W, 3]``."""
    frame = (0, 2, 4, 6, 8, 10, 12, 15)[k]
    rgba = np.asarray(Image.open(gt_dir / name / f"000/{frame:03d}.png")).astype(np.float64) / 255
    return np.round((rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]) * 255).astype(np.uint8)


def big_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit black PNG of ``width x height`` (a few kB on disk even at 15000 x 15000)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])  # 1 bit, grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path
