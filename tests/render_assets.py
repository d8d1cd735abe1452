"""Test assets for `ouro render` / `ouro filter`: real textured meshes and small generated ones.

Real objects come from Debian's ``sweethome3d-furniture`` (CC0 models by BlendSwap authors):
the installed package if present, else the .deb fetched with ``apt-get download`` and unpacked
with ``dpkg-deb -x`` into a cache folder (``$OURO_TEST_CACHE``, else ``<ouro cache>/test-data``).
Tests skip only when apt itself is missing. The rendered main fixture is computed once per session
and shared by test_render.py and test_filter.py.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ouro.data import furniture
from ouro.paths import cache_dir

LIBRARY = furniture.CATALOGUE_DIR / "BlendSwap-CC-0.sh3f"
#: (folder in the .sh3f, files) of the real models the tests render.
MODELS = {
    "basketball": ("basketball.obj", "basketball.mtl", "Basketball-ColorMap.jpg"),
    "chicken": ("chicken.obj", "chicken.mtl", "chicken.jpg"),
    "rock1": ("rock1.obj", "rock1.mtl", "rock01.jpg"),
}
CACHED_UID = "0123456789abcdef0123456789abcdef"
UNCACHED_UID = "fedcba9876543210fedcba9876543210"
_MEMO: dict = {}


def assets_cache() -> Path:
    return Path(os.environ["OURO_TEST_CACHE"]) if os.environ.get("OURO_TEST_CACHE") else cache_dir() / "test-data"


def furniture_library() -> Path:
    """The BlendSwap-CC-0 .sh3f of sweethome3d-furniture, fetching a private copy if needed."""
    try:
        found = furniture.catalogues(assets_cache() / furniture.PACKAGE)
    except furniture.FetchToolsMissing as exc:
        pytest.skip(str(exc))
    library = next((c for c in found if c.name == LIBRARY.name), None)
    assert library is not None, f"no {LIBRARY.name} among {[c.name for c in found]}"
    return library


def furniture_models(dest: Path) -> dict[str, Path]:
    """Extract the test models: ``{name: folder with <name>.obj, .mtl and texture}``."""
    library = furniture_library()
    out = {}
    with zipfile.ZipFile(library) as archive:
        for name, files in MODELS.items():
            folder = dest / name
            folder.mkdir(parents=True, exist_ok=True)
            for file in files:  # explicit member names: no path from the archive is trusted
                (folder / file).write_bytes(archive.read(f"blendswap-cc-0/{name}/{file}"))
            out[name] = folder
    return out


def _to_z_up(line: str) -> str:
    """A +y-up OBJ ``v``/``vn`` line in GSO's +z-up frame: ``(x, y, z) -> (x, -z, y)``."""
    if not line.startswith(("v ", "vn ")):
        return line
    head, x, y, z, *rest = line.split()
    return " ".join([head, x, repr(-float(z)), y, *rest])


def make_gso_folder(model: Path, dest: Path, up: str = "z") -> Path:
    """A Google-Scanned-Objects-layout folder from a one-texture OBJ model, +z up as GSO ships it
    (``up="y"``: the model's own +y up, as ``benchmarks/demo_model.py gso-layout`` writes them).

    ``meshes/model.obj`` + ``meshes/model.mtl`` (``map_Kd texture.png``) and the texture at
    ``materials/textures/texture.png``, as GSO ships them (the .mtl names a file that is not
    next to it).
    """
    import cv2

    obj = next(model.glob("*.obj"))
    mtl = next(model.glob("*.mtl"))
    texture = next(p for p in model.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    (dest / "meshes").mkdir(parents=True)
    (dest / "materials" / "textures").mkdir(parents=True)
    lines = [_to_z_up(line) if up == "z" else line for line in obj.read_text().splitlines()]
    (dest / "meshes" / "model.obj").write_text(
        "\n".join("mtllib model.mtl" if line.startswith("mtllib") else line for line in lines) + "\n")
    lines = mtl.read_text().splitlines()
    (dest / "meshes" / "model.mtl").write_text(
        "\n".join("map_Kd texture.png" if line.startswith("map_Kd") else line for line in lines) + "\n")
    cv2.imwrite(str(dest / "materials" / "textures" / "texture.png"), cv2.imread(str(texture)))
    (dest / "model.config").write_text("<?xml version='1.0'?><model><name>rock</name></model>\n")
    return dest


def vertex_colored_box(path: Path) -> Path:
    """A 1.0 x 0.6 x 0.4 box GLB with COLOR_0 (no material): red where x > 0, dark where x < 0."""
    import trimesh

    box = trimesh.creation.box((1.0, 0.6, 0.4))
    mesh = trimesh.Trimesh(box.vertices, box.faces, process=False)
    colors = np.zeros((len(mesh.vertices), 4), np.uint8)
    colors[:, 0] = np.where(mesh.vertices[:, 0] > 0, 230, 20)
    colors[:, 1] = 60
    colors[:, 2] = np.where(mesh.vertices[:, 0] > 0, 30, 200)
    colors[:, 3] = 255
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colors)
    mesh.export(path)
    return path


def plain_box(path: Path) -> Path:
    """An untextured, uncoloured box GLB: the texture-less object ``ouro filter`` must drop."""
    import trimesh

    trimesh.creation.box((0.5, 0.8, 0.6)).export(path)
    return path


def textured_box(path: Path) -> Path:
    """A box GLB with UVs and a checkerboard base-colour texture."""
    import trimesh
    from PIL import Image

    box = trimesh.creation.box((0.7, 0.7, 0.7))
    box.unmerge_vertices()
    normals = np.repeat(box.face_normals, 3, axis=0)
    verts = box.vertices[box.faces.reshape(-1)]
    axis = np.abs(normals).argmax(1)
    uv = np.where(axis[:, None] == 0, verts[:, [1, 2]], np.where(axis[:, None] == 1, verts[:, [0, 2]], verts[:, [0, 1]]))
    uv = uv / 0.7 + 0.5
    checker = ((np.indices((64, 64)).sum(0) // 8) % 2).astype(np.uint8)
    image = np.stack([checker * 200 + 30, 80 + checker * 100, 220 - checker * 180], -1).astype(np.uint8)
    mesh = trimesh.Trimesh(verts, np.arange(len(verts)).reshape(-1, 3), process=False)
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(image))
    mesh.export(path)
    return path


def fake_objaverse_cache(root: Path, glb: Path) -> Path:
    """An objaverse cache in the package's layout: one cached object, one listed but not cached."""
    versioned = root / "hf-objaverse-v1"
    paths = {CACHED_UID: f"glbs/000-001/{CACHED_UID}.glb", UNCACHED_UID: f"glbs/000-002/{UNCACHED_UID}.glb"}
    (versioned / "glbs" / "000-001").mkdir(parents=True)
    shutil.copy(glb, versioned / paths[CACHED_UID])
    with gzip.open(versioned / "object-paths.json.gz", "wt") as f:
        json.dump(paths, f)
    (versioned / "metadata").mkdir()
    with gzip.open(versioned / "metadata" / "000-001.json.gz", "wt") as f:
        json.dump({CACHED_UID: {"uid": CACHED_UID, "name": "checker box", "license": "cc0", "faceCount": 12,
                                "animationCount": 0, "archives": {"glb": {"textureCount": 1, "faceCount": 12}}}}, f)
    return versioned


def main_render(tmp_path_factory) -> dict:
    """Render the shared test set once per session with ``ouro render`` (workbench, 128 px, depth).

    Inputs: two furniture OBJs, a GSO folder, a vertex-coloured GLB, a plain box GLB, a corrupt
    GLB, a missing file and an ids file (a cached uid as an LGM CSV row, an uncached uid, a bad line).
    """
    if "main" in _MEMO:
        return _MEMO["main"]
    from typer.testing import CliRunner

    from ouro.cli.main import app

    root = tmp_path_factory.mktemp("render")
    models = furniture_models(root / "furniture")
    gso = make_gso_folder(models["rock1"], root / "gso" / "rock1")
    glbs = root / "glb"
    glbs.mkdir()
    vc = vertex_colored_box(glbs / "vc_box.glb")
    plain = plain_box(glbs / "plain_box.glb")
    corrupt = glbs / "corrupt.glb"
    corrupt.write_bytes(b"glTF\x02\x00\x00\x00" + bytes(40))
    objaverse = fake_objaverse_cache(root / "objaverse", textured_box(root / "checker.glb"))
    ids = root / "ids.csv"
    ids.write_text(f"000-001,{CACHED_UID}\n{UNCACHED_UID}\nnot-a-uid\n")
    inputs = [models["basketball"] / "basketball.obj", models["chicken"] / "chicken.obj", gso, vc, plain, corrupt,
              root / "missing.glb"]
    out = root / "out"
    args = ["render", *map(str, inputs), "--objaverse-ids", str(ids), "-o", str(out), "--engine", "workbench",
            "--resolution", "128", "--workers", "2", "--depth", "--seed", "7", "--objaverse-dir", str(objaverse),
            "--no-download"]
    result = CliRunner().invoke(app, args)
    _MEMO["main"] = {"out": out, "args": args, "result": result, "inputs": inputs, "ids": ids, "root": root,
                     "objaverse": objaverse, "models": models}
    return _MEMO["main"]
