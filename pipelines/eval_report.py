"""Tables of ``ouro eval-gso``: per-object rows, means over objects, metrics.csv and report.md.

Pure functions of the per-object ``result.json`` dicts written by :mod:`ouro.pipelines.evaluate`
(per-view PSNR, SSIM and LPIPS for the generated views and the splat renders, geometry metrics).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from ouro.io.files import atomic_write

__all__ = ["CSV_FILE", "FORMAT", "METRICS", "PAPER_OBJECTS", "PAPER_RESOLUTION", "PAPER_ROWS", "REPORT", "SUMMARY",
           "comparability_notes", "counted_views", "csv_columns", "object_means", "report_markdown", "summarise",
           "view0_is_input", "write_csv"]

FORMAT = "ouro-eval-gso/1"
CSV_FILE = "metrics.csv"
SUMMARY = "summary.json"
REPORT = "report.md"
METRICS = ("psnr", "ssim", "lpips")
#: The paper's full model (Table 1: views / 3D; Table 2 prints 0.9094 / 0.0991 for the 3D row).
PAPER_ROWS = {"views": (21.770, 0.8866, 0.1093), "splats": (21.761, 0.8894, 0.1091), "delta": (0.009, 0.0028, 0.0002)}
#: The resolution (px) and the number of GSO objects of the paper's rows (the objects themselves were not published).
PAPER_RESOLUTION, PAPER_OBJECTS = 512, 100


# -- aggregation --------------------------------------------------------------------------------
def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def view0_is_input(result: dict) -> bool:
    """Whether an object's view 0 is the input image itself, so not a generated view: held to the
    input while sampling (``anchor_input``), or (another method's predictions) a copy of it."""
    return bool(result.get("view0_is_input")) or bool((result.get("key") or {}).get("anchor_input"))


def counted_views(result: dict, count_input: bool) -> range:
    """The views an object's means average: all V with ``count_input``, else 1..V-1; and never view
    0 when it is the input itself (:func:`view0_is_input`), whatever ``count_input`` says. The same
    views for the generated views and the splat renders, so that the deltas compare like with like."""
    start = 0 if count_input and not view0_is_input(result) else 1
    return range(start, int(result.get("num_views") or len(result["views"]["psnr"])))


def object_means(result: dict, count_input: bool, lpips_net: str) -> dict[str, dict[str, float] | None]:
    """``{"views": {psnr, ssim, lpips}, "splats": {...} | None, "delta": {...} | None}`` of one object,
    over its :func:`counted_views`."""
    out: dict[str, dict[str, float] | None] = {}
    views = counted_views(result, count_input)
    for part in ("views", "splats"):
        entry = result.get(part)
        if entry is None:
            out[part] = None
            continue
        out[part] = {
            "psnr": _mean([entry["psnr"][k] for k in views]),
            "ssim": _mean([entry["ssim"][k] for k in views]),
            "lpips": _mean([entry["lpips"][lpips_net][k] for k in views]),
        }
    if out["views"] is not None and out["splats"] is not None:
        out["delta"] = {m: abs(out["views"][m] - out["splats"][m]) for m in METRICS}
    else:
        out["delta"] = None
    return out


def _geometry_row(result: dict, which: str, thresholds: Sequence[float]) -> dict[str, float | None]:
    g = (result.get("geometry") or {}).get(which)
    row: dict[str, float | None] = {f"chamfer_{which}": g["chamfer"] if g else None}
    for t in thresholds:
        row[f"fscore{t:g}_{which}"] = g["fscore"].get(f"{t:g}") if g else None
    return row


def csv_columns(thresholds: Sequence[float]) -> list[str]:
    cols = ["object", "status"]
    cols += [f"{m}_views" for m in METRICS] + [f"{m}_splats" for m in METRICS] + [f"d{m}" for m in METRICS]
    for which in ("gaussians", "mesh"):
        cols += [f"chamfer_{which}"] + [f"fscore{t:g}_{which}" for t in thresholds]
    return cols + ["reason"]


def summarise(
    names: Sequence[str],
    results: dict[str, dict],
    failed: dict[str, str],
    count_input: bool,
    lpips_net: str,
    thresholds: Sequence[float],
    psnr_cap_db: float,
    extra: dict | None = None,
) -> tuple[dict, list[dict]]:
    """``(summary, csv_rows)`` over the requested objects.

    Table values are means over the scored objects of each object's mean over its counted views
    (:func:`counted_views`: all, or views 1.. without ``count_input`` or when view 0 is the input
    itself; ``view0_is_input`` lists those objects). ``delta`` is ``|mean views - mean splats|`` over
    the objects that have splats (the paper's Table 2); ``mean_abs_delta`` the mean of per-object deltas.
    """
    rows, per = [], {}
    for name in names:
        if name in results:
            means = object_means(results[name], count_input, lpips_net)
            per[name] = means
            row: dict = {"object": name, "status": "scored"}
            for part, suffix in (("views", "_views"), ("splats", "_splats")):
                for m in METRICS:
                    row[m + suffix] = means[part][m] if means[part] else None
            for m in METRICS:
                row["d" + m] = means["delta"][m] if means["delta"] else None
            for which in ("gaussians", "mesh"):
                row.update(_geometry_row(results[name], which, thresholds))
            row["reason"] = None
        else:
            row = {"object": name, "status": "failed", "reason": failed.get(name, "not scored")}
        rows.append(row)

    def means_of(part: str, subset: Sequence[str]) -> dict[str, float] | None:
        vals = [per[n][part] for n in subset if per[n][part] is not None]
        return {m: _mean([v[m] for v in vals]) for m in METRICS} if vals else None

    scored = [n for n in names if n in per]
    both = [n for n in scored if per[n]["splats"] is not None]
    views_both, splats_both = means_of("views", both), means_of("splats", both)
    geometry = {}
    for which in ("gaussians", "mesh"):
        vals = [(results[n].get("geometry") or {}).get(which) for n in scored]
        vals = [v for v in vals if v]
        geometry[which] = ({"chamfer": _mean([v["chamfer"] for v in vals]),
                            **{f"fscore@{t:g}": _mean([v["fscore"][f"{t:g}"] for v in vals]) for t in thresholds},
                            "objects": len(vals)} if vals else None)
    input_views = [n for n in scored if view0_is_input(results[n])]
    # with every object's view 0 the input (an anchored model), none counts view 0; else the option says
    counted = list(range(0 if count_input and len(input_views) < len(scored) else 1, results[scored[0]]["num_views"])) if scored else []
    summary = {
        "format": FORMAT,
        "objects": {"requested": len(names), "scored": len(scored), "failed": len(names) - len(scored),
                    "with_splats": len(both)},
        "means": {
            "views": means_of("views", scored),
            "splats": means_of("splats", both),
            "delta": ({m: abs(views_both[m] - splats_both[m]) for m in METRICS} if both else None),
            "mean_abs_delta": means_of("delta", both),
            "geometry": geometry,
        },
        "count_input": count_input,
        "views_counted": counted,
        "view0_is_input": input_views,
        "lpips_net": lpips_net,
        "psnr_cap_db": psnr_cap_db,
        "fscore_thresholds": list(thresholds),
        "failed": [{"object": n, "reason": failed.get(n, "not scored")} for n in names if n not in per],
        "scored": scored,
        **(extra or {}),
    }
    return summary, rows


def _views_counted_text(summary: dict) -> str:
    """Which views the means average, in words (see :func:`counted_views`)."""
    last = (summary["views_counted"] or [0])[-1]
    inputs, scored = summary.get("view0_is_input") or [], summary["objects"]["scored"]
    why = ("view 0 is the input image itself (held to it while sampling, or a copy of it), so it is never scored "
           "as a generated view")
    if inputs and len(inputs) == scored:
        return f"views 1-{last} ({why})"
    if not summary["count_input"]:
        return f"views 1-{last} (input view excluded)"
    if inputs:
        return f"all views, except views 1-{last} for the {len(inputs)} objects whose {why}"
    return "all views"


def comparability_notes(summary: dict, resolution: int) -> list[str]:
    """What differs between our rows and the paper's (:data:`PAPER_ROWS`): resolution, objects, protocol."""
    scored = summary["objects"]["scored"]
    notes = []
    if resolution != PAPER_RESOLUTION:
        notes.append(f"Resolution: ours at {resolution} px, the paper's at {PAPER_RESOLUTION} px (scores change with resolution).")
    notes.append(f"Objects: ours are {scored} GSO object{'s' if scored != 1 else ''} of this run's list; the paper scored "
                 f"{PAPER_OBJECTS} GSO objects it did not publish, so the object sets differ.")
    notes.append("Protocol: the paper did not publish its evaluation protocol (cameras, ground-truth renderer, which "
                 f"views count); ours is the one stated above: {_views_counted_text(summary)}, ground truth rendered "
                 "by `ouro render`. The paper's rows are shown for orientation, not as a like-for-like comparison.")
    return notes


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def write_csv(path: Path, rows: list[dict], thresholds: Sequence[float]) -> None:
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=csv_columns(thresholds), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})


def report_markdown(summary: dict, rows: list[dict], method: str, resolution: int, settings_line: str,
                    objects_dir: str = "objects") -> str:
    """report.md: the tables in the paper's format, then a strip per object."""
    means = summary["means"]
    v, s, d, ad = means["views"], means["splats"], means["delta"], means["mean_abs_delta"]
    n = summary["objects"]
    views_counted = _views_counted_text(summary)
    lines = [
        f"# ouro eval-gso: {method}",
        "",
        f"{n['scored']} of {n['requested']} GSO objects scored, {n['failed']} failed. {settings_line}",
        f"Means over objects of per-object means over {views_counted}; PSNR capped at {summary['psnr_cap_db']:g} dB; "
        f"LPIPS({summary['lpips_net']}).",
        "",
        "## Table 1 (GSO; PSNR / SSIM / LPIPS)",
        "",
        "| | method | res | PSNR ↑ | SSIM ↑ | LPIPS ↓ |",
        "|---|---|---|---|---|---|",
        f"| multi-view | {method} | {resolution} | {_fmt(v and v['psnr'], 3)} | {_fmt(v and v['ssim'], 4)} | {_fmt(v and v['lpips'], 4)} |",
        f"| 3D | {method} | {resolution} | {_fmt(s and s['psnr'], 3)} | {_fmt(s and s['ssim'], 4)} | {_fmt(s and s['lpips'], 4)} |",
        f"| multi-view | Ouroboros3D (paper) | 512 | {PAPER_ROWS['views'][0]:.3f} | {PAPER_ROWS['views'][1]:.4f} | {PAPER_ROWS['views'][2]:.4f} |",
        f"| 3D | Ouroboros3D (paper) | 512 | {PAPER_ROWS['splats'][0]:.3f} | {PAPER_ROWS['splats'][1]:.4f} | {PAPER_ROWS['splats'][2]:.4f} |",
        "",
        "**Not like for like with the paper's rows:** " + " ".join(comparability_notes(summary, resolution)),
        "",
        "## Table 2 (3DGS renders; deltas = |views - splats|)",
        "",
        "| method | PSNR ↑ | SSIM ↑ | LPIPS ↓ | ΔPSNR ↓ | ΔSSIM ↓ | ΔLPIPS ↓ |",
        "|---|---|---|---|---|---|---|",
        f"| {method} | {_fmt(s and s['psnr'], 3)} | {_fmt(s and s['ssim'], 4)} | {_fmt(s and s['lpips'], 4)} | "
        f"{_fmt(d and d['psnr'], 3)} | {_fmt(d and d['ssim'], 4)} | {_fmt(d and d['lpips'], 4)} |",
        "| Ouroboros3D (paper, joint + CCM + RGB) | 21.761 | 0.9094 | 0.0991 | 0.009 | 0.0028 | 0.0002 |",
        "",
        f"Δ = |mean over objects of views − mean of splats| as in the paper ({summary['objects']['with_splats']} objects "
        f"with splats); the mean of per-object |Δ| is PSNR {_fmt(ad and ad['psnr'], 3)}, SSIM {_fmt(ad and ad['ssim'], 4)}, "
        f"LPIPS {_fmt(ad and ad['lpips'], 4)}.",
        "",
        "## Geometry (normalised object frame; unit-box diagonal 1)",
        "",
        "| reconstruction | objects | Chamfer ↓ | " + " | ".join(f"F@{t:g} ↑" for t in summary["fscore_thresholds"]) + " |",
        "|---|---|---|" + "---|" * len(summary["fscore_thresholds"]),
    ]
    for which, label in (("gaussians", "Gaussian centres (opacity-weighted)"), ("mesh", "fused mesh")):
        g = means["geometry"].get(which)
        if g:
            lines.append(f"| {label} | {g['objects']} | {g['chamfer']:.4f} | "
                         + " | ".join(f"{g[f'fscore@{t:g}']:.4f}" for t in summary["fscore_thresholds"]) + " |")
    lines += ["", "## Objects", "",
              "Each strip: input (top left); rows: generated views, splat renders (when there are Gaussians), ground truth.", "",
              "| object | PSNR views | SSIM views | LPIPS views | PSNR splats | SSIM splats | LPIPS splats | ΔPSNR | Chamfer |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["status"] != "scored":
            continue
        lines.append(
            f"| [{row['object']}](#{row['object'].lower()}) | {_fmt(row['psnr_views'], 2)} | {_fmt(row['ssim_views'], 4)} | "
            f"{_fmt(row['lpips_views'], 4)} | {_fmt(row['psnr_splats'], 2)} | {_fmt(row['ssim_splats'], 4)} | "
            f"{_fmt(row['lpips_splats'], 4)} | {_fmt(row['dpsnr'], 3)} | {_fmt(row['chamfer_gaussians'], 4)} |")
    lines.append("")
    for row in rows:
        if row["status"] == "scored":
            lines += [f"### {row['object']}", "", f"![{row['object']}]({objects_dir}/{row['object']}/strip.png)", ""]
    failed = [r for r in rows if r["status"] != "scored"]
    if failed:
        lines += ["## Failed", ""] + [f"- `{r['object']}`: {r['reason']}" for r in failed] + [""]
    return "\n".join(lines)
