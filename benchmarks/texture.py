"""Textured vs vertex-coloured mesh export: how close are the meshes' renders to the splats'?

Two subcommands::

    # splats of a real textured model: Gaussians sampled on its surface, coloured from its texture
    python benchmarks/texture.py splats MODEL.obj -o chair.ply --gaussians 65536

    # for each 3DGS PLY: export a textured mesh and a vertex-coloured one at the same face budget,
    # render both and the splats at 8 cameras not used for baking, score PSNR / LPIPS, time each
    python benchmarks/texture.py run chair.ply sofa.ply --faces 50000 --texture 1024 -o results/

``run`` prints one table row per object and mode, writes the meshes, the renders and a comparison
figure (splats | vertex colours | texture, 3 of the 8 cameras) per object into ``-o``.

Meshes are drawn with :func:`ouro.geometry.triangles.render_mesh` (our torch rasterizer, unlit,
2x supersampled, trilinear mip-mapping): pyrender needs EGL or OSMesa and open3d's offscreen
renderer EGL, neither of which a headless CPU machine has without extra system packages.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

#: The held-out cameras: azimuths 7.5 + 45 k deg (never a fusion/bake azimuth, which are multiples
#: of 15 deg), elevations alternating 0 and 30 deg (the bake rings are at -50, -15, 15, 50).
EVAL_AZIMUTHS = [7.5 + 45.0 * k for k in range(8)]
EVAL_ELEVATIONS = [0.0, 30.0] * 4


def quaternions_from_normals(normals: np.ndarray) -> np.ndarray:  # [N, 3] -> [N, 4] wxyz
    """Rotations whose local z axis is the given unit normal (the flat axis of a surface splat)."""
    from scipy.spatial.transform import Rotation

    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    t1 = np.cross(normals, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(normals, t1)
    xyzw = Rotation.from_matrix(np.stack([t1, t2, normals], axis=-1)).as_quat()
    return np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)


def surface_splats(obj: Path, count: int, seed: int = 0):
    """Gaussians on a textured model's surface: flat discs, coloured by its texture, unit box at the origin."""
    import trimesh

    from ouro.gaussians import Gaussians

    scene = trimesh.load(obj, force="scene")
    meshes = [m for m in scene.dump() if isinstance(m, trimesh.Trimesh) and len(m.faces)]
    areas = np.array([m.area for m in meshes])
    counts = np.random.default_rng(seed).multinomial(count, areas / areas.sum())
    points, normals, colors = [], [], []
    for i, (mesh, n) in enumerate(zip(meshes, counts)):
        if n == 0:
            continue
        material = getattr(mesh.visual, "material", None)
        textured = getattr(mesh.visual, "uv", None) is not None and getattr(material, "image", None) is not None
        p, face, *c = trimesh.sample.sample_surface(mesh, int(n), sample_color=textured, seed=seed + i)
        c = c[0] if c and c[0] is not None else None
        if c is None:  # an untextured part: its material's diffuse colour, else grey
            diffuse = getattr(material, "main_color", None)
            c = np.tile(np.asarray(diffuse if diffuse is not None else [180, 180, 180, 255])[:3], (int(n), 1))
        points.append(p)
        normals.append(mesh.face_normals[face])
        colors.append(np.asarray(c)[:, :3] / 255.0)
    points, normals, colors = (np.concatenate(a) for a in (points, normals, colors))
    lo, hi = points.min(0), points.max(0)
    scale = 1.0 / (hi - lo).max()  # largest side 1, centred
    points = (points - (lo + hi) / 2) * scale
    spacing = math.sqrt(areas.sum() * scale**2 / count)  # mean distance between neighbouring samples
    n = len(points)
    return Gaussians(
        means=torch.from_numpy(points).float(),
        scales=torch.tensor([spacing, spacing, 0.1 * spacing]).expand(n, 3).clone().float(),
        rotations=torch.from_numpy(quaternions_from_normals(normals)).float(),
        opacities=torch.full((n,), 0.95),
        colors=torch.from_numpy(colors).float().clamp(0, 1),
    )


def cmd_splats(args) -> None:
    from ouro.gaussians.ply import write_ply

    g = surface_splats(args.obj, args.gaussians, args.seed)
    kept = write_ply(args.output, g)
    print(f"wrote {args.output}: {kept} Gaussians")


def eval_cameras(extent: float, fov: float) -> torch.Tensor:  # [8, 4, 4]
    from ouro.geometry.cameras import orbit_cameras

    radius = 1.1 * extent / math.sin(math.radians(fov) / 2)
    return orbit_cameras(8, torch.tensor(EVAL_ELEVATIONS), 0.0, radius, azimuths_deg=EVAL_AZIMUTHS, dtype=torch.float64)


def cmd_run(args) -> None:
    from PIL import Image

    from ouro.gaussians import render
    from ouro.gaussians.ply import read_ply
    from ouro.geometry.cameras import intrinsics_from_fov
    from ouro.geometry.triangles import render_mesh
    from ouro.io.mesh import write_mesh, write_textured_mesh
    from ouro.metrics import LPIPS, psnr
    from ouro.io.mesh_cleanup import clean_mesh
    from ouro.pipelines.export import MeshSettings, TextureSettings, _fuse, gaussians_to_textured_mesh, object_extent

    torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    lpips = LPIPS("alex").eval()
    settings = MeshSettings()
    tex_settings = TextureSettings(size=args.texture, faces=args.faces, view_size=args.bake_resolution)
    size, fov = args.size, settings.fov_deg
    rows = []
    for ply in args.plys:
        name = ply.stem
        g = read_ply(ply)
        extent = object_extent(g)
        c2w = eval_cameras(extent, fov)
        K = intrinsics_from_fov(fov, size, size, dtype=torch.float64).expand(8, 3, 3)
        with torch.no_grad():
            ref = render(g, c2w.float(), K.float(), size, size).rgb  # white background
        renders = {"splats": ref}

        # Both exports start from the same TSDF fusion (MeshSettings defaults), run once and
        # counted in both times; `ouro export` runs it once per command.
        t0 = time.perf_counter()
        fused = _fuse(g, settings)
        t_fuse = time.perf_counter() - t0
        t0 = time.perf_counter()
        colored = clean_mesh(fused, faces=args.faces)[0]
        t_vertex = t_fuse + time.perf_counter() - t0
        write_mesh(args.output / f"{name}_vertex.glb", colored)
        t0 = time.perf_counter()
        textured = gaussians_to_textured_mesh(g, settings, tex_settings, fused=fused)
        t_texture = t_fuse + time.perf_counter() - t0
        write_textured_mesh(args.output / f"{name}_textured.glb", textured)
        print(f"{name}: fusion {t_fuse:.0f} s, vertex colours {t_vertex:.0f} s, texture {t_texture:.0f} s "
              f"(wall; process CPU {time.process_time():.0f} s so far)", flush=True)

        def draw(**kw):
            rgb, _ = render_mesh(**kw, c2w=c2w, K=K, width=size, height=size)
            return rgb

        renders["vertex"] = draw(vertices=torch.from_numpy(colored.vertices), faces=torch.from_numpy(colored.faces),
                                 colors=torch.from_numpy(colored.colors))
        renders["texture"] = draw(vertices=torch.from_numpy(textured.vertices), faces=torch.from_numpy(textured.faces),
                                  uv=torch.from_numpy(textured.uv), texture=torch.from_numpy(textured.texture).float() / 255)
        times = {"vertex": t_vertex, "texture": t_texture}
        faces = {"vertex": len(colored.faces), "texture": len(textured.faces)}
        for mode in ("vertex", "texture"):
            with torch.no_grad():
                p = psnr(renders[mode], ref).mean().item()
                lp = lpips(renders[mode], ref).mean().item()
            rows.append((name, g.num_gaussians, mode, faces[mode], p, lp, times[mode]))
            print(f"| {name} | {g.num_gaussians:,} | {mode} | {faces[mode]:,} | {p:.2f} | {lp:.4f} | {times[mode]:.0f} |", flush=True)
        # figure: splats | vertex | texture at cameras 0, 3, 6
        tiles = []
        for v in (0, 3, 6):
            tiles.append(np.concatenate([renders[m][v].permute(1, 2, 0).clamp(0, 1).numpy() for m in ("splats", "vertex", "texture")], axis=1))
        Image.fromarray((np.concatenate(tiles, axis=0) * 255 + 0.5).astype(np.uint8)).save(args.output / f"{name}_compare.png")
    print("\n| object | Gaussians | colours | faces | PSNR (dB) | LPIPS | export time (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:,} | {r[2]} | {r[3]:,} | {r[4]:.2f} | {r[5]:.4f} | {r[6]:.0f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("splats", help="Gaussians sampled on a textured OBJ's surface")
    p.add_argument("obj", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--gaussians", type=int, default=65536)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("run", help="textured vs vertex-coloured exports, scored against the splats")
    p.add_argument("plys", type=Path, nargs="+")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--faces", type=int, default=50_000)
    p.add_argument("--texture", type=int, default=1024)
    p.add_argument("--bake-resolution", type=int, default=512)
    p.add_argument("--size", type=int, default=512, help="evaluation render size, pixels")
    p.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    {"splats": cmd_splats, "run": cmd_run}[args.command](args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
