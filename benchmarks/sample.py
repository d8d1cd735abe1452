"""Seconds per object for `ouro sample` at a preset on this machine, split by stage.

    python benchmarks/sample.py --preset tiny --steps 25 --threads 1

Random weights (the timing does not depend on them); prints a markdown table with the time of
each stage with feedback (all steps), with `--no-feedback`, and the share the feedback adds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ouro.config import get_preset
    from ouro.io.checkpoint import OuroModels
    from ouro.models import build_models
    from ouro.models.svd_parts import SVDConditioner
    from ouro.pipelines.sample import SamplePipeline, SampleSettings

    torch.manual_seed(0)
    config = get_preset(args.preset)
    mv, rec = build_models(config)
    pipe = SamplePipeline(OuroModels(mv, rec, SVDConditioner.tiny(config.generator.cross_attention_dim), config))
    image = torch.rand(3, config.generator.image_size, config.generator.image_size)
    rows = {}
    for name, settings in [("feedback 0:25", SampleSettings(args.steps)), ("--no-feedback", SampleSettings(args.steps, feedback=False))]:
        best = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = pipe(image, settings)
            total = time.perf_counter() - t0
            if best is None or total < best[0]:
                best = (total, out.timings)
        rows[name] = best
    stages = ["condition", "unet", "decode", "reconstruct", "render"]
    print(f"| {args.preset}, {args.steps} steps, {args.threads} thread(s) | total s | " + " | ".join(stages) + " |")
    print("|---" * (len(stages) + 2) + "|")
    for name, (total, timings) in rows.items():
        print(f"| {name} | {total:.2f} | " + " | ".join(f"{timings.get(s, 0.0):.2f}" for s in stages) + " |")
    fb, base = rows["feedback 0:25"][0], rows["--no-feedback"][0]
    print(f"\nfeedback adds {fb - base:.2f} s = {100 * (fb - base) / fb:.0f} % of the feedback run ({fb / base:.2f}x the baseline)")


if __name__ == "__main__":
    main()
