"""Speed of the pure-PyTorch Gaussian rasterizer (``render(..., backend="torch")``) on the CPU.

Scenes are LGM-like: N Gaussians uniformly in the unit cube, scales 0.01-0.03, opacities 0.5-1,
random rotations and colours, rendered into the 4 LGM input views of the public checkpoint
(azimuth 0, 90, 180, 270 deg, radius 1.74, fov 39.6 deg). Forward = one ``render`` call with
gradients enabled; backward = ``torch.autograd.grad`` of a random linear function of rgb, alpha and
depth. Prints a markdown table of medians.

    python benchmarks/rasterizer.py                 # both cases, 1 and 2 threads
    python benchmarks/rasterizer.py --cases a --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ouro.gaussians import Gaussians, render
from ouro.geometry import OFFICIAL_FOV_DEG, intrinsics_from_fov, official_inference_cameras

CASES = {"a": (16_384, 128), "b": (65_536, 256)}  # name: (Gaussians, image size)


def lgm_like_scene(n: int, size: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    rot = torch.randn(n, 4, generator=gen)
    gaussians = Gaussians(
        means=torch.rand(n, 3, generator=gen) - 0.5,
        scales=0.01 + 0.02 * torch.rand(n, 3, generator=gen),
        rotations=rot / rot.norm(dim=-1, keepdim=True),
        opacities=0.5 + 0.5 * torch.rand(n, generator=gen),
        colors=torch.rand(n, 3, generator=gen),
    )
    c2w = official_inference_cameras()[[0, 2, 4, 6]]
    K = intrinsics_from_fov(OFFICIAL_FOV_DEG, size, size).expand(4, 3, 3)
    return gaussians, c2w, K


def time_case(n: int, size: int, repeats: int) -> tuple[float, float]:
    g, c2w, K = lgm_like_scene(n, size)
    leaves = [t.clone().requires_grad_() for t in (g.means, g.scales, g.rotations, g.opacities, g.colors)]
    gen = torch.Generator().manual_seed(1)
    cot = [torch.randn(4, c, size, size, generator=gen) for c in (3, 1, 1)]
    fwd, bwd = [], []
    for _ in range(repeats + 1):  # the first run warms up and is dropped
        t0 = time.perf_counter()
        out = render(Gaussians(*leaves), c2w, K, size, size, backend="torch")
        t1 = time.perf_counter()
        torch.autograd.grad([out.rgb, out.alpha, out.depth], leaves, cot)
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    return statistics.median(fwd[1:]), statistics.median(bwd[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="ab", help="subset of 'ab'")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| case | threads | forward (s) | backward (s) | forward+backward (s) |")
    print("|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for name in args.cases:
            n, size = CASES[name]
            f, b = time_case(n, size, args.repeats)
            label = f"({name}) {n:,} Gaussians, 4 views x {size}x{size}"
            print(f"| {label} | {threads} | {f:.2f} | {b:.2f} | {f + b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
