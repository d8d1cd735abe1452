"""Quality against cost of the sampling settings (issue #28): the table and the plot of benchmarks/README.md.

Reads ``ouro eval-gso`` output folders (their ``summary.json``: the means and the sampling settings),
counts each setting's FLOPs per object at **paper size** with ``benchmarks/flops.py`` (the public
weights' sizes, whatever model was scored), and writes

* the markdown rows: setting, F calls, TFLOP and ratio against the public pipeline (a), the six held-out
  means, and whether each stays within the spread of the default's seeds (no worse than the worst
  seed on any of the six means);
* a PNG: splat and view PSNR and LPIPS against TFLOP, one curve per sampler (Euler, Heun,
  DPM-Solver++(2M), by steps) and named points for sparse feedback (``--feedback-every``, windows)
  and ``--fast``, the seeds' spread as a band; points far outside the band are drawn at the axis edge
  and listed with their values.

    python benchmarks/sampling_curve.py --evals DEMO/eval --default euler-20 euler-20-seed1 euler-20-seed2 \\
        -o benchmarks/sampling_curve.png        # DEMO: the demo data folder (benchmarks/demo_model.py)

Folders are named as ``flops.SAMPLING_GRID`` (``euler-10``, ``heun-5``, ``dpm-6``, ``every-2`` ...); any
other folder under ``--evals`` with a summary.json is read too and labelled by its settings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

METRICS = (("views", "psnr"), ("views", "ssim"), ("views", "lpips"), ("splats", "psnr"), ("splats", "ssim"), ("splats", "lpips"))
LOWER_IS_BETTER = {"lpips"}
SAMPLER_LABELS = {"euler": "Euler", "heun": "Heun", "dpm++2m": "DPM-Solver++(2M)"}


def _flops_module():
    spec = importlib.util.spec_from_file_location("ouro_bench_flops", Path(__file__).with_name("flops.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass
class Run:
    name: str
    settings: dict
    means: dict  # (part, metric) -> value
    objects: int

    @property
    def family(self) -> str:
        s = self.settings
        sampler = SAMPLER_LABELS[s.get("sampler") or "euler"]
        if (s.get("feedback_every") or 1) > 1 or s.get("feedback_steps") or s.get("fast"):
            return f"{sampler} {s['steps']}: sparse feedback, --fast"
        return sampler


def read_run(folder: Path) -> Run:
    summary = json.loads((folder / "summary.json").read_text())
    settings = dict(summary["settings"])
    settings.setdefault("sampler", "euler")
    settings.setdefault("feedback_every", 1)
    means = {(part, m): summary["means"][part][m] for part, m in METRICS}
    return Run(folder.name, settings, means, len(summary["scored"]))


def schedule_of(flops, run: Run):
    s = run.settings
    window = s.get("feedback_steps")
    return flops.Schedule(run.name, run.name, sampler=s["sampler"], steps=int(s["steps"]),
                          feedback_every=int(s.get("feedback_every") or 1), feedback_from=window[0] if window else 1,
                          decode_views=4 if s.get("fast") else None)


def within(run: Run, seeds: list[Run]) -> list[str]:
    """The means on which ``run`` is worse than every seed of the default (empty: within the spread)."""
    worse = []
    for key in METRICS:
        values = [r.means[key] for r in seeds]
        bound = max(values) if key[1] in LOWER_IS_BETTER else min(values)
        if (run.means[key] > bound) if key[1] in LOWER_IS_BETTER else (run.means[key] < bound):
            worse.append(f"{key[0]} {key[1].upper()}")
    return worse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evals", type=Path, required=True, help="folder holding the eval-gso output folders")
    parser.add_argument("--default", nargs="+", required=True, help="the default setting's folders, one per seed (the first is the curve's point)")
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/sampling_curve.png"))
    args = parser.parse_args()

    flops = _flops_module()
    runs = {p.name: read_run(p) for p in sorted(args.evals.iterdir()) if (p / "summary.json").is_file()}
    missing = [n for n in args.default if n not in runs]
    if missing:
        sys.exit(f"no summary.json in {', '.join(str(args.evals / n) for n in missing)}")
    seeds = [runs[n] for n in args.default]
    components = flops.component_flops("paper")
    public = flops.per_object(components, flops.SCHEDULES[0], 25)["total"]
    cost = {n: flops.per_object(components, schedule_of(flops, r))["total"] for n, r in runs.items()}
    from ouro.diffusion.samplers import num_evaluations

    # table
    spread = {key: (min(r.means[key] for r in seeds), max(r.means[key] for r in seeds)) for key in METRICS}
    print("| setting | F calls | TFLOP (paper) | x (a) | views PSNR / SSIM / LPIPS | splats PSNR / SSIM / LPIPS | within the seeds' spread |")
    print("|---|---:|---:|---:|---|---|---|")
    cells = lambda r, part: " / ".join(f"{r.means[(part, m)]:.{2 if m == 'psnr' else 4}f}" for m in ("psnr", "ssim", "lpips"))  # noqa: E731
    for name, run in sorted(runs.items(), key=lambda kv: -cost[kv[0]]):
        s = run.settings
        off = within(run, seeds)
        worse = "(seed)" if run in seeds else "yes" if not off else "no: all six" if len(off) == len(METRICS) else "no: " + ", ".join(off)
        print(f"| `{name}` | {num_evaluations(s['sampler'], int(s['steps']))} | {cost[name] / 1e12:,.0f} | {cost[name] / public:.2f} | "
              f"{cells(run, 'views')} | {cells(run, 'splats')} | {worse} |")
    print("\nspread of the default over its seeds (min - max): "
          + "; ".join(f"{p} {m.upper()} {lo:.4f} - {hi:.4f}" for (p, m), (lo, hi) in spread.items()))
    ok = [n for n, r in runs.items() if r not in seeds and not within(r, seeds)]
    if ok:
        best = min(ok, key=lambda n: cost[n])
        print(f"cheapest within the spread: {best}, {cost[best] / 1e12:,.0f} TFLOP = {cost[best] / public:.3f}x (a)")

    # plot
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("splats", "psnr"), ("splats", "lpips"), ("views", "psnr"), ("views", "lpips")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5), constrained_layout=True)
    families: dict[str, list[Run]] = {}
    for run in runs.values():
        if run in seeds[1:]:
            continue
        families.setdefault(run.family, []).append(run)
    styles = {"Euler": ("o", "-"), "Heun": ("s", "-"), "DPM-Solver++(2M)": ("^", "-")}  # the rest: points, named
    for ax, key in zip(axes.flat, panels):
        lo, hi = spread[key]
        ax.axhspan(lo, hi, color="0.85", label="default, 3 seeds (min-max)")
        # the axis spans the band and the points near it; a point far off (Heun at 2-3 steps) is drawn
        # at the edge with its value, so that it does not flatten the differences that matter
        reach = max(10 * (hi - lo), 0.5 if key[1] == "psnr" else 0.02)
        near = [v for r in runs.values() if lo - reach <= (v := r.means[key]) <= hi + reach] + [lo, hi]
        pad = 0.08 * (max(near) - min(near))
        bottom, top_edge = min(near) - pad, max(near) + pad
        off_scale: list[str] = []
        for family, members in families.items():
            members = sorted(members, key=lambda r: cost[r.name])
            marker, line = styles.get(family, ("x" if family.startswith("Euler") else "d", ""))
            xs = [cost[r.name] / 1e12 for r in members]
            ys = [min(max(r.means[key], bottom), top_edge) for r in members]
            ax.plot(xs, ys, marker=marker, linestyle=line or "none", label=family)
            off_scale += [f"{r.name} {r.means[key]:.{2 if key[1] == 'psnr' else 3}f}" for r, y in zip(members, ys) if y != r.means[key]]
            if family not in styles:  # single settings: named
                for r, x, y in zip(members, xs, ys):
                    ax.annotate(r.name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if off_scale:
            worse_up = key[1] in LOWER_IS_BETTER  # the far-off points sit at the worse edge; the note goes there
            ax.text(0.99, 0.98 if worse_up else 0.02, "drawn at the edge, off scale:\n" + "\n".join(off_scale), transform=ax.transAxes,
                    fontsize=7, ha="right", va="top" if worse_up else "bottom", bbox=dict(facecolor="white", edgecolor="0.7", alpha=0.9))
        ax.axvline(public / 1e12 / 2, color="0.5", linestyle=":", label="0.5x public pipeline")
        ax.set_xlabel("TFLOP per object at paper size (benchmarks/flops.py)")
        tflop = public / 1e12
        top = ax.secondary_xaxis("top", functions=(lambda x, t=tflop: x / t, lambda r, t=tflop: r * t))
        top.set_xlabel("x the public pipeline (a)", fontsize=8)
        ax.set_ylabel(f"{key[0]} {key[1].upper()} ({'lower' if key[1] in LOWER_IS_BETTER else 'higher'} is better)")
        ax.set_ylim(bottom, top_edge)
        ax.grid(alpha=0.3)
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle(f"Demo model, {seeds[0].objects} held-out objects, 7 novel views at 64 px: quality against cost")
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
