"""Camera convention: projections, official cameras and converters, against hand-derived values."""

import math

import pytest
import torch

from ouro.geometry import (
    OFFICIAL_FOV_DEG,
    blender_to_ours,
    denormalize_intrinsics,
    fov_from_intrinsics,
    from_condition_frame,
    intrinsics_from_fov,
    invert_rigid,
    look_at,
    normalize_intrinsics,
    official_inference_cameras,
    opengl_to_opencv,
    orbit_cameras,
    ours_to_blender,
    project_points,
    to_condition_frame,
)

S3 = math.sqrt(3.0)
R = 2.5  # camera distance
W = H = 100
TAN_HALF_FOV = 0.4  # -> fx = W / (2 * 0.4) = 125 px
FOV_DEG = math.degrees(2 * math.atan(TAN_HALF_FOV))
FX, CX, CY = 125.0, 50.0, 50.0

# A box that is not a cube, so swapped axes show up.
CORNERS = torch.tensor(
    [[sx * 0.5, sy * 0.4, sz * 0.3] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=torch.float64
)

# Camera centre and its right / down / forward axes in world coordinates, derived by hand for
# world +y up, azimuth from +z towards +x, OpenCV axes.
HAND_CAMERAS = {
    (0, 0): ((0, 0, R), (1, 0, 0), (0, -1, 0), (0, 0, -1)),
    (90, 0): ((R, 0, 0), (0, 0, -1), (0, -1, 0), (-1, 0, 0)),
    (0, 30): ((0, R / 2, R * S3 / 2), (1, 0, 0), (0, -S3 / 2, 0.5), (0, -0.5, -S3 / 2)),
    (90, 30): ((R * S3 / 2, R / 2, 0), (0, 0, -1), (0.5, -S3 / 2, 0), (-S3 / 2, -0.5, 0)),
}


def hand_projection(point, centre, right, down, forward):
    rel = [p - c for p, c in zip(point, centre)]
    dot = lambda a: sum(x * y for x, y in zip(a, rel))  # noqa: E731
    z = dot(forward)
    return FX * dot(right) / z + CX, FX * dot(down) / z + CY, z


def test_pixel_intrinsics_from_fov():
    K = intrinsics_from_fov(FOV_DEG, W, H, dtype=torch.float64)
    expected = torch.tensor([[FX, 0, CX], [0, FX, CY], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(K, expected, rtol=0, atol=1e-9)


def test_normalised_intrinsics_of_the_official_cameras():
    # OFFICIAL.md 12.2: fx = fy = 1.388889, cx = cy = 0.5 for fov 39.59775 deg.
    K = intrinsics_from_fov(OFFICIAL_FOV_DEG)
    torch.testing.assert_close(K, torch.tensor([[1.388889, 0, 0.5], [0, 1.388889, 0.5], [0, 0, 1]]), atol=1e-6, rtol=0)
    assert abs(OFFICIAL_FOV_DEG - 39.59775) < 1e-5
    K_px = denormalize_intrinsics(intrinsics_from_fov(OFFICIAL_FOV_DEG, dtype=torch.float64), 512, 512)
    assert K_px[0, 0].item() == pytest.approx(711.111, abs=1e-3) and K_px[0, 2].item() == 256
    torch.testing.assert_close(normalize_intrinsics(K_px, 512, 512), K.double(), atol=1e-7, rtol=0)
    assert fov_from_intrinsics(K_px, 512).item() == pytest.approx(OFFICIAL_FOV_DEG, abs=1e-6)


@pytest.mark.parametrize("azimuth,elevation", list(HAND_CAMERAS))
def test_box_corners_project_to_hand_computed_pixels(azimuth, elevation):
    c2w = orbit_cameras(1, elevation, azimuth, R, dtype=torch.float64)
    K = intrinsics_from_fov(FOV_DEG, W, H, dtype=torch.float64)[None]
    uv, depth = project_points(CORNERS, c2w, K)
    assert uv.shape == (1, 8, 2) and depth.shape == (1, 8)
    expected = torch.tensor(
        [hand_projection(p.tolist(), *HAND_CAMERAS[(azimuth, elevation)]) for p in CORNERS], dtype=torch.float64
    )
    torch.testing.assert_close(uv[0], expected[:, :2].to(uv), atol=1e-9, rtol=0)
    torch.testing.assert_close(depth[0], expected[:, 2].to(depth), atol=1e-9, rtol=0)


def test_a_corner_by_the_numbers():
    # az 0, el 0: corner (0.5, 0.4, 0.3) is 2.2 in front of the camera; +x is right, +y is up.
    c2w = orbit_cameras(1, 0.0, 0.0, R, dtype=torch.float64)
    K = intrinsics_from_fov(FOV_DEG, W, H, dtype=torch.float64)[None]
    uv, depth = project_points(torch.tensor([[0.5, 0.4, 0.3]], dtype=torch.float64), c2w, K)
    assert uv[0, 0].tolist() == pytest.approx([50 + 125 * 0.5 / 2.2, 50 - 125 * 0.4 / 2.2])
    assert depth.item() == pytest.approx(2.2)


def test_batched_projection_over_views():
    c2w = orbit_cameras(4, 10.0, 0.0, R, dtype=torch.float64)
    K = intrinsics_from_fov(FOV_DEG, W, H, dtype=torch.float64).expand(4, 3, 3)
    uv, depth = project_points(CORNERS.expand(3, 8, 3), c2w.expand(3, 4, 4, 4), K.expand(3, 4, 3, 3))
    assert uv.shape == (3, 4, 8, 2) and depth.shape == (3, 4, 8)
    # The origin projects to the image centre of every orbit camera.
    uv0, d0 = project_points(torch.zeros(1, 3, dtype=torch.float64), c2w, K)
    torch.testing.assert_close(uv0, torch.full_like(uv0, 50.0))
    torch.testing.assert_close(d0, torch.full_like(d0, R))


def test_orbit_matches_the_official_inference_cameras():
    # hyper/c2w.npy as printed in OFFICIAL.md 12.2 (rotation rows, translation last column).
    a, b, r, s, t = 0.707107, 1.231566, 1.741697, 0.382683, 0.923880
    printed = [
        [[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, r]],
        [[a, 0, -a, b], [0, -1, 0, 0], [-a, 0, -a, b]],
        [[0, 0, -1, r], [0, -1, 0, 0], [-1, 0, 0, 0]],
        [[-a, 0, -a, b], [0, -1, 0, 0], [-a, 0, a, -b]],
        [[-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 1, -r]],
        [[-a, 0, a, -b], [0, -1, 0, 0], [a, 0, a, -b]],
        [[0, 0, 1, -r], [0, -1, 0, 0], [1, 0, 0, 0]],
        [[t, 0, s, -0.666519], [0, -1, 0, 0], [s, 0, -t, 1.609118]],
    ]
    expected = torch.tensor(printed, dtype=torch.float64)
    got = official_inference_cameras(dtype=torch.float64)
    assert got.shape == (8, 4, 4)
    torch.testing.assert_close(got[:, :3, :], expected, atol=2e-6, rtol=0)
    torch.testing.assert_close(got[:, 3, :], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64).expand(8, 4))


def test_orbit_rejects_a_pole():
    with pytest.raises(ValueError, match="elevation"):
        orbit_cameras(4, 90.0)
    with pytest.raises(ValueError, match="elevation"):
        orbit_cameras(4, -90.0)


def test_orbit_defaults_explicit_azimuths_and_a_steep_elevation():
    # Defaults: elevation 0, azimuth start 0, the public checkpoint's radius 1.741697 (OFFICIAL.md 12.2):
    # camera k sits at r (sin az, 0, cos az) with az = 90 k deg.
    r = 1.741697
    centres = orbit_cameras(4, dtype=torch.float64)[:, :3, 3]
    expected = torch.tensor([[0, 0, r], [r, 0, 0], [0, 0, -r], [-r, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(centres, expected, atol=1e-6, rtol=0)
    # explicit azimuths replace the even spacing; a list of the wrong length is refused
    c2w = orbit_cameras(3, 0.0, radius=2.0, azimuths_deg=[90.0, 0.0, 180.0], dtype=torch.float64)
    torch.testing.assert_close(c2w[:, :3, 3], torch.tensor([[2.0, 0, 0], [0, 0, 2.0], [0, 0, -2.0]], dtype=torch.float64), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="azimuths_deg"):
        orbit_cameras(3, azimuths_deg=[0.0, 90.0])
    # 89.5 deg is allowed (only the poles are): centre r (0, sin el, cos el), looking at the origin
    el = math.radians(89.5)
    steep = orbit_cameras(1, 89.5, radius=2.0, dtype=torch.float64)[0]
    torch.testing.assert_close(steep[:3, 3], torch.tensor([0.0, 2 * math.sin(el), 2 * math.cos(el)], dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(steep[:3, 2], torch.tensor([0.0, -math.sin(el), -math.cos(el)], dtype=torch.float64), atol=1e-12, rtol=0)


def test_look_at_with_a_target_and_any_batch_shape():
    # [2, 2, 3] eyes: the front and side cameras of test_blender_*; then the front camera moved to look at
    # (1, 0, 0) from (1, 0, 2), and moved back to (0, 0, 3): same rotation, other centres.
    front = torch.tensor([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2], [0, 0, 0, 1]], dtype=torch.float64)
    side = torch.tensor([[0, 0, -1, 2], [0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    eye = torch.tensor([[[0, 0, 2], [2, 0, 0]], [[1, 0, 2], [0, 0, 3]]], dtype=torch.float64)
    target = torch.tensor([[[0, 0, 0], [0, 0, 0]], [[1, 0, 0], [0, 0, 0]]], dtype=torch.float64)
    c2w = look_at(eye, target)
    assert c2w.shape == (2, 2, 4, 4)
    shifted, farther = front.clone(), front.clone()
    shifted[0, 3], farther[2, 3] = 1.0, 3.0
    expected = torch.stack([torch.stack([front, side]), torch.stack([shifted, farther])])
    torch.testing.assert_close(c2w, expected, atol=1e-12, rtol=0)


def test_fov_of_the_official_normalised_intrinsics():
    # OFFICIAL.md 12.2: the normalised fx = 1.388889 of the public cameras is a 39.59775 deg field of view.
    K = torch.tensor([[1.388889, 0, 0.5], [0, 1.388889, 0.5], [0, 0, 1]], dtype=torch.float64)
    assert fov_from_intrinsics(K).item() == pytest.approx(39.59775, abs=1e-5)


def random_poses(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64), dim=-1)
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(n, 3, 3)
    m = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    m[:, :3, :3] = rot
    m[:, :3, 3] = 3 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return m


def test_converters_round_trip():
    poses = random_poses(32)
    torch.testing.assert_close(opengl_to_opencv(opengl_to_opencv(poses)), poses, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours_to_blender(blender_to_ours(poses)), poses, atol=1e-6, rtol=0)
    torch.testing.assert_close(blender_to_ours(ours_to_blender(poses)), poses, atol=1e-6, rtol=0)
    torch.testing.assert_close(invert_rigid(invert_rigid(poses)), poses, atol=1e-6, rtol=0)
    torch.testing.assert_close(invert_rigid(poses) @ poses, torch.eye(4, dtype=torch.float64).expand(32, 4, 4), atol=1e-6, rtol=0)
    views = poses.reshape(4, 8, 4, 4)
    rel = to_condition_frame(views, ref_index=0)
    torch.testing.assert_close(from_condition_frame(rel, views[:, 0]), views, atol=1e-6, rtol=0)


def euler_xyz(rx, ry, rz):
    """Blender's default XYZ Euler rotation, R = Rz @ Ry @ Rx, angles in degrees."""
    cx, sx = math.cos(math.radians(rx)), math.sin(math.radians(rx))
    cy, sy = math.cos(math.radians(ry)), math.sin(math.radians(ry))
    cz, sz = math.cos(math.radians(rz)), math.sin(math.radians(rz))
    Rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    Rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    return Rz @ Ry @ Rx


def blender_matrix_world(location, rotation_euler):
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = euler_xyz(*rotation_euler)
    m[:3, 3] = torch.tensor(location, dtype=torch.float64)
    return m


def test_blender_front_camera_maps_to_the_condition_pose():
    # Blender's front view: at (0, -2, 0), rotated 90 deg about x, looking along +y with +z up.
    ours = blender_to_ours(blender_matrix_world((0, -2, 0), (90, 0, 0)))
    expected = torch.tensor([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2], [0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=0)


def test_blender_side_camera_maps_to_azimuth_90():
    # At (2, 0, 0) with Euler (90, 0, 90): looking along -x with +z up -> our azimuth 90 deg.
    ours = blender_to_ours(blender_matrix_world((2, 0, 0), (90, 0, 90)))
    expected = torch.tensor([[0, 0, -1, 2], [0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(orbit_cameras(1, 0.0, 90.0, 2.0, dtype=torch.float64)[0], expected, atol=1e-12, rtol=0)


def test_blender_elevated_camera_sees_the_same_pixels():
    # A Blender camera above the object (Euler (60, 0, 0) at (0, -2 cos30, 2 sin30)) is our el 30 camera:
    # a point given in Blender coordinates projects to the same pixel as its glTF/ours coordinates.
    bl = blender_matrix_world((0, -R * S3 / 2, R / 2), (60, 0, 0))
    ours = blender_to_ours(bl)
    torch.testing.assert_close(ours, orbit_cameras(1, 30.0, 0.0, R, dtype=torch.float64)[0], atol=1e-12, rtol=0)
    p_blender = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)  # x, y (depth axis), z (up)
    p_ours = torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64)  # (x, z, -y)
    K = intrinsics_from_fov(FOV_DEG, W, H, dtype=torch.float64)[None]
    uv, _ = project_points(p_ours[None], ours[None], K)
    expected = hand_projection(p_ours.tolist(), *HAND_CAMERAS[(0, 30)])
    assert uv[0, 0].tolist() == pytest.approx(expected[:2], abs=1e-9)
    # ... and in Blender's own frame (OpenGL camera: -z forward, +y up) to the same pixel.
    cam = invert_rigid(bl) @ torch.cat([p_blender, torch.ones(1, dtype=torch.float64)])
    u_gl = FX * cam[0] / -cam[2] + CX
    v_gl = -FX * cam[1] / -cam[2] + CY
    assert [u_gl.item(), v_gl.item()] == pytest.approx(expected[:2], abs=1e-9)


def test_condition_frame_of_an_elevated_orbit():
    c2w = orbit_cameras(8, 20.0, 35.0, 1.9, dtype=torch.float64)
    rel = to_condition_frame(c2w)
    # The condition camera lands at (0, 0, d) with the official rotation diag(1, -1, -1) ...
    expected0 = torch.tensor([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 1.9], [0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(rel[0], expected0, atol=1e-12, rtol=0)
    # ... every camera keeps its distance to the origin and its pose relative to the others.
    torch.testing.assert_close(rel[:, :3, 3].norm(dim=-1), torch.full((8,), 1.9, dtype=torch.float64))
    torch.testing.assert_close(invert_rigid(rel[0]) @ rel[5], invert_rigid(c2w[0]) @ c2w[5], atol=1e-12, rtol=0)
    # Back to the world frame from one (unbatched) reference pose: the condition pose lands on it.
    torch.testing.assert_close(from_condition_frame(expected0[None], c2w[0])[0], c2w[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(from_condition_frame(rel, c2w[0]), c2w, atol=1e-12, rtol=0)
    # The official inference cameras are already in that frame.
    official = official_inference_cameras(dtype=torch.float64)
    torch.testing.assert_close(to_condition_frame(official), official, atol=1e-12, rtol=0)
