"""Plücker rays and canonical coordinate maps against hand-derived values."""

import math

import pytest
import torch

from ouro.geometry import (
    camera_rays,
    coordinate_maps,
    intrinsics_from_fov,
    normalize_intrinsics,
    orbit_cameras,
    plucker_rays,
    unproject_depth,
)


def test_plucker_rays_pass_through_the_camera_centre():
    c2w = orbit_cameras(8, 25.0, 10.0, 1.8, dtype=torch.float64).reshape(2, 4, 4, 4)
    K = intrinsics_from_fov(40.0, dtype=torch.float64).expand(2, 4, 3, 3)
    rays = plucker_rays(c2w, K, 12, 20)
    assert rays.shape == (2, 4, 6, 12, 20)
    moment, d = rays[:, :, :3], rays[:, :, 3:]
    # unit directions, moment orthogonal to direction
    torch.testing.assert_close(d.norm(dim=2), torch.ones(2, 4, 12, 20, dtype=torch.float64))
    assert (moment * d).sum(dim=2).abs().max() < 1e-12
    # the line {p : p x d = m} contains the camera centre C (and any point C + t d)
    centre = c2w[..., :3, 3][..., :, None, None].expand(2, 4, 3, 12, 20)
    for t in (0.0, 0.7, 2.5):
        p = centre + t * d
        torch.testing.assert_close(torch.linalg.cross(p, d, dim=2), moment, atol=1e-12, rtol=0)


def test_plucker_directions_of_the_front_camera_by_hand():
    # Camera at (0, 0, 2) looking down -z: pixel (row i, col j) has direction
    # normalise(((j+0.5)/W - 0.5)/f, -((i+0.5)/H - 0.5)/f, -1) in world coordinates.
    H, W, fov = 6, 8, 50.0
    f = 0.5 / math.tan(math.radians(fov) / 2)
    c2w = orbit_cameras(1, 0.0, 0.0, 2.0, dtype=torch.float64)
    rays = plucker_rays(c2w, intrinsics_from_fov(fov, dtype=torch.float64)[None], H, W)[0]
    for i, j in [(0, 0), (2, 5), (5, 7), (3, 4)]:
        d = torch.tensor([((j + 0.5) / W - 0.5) / f, -((i + 0.5) / H - 0.5) / f, -1.0], dtype=torch.float64)
        d = d / d.norm()
        torch.testing.assert_close(rays[3:, i, j], d, atol=1e-12, rtol=0)
        o = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
        torch.testing.assert_close(rays[:3, i, j], torch.linalg.cross(o, d, dim=0), atol=1e-12, rtol=0)


def test_rays_with_non_square_pixel_intrinsics():
    K_px = torch.tensor([[30.0, 0, 16.0], [0, 30.0, 8.0], [0, 0, 1]], dtype=torch.float64)
    K = normalize_intrinsics(K_px, 32, 16)
    c2w = orbit_cameras(1, 0.0, 0.0, 2.0, dtype=torch.float64)
    _, d = camera_rays(c2w, K[None], 16, 32)
    # the ray through pixel centre (col 31, row 15) has camera direction ((31.5 - 16) / 30, (15.5 - 8) / 30, 1)
    cam = torch.tensor([15.5 / 30, 7.5 / 30, 1.0], dtype=torch.float64)
    world = torch.tensor([cam[0], -cam[1], -cam[2]]) / cam.norm()
    torch.testing.assert_close(d[0, 15, 31], world, atol=1e-12, rtol=0)


def test_rays_with_an_off_centre_principal_point():
    # Normalised K with fx = 1, fy = 2, cx = 0.25, cy = 0.75 (cx != cy, so swapping them shows). Pixel (row 0,
    # col 3) of a 2x4 image sits at (u, v) = (3.5 / 4, 0.5 / 2) = (0.875, 0.25): camera direction
    # ((0.875 - 0.25) / 1, (0.25 - 0.75) / 2, 1) = (0.625, -0.25, 1). The front camera at (0, 0, 2) has
    # right = +x, down = -y, forward = -z, so the world direction is (0.625, 0.25, -1) / |.|.
    K = torch.tensor([[1.0, 0.0, 0.25], [0.0, 2.0, 0.75], [0.0, 0.0, 1.0]], dtype=torch.float64)
    c2w = orbit_cameras(1, 0.0, 0.0, 2.0, dtype=torch.float64)[0]
    origins, d = camera_rays(c2w, K, 2, 4)
    expected = torch.tensor([0.625, 0.25, -1.0], dtype=torch.float64)
    torch.testing.assert_close(d[0, 3], expected / expected.norm(), atol=1e-12, rtol=0)
    # pixel (row 1, col 0): (u, v) = (0.125, 0.75) -> camera (-0.125, 0, 1) -> world (-0.125, 0, -1)
    expected = torch.tensor([-0.125, 0.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(d[1, 0], expected / expected.norm(), atol=1e-12, rtol=0)
    torch.testing.assert_close(origins[1, 0], torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64), atol=1e-12, rtol=0)


def test_a_point_seen_from_two_views_has_one_ccm_value():
    # P = (0, 0, 0.5). Camera A at azimuth 0, camera B at azimuth 90, both at radius 2, 65x65 px, fx = 40 px.
    # A sees P at the centre pixel (row 32, col 32) at z-depth 1.5; B sees P at camera x = -0.5, z = 2, so at
    # u = 40 * (-0.5 / 2) + 32.5 = 22.5 -> pixel (row 32, col 22) at z-depth 2.
    size, fx = 65, 40.0
    K = normalize_intrinsics(torch.tensor([[fx, 0, size / 2], [0, fx, size / 2], [0, 0, 1]], dtype=torch.float64), size, size)
    c2w = torch.stack([orbit_cameras(1, 0.0, az, 2.0, dtype=torch.float64)[0] for az in (0.0, 90.0)])
    depth = torch.zeros(2, 1, size, size, dtype=torch.float64)
    depth[0, 0, 32, 32] = 1.5
    depth[1, 0, 32, 22] = 2.0
    ccm = coordinate_maps(depth, c2w, K.expand(2, 3, 3), bound=1.0)
    assert ccm.shape == (2, 3, size, size)
    expected = torch.tensor([0.5, 0.5, 0.75], dtype=torch.float64)  # ((0, 0, 0.5) / 1 + 1) / 2
    torch.testing.assert_close(ccm[0, :, 32, 32], expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(ccm[1, :, 32, 22], expected, atol=1e-12, rtol=0)
    # background is 0 everywhere else
    assert ccm.abs().sum().item() == pytest.approx(2 * expected.sum().item())


def test_ccm_is_shared_across_elevated_views():
    # Two elevated cameras looking at the origin both see the origin at their principal point at depth R.
    c2w = orbit_cameras(2, 30.0, 20.0, 1.7, dtype=torch.float64)
    size = 33
    K = intrinsics_from_fov(45.0, dtype=torch.float64).expand(2, 3, 3)
    depth = torch.zeros(2, 1, size, size, dtype=torch.float64)
    depth[:, 0, 16, 16] = 1.7
    ccm = coordinate_maps(depth, c2w, K, bound=0.5)
    torch.testing.assert_close(ccm[:, :, 16, 16], torch.full((2, 3), 0.5, dtype=torch.float64), atol=1e-12, rtol=0)


def test_unproject_depth_by_hand_and_ccm_clamp():
    c2w = orbit_cameras(1, 0.0, 90.0, 2.0, dtype=torch.float64)[0]  # at (2, 0, 0), right = -z, down = -y
    K = intrinsics_from_fov(2 * math.degrees(math.atan(0.5)), dtype=torch.float64)  # f = 1 (normalised)
    depth = torch.full((2, 2), 1.0, dtype=torch.float64)
    xyz = unproject_depth(depth, c2w, K)
    # pixel (row 0, col 1): u = 0.75, v = 0.25 -> camera (0.25, -0.25, 1) -> world (2 - 1, 0.25, -0.25)
    torch.testing.assert_close(xyz[0, 1], torch.tensor([1.0, 0.25, -0.25], dtype=torch.float64), atol=1e-12, rtol=0)
    ccm = coordinate_maps(depth[None], c2w, K, bound=0.5)
    assert ccm[0, 0, 1].item() == 1.0  # x = 1 is outside [-0.5, 0.5] -> clamped
    assert ccm[1, 0, 1].item() == pytest.approx(0.75)


def test_ccm_default_bound_is_the_unit_box_and_clamps_at_both_ends():
    # Camera at (2, 0, 0) looking at the origin (right = -z, down = -y, forward = -x), f = 1: pixel (row i, col j)
    # of a 2x2 image has camera direction ((j + 0.5) / 2 - 0.5, (i + 0.5) / 2 - 0.5, 1), so the camera point
    # (x, y, z) is the world point (2 - z, -y, -x); the CCM of the unit box is (X + 1) / 2 clamped to [0, 1].
    c2w = orbit_cameras(1, 0.0, 90.0, 2.0, dtype=torch.float64)[0]
    K = intrinsics_from_fov(2 * math.degrees(math.atan(0.5)), dtype=torch.float64)
    depth = torch.tensor([[[0.0, 1.0], [1.5, 3.5]]], dtype=torch.float64)  # (0, 0) is background
    ccm = coordinate_maps(depth, c2w, K)
    expected = torch.tensor(
        [
            [0.0, 0.0, 0.0],  # background
            [1.0, 0.625, 0.375],  # (0, 1), z = 1: camera (0.25, -0.25, 1) -> world (1, 0.25, -0.25)
            [0.75, 0.3125, 0.6875],  # (1, 0), z = 1.5: camera (-0.375, 0.375, 1.5) -> world (0.5, -0.375, 0.375)
            [0.0, 0.0625, 0.0625],  # (1, 1), z = 3.5: camera (0.875, 0.875, 3.5) -> world (-1.5, -0.875, -0.875)
        ],
        dtype=torch.float64,
    )  # the last x is (-1.5 + 1) / 2 = -0.25 before the clamp
    torch.testing.assert_close(ccm.permute(1, 2, 0).reshape(4, 3), expected, atol=1e-12, rtol=0)


def test_official_coordinate_map_by_hand():
    """docs/OFFICIAL.md 8.2-8.5: integer pixel indices with the normalised K, c2w applied, background 0,
    then clamp(0.001 P + 0.5, 0, 1)."""
    from ouro.models.feedback import official_coordinate_maps

    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 3] = torch.tensor([0.1, -0.2, 1.5], dtype=torch.float64)
    c2w[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)  # x<-z, y<-(-y), z<-x
    K = torch.tensor([[1.25, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]], dtype=torch.float64)
    depth = torch.tensor([[[0.0, 4.0], [2.0, 600.0]]], dtype=torch.float64)  # [1, H=2, W=2]; (0, 0) background
    ccm = official_coordinate_maps(depth, c2w, K)
    assert ccm.shape == (3, 2, 2)
    assert ccm[:, 0, 0].tolist() == [0.5, 0.5, 0.5]
    # (v=0, u=1), d=4: cam = ((1 - 0.5) 4 / 1.25, (0 - 0.5) 4 / 2, 4) = (1.6, -1, 4) -> world (4 + 0.1, 1 - 0.2, 1.6 + 1.5)
    torch.testing.assert_close(ccm[:, 0, 1], 0.001 * torch.tensor([4.1, 0.8, 3.1], dtype=torch.float64) + 0.5, rtol=0, atol=1e-12)
    # (v=1, u=0), d=2: cam = (-0.8, 0.5, 2) -> world (2.1, -0.7, 0.7)
    torch.testing.assert_close(ccm[:, 1, 0], 0.001 * torch.tensor([2.1, -0.7, 0.7], dtype=torch.float64) + 0.5, rtol=0, atol=1e-12)
    # (v=1, u=1), d=600: cam (240, 150, 600) -> world (600.1, -150.2, 241.5) -> x saturates at 1
    torch.testing.assert_close(ccm[:, 1, 1], torch.tensor([1.0, 0.3498, 0.7415], dtype=torch.float64), rtol=0, atol=1e-12)
