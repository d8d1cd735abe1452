"""Textured mesh export: rasterizer, cleanup, UV unwrap, texture baking from splats, padding, files.

The baked object is a sphere of splats whose colour is a known function of the surface direction,
``0.5 + 0.4 * n`` (every channel between 0.1 and 0.9), so a texel's true colour is known wherever
its surface point is.
"""

import math

import numpy as np
import pytest
import torch
import trimesh
from typer.testing import CliRunner

from ouro.cli.main import app
from ouro.gaussians import Gaussians
from ouro.gaussians.ply import write_ply
from ouro.geometry.cameras import intrinsics_from_fov, orbit_cameras
from ouro.geometry.triangles import mip_levels, rasterize_mesh, rasterize_triangles, render_mesh, sample_texture
from ouro.io.mesh import ColoredMesh, TexturedMesh, write_textured_mesh
from ouro.io.mesh_cleanup import clean_mesh, close_holes
from ouro.io.texture import bake_texture, pad_texture, unwrap
from ouro.pipelines.export import MeshSettings, TextureSettings, bake_views, export

RADIUS = 0.5


def true_color(points: np.ndarray) -> np.ndarray:  # [P, 3] -> [P, 3]
    return 0.5 + 0.4 * points / np.linalg.norm(points, axis=-1, keepdims=True)


def gradient_sphere(n=6000, sigma=0.012) -> Gaussians:
    """Flat-ish splats on a sphere of radius 0.5 (Fibonacci lattice), coloured by true_color."""
    k = torch.arange(n, dtype=torch.float64) + 0.5
    y = 1 - 2 * k / n
    r = (1 - y * y).sqrt()
    phi = math.pi * (3 - math.sqrt(5)) * k
    means = RADIUS * torch.stack([r * phi.cos(), y, r * phi.sin()], dim=-1)
    return Gaussians(
        means=means.float(),
        scales=torch.full((n, 3), sigma),
        rotations=torch.tensor([1.0, 0, 0, 0]).expand(n, 4).clone(),
        opacities=torch.full((n,), 0.95),
        colors=torch.from_numpy(true_color(means.numpy())).float(),
    )


def ring_cameras(radius=2.0) -> torch.Tensor:  # [V, 4, 4]
    rings = [orbit_cameras(8, el, 22.5 * i, radius, dtype=torch.float64) for i, el in enumerate((-45.0, 0.0, 45.0))]
    return torch.cat(rings + [orbit_cameras(2, torch.tensor([85.0, -85.0]), 0.0, radius, dtype=torch.float64)])


def radial_hits(vertices, faces, dirs) -> tuple[np.ndarray, np.ndarray]:
    """Face and barycentrics where rays from the origin along ``dirs`` [P, 3] first leave a star-shaped mesh."""
    tri = np.asarray(vertices, np.float64)[faces]  # [F, 3, 3]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(dirs[:, None], e2[None])  # [P, F, 3]
    det = (e1[None] * p).sum(-1)
    s = -tri[None, :, 0]  # ray origin 0 minus corner 0
    u = (s * p).sum(-1) / det
    q = np.cross(s, e1[None])
    v = (dirs[:, None] * q).sum(-1) / det
    t = (e2[None] * q).sum(-1) / det
    hit = (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 0)
    t = np.where(hit, t, np.inf)
    face = t.argmin(axis=1)
    assert np.isfinite(t.min(axis=1)).all()
    rows = np.arange(len(dirs))
    return face, np.stack([1 - u[rows, face] - v[rows, face], u[rows, face], v[rows, face]], axis=-1)


def texel_colors_at(mesh_vertices, mesh_faces, uv, texture, dirs) -> tuple[np.ndarray, np.ndarray]:
    """Texture colours (bilinear, OBJ uv convention) and surface points where rays along ``dirs`` meet the mesh."""
    face, bary = radial_hits(mesh_vertices, mesh_faces, dirs)
    at = (np.asarray(uv, np.float64)[mesh_faces[face]] * bary[..., None]).sum(axis=1)
    points = (np.asarray(mesh_vertices, np.float64)[mesh_faces[face]] * bary[..., None]).sum(axis=1)
    tex = torch.from_numpy(np.asarray(texture, dtype=np.float32) / 255.0)
    return sample_texture(tex, torch.from_numpy(at).float()).numpy(), points


def directions(n=200, seed=0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def baked_sphere():
    """An icosphere UV-unwrapped and baked from 26 renders of the gradient splats (128 px)."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=RADIUS)
    uv_mesh = unwrap(sphere.vertices, sphere.faces, size=128, padding=2)
    g = gradient_sphere()
    fov = 40.0
    views = bake_views(g, ring_cameras(), 128, fov)
    padded, state = bake_texture(uv_mesh, views, 128, depth_tolerance=0.02)
    bare, _ = bake_texture(uv_mesh, views, 128, depth_tolerance=0.02, pad=False)
    return uv_mesh, padded, bare, state


# --- rasterizer ---------------------------------------------------------------------------------


def test_rasterizer_draws_a_sphere_at_its_projected_size_and_depth():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
    c2w = orbit_cameras(1, 20.0, 30.0, 2.0, dtype=torch.float64)[0]
    K = intrinsics_from_fov(40.0, 128, 128, dtype=torch.float64)
    frags = rasterize_mesh(torch.from_numpy(sphere.vertices), torch.from_numpy(sphere.faces), c2w, K, 128, 128)
    # a sphere of radius r at distance d projects to a disc of radius f * tan(asin(r / d))
    disc = math.pi * (K[0, 0].item() * math.tan(math.asin(RADIUS / 2.0))) ** 2
    assert abs(frags.mask.sum().item() / disc - 1) < 0.02  # the icosphere is slightly smaller
    assert abs(frags.depth[frags.mask].min().item() - 1.5) < 1e-3  # nearest point: d - r
    # barycentrics are convex weights
    b = frags.bary[frags.mask]
    assert torch.allclose(b.sum(-1), torch.ones(len(b)), atol=1e-5) and bool((b >= 0).all())


def test_rasterizer_covers_a_square_exactly_once():
    xy = torch.tensor([[[0, 0], [10, 0], [10, 10]], [[0, 0], [10, 10], [0, 10]]], dtype=torch.float64)
    frags = rasterize_triangles(xy, 12, 12)
    assert frags.mask.sum().item() == 100 and not frags.mask[10:].any() and not frags.mask[:, 10:].any()


def test_texture_lookup_and_mips():
    tex = torch.zeros(4, 4, 3)
    tex[:, 2:] = 1.0  # right half white
    uv = torch.tensor([[0.125, 0.875], [0.875, 0.125], [0.5, 0.5]])
    assert torch.allclose(sample_texture(tex, uv)[:, 0], torch.tensor([0.0, 1.0, 0.5]))
    levels = mip_levels(tex)
    assert [t.shape[0] for t in levels] == [4, 2, 1]
    assert torch.allclose(sample_texture(levels, uv, level=2.0)[:, 0], torch.full((3,), 0.5))


# --- cleanup --------------------------------------------------------------------------------------


def test_close_holes_makes_a_cut_sphere_watertight_and_consistently_wound():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    centres = sphere.triangles_center
    keep = ~((centres[:, 1] > 0.93) | (centres[:, 0] > 0.97))  # two caps off
    cut = sphere.faces[keep]
    colors = np.ones_like(sphere.vertices)
    v, _, f, closed = close_holes(sphere.vertices, colors, cut)
    assert closed == 2
    closed_mesh = trimesh.Trimesh(v, f, process=False)
    assert closed_mesh.is_watertight and closed_mesh.is_winding_consistent
    assert closed_mesh.volume > 0.97 * sphere.volume  # outward and close to the sphere
    # a hole over the edge limit stays open
    assert close_holes(sphere.vertices, colors, cut, max_edges=3)[3] == 0


def test_clean_mesh_drops_floaters_and_meets_the_face_budget():
    sphere = trimesh.creation.icosphere(subdivisions=4)  # 5120 faces
    floater = trimesh.creation.icosphere(subdivisions=0, radius=0.01)
    floater.vertices += 3.0
    both = trimesh.util.concatenate([sphere, floater])
    mesh = ColoredMesh(both.vertices.astype(np.float32), both.faces, np.full((len(both.vertices), 3), 0.5, np.float32))
    out, report = clean_mesh(mesh, faces=1000)
    assert report.components_removed == 1 and report.faces_removed == 20
    assert len(out.faces) <= 1000 and report.faces_out == len(out.faces)
    assert np.linalg.norm(out.vertices, axis=1).max() < 1.01  # the floater is gone
    assert np.allclose(out.colors, 0.5, atol=1e-3)


# --- baking ---------------------------------------------------------------------------------------


def test_baked_texels_have_the_true_colours_at_known_surface_points(baked_sphere):
    uv_mesh, texture, _, state = baked_sphere
    got, points = texel_colors_at(uv_mesh.vertices, uv_mesh.faces, uv_mesh.uv, texture, directions())
    err = np.abs(got - true_color(points))
    assert err.mean() < 0.02 and err.max() < 0.08, (err.mean(), err.max())
    # every surface texel is seen by some view (ring + poles cover a sphere)
    assert (state == 2).sum() == 0 and (state == 1).sum() > 0.3 * state.size


def test_padding_leaves_no_background_in_mipmapped_renders(baked_sphere):
    uv_mesh, padded, bare, state = baked_sphere
    assert (bare[state == 0] == 0).all()  # unpadded: gutters keep the background (black)
    assert (padded.reshape(-1, 3).min(axis=1) >= 0.1 * 255 - 2).all()  # padded: every texel a surface colour
    c2w = orbit_cameras(4, 10.0, 30.0, 2.0, dtype=torch.float64)
    K = intrinsics_from_fov(40.0, 48, 48, dtype=torch.float64).expand(4, 3, 3)
    v, f, uv = (torch.from_numpy(a) for a in (uv_mesh.vertices, uv_mesh.faces, uv_mesh.uv))

    def darkest(texture):  # the darkest channel of any pixel fully inside the mesh
        tex = torch.from_numpy(texture.astype(np.float32) / 255.0)
        rgb, alpha = render_mesh(v, f, c2w, K, 48, 48, uv=uv, texture=tex, supersample=1)
        inside = alpha[:, 0] > 0.999
        return rgb.permute(0, 2, 3, 1)[inside].min().item()

    # 48 px views of a 128 texture: mip levels 1-3, whose box filter reaches into the gutters
    assert darkest(padded) > 0.09
    assert darkest(bare) < 0.06  # the same renders without padding show dark seams


def test_pad_texture_fills_from_the_nearest_filled_texel():
    tex = np.zeros((3, 5, 1), np.float32)
    tex[1, 0], tex[1, 4] = 1.0, 2.0
    filled = tex[..., 0] > 0
    out = pad_texture(tex, filled)[..., 0]
    np.testing.assert_array_equal(out[:, :2], 1.0)
    np.testing.assert_array_equal(out[:, 3:], 2.0)


# --- files ----------------------------------------------------------------------------------------


def test_textured_glb_and_obj_load_in_trimesh_with_their_texture(baked_sphere, tmp_path):
    uv_mesh, texture, _, _ = baked_sphere
    mesh = TexturedMesh(uv_mesh.vertices, uv_mesh.faces, uv_mesh.uv, texture)
    dirs = directions(50, seed=1)
    for fmt in ("glb", "obj"):
        written = write_textured_mesh(tmp_path / f"ball.{fmt}", mesh)
        names = sorted(p.name for p in written)
        assert names == (["ball.glb"] if fmt == "glb" else ["ball.mtl", "ball.obj", "ball.png"])
        loaded = trimesh.load(tmp_path / f"ball.{fmt}", force="mesh", process=False)
        material = loaded.visual.material
        image = material.baseColorTexture if fmt == "glb" else material.image
        assert image.size == (128, 128)
        # the loaded uv and image give the true colours: v was flipped consistently on the way out and in
        got, points = texel_colors_at(loaded.vertices, loaded.faces, loaded.visual.uv, np.asarray(image.convert("RGB")), dirs)
        assert np.abs(got - true_color(points)).mean() < 0.02


@pytest.mark.slow
def test_export_bakes_a_textured_mesh_from_splats(tmp_path):
    ply = tmp_path / "ball.ply"
    write_ply(ply, gradient_sphere())
    settings = MeshSettings(image_size=96, views_per_ring=8, voxels=96)
    out = export(ply, tmp_path / "ball.glb", settings=settings, texture=TextureSettings(size=256, faces=3000, view_size=128))
    loaded = trimesh.load(out, force="mesh", process=False)
    assert len(loaded.faces) <= 3000
    assert loaded.visual.material.baseColorTexture.size == (256, 256)
    image = np.asarray(loaded.visual.material.baseColorTexture.convert("RGB"))
    got, points = texel_colors_at(loaded.vertices, loaded.faces, loaded.visual.uv, image, directions())
    err = np.abs(got - true_color(points))
    assert err.mean() < 0.03 and err.max() < 0.1, (err.mean(), err.max())


def test_cli_texture_options_and_errors(tmp_path):
    ply = tmp_path / "ball.ply"
    write_ply(ply, gradient_sphere(n=500))
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(ply), "-o", str(tmp_path / "x.ply"), "--texture", "256"])
    assert result.exit_code == 2 and "--texture" in result.output and not (tmp_path / "x.ply").exists()
    result = runner.invoke(app, ["export", str(ply), "-o", str(tmp_path / "x.glb"), "--texture", "100"])
    assert result.exit_code == 2 and "power of two" in result.output
    result = runner.invoke(app, ["export", "--help"])
    assert "--texture" in result.output and "--faces" in result.output


@pytest.mark.slow
def test_cli_writes_a_textured_obj_with_its_material_and_texture(tmp_path):
    ply = tmp_path / "ball.ply"
    write_ply(ply, gradient_sphere(n=3000, sigma=0.02))
    small = ["--resolution", "64", "--voxels", "64", "--bake-resolution", "96", "--faces", "800"]
    result = CliRunner().invoke(app, ["export", str(ply), "-o", str(tmp_path / "ball.obj"), "--texture", "128", *small])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ball.mtl", "ball.obj", "ball.ply", "ball.png"]
    assert "map_Kd ball.png" in (tmp_path / "ball.mtl").read_text()
    loaded = trimesh.load(tmp_path / "ball.obj", force="mesh", process=False)
    assert len(loaded.faces) <= 800 and loaded.visual.material.image.size == (128, 128)
