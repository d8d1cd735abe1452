"""3DGS PLY: exact round trip, standard header, pruning, clear errors."""

import os

import numpy as np
import pytest
import torch

from ouro.gaussians.gaussians import LAYOUT, Gaussians
from ouro.gaussians.ply import SH_C0, gaussians_to_ply_arrays, read_ply, read_ply_arrays, write_ply

STANDARD = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def random_gaussians(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Gaussians.from_raw(torch.randn(n, 14, generator=g))


def test_write_then_read_is_exact(tmp_path):
    gs = random_gaussians()
    path = tmp_path / "g.ply"
    n = write_ply(path, gs, prune_opacity=None)
    assert n == 500
    stored = read_ply_arrays(path)
    expected = gaussians_to_ply_arrays(gs)
    for name in STANDARD:
        assert np.array_equal(stored[name], expected[name]), name
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the user's umask, not a temp file's 0600
    # reading and writing again gives the same bytes
    again = tmp_path / "again.ply"
    write_ply(again, read_ply(path, dtype=torch.float64), prune_opacity=None)
    assert again.read_bytes() == path.read_bytes()
    # activated values come back to float32 precision
    back = read_ply(path)
    for name in ("means", "scales", "rotations", "opacities", "colors"):
        torch.testing.assert_close(getattr(back, name), getattr(gs, name), rtol=2e-6, atol=2e-6)


def test_header_has_the_standard_property_names(tmp_path):
    path = tmp_path / "g.ply"
    write_ply(path, random_gaussians(10), prune_opacity=None)
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert "format binary_little_endian 1.0" in header
    assert "element vertex 10" in header
    assert [line.split()[-1] for line in header.splitlines() if line.startswith("property")] == STANDARD
    assert all(line.split()[1] == "float" for line in header.splitlines() if line.startswith("property"))


def test_pre_activation_values_by_hand(tmp_path):
    gs = Gaussians(
        means=torch.tensor([[0.1, -0.2, 0.3]]),
        scales=torch.tensor([[0.01, 0.02, 0.04]]),
        rotations=torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        opacities=torch.tensor([0.5]),
        colors=torch.tensor([[1.0, 0.5, 0.0]]),
    )
    write_ply(tmp_path / "g.ply", gs)
    cols = read_ply_arrays(tmp_path / "g.ply")
    assert cols["opacity"][0] == pytest.approx(0.0, abs=1e-6)
    assert cols["scale_1"][0] == pytest.approx(np.log(0.02), rel=1e-6)
    assert cols["f_dc_0"][0] == pytest.approx(0.5 / SH_C0, rel=1e-6)
    assert cols["f_dc_2"][0] == pytest.approx(-0.5 / SH_C0, rel=1e-6)


def test_low_opacity_gaussians_are_pruned(tmp_path):
    gs = random_gaussians(200)
    gs.opacities[:50] = 0.001
    assert write_ply(tmp_path / "g.ply", gs) == 150
    assert len(read_ply_arrays(tmp_path / "g.ply")["x"]) == 150


def test_pruning_keeps_the_opacity_at_the_threshold(tmp_path):
    # LGM's save_ply (core/gs.py) keeps `opacity >= 0.005`: a Gaussian exactly at the threshold stays.
    gs = random_gaussians(3)
    gs.opacities[:] = torch.tensor([0.005, 0.0049, 0.0051])
    assert write_ply(tmp_path / "g.ply", gs) == 2
    assert read_ply_arrays(tmp_path / "g.ply")["x"].tolist() == pytest.approx(gs.means[[0, 2], 0].tolist())


def test_fully_opaque_and_fully_transparent_gaussians_get_finite_logits(tmp_path):
    # opacity 1 and 0 would be logits +-inf, which viewers turn into NaN; they are clamped to
    # [1e-7, 1 - 1e-7] first: logit = +-ln((1 - 1e-7) / 1e-7) = +-16.118095...
    gs = random_gaussians(2)
    gs.opacities[:] = torch.tensor([1.0, 0.0])
    write_ply(tmp_path / "g.ply", gs, prune_opacity=None)
    logit = float(np.log((1 - 1e-7) / 1e-7))
    assert read_ply_arrays(tmp_path / "g.ply")["opacity"].tolist() == pytest.approx([logit, -logit], rel=1e-6)


def test_bad_files_are_refused_with_the_file_name(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply at all")
    with pytest.raises(ValueError, match="bad.ply"):
        read_ply(bad)
    from plyfile import PlyData, PlyElement

    pts = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(pts, "vertex")]).write(str(tmp_path / "points.ply"))
    with pytest.raises(ValueError, match=r"points.ply: missing 3DGS properties \['f_dc_0'"):
        read_ply(tmp_path / "points.ply")


def test_no_partial_file_when_writing_fails(tmp_path, monkeypatch):
    with pytest.raises(AssertionError):
        write_ply(tmp_path / "g.ply", Gaussians.from_raw(torch.randn(2, 5, 14)))  # batched: refused
    import plyfile

    def disk_full(self, stream):
        stream.write(b"ply\n")
        raise OSError("No space left on device")

    monkeypatch.setattr(plyfile.PlyData, "write", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_ply(tmp_path / "g.ply", random_gaussians(5))
    assert list(tmp_path.iterdir()) == []


def test_one_object_of_a_batch_is_its_own_gaussians():
    """`Gaussians.batch_item` (what `ouro sample` writes from G's batch of one): element b of a
    `[B, N, ...]` container equals the Gaussians activated from that object's raw output alone."""
    raw = torch.randn(3, 50, 14, generator=torch.Generator().manual_seed(1))
    batch = Gaussians.from_raw(raw)
    one = batch.batch_item(1)
    assert one.batch_shape == () and one.num_gaussians == 50
    assert torch.equal(one.to_tensor(), Gaussians.from_raw(raw[1]).to_tensor())


def test_official_activation_normalises_rotations_over_the_gaussians():
    """LGM's F.normalize on [B, N, 4] with its default dim=1 divides each quaternion component by its norm
    over the N Gaussians (docs/OFFICIAL.md 9.9); ours normalises each quaternion."""
    raw = torch.zeros(1, 2, 14)
    raw[0, :, LAYOUT.rotations] = torch.tensor([[3.0, 4.0, 0.0, 0.0], [4.0, 0.0, 0.0, 2.0]])
    official = Gaussians.from_raw(raw, "official").rotations[0]
    torch.testing.assert_close(official, torch.tensor([[0.6, 1.0, 0.0, 0.0], [0.8, 0.0, 0.0, 1.0]]))
    default = Gaussians.from_raw(raw).rotations[0]
    torch.testing.assert_close(default, torch.tensor([[0.6, 0.8, 0.0, 0.0], [4 / 20**0.5, 0.0, 0.0, 2 / 20**0.5]]))


def test_lgm_layout_and_activations_by_hand():
    """LGM's 14 channels (core/gs.py slices them as xyz 0:3, opacity 3:4, scale 4:7, rotation 7:11, rgb 11:14)
    and its activations: xyz clamped to [-1, 1], sigmoid opacity, 0.1 softplus scale, 0.5 tanh + 0.5 colour."""
    assert (LAYOUT.means, LAYOUT.opacities, LAYOUT.scales, LAYOUT.rotations, LAYOUT.colors, LAYOUT.channels) == (
        slice(0, 3), slice(3, 4), slice(4, 7), slice(7, 11), slice(11, 14), 14)
    raw = torch.tensor([[-1.5, 0.25, 2.0, 0.0, 0.0, 1.0, -1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0, -1.0]])
    g = Gaussians.from_raw(raw)
    softplus = lambda x: float(np.log1p(np.exp(x)))  # noqa: E731
    torch.testing.assert_close(g.means, torch.tensor([[-1.0, 0.25, 1.0]]))
    torch.testing.assert_close(g.opacities, torch.tensor([0.5]))
    torch.testing.assert_close(g.scales, 0.1 * torch.tensor([[softplus(0.0), softplus(1.0), softplus(-1.0)]]))
    torch.testing.assert_close(g.rotations, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    t = float(np.tanh(1.0))
    torch.testing.assert_close(g.colors, torch.tensor([[0.5, 0.5 + 0.5 * t, 0.5 - 0.5 * t]]))
    # packed back in the same channel order, also with batch dims
    packed = g.to_tensor()
    torch.testing.assert_close(packed[0, [0, 3, 4, 7, 11]], torch.tensor([-1.0, 0.5, 0.1 * softplus(0.0), 1.0, 0.5]))
    batched = Gaussians.from_raw(raw.expand(2, 3, 14))
    assert batched.to_tensor().shape == (2, 3, 14)
    torch.testing.assert_close(batched.to_tensor()[1, 2], packed[0])
    torch.testing.assert_close(Gaussians.from_tensor(batched.to_tensor()).opacities, torch.full((2, 3), 0.5))


def test_rotate_turns_centres_and_covariances_and_keeps_the_rest():
    """`rotate` (the viewer-frame converter of `ouro app`): centres to R x, covariances to R C R^T."""
    from ouro.gaussians import covariances, quaternion_to_matrix, rotate

    gs = random_gaussians(n=64, seed=3).to(torch.float64)
    gs.rotations = torch.nn.functional.normalize(gs.rotations, dim=-1)  # unit in float64, so R(q r) = R(q) R(r) exactly
    q = torch.nn.functional.normalize(torch.tensor([0.3, -0.5, 0.8, 0.1], dtype=torch.float64), dim=0)
    R = quaternion_to_matrix(q)
    turned = rotate(gs, q)
    torch.testing.assert_close(turned.means, gs.means @ R.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(covariances(turned), R @ covariances(gs) @ R.T, rtol=0, atol=1e-12)
    assert torch.equal(turned.scales, gs.scales) and torch.equal(turned.colors, gs.colors) and torch.equal(turned.opacities, gs.opacities)
    # half a turn about x (the y-down viewer frame): (x, y, z) -> (x, -y, -z); twice is the identity
    flip = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(rotate(gs, flip).means, gs.means * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(covariances(rotate(rotate(gs, flip), flip)), covariances(gs), rtol=0, atol=1e-12)


def test_colours_read_from_a_3dgs_file_use_the_sh_band0_constant(tmp_path):
    """A PLY as 3DGS training writes it (plyfile, not our writer): colour = 0.5 + C0 f_dc with the real
    spherical-harmonics constant C0 = 1 / (2 sqrt(pi)), so other viewers and ours agree on colours."""
    from plyfile import PlyData, PlyElement

    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    row = (0.0, 0.0, 0.0, 1.0, -1.0, 0.25, 0.0, -3.0, -3.0, -3.0, 1.0, 0.0, 0.0, 0.0)
    data = np.array([row], dtype=[(n, "f4") for n in names])
    PlyData([PlyElement.describe(data, "vertex")]).write(str(tmp_path / "3dgs.ply"))
    c0 = 1.0 / (2.0 * np.sqrt(np.pi))
    colours = read_ply(tmp_path / "3dgs.ply").colors[0].double()
    torch.testing.assert_close(colours, torch.tensor([0.5 + c0, 0.5 - c0, 0.5 + 0.25 * c0], dtype=torch.float64), rtol=0, atol=1e-7)
    # and our writer stores f_dc = (colour - 0.5) / C0
    write_ply(tmp_path / "ours.ply", Gaussians(torch.zeros(1, 3), torch.full((1, 3), 0.05), torch.tensor([[1.0, 0, 0, 0]]),
                                               torch.tensor([0.5]), torch.tensor([[0.5 + c0, 0.5, 0.75]])))
    cols = read_ply_arrays(tmp_path / "ours.ply")
    assert abs(cols["f_dc_0"][0] - 1.0) < 1e-6 and abs(cols["f_dc_2"][0] - 0.25 / c0) < 1e-5
