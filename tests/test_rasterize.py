"""The Gaussian rasterizer: torch backend against a brute-force reference, gradients, an analytic case.

The reference below is written independently of ``ouro.gaussians._torch_impl``: every pixel against
every Gaussian, one Gaussian at a time in depth order, with the 3DGS rules spelled out.
"""

import inspect
import math

import pytest
import torch

from ouro.gaussians import Gaussians, RenderOutput, render
from ouro.gaussians import _torch_impl
from ouro.gaussians import rasterize as rasterize_module
from ouro.gaussians.gaussians import quaternion_to_matrix
from ouro.geometry import intrinsics_from_fov, orbit_cameras

W, H = 32, 24
FOV = 45.0


# ------------------------------------------------------------------------------------------------
# brute-force reference


def reference_render(g: Gaussians, c2w, K, width, height, background, compat=None, near=0.01, far=100.0):
    """Unbatched Gaussians [N], cameras [V, 4, 4]: returns rgb [V, 3, H, W], alpha, depth [V, 1, H, W].

    Plain autograd all the way, so its gradients are a reference too.
    """
    quats = g.rotations if compat == "official" else torch.nn.functional.normalize(g.rotations, dim=-1)
    m = quaternion_to_matrix(quats) * g.scales[:, None, :]
    cov3 = m @ m.transpose(-1, -2)  # [N, 3, 3]
    bg = torch.as_tensor(background, dtype=g.means.dtype)
    jj, ii = torch.meshgrid(torch.arange(width), torch.arange(height), indexing="xy")
    pix = torch.stack([jj, ii], -1).to(g.means.dtype) + 0.5  # [H, W, 2] = (col + 0.5, row + 0.5)
    rgbs, alphas, depths = [], [], []
    for v in range(c2w.shape[0]):
        w2c = torch.linalg.inv(c2w[v])
        rot, t = w2c[:3, :3], w2c[:3, 3]
        p = g.means @ rot.T + t  # [N, 3]
        fx, fy, cx, cy = K[v, 0, 0], K[v, 1, 1], K[v, 0, 2], K[v, 1, 2]
        T = torch.ones(height, width, dtype=g.means.dtype)
        acc_rgb = torch.zeros(height, width, 3, dtype=g.means.dtype)
        acc_z = torch.zeros(height, width, dtype=g.means.dtype)
        done = torch.zeros(height, width, dtype=torch.bool)
        for n in torch.argsort(p[:, 2].detach(), stable=True).tolist():
            x, y, z = p[n]
            if not (near < z.item() < far):
                continue
            # Jacobian at the mean with x/z, y/z clamped to 1.3x the half field of view
            lim_x, lim_y = 1.3 * 0.5 * width / fx, 1.3 * 0.5 * height / fy
            tx = torch.clamp(x / z, -lim_x, lim_x)
            ty = torch.clamp(y / z, -lim_y, lim_y)
            J = torch.stack(
                [torch.stack([fx / z, 0 * z, -fx * tx / z]), torch.stack([0 * z, fy / z, -fy * ty / z])]
            )
            cov2 = J @ rot @ cov3[n] @ rot.T @ J.T + 0.3 * torch.eye(2, dtype=g.means.dtype)
            conic = torch.linalg.inv(cov2)
            center = torch.stack([fx * x / z + cx, fy * y / z + cy])
            d = pix - center  # [H, W, 2]
            power = 0.5 * torch.einsum("hwi,ij,hwj->hw", d, conic, d)
            alpha = torch.clamp(g.opacities[n] * torch.exp(-power), max=0.99)
            skip = (alpha < 1.0 / 255.0) | done
            test_T = T * (1 - alpha)
            stop = ~skip & (test_T < 1e-4)
            done = done | stop
            use = ~skip & ~stop
            w = torch.where(use, alpha * T, torch.zeros_like(alpha))
            acc_rgb = acc_rgb + w[..., None] * g.colors[n]
            acc_z = acc_z + w * z
            T = torch.where(use, test_T, T)
        alpha_img = 1 - T
        if compat != "official":
            acc_z = torch.where(alpha_img > 0, acc_z / alpha_img.clamp_min(1e-12), torch.zeros_like(acc_z))
        rgbs.append((acc_rgb + T[..., None] * bg).permute(2, 0, 1))
        alphas.append(alpha_img[None])
        depths.append(acc_z[None])
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depths)


def test_quaternion_to_matrix_against_scipy_and_by_hand():
    """The reference above builds covariances with ouro's quaternion_to_matrix, so check that one independently:
    scipy's rotations for unit quaternions (scipy orders them x, y, z, w), the public rasterizer's polynomial
    for an un-normalised one (compat="official"), and R diag(s^2) R^T for the covariances."""
    from scipy.spatial.transform import Rotation

    from ouro.gaussians import covariances

    q = torch.nn.functional.normalize(torch.randn(16, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64), dim=-1)
    expected = torch.from_numpy(Rotation.from_quat(q[:, [1, 2, 3, 0]].numpy()).as_matrix())
    torch.testing.assert_close(quaternion_to_matrix(q), expected, atol=1e-12, rtol=0)
    # (w, x, y, z) = (1, 1, 0, 0), not normalised: [[1, 0, 0], [0, 1 - 2x^2, -2wx], [0, 2wx, 1 - 2x^2]]
    q_raw = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(quaternion_to_matrix(q_raw), torch.tensor([[1.0, 0, 0], [0, -1, -2], [0, 2, -1]], dtype=torch.float64))
    # 90 deg about z with scales (1, 2, 3): R diag(1, 4, 9) R^T = diag(4, 1, 9); batched [2, 2] Gaussians
    rz = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)], dtype=torch.float64)
    g = Gaussians(torch.zeros(2, 2, 3, dtype=torch.float64), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).expand(2, 2, 3),
                  rz.expand(2, 2, 4), torch.ones(2, 2, dtype=torch.float64), torch.zeros(2, 2, 3, dtype=torch.float64))
    cov = covariances(g)
    assert cov.shape == (2, 2, 3, 3)
    torch.testing.assert_close(cov, torch.diag(torch.tensor([4.0, 1.0, 9.0], dtype=torch.float64)).expand(2, 2, 3, 3), atol=1e-12, rtol=0)
    # a rotation that leaves the covariance non-diagonal, unbatched [N]: 45 deg about x, scales (1, 2, 3)
    rx = torch.tensor([[math.cos(math.pi / 8), math.sin(math.pi / 8), 0.0, 0.0]], dtype=torch.float64)
    g1 = Gaussians(torch.zeros(1, 3, dtype=torch.float64), torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64), rx,
                   torch.ones(1, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64))
    # R = [[1, 0, 0], [0, c, -c], [0, c, c]] with c = 1/sqrt(2): R diag(1, 4, 9) R^T = [[1, 0, 0], [0, 6.5, -2.5], [0, -2.5, 6.5]]
    torch.testing.assert_close(covariances(g1)[0], torch.tensor([[1.0, 0, 0], [0, 6.5, -2.5], [0, -2.5, 6.5]], dtype=torch.float64), atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------------------------
# scenes


def random_gaussians(n, batch=(), seed=0, dtype=torch.float64, scale=(0.02, 0.12), opacity=(0.3, 1.0), official=False):
    """Gaussians in the unit cube [-0.5, 0.5]^3 with random rotations, scales, opacities, colours."""
    gen = torch.Generator().manual_seed(seed)
    shape = tuple(batch) + (n,)

    def uniform(lo, hi, *extra):
        return lo + (hi - lo) * torch.rand(shape + extra, generator=gen, dtype=dtype)

    rot = torch.randn(shape + (4,), generator=gen, dtype=dtype)
    rot = rot / rot.norm(dim=-1, keepdim=True)
    if official:  # the public checkpoint's quaternions: normalised over the Gaussian axis
        rot = rot / rot.norm(dim=-2, keepdim=True)
    return Gaussians(
        means=uniform(-0.5, 0.5, 3),
        scales=uniform(*scale, 3),
        rotations=rot,
        opacities=uniform(*opacity),
        colors=uniform(0.0, 1.0, 3),
    )


def cameras(num_views, dtype=torch.float64, width=W, height=H, elevation=20.0, radius=2.0):
    c2w = orbit_cameras(num_views, elevation, 10.0, radius, dtype=dtype)
    K = intrinsics_from_fov(FOV, width, height, dtype=dtype).expand(num_views, 3, 3)
    return c2w, K


def assert_matches(out: RenderOutput, ref, atol=1e-5, depth_atol=None):
    tols = (atol, atol, atol if depth_atol is None else depth_atol)
    for name, got, want, tol in zip(("rgb", "alpha", "depth"), (out.rgb, out.alpha, out.depth), ref, tols):
        assert got.shape == want.shape, (name, got.shape, want.shape)
        err = (got - want).abs().max().item()
        assert err <= tol, f"{name}: max abs error {err:.3g} > {tol}"


# ------------------------------------------------------------------------------------------------
# forward against the reference


@pytest.mark.parametrize("compat", [None, "official"])
def test_torch_backend_matches_reference_unbatched(compat):
    g = random_gaussians(300, seed=1, official=compat == "official")
    c2w, K = cameras(3)
    bg = (0.2, 0.5, 1.0)
    out = render(g, c2w, K, W, H, bg, backend="torch", compat=compat)
    ref = reference_render(g, c2w, K, W, H, bg, compat=compat)
    assert_matches(out, ref)
    # the scene exercises every rule: empty pixels, opaque pixels (early stop), clamped alphas
    assert (ref[1] == 0).any() and (ref[1] > 1 - 1e-3).any()
    assert (g.opacities > 0.99).any()


@pytest.mark.parametrize("compat", [None, "official"])
def test_torch_backend_matches_reference_batched(compat):
    B, V = 2, 2
    g = random_gaussians(120, batch=(B,), seed=2, official=compat == "official")
    c2w = torch.stack([cameras(V, elevation=e)[0] for e in (-15.0, 30.0)])  # [B, V, 4, 4]
    K = intrinsics_from_fov(FOV, W, H, dtype=torch.float64).expand(B, V, 3, 3)
    out = render(g, c2w, K, W, H, backend="torch", compat=compat)
    assert out.rgb.shape == (B, V, 3, H, W) and out.alpha.shape == out.depth.shape == (B, V, 1, H, W)
    for b in range(B):
        gb = Gaussians(g.means[b], g.scales[b], g.rotations[b], g.opacities[b], g.colors[b])
        ref = reference_render(gb, c2w[b], K[b], W, H, (1.0, 1.0, 1.0), compat=compat)
        assert_matches(RenderOutput(out.rgb[b], out.alpha[b], out.depth[b]), ref)


def test_float32_matches_reference():
    g = random_gaussians(200, seed=3)
    c2w, K = cameras(2)
    out = render(g.to(torch.float32), c2w.float(), K.float(), W, H, backend="torch")
    assert out.rgb.dtype == torch.float32
    ref = reference_render(g, c2w, K, W, H, (1.0, 1.0, 1.0))
    # depth is ~2 object units here: float32 rounding (1.2e-7 relative) over a few dozen
    # composited Gaussians leaves ~1e-5 absolute, so depth gets 1e-5 relative to its scale
    assert_matches(out, ref, atol=1e-5, depth_atol=1e-5 * ref[2].max().item())


def test_shared_cameras_broadcast_over_batch():
    g = random_gaussians(60, batch=(2,), seed=4)
    c2w, K = cameras(2)
    shared = render(g, c2w, K, W, H, backend="torch")
    explicit = render(g, c2w.expand(2, 2, 4, 4), K.expand(2, 2, 3, 3), W, H, backend="torch")
    torch.testing.assert_close(shared.rgb, explicit.rgb, rtol=0, atol=0)
    assert not torch.equal(shared.rgb[0], shared.rgb[1])  # two different scenes


@pytest.mark.parametrize("tile_size,slab,budget", [(4, 3, 64), (8, 5, 1000), (16, 64, 1 << 22), (8, 32, 1)])
def test_tiling_parameters_do_not_change_the_result(tile_size, slab, budget):
    """Small tiles, slabs and block budgets force many blocks and slabs; the image must not change. A budget
    below one tile's ``slab x tile_size^2`` block still composites one tile per block."""
    g = random_gaussians(150, seed=5)
    c2w, K = cameras(2)
    args = (
        g.means[None], torch.nn.functional.normalize(g.rotations, dim=-1)[None], g.scales[None],
        g.opacities[None], g.colors[None], torch.linalg.inv(c2w)[None], K[None], W, H,
        torch.ones(3, dtype=torch.float64), 0.01, 100.0,
    )
    rgb, alpha, depth_sum = rasterize_module._render_torch(*args, tile_size=tile_size, slab=slab, budget=budget)
    ref = reference_render(g, c2w, K, W, H, (1.0, 1.0, 1.0), compat="official")  # un-normalised depth
    torch.testing.assert_close(rgb[0].permute(0, 3, 1, 2), ref[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(alpha[0], ref[1][:, 0], rtol=0, atol=1e-10)
    torch.testing.assert_close(depth_sum[0], ref[2][:, 0], rtol=0, atol=1e-10)


def test_gaussians_behind_or_beyond_the_planes_are_culled():
    c2w = orbit_cameras(1, 0.0, 0.0, 2.0, dtype=torch.float64)  # at (0, 0, 2) looking along -z
    K = intrinsics_from_fov(FOV, W, H, dtype=torch.float64)[None]
    g = Gaussians(
        means=torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, -200.0]], dtype=torch.float64),  # behind; z = 202
        scales=torch.tensor([[0.5] * 3, [10.0] * 3], dtype=torch.float64),
        rotations=torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=torch.float64),
        opacities=torch.ones(2, dtype=torch.float64),
        colors=torch.zeros(2, 3, dtype=torch.float64),
    )
    out = render(g, c2w, K, W, H, backend="torch")  # far = 100
    assert out.alpha.abs().max() == 0 and (out.rgb == 1).all() and (out.depth == 0).all()
    farther = render(g, c2w, K, W, H, backend="torch", far=300.0)
    assert farther.alpha.max() > 0.5
    drawn = farther.depth[farther.alpha > 0]
    torch.testing.assert_close(drawn, torch.full_like(drawn, 202.0))


def test_official_renderer_culls_centres_closer_than_0_2():
    """diff-gaussian-rasterization's frustum test drops centres at camera z <= 0.2 (whatever its znear);
    ours keeps them down to 0.01 unless compat="official"."""
    c2w = orbit_cameras(1, 0.0, 0.0, 2.0, dtype=torch.float64)  # at (0, 0, 2) looking along -z
    K = intrinsics_from_fov(FOV, W, H, dtype=torch.float64)[None]
    g = Gaussians(
        means=torch.tensor([[0.0, 0.0, 1.85]], dtype=torch.float64),  # camera z = 0.15
        scales=torch.full((1, 3), 0.02, dtype=torch.float64),
        rotations=torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
        opacities=torch.ones(1, dtype=torch.float64),
        colors=torch.zeros(1, 3, dtype=torch.float64),
    )
    assert render(g, c2w, K, W, H, backend="torch").alpha.max() > 0.5
    assert render(g, c2w, K, W, H, backend="torch", compat="official").alpha.max() == 0
    assert render(g, c2w, K, W, H, backend="torch", compat="official", near=0.1).alpha.max() > 0.5
    moved = Gaussians(g.means - torch.tensor([0.0, 0.0, 0.1], dtype=torch.float64), g.scales, g.rotations, g.opacities, g.colors)
    assert render(moved, c2w, K, W, H, backend="torch", compat="official").alpha.max() > 0.5  # z = 0.25 is drawn


# ------------------------------------------------------------------------------------------------
# an analytic case


@pytest.mark.parametrize("opacity", [0.8, 1.0])
def test_single_isotropic_gaussian_analytic(opacity):
    w, h, r, s = 33, 25, 2.0, 0.1  # odd sizes: the image centre is the centre of pixel (12, 16)
    c2w = orbit_cameras(1, 0.0, 0.0, r, dtype=torch.float64)  # the front camera at (0, 0, r)
    K = intrinsics_from_fov(FOV, w, h, dtype=torch.float64)[None]
    color = torch.tensor([0.9, 0.2, 0.1], dtype=torch.float64)
    g = Gaussians(
        means=torch.zeros(1, 3, dtype=torch.float64),
        scales=torch.full((1, 3), s, dtype=torch.float64),
        rotations=torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64),
        opacities=torch.tensor([opacity], dtype=torch.float64),
        colors=color[None],
    )
    bg = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    out = render(g, c2w, K, w, h, bg, backend="torch")
    official = render(g, c2w, K, w, h, bg, backend="torch", compat="official")

    f = (w / 2) / math.tan(math.radians(FOV) / 2)
    var = (f * s / r) ** 2 + 0.3  # projected isotropic variance plus the low-pass, px^2
    peak = min(0.99, opacity)
    assert out.alpha[0, 0, 12, 16].item() == pytest.approx(peak, abs=1e-12)
    # one pixel to the right and one down: d = (1, 0) and (0, 1) px
    falloff = peak if opacity * math.exp(-0.5 / var) > 0.99 else opacity * math.exp(-0.5 / var)
    assert out.alpha[0, 0, 12, 17].item() == pytest.approx(falloff, abs=1e-12)
    assert out.alpha[0, 0, 13, 16].item() == pytest.approx(falloff, abs=1e-12)
    diag = opacity * math.exp(-1.0 / var)  # d = (1, 1)
    assert out.alpha[0, 0, 11, 15].item() == pytest.approx(min(diag, 0.99), abs=1e-12)
    torch.testing.assert_close(out.rgb[0, :, 12, 16], peak * color + (1 - peak) * bg)
    # depth: the camera distance wherever something is drawn; the official depth is alpha-weighted
    drawn = out.alpha[0, 0] > 0
    torch.testing.assert_close(out.depth[0, 0][drawn], torch.full_like(out.depth[0, 0][drawn], r))
    torch.testing.assert_close(official.depth[0, 0], r * official.alpha[0, 0])
    # the corners are background: alpha 0 there (1/255 cut-off), colour = background, depth 0
    for i, j in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)):
        assert out.alpha[0, 0, i, j] == 0 and out.depth[0, 0, i, j] == 0
        torch.testing.assert_close(out.rgb[0, :, i, j], bg)
    # the footprint ends where alpha falls below 1/255: radius sqrt(2 var ln(255 o)) px
    radius = math.sqrt(2 * var * math.log(255 * opacity))
    cols = torch.arange(w, dtype=torch.float64) + 0.5 - w / 2
    torch.testing.assert_close(drawn[12], cols.abs() <= radius)


# ------------------------------------------------------------------------------------------------
# gradients


def _small_scene(compat):
    gen = torch.Generator().manual_seed(7)
    n = 4
    means = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * 0.5
    scales = 0.05 + 0.1 * torch.rand(n, 3, generator=gen, dtype=torch.float64)
    rot = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    rot = rot / rot.norm(dim=-1, keepdim=True) * (0.5 if compat == "official" else 1.0)
    opac = 0.4 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)
    colors = torch.rand(n, 3, generator=gen, dtype=torch.float64)
    return [t.requires_grad_() for t in (means, scales, rot, opac, colors)]


@pytest.mark.parametrize("compat", [None, "official"])
def test_gradcheck(compat):
    params = _small_scene(compat)
    c2w, K = cameras(2, width=12, height=10)

    def fn(means, scales, rot, opac, colors):
        g = Gaussians(means, scales, rot, opac, colors)
        out = render(g, c2w, K, 12, 10, (0.3, 0.6, 0.9), backend="torch", compat=compat)
        return out.rgb, out.alpha, out.depth

    assert fn(*params)[1].max() > 0.5  # the Gaussians are in view
    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("compat", [None, "official"])
def test_gradients_match_reference_autograd(compat):
    """The analytic backward against autograd through the brute-force reference, on a scene with
    early stops and clamped alphas (where gradcheck's finite differences would be fragile)."""
    g = random_gaussians(60, seed=8, scale=(0.05, 0.2), opacity=(0.5, 1.0), official=compat == "official")
    c2w, K = cameras(2)
    leaves = [t.clone().requires_grad_() for t in (g.means, g.scales, g.rotations, g.opacities, g.colors)]
    gen = torch.Generator().manual_seed(9)
    cot = [torch.randn(2, c, H, W, generator=gen, dtype=torch.float64) for c in (3, 1, 1)]

    out = render(Gaussians(*leaves), c2w, K, W, H, (0.1, 0.2, 0.3), backend="torch", compat=compat)
    got = torch.autograd.grad([out.rgb, out.alpha, out.depth], leaves, cot)
    ref = reference_render(Gaussians(*leaves), c2w, K, W, H, (0.1, 0.2, 0.3), compat=compat)
    assert (ref[1] > 1 - 1e-3).any()  # some pixels stop early
    want = torch.autograd.grad(list(ref), leaves, cot)
    for name, a, b in zip(("means", "scales", "rotations", "opacities", "colors"), got, want):
        assert b.abs().max() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=name)


# ------------------------------------------------------------------------------------------------
# the public boundary


def test_bad_shapes_are_rejected():
    g = random_gaussians(5)
    c2w, K = cameras(2)
    # the assert message is the offending shape
    with pytest.raises(AssertionError, match=r"\[2, 2, 3\]"):
        render(g, c2w, K[:, :2], W, H)
    with pytest.raises(AssertionError, match=r"\[2, 3, 4\]"):
        render(g, c2w[..., :3, :], K, W, H)
    gb = random_gaussians(5, batch=(3,))
    with pytest.raises(AssertionError, match=r"2, 2, 4, 4"):
        render(gb, c2w.expand(2, 2, 4, 4), K.expand(2, 2, 3, 3), W, H)


def test_auto_backend_is_torch_on_cpu_and_gsplat_needs_cuda():
    g = random_gaussians(20, seed=11)
    c2w, K = cameras(1)
    auto = render(g, c2w, K, W, H)
    torch_ = render(g, c2w, K, W, H, backend="torch")
    assert torch.equal(auto.rgb, torch_.rgb)
    with pytest.raises(RuntimeError, match="CUDA"):
        render(g, c2w, K, W, H, backend="gsplat")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("compat", [None, "official"])
def test_gsplat_matches_torch_backend(compat):
    pytest.importorskip("gsplat")
    # opacities <= 0.95 keep alpha below both clamps (0.99 here, 0.999 in gsplat)
    official = compat == "official"
    g = random_gaussians(300, batch=(2,), seed=12, dtype=torch.float32, opacity=(0.2, 0.95), official=official)
    c2w, K = cameras(4, dtype=torch.float32, width=64, height=48)
    g, c2w, K = g.to("cuda"), c2w.cuda(), K.cuda()
    ref = render(g, c2w, K, 64, 48, backend="torch", compat=compat)
    out = render(g, c2w, K, 64, 48, backend="gsplat", compat=compat)
    # gsplat evaluates exp with the fast __expf intrinsic and sums in another order: ~1e-6 apart,
    # except that a rare alpha within float error of 1/255 can flip one pixel by up to ~1/255
    # (x depth ~2 for sum(w z) = depth * alpha, compared instead of depth, which such a flip on an
    # otherwise empty pixel would move from 0 to ~2)
    maps = (
        ("rgb", out.rgb, ref.rgb, 5e-3),
        ("alpha", out.alpha, ref.alpha, 5e-3),
        ("depth * alpha", out.depth * out.alpha, ref.depth * ref.alpha, 1e-2),
    )
    for name, a, b, flip in maps:
        err = (a - b).abs()
        assert err.max() <= flip and err.mean() <= 1e-5, (name, err.max().item(), err.mean().item())


@pytest.mark.parametrize("compat", [None, "official"])
def test_gsplat_arguments_fit_the_installed_gsplat(compat, monkeypatch):
    """Without a GPU: gsplat's own input checks accept our arguments, and the projection receives
    covariances under compat="official" (quaternions as stored) and quaternions otherwise."""
    gsplat = pytest.importorskip("gsplat")
    from ouro.gaussians._gsplat_backend import _rasterization_args

    class Reached(Exception):
        pass

    def fake_projection(means, covars, quats, scales, viewmats, Ks, width, height, **kwargs):
        raise Reached(covars, quats, viewmats, kwargs)

    monkeypatch.setattr(gsplat.rendering, "fully_fused_projection", fake_projection)
    B, N, V = 2, 7, 3
    g = random_gaussians(N, batch=(B,), seed=13, dtype=torch.float64)
    c2w, K = cameras(V)
    w2c = torch.linalg.inv(c2w).expand(B, V, 4, 4)
    covars = torch.randn(B, N, 3, 3, dtype=torch.float64) if compat == "official" else None
    args = _rasterization_args(
        g.means, g.rotations, g.scales, g.opacities, g.colors, w2c, K.expand(B, V, 3, 3), W, H,
        torch.ones(3, dtype=torch.float64), covars, 0.01, 100.0,
    )
    with pytest.raises(Reached) as hit:
        gsplat.rasterization(**args)
    got_covars, got_quats, viewmats, kwargs = hit.value.args
    assert viewmats.dtype == torch.float32 and viewmats.shape == (B, V, 4, 4)
    assert kwargs["eps2d"] == 0.3 and kwargs["near_plane"] == 0.01 and kwargs["far_plane"] == 100.0
    if compat == "official":
        assert got_quats is None and got_covars.shape == (B, N, 6)  # gsplat keeps the upper triangle
        torch.testing.assert_close(got_covars[..., 0], covars[..., 0, 0].float())
    else:
        assert got_covars is None and got_quats.shape == (B, N, 4)


@pytest.mark.parametrize("front_opacity,expected_z", [(0.3, 2.2), (0.6, 1.8)])
def test_median_depth_is_the_first_surface_to_pass_half_opacity(front_opacity, expected_z):
    from ouro.gaussians.rasterize import render_median_depth

    # two wide Gaussians on the optical axis of the front camera (at z = 2): at world z = 0.2 (depth 1.8)
    # and z = -0.2 (depth 2.2, opacity 0.9). T crosses 0.5 at the front one only if it alone is that opaque.
    g = Gaussians(
        means=torch.tensor([[0.0, 0.0, 0.2], [0.0, 0.0, -0.2]]),
        scales=torch.full((2, 3), 0.3),
        rotations=torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]]),
        opacities=torch.tensor([front_opacity, 0.9]),
        colors=torch.ones(2, 3),
    )
    c2w = orbit_cameras(1, 0.0, 0.0, 2.0)
    K = intrinsics_from_fov(40.0, 16, 16)[None]
    depth = render_median_depth(g, c2w, K, 16, 16)
    assert depth.shape == (1, 1, 16, 16)
    assert depth[0, 0, 8, 8].item() == pytest.approx(expected_z, abs=1e-5)
    expected = render(g, c2w, K, 16, 16).depth[0, 0, 8, 8].item()
    assert 1.8 < expected < 2.2  # the expected depth blends the two surfaces
    empty = render_median_depth(g.index(torch.tensor([False, False])), c2w, K, 16, 16)
    assert empty.abs().max() == 0


# ------------------------------------------------------------------------------------------------
# projection details: the Jacobian's frustum clamp, the far plane, degenerate covariances, radii


def _project_isotropic(means, scale, fx, fy, cx, cy, width, height, opacity=1.0, **kwargs):
    """Isotropic Gaussians ``means [N, 3]`` (camera space: the camera is the identity) -> Projection.

    ``opacity``: one value for all, or ``[N]``."""
    n = means.shape[0]
    Ks = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)[None, None]
    return _torch_impl.project_gaussians(
        means[None], torch.tensor([[1.0, 0, 0, 0]] * n, dtype=torch.float64)[None],
        torch.full((1, n, 3), scale, dtype=torch.float64), torch.as_tensor(opacity, dtype=torch.float64).expand(1, n),
        torch.eye(4, dtype=torch.float64)[None, None], Ks, width, height, **kwargs,
    )


def test_off_screen_jacobian_clamps_to_gsplats_asymmetric_frustum_limits():
    """gsplat's ``persp_proj``: x/z is clamped to [-(cx/fx + 0.3 t), (W - cx)/fx + 0.3 t] with
    t = 0.5 W / fx (and y/z likewise with cy, fy, H) before the Jacobian is formed. Off-centre principal
    point, big isotropic Gaussians beyond each edge (still overlapping the image): cov2d by hand."""
    W_, H_, fx, fy, cx, cy, z, s = 40, 30, 20.0, 25.0, 12.0, 9.0, 2.0, 1.0
    uv = [(-2.0, 0.1), (2.5, -0.2), (0.2, -2.0), (-0.1, 2.2), (-1.8, 1.9)]  # left, right, top, bottom, corner
    means = torch.tensor([[u * z, v * z, z] for u, v in uv], dtype=torch.float64)
    proj = _project_isotropic(means, s, fx, fy, cx, cy, W_, H_)
    assert proj.valid.all()
    for k, (u, v) in enumerate(uv):
        tx, ty = 0.5 * W_ / fx, 0.5 * H_ / fy
        uc = min(max(u, -(cx / fx + 0.3 * tx)), (W_ - cx) / fx + 0.3 * tx)
        vc = min(max(v, -(cy / fy + 0.3 * ty)), (H_ - cy) / fy + 0.3 * ty)
        assert (uc, vc) != (u, v)  # every case is clamped on at least one axis
        # cov2d = s^2 J J^T + 0.3 I with J = [[fx/z, 0, -fx uc/z], [0, fy/z, -fy vc/z]]
        a = s * s * fx * fx / z**2 * (1 + uc * uc) + 0.3
        b = s * s * fx * fy / z**2 * uc * vc
        c = s * s * fy * fy / z**2 * (1 + vc * vc) + 0.3
        det = a * c - b * b
        torch.testing.assert_close(proj.conics[0, k], torch.tensor([c / det, -b / det, a / det], dtype=torch.float64))
        # the mean itself is not clamped
        torch.testing.assert_close(proj.means2d[0, k], torch.tensor([fx * u + cx, fy * v + cy], dtype=torch.float64))


def test_project_gaussians_near_and_far_planes_default_to_renders():
    """``render``'s documented planes (near 0.01 = the 3DGS projection's znear, far 100) are project_gaussians'
    defaults too: centres at z = 0.005 and 100.5 are culled, at z = 0.02 and 99.5 drawn."""
    means = torch.tensor([[0.0, 0.0, 99.5], [0.0, 0.0, 100.5], [0.0, 0.0, 0.02], [0.0, 0.0, 0.005]], dtype=torch.float64)
    proj = _project_isotropic(means, 5.0, 20.0, 20.0, 16.0, 12.0, 32, 24)
    assert proj.valid[0].tolist() == [True, False, True, False]
    assert inspect.signature(render).parameters["far"].default == 100.0
    assert rasterize_module.NEAR == 0.01


def test_centres_exactly_on_the_near_or_far_plane_are_culled():
    """The documented rule is ``near < z < far`` (strict). At the near plane it is 3DGS's: ``in_frustum``
    drops ``p_view.z <= 0.2`` (diff-gaussian-rasterization, auxiliary.h), the centre on the plane included.
    (gsplat culls only ``z < near_plane || z > far_plane``, so the backends differ on these exact ties.)
    Camera = identity, so the camera z is the given z exactly."""
    near, far = 0.5, 2.0
    zs = [near, far, math.nextafter(near, 1.0), math.nextafter(far, 0.0)]
    means = torch.tensor([[0.0, 0.0, z] for z in zs], dtype=torch.float64)
    proj = _project_isotropic(means, 0.1, 20.0, 20.0, 16.0, 12.0, 32, 24, near=near, far=far)
    assert proj.depths[0].tolist() == zs
    assert proj.valid[0].tolist() == [False, False, True, True]


def test_degenerate_2d_covariance_is_culled():
    """With no low-pass (eps2d = 0) a Gaussian of zero size projects to a zero 2D covariance: det = 0,
    culled ("degenerate 2D covariance"), and its conic stays finite."""
    means = torch.tensor([[0.0, 0.0, 2.0], [0.1, 0.0, 2.0]], dtype=torch.float64)
    proj = _project_isotropic(means, 0.0, 20.0, 20.0, 16.0, 12.0, 32, 24, eps2d=0.0)
    assert not proj.valid.any()
    assert torch.isfinite(proj.conics).all()
    kept = _project_isotropic(means, 0.0, 20.0, 20.0, 16.0, 12.0, 32, 24)  # the default low-pass 0.3 px^2
    assert kept.valid.all()


@pytest.mark.parametrize("opacity,s", [(0.5, 0.1), (1.0, 0.1), (1.5 / 255, 0.1), (1.0, 0.005)])
def test_radii_are_the_one_over_255_ellipse_extent_and_cull_boxes_off_the_image(opacity, s):
    """Half-widths: alpha = o exp(-d^2 / 2 var) >= 1/255  <=>  |d| <= sqrt(2 ln(255 o) var), per axis
    (gsplat's opacity-aware bounding box), padded by no more than a small fraction of a pixel. A Gaussian
    whose box ends 0.5 px before the image's left edge is culled; 0.5 px inside, drawn. Cases: a nearly
    transparent Gaussian (255 o = 1.5: a box of ~1 px, not the 3-sigma one) and a sub-pixel one (var < 1 px^2)."""
    fx, z = 20.0, 2.0
    var = (fx * s / z) ** 2 + 0.3  # on axis: J J^T = (fx/z)^2 I
    half = math.sqrt(2 * math.log(255 * opacity) * var)
    means = torch.tensor([[0.0, 0.0, z]], dtype=torch.float64)
    proj = _project_isotropic(means, s, fx, fx, 16.0, 12.0, 32, 24, opacity=opacity)
    assert (proj.radii[0, 0] >= half).all() and (proj.radii[0, 0] <= half + 0.05).all()
    # centres left of the image so that the 1/255 ellipse ends 0.5 px before / after column 0
    for gap, drawn in ((-0.5, False), (0.5, True)):
        u = (gap - half) / fx  # pixel x = fx u + cx with cx = 0
        for _ in range(20):  # off axis the x variance grows with (1 + u^2): solve fx u + half(u) = gap
            u = (gap - math.sqrt(2 * math.log(255 * opacity) * ((fx * s / z) ** 2 * (1 + u * u) + 0.3))) / fx
        m = torch.tensor([[u * z, 0.0, z]], dtype=torch.float64)
        p = _project_isotropic(m, s, fx, fx, 0.0, 12.0, 32, 24, opacity=opacity)
        assert p.valid[0, 0].item() is drawn


def test_radii_contain_the_whole_one_over_255_ellipse_of_a_large_gaussian():
    """The box must contain every pixel whose alpha reaches 1/255 (module docstring: the box is exact, so tiling
    changes nothing), so the half-width is at least sqrt(2 ln(255 o) var) however large the Gaussian: the
    padding may only widen it (here by at most 0.2 % + 0.02 px). On axis, 40 px wide: var = (fx s / z)^2 + 0.3."""
    fx, z, s = 20.0, 2.0, 4.0
    var = (fx * s / z) ** 2 + 0.3
    half = math.sqrt(2 * math.log(255) * var)
    assert half > 100
    proj = _project_isotropic(torch.tensor([[0.0, 0.0, z]], dtype=torch.float64), s, fx, fx, 16.0, 12.0, 32, 24)
    assert (proj.radii[0, 0] >= half).all() and (proj.radii[0, 0] <= half * 1.002 + 0.02).all()


def test_opacity_of_exactly_one_over_255_is_kept_and_boxes_touching_the_image_edge_are_culled():
    """gsplat's projection (ProjectionEWA3DGSFused.cu) culls ``opacity < ALPHA_THRESHOLD`` (1/255): an opacity of
    exactly 1/255 is kept, with an opacity-aware extent sqrt(2 ln(255 o)) = 0, so our box is the 0.01 px pad
    alone. It culls ``mean.x + radius_x <= 0 || mean.x - radius_x >= width`` (likewise y): a box that only
    touches the image's edge is culled, one an ulp inside is kept. Camera z = 1, fx = fy = 1, cx = cy = 0:
    the projected centre is (x, y) exactly. Culled Gaussians of opacity below 1/255 keep finite radii
    (Projection: a culled entry's values are "finite but meaningless")."""
    W_, H_, r = 40, 24, 0.01
    assert (W_ + r) - r == W_ and (H_ + r) - r == H_ and -r + r == 0.0  # the edges are hit exactly
    centres = [
        (16.0, 12.0, True),  # inside
        (-r, 12.0, False), (math.nextafter(-r, 1.0), 12.0, True),  # box [.., 0]: touches the left edge
        (W_ + r, 12.0, False), (math.nextafter(W_ + r, 0.0), 12.0, True),  # box [W, ..]: the right edge
        (16.0, -r, False), (16.0, math.nextafter(-r, 1.0), True),  # top
        (16.0, H_ + r, False), (16.0, math.nextafter(H_ + r, 0.0), True),  # bottom
    ]
    means = torch.tensor([[x, y, 1.0] for x, y, _ in centres] + [[16.0, 12.0, 1.0]] * 2, dtype=torch.float64)
    opacity = torch.tensor([1 / 255] * len(centres) + [0.0, 0.002], dtype=torch.float64)
    proj = _project_isotropic(means, 0.1, 1.0, 1.0, 0.0, 0.0, W_, H_, opacity=opacity)
    torch.testing.assert_close(proj.means2d[0, : len(centres)], means[: len(centres), :2], rtol=0, atol=0)
    assert (proj.radii[0, : len(centres)] == r).all()
    assert proj.valid[0].tolist() == [drawn for _, _, drawn in centres] + [False, False]
    assert torch.isfinite(proj.radii).all() and torch.isfinite(proj.conics).all()


def _hand_projection(means2d, conics, depths, radii, valid=None) -> _torch_impl.Projection:
    """One image of hand-made projected Gaussians: lists of ``[N, 2]``, ``[N, 3]``, ``[N]``, ``[N, 2]`` values."""
    t = lambda v: torch.tensor(v, dtype=torch.float64)[None]  # noqa: E731
    valid = torch.tensor(valid if valid is not None else [True] * len(depths))[None]
    return _torch_impl.Projection(t(means2d), t(conics), t(depths), t(radii), valid)


def test_binning_assigns_each_gaussian_exactly_the_tiles_its_box_overlaps():
    """The module's binning rule: a Gaussian covers the tiles overlapped by its box [m - r, m + r] (clipped to
    the image), and each tile's list is sorted by camera depth, ties by Gaussian index; culled Gaussians
    get none. 32 x 24 px in 8 px tiles: 4 x 3 tiles, id = row * 4 + column. (Extra tiles would not change
    the image, their alphas being below 1/255, but they are work the exact box exists to avoid.)"""
    gaussians = [  # means2d, radii, depth, valid -> tiles
        ((3.0, 3.0), (2.0, 2.0), 2.0, True),  # 0: [1, 5]^2 -> tile 0
        ((20.0, 13.0), (5.0, 2.0), 1.0, True),  # 1: x [15, 25] -> columns 1..3, y [11, 15] -> row 1: 5, 6, 7
        ((6.0, 6.0), (1.0, 1.0), 1.5, True),  # 2: tile 0, in front of 0
        ((3.0, 3.0), (2.0, 2.0), 2.0, True),  # 3: as 0, same depth: after 0
        ((30.0, 20.0), (1.0, 1.0), 0.5, False),  # 4: culled
        ((-3.0, 10.0), (5.0, 1.0), 1.0, True),  # 5: x [-8, 2] -> column 0, y [9, 11] -> row 1: tile 4
        ((31.0, 23.0), (4.0, 4.0), 1.0, True),  # 6: x [27, 35] -> column 3, y [19, 27] -> row 2: tile 11
    ]
    proj = _hand_projection([g[0] for g in gaussians], [[1.0, 0.0, 1.0]] * len(gaussians),
                            [g[2] for g in gaussians], [g[1] for g in gaussians], [g[3] for g in gaussians])
    plan = _torch_impl._plan(proj, 32, 24, 8, 32, 1 << 18)
    lists = {t: plan.flat_ids[plan.tile_start[t]: plan.tile_start[t] + plan.tile_count[t]].tolist()
             for t in range(12) if plan.tile_count[t] > 0}
    assert lists == {0: [2, 0, 3], 4: [5], 5: [1], 6: [1], 7: [1], 11: [6]}


def test_equal_depths_keep_the_gaussians_index_order_in_every_tile():
    """Depth ties are broken by Gaussian index (the module's binning rule; 3DGS and gsplat sort (tile, depth)
    keys with a stable radix sort of the Gaussians in index order). Equal camera depths are common (a
    planar layer facing the camera). 200 Gaussians in tile 0 at three depths: the list is sorted by
    (depth, index) exactly; an unstable sort scrambles the ties."""
    n = 200
    depths = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(15)).double().add(1.0).tolist()
    proj = _hand_projection([[3.0, 3.0]] * n, [[1.0, 0.0, 1.0]] * n, depths, [[2.0, 2.0]] * n)
    plan = _torch_impl._plan(proj, 32, 24, 8, 32, 1 << 18)
    assert plan.tile_count[0] == n and plan.tile_count[1:].sum() == 0
    assert plan.flat_ids.tolist() == sorted(range(n), key=lambda i: (depths[i], i))


def test_a_gaussian_that_leaves_the_transmittance_at_exactly_1e_4_is_composited():
    """3DGS's early stop (diff-gaussian-rasterization, forward.cu): ``test_T = T * (1 - alpha); if (test_T <
    0.0001f) { done = true; continue; }``: a Gaussian that leaves T at exactly 1e-4 is composited, the next
    is not (the docstring: stop before T would fall *below* 1e-4). gsplat stops at ``next_T <= 1e-4``: the
    backends differ on this exact tie. T = 2e-4 entering and alphas 0.5: 2e-4 * 0.5 is exactly 1e-4."""
    assert 2e-4 * 0.5 == 1e-4 == _torch_impl.T_MIN
    alpha = torch.tensor([[[0.5], [0.5]]], dtype=torch.float64)  # [tiles 1, slab 2, pixels 1]
    kept, t_excl, t_end = _torch_impl._transmittance(alpha, torch.tensor([[2e-4]], dtype=torch.float64))
    assert kept[0, :, 0].tolist() == [0.5, 0.0]
    assert t_excl[0, :, 0].tolist() == [2e-4, 1e-4]
    assert t_end.item() == 5e-5  # below T_MIN: the pixel has stopped


@pytest.mark.parametrize("leaf", ["colors", "opacities"])
def test_gradients_of_one_input_alone_match_reference_autograd(leaf):
    """Only the colours (or only the opacities) require grad: the other inputs of the compositing need none,
    and the backward must still produce these gradients (autograd through the brute-force reference)."""
    values = dict(zip(("means", "scales", "rotations", "opacities", "colors"), (t.detach() for t in _small_scene(None))))
    values[leaf].requires_grad_()
    c2w, K = cameras(2, width=12, height=10)
    cot = [torch.randn(2, c, 10, 12, generator=torch.Generator().manual_seed(14), dtype=torch.float64) for c in (3, 1, 1)]

    def grad(maps):  # alpha and depth do not depend on the colours
        used = [(m, c) for m, c in zip(maps, cot) if m.requires_grad]
        return torch.autograd.grad([m for m, _ in used], values[leaf], [c for _, c in used])[0]

    out = render(Gaussians(**values), c2w, K, 12, 10, (0.3, 0.6, 0.9), backend="torch")
    got = grad([out.rgb, out.alpha, out.depth])
    want = grad(reference_render(Gaussians(**values), c2w, K, 12, 10, (0.3, 0.6, 0.9)))
    assert want.abs().min() > 0
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


def test_opacity_gradient_is_zero_where_alpha_is_clamped():
    """alpha = min(0.99, o G): d alpha / d o is G where o G < 0.99 and 0 where the clamp holds (the derivative
    of min; gsplat's backward gates it the same way: ``if (opac * vis <= 0.999f)``). One isotropic Gaussian of
    opacity 1 centred on the centre of pixel (12, 16), as in the analytic test: that pixel is clamped, the
    others are not, so d(sum of alpha)/d o = sum of G over the other pixels with G >= 1/255."""
    w, h, r, s = 33, 25, 2.0, 0.1
    opacity = torch.ones(1, dtype=torch.float64, requires_grad=True)
    g = Gaussians(torch.zeros(1, 3, dtype=torch.float64), torch.full((1, 3), s, dtype=torch.float64),
                  torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64), opacity, torch.ones(1, 3, dtype=torch.float64))
    out = render(g, orbit_cameras(1, 0.0, 0.0, r, dtype=torch.float64), intrinsics_from_fov(FOV, w, h, dtype=torch.float64)[None],
                 w, h, backend="torch")
    assert out.alpha[0, 0, 12, 16].item() == 0.99
    (grad,) = torch.autograd.grad(out.alpha.sum(), opacity)
    var = ((w / 2) / math.tan(math.radians(FOV) / 2) * s / r) ** 2 + 0.3
    gs = [math.exp(-0.5 * ((j - 16) ** 2 + (i - 12) ** 2) / var) for i in range(h) for j in range(w)]
    assert grad.item() == pytest.approx(sum(x for x in gs if 1 / 255 <= x < 0.99), abs=1e-9)


def _uniform_pair(front_opacity):
    """Two constant-alpha splats (conic 0: alpha = o on every pixel) covering an 8 x 8 image, at depths 1.8, 2.2."""
    proj = _hand_projection([[4.0, 4.0]] * 2, [[0.0, 0.0, 0.0]] * 2, [1.8, 2.2], [[100.0, 100.0]] * 2)
    return proj, torch.tensor([[front_opacity, 0.9]], dtype=torch.float64)


@pytest.mark.parametrize("slab", [32, 1])
@pytest.mark.parametrize("front_opacity,expected_z", [(0.3, 2.2), (0.6, 1.8)])
def test_median_depth_defaults_to_half_transmittance_across_slabs(front_opacity, expected_z, slab):
    """rasterize_median_depth's documented default threshold is 0.5: T = 1 - 0.3 = 0.7 after the front splat,
    0.07 after the back one; with 0.6 in front T is 0.4 there already. One Gaussian per slab (slab = 1) carries
    the transmittance from slab to slab."""
    proj, opac = _uniform_pair(front_opacity)
    depth = _torch_impl.rasterize_median_depth(proj, opac, 8, 8, slab=slab)
    torch.testing.assert_close(depth, torch.full((1, 8, 8), expected_z, dtype=torch.float64))


@pytest.mark.parametrize("slab", [32, 1])
def test_median_depth_at_a_transmittance_exactly_at_the_threshold_has_not_dropped_below_it(slab):
    """The docstring: the depth where T first drops *below* the threshold. With the threshold set to exactly the
    transmittance after the front splat (read from rasterize, the same alphas), the front one does not count
    and the back one does, whether or not the two are in one slab."""
    proj, opac = _uniform_pair(0.3)
    feats = torch.zeros(1, 2, 1, dtype=torch.float64)
    _, trans = _torch_impl.rasterize(proj, opac * torch.tensor([1.0, 0.0], dtype=torch.float64), feats, 8, 8, slab=slab)
    assert (trans == trans[0, 0, 0]).all() and abs(trans[0, 0, 0].item() - 0.7) < 1e-12
    depth = _torch_impl.rasterize_median_depth(proj, opac, 8, 8, threshold=trans[0, 0, 0].item(), slab=slab)
    torch.testing.assert_close(depth, torch.full((1, 8, 8), 2.2, dtype=torch.float64))


@pytest.mark.parametrize("tile_size,slab,budget", [(4, 3, 64), (7, 5, 1000), (16, 64, 1 << 22), (8, 1, 1)])
def test_median_depth_does_not_depend_on_the_tiling_parameters(tile_size, slab, budget):
    """Like the image: tiles, slabs and block budgets only split the work."""
    g = random_gaussians(150, seed=5)
    c2w, K = cameras(2)
    proj = _torch_impl.project_gaussians(
        g.means[None], torch.nn.functional.normalize(g.rotations, dim=-1)[None], g.scales[None], g.opacities[None],
        torch.linalg.inv(c2w)[None], K[None], W, H,
    )
    opac = g.opacities[None].expand(2, -1)
    want = _torch_impl.rasterize_median_depth(proj, opac, W, H)
    assert (want > 0).float().mean() > 0.3  # most pixels are covered
    got = _torch_impl.rasterize_median_depth(proj, opac, W, H, tile_size=tile_size, slab=slab, budget=budget)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
