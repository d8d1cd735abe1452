"""Foreground masks against known ones: mask IoU of each `ouro sample --background` method.

    python benchmarks/segment.py [--save DIR]

The images are tests/segmentation_set.py's composites (RGBA renders on studio backdrops and on
scikit-image's bundled photos; the known mask is the render's alpha > 0.5). Prints a markdown table
with the mean and worst IoU per method on plain (studio) and textured backgrounds and the time per
image (CPU time, which other processes on the machine do not inflate, and wall time), then how often the plausibility check (ouro.data.segment.check_mask) fired: on the known
masks (false alarms), on each method's good masks (IoU >= 0.8) and on its bad ones (IoU < 0.5).
rembg is measured only when it and its model are on disk (never downloaded). `--save DIR` writes
each composite with its masks side by side, to look at.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save", type=Path, default=None, help="folder for side-by-side PNGs of every composite")
    args = parser.parse_args()

    import cv2
    from PIL import Image

    import segmentation_set as S
    from ouro.data import segment as seg

    cv2.setNumThreads(1)
    methods = {
        "border rule (`--background border`)": lambda rgb: (seg.border_rule_mask(rgb).astype(np.float32), None),
        "GrabCut, built in (`--background grabcut`)": lambda rgb: (lambda r: (r.mask, r.largest_share))(seg.grabcut_mask(rgb)),
        "GrabCut with every hole filled (not shipped)": lambda rgb: (lambda r: (r.mask, r.largest_share))(seg.grabcut_mask(rgb, max_hole=1.0)),
    }
    reason = seg.rembg_unavailable_reason()
    if reason is None:
        methods["rembg (`--background rembg`)"] = lambda rgb: (seg.rembg_mask(Image.fromarray(rgb)), None)

    composites = [S.build(spec) for spec in S.SPECS]
    kinds = [c.spec.kind for c in composites]
    print(f"{len(composites)} composites: {kinds.count('plain')} plain (studio: plain, gradient, shadowed), {kinds.count('textured')} textured, {S.SIZE[1]}x{S.SIZE[0]} px")
    if reason is not None:
        print(f"rembg not measured: {reason}")

    rows, flags, per_image = [], [], []
    def kinds_of(problems: list[str]) -> list[str]:  # "too small", "holes", ... for counting
        names = {"too small": "too small", "background came": "too large", "border": "border", "pieces": "pieces",
                 "colour change": "edge colours", "holes": "holes"}
        return [short for p in problems for key, short in names.items() if key in p]

    truth_checks = [seg.check_mask(c.alpha, c.rgb) for c in composites]
    truth_flags = sum(not c.ok for c in truth_checks)
    truth_kinds = Counter(k for c in truth_checks for k in kinds_of(c.problems))
    for name, method in methods.items():
        method(composites[0].rgb)  # warm-up (imports, OpenCV's first call)
        scores: dict[str, list[float]] = {"plain": [], "textured": []}
        per_image.append([])
        seconds, cpu, good, good_flagged, bad, bad_flagged = 0.0, 0.0, 0, 0, 0, 0
        good_kinds, bad_kinds = Counter(), Counter()
        for i, c in enumerate(composites):
            t0, c0 = time.perf_counter(), time.process_time()
            mask, share = method(c.rgb)
            seconds, cpu = seconds + time.perf_counter() - t0, cpu + time.process_time() - c0
            score = S.iou(mask, c.mask)
            scores[c.spec.kind].append(score)
            per_image[-1].append(score)
            check = seg.check_mask(mask, c.rgb, largest_share=share)
            flagged = not check.ok
            (good_kinds if score >= 0.8 else bad_kinds if score < 0.5 else Counter()).update(kinds_of(check.problems))
            good, good_flagged = good + (score >= 0.8), good_flagged + (score >= 0.8 and flagged)
            bad, bad_flagged = bad + (score < 0.5), bad_flagged + (score < 0.5 and flagged)
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                overlay = (np.stack([mask, c.alpha, np.zeros_like(mask)], -1).clip(0, 1) * 255).astype(np.uint8)  # red: found, green: known
                tile = np.concatenate([c.rgb, overlay], 1)
                Image.fromarray(tile).save(args.save / f"{i:02d}_{name.split()[0].lower()}_{c.spec.name}_iou{score:.2f}.png")
        every = scores["plain"] + scores["textured"]
        rows.append(f"| {name} | {np.mean(scores['plain']):.3f} / {min(scores['plain']):.3f} | {np.mean(scores['textured']):.3f} / "
                    f"{min(scores['textured']):.3f} | {np.mean(every):.3f} / {min(every):.3f} | {cpu / len(composites):.2f} ({seconds / len(composites):.2f}) |")
        def said(kinds: Counter) -> str:
            return f" ({', '.join(f'{k} {n}' for k, n in kinds.most_common())})" if kinds else ""

        flags.append(f"| {name} | {good_flagged} of {good}{said(good_kinds)} | {bad_flagged} of {bad}{said(bad_kinds)} |")

    print("\n| method | plain: mean / worst IoU | textured: mean / worst IoU | all: mean / worst | s per image: CPU (wall) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nplausibility check on the known masks (as if estimated): fired on {truth_flags} of {len(composites)} ("
          + ", ".join(f"{k} {n}" for k, n in truth_kinds.most_common()) + ")")
    print("\n| method | check fired on good masks (IoU >= 0.8) | check fired on bad masks (IoU < 0.5) |")
    print("|---|---|---|")
    print("\n".join(flags))
    print("\nIoU per composite (" + ", ".join(name.split(" (")[0] for name in methods) + "):")
    for i, c in enumerate(composites):
        print(f"  {i:2d} {c.spec.kind:8s} {c.spec.name:55s} " + " ".join(f"{scores[i]:.2f}" for scores in per_image))


if __name__ == "__main__":
    main()
