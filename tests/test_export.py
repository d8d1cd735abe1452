"""`ouro export`: splats of a known sphere become a mesh of the right size and colours."""

import math

import numpy as np
import pytest
import torch
import trimesh
from typer.testing import CliRunner

from ouro.cli.main import app
from ouro.gaussians import Gaussians
from ouro.gaussians.ply import read_ply_arrays, write_ply
from ouro.pipelines.export import MeshSettings, export

RED, BLUE = (0.9, 0.1, 0.1), (0.1, 0.2, 0.9)
FAST = MeshSettings(image_size=96, views_per_ring=8, voxels=128)


def sphere_gaussians(n=6000, radius=0.5, sigma=0.012):
    """Gaussians on a sphere (Fibonacci lattice): red on the upper half (y > 0), blue below."""
    k = torch.arange(n, dtype=torch.float64) + 0.5
    y = 1 - 2 * k / n
    r = (1 - y * y).sqrt()
    phi = math.pi * (3 - math.sqrt(5)) * k
    means = radius * torch.stack([r * phi.cos(), y, r * phi.sin()], dim=-1)
    colors = torch.where((means[:, 1] > 0)[:, None], torch.tensor(RED, dtype=torch.float64), torch.tensor(BLUE, dtype=torch.float64))
    return Gaussians(
        means=means.float(),
        scales=torch.full((n, 3), sigma),
        rotations=torch.tensor([1.0, 0, 0, 0]).expand(n, 4).clone(),
        opacities=torch.full((n,), 0.9),
        colors=colors.float(),
    )


@pytest.fixture(scope="module")
def sphere_ply(tmp_path_factory):
    path = tmp_path_factory.mktemp("sphere") / "gaussians.ply"
    write_ply(path, sphere_gaussians())
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["glb", "obj"])
def test_sphere_splats_become_a_sphere_mesh(sphere_ply, tmp_path, fmt):
    out = export(sphere_ply, tmp_path / f"mesh.{fmt}", settings=FAST)
    mesh = trimesh.load(out, force="mesh", process=False)
    assert len(mesh.faces) > 1000
    lo, hi = mesh.bounds
    # bounding box of a radius-0.5 sphere: [-0.5, 0.5]^3, within 5 %
    np.testing.assert_allclose(hi - lo, [1.0, 1.0, 1.0], rtol=0.05)
    np.testing.assert_allclose((hi + lo) / 2, [0, 0, 0], atol=0.025)
    # vertices lie on the sphere
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(np.median(radii) - 0.5) < 0.02
    # vertex colours are the splats' colours: red above the equator, blue below (away from the seam)
    colors = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
    y = mesh.vertices[:, 1]
    upper, lower = y > 0.1, y < -0.1
    assert np.abs(colors[upper] - RED).mean() < 0.06
    assert np.abs(colors[lower] - BLUE).mean() < 0.06


def test_ply_export_prunes_and_keeps_the_layout(sphere_ply, tmp_path):
    out = export(sphere_ply, tmp_path / "clean.ply")
    src, dst = read_ply_arrays(sphere_ply), read_ply_arrays(out)
    for name in src:
        assert np.array_equal(src[name], dst[name])


def test_cli_export_and_its_errors(sphere_ply, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(sphere_ply), "-o", str(tmp_path / "copy.ply")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "copy.ply").exists()
    # missing input
    result = runner.invoke(app, ["export", str(tmp_path / "nope.ply"), "-o", str(tmp_path / "m.glb")])
    assert result.exit_code == 2 and "nope.ply" in result.output
    # not a 3DGS PLY
    bad = tmp_path / "bad.ply"
    bad.write_text("hello")
    result = runner.invoke(app, ["export", str(bad), "-o", str(tmp_path / "m.glb")])
    assert result.exit_code == 2 and "bad.ply" in result.output
    # suffix and --format disagree
    result = runner.invoke(app, ["export", str(sphere_ply), "-o", str(tmp_path / "m.glb"), "--format", "obj"])
    assert result.exit_code == 2 and "--format" in result.output
    assert not (tmp_path / "m.glb").exists() and not (tmp_path / "m.obj").exists()
