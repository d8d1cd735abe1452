"""`ouro filter`: keep or drop rendered objects, with a reason for each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ouro.paths import DEFAULT_RENDER_DIR

from ._common import checked_output, err_console, fail


def filter_(
    render_dir: Annotated[Path, typer.Argument(help="Render folder written by `ouro render`.")] = DEFAULT_RENDER_DIR,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Kept-object list (one uid per line), read by `ouro train --kept`. Default: <render_dir>/kept.txt.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="CSV with keep/drop and the reason per object. Default: <render_dir>/filter_report.csv.")] = None,
    min_alpha: Annotated[float, typer.Option(help="Drop objects whose mean foreground fraction per frame is below this.")] = 0.01,
    min_color_std: Annotated[float, typer.Option(help="Drop texture-less objects: foreground colour standard deviation below this (0-1 scale).")] = 0.02,
    max_border_alpha: Annotated[float, typer.Option(help="Drop objects clipped by the frame: foreground fraction on the image border above this.")] = 0.01,
    licenses: Annotated[Optional[str], typer.Option(help="Comma-separated licence allow-list applied where metadata has one (e.g. `by,by-sa,cc0`).")] = None,
    max_faces: Annotated[int, typer.Option(min=0, help="Drop objects with more faces (metadata faceCount, else the renderer's count); 0 = no limit.")] = 1_000_000,
    drop_animated: Annotated[bool, typer.Option("--drop-animated/--keep-animated", help="Drop objects that carry animations.")] = True,
    drop_untextured: Annotated[bool, typer.Option("--drop-untextured/--keep-untextured", help="Drop objects with no image texture, no vertex colours and a single material colour.")] = True,
    annotations: Annotated[Optional[Path], typer.Option(help="Objaverse annotations: a {uid: annotation} .json/.json.gz file or a folder of them (the objaverse cache's metadata/), for licence, faces and animation.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes reading the renders in parallel.")] = 1,
    holdout: Annotated[float, typer.Option(min=0.0, max=0.99, help="Fraction of the kept objects to hold out for evaluation, split by mesh hash (copies of one mesh stay together; an object's side never changes). They are left out of the kept list and written to --holdout-output.")] = 0.0,
    holdout_output: Annotated[Optional[Path], typer.Option(help="Held-out list (one uid per line), e.g. for `ouro eval-gso --objects`. Default: <render_dir>/heldout.txt.")] = None,
) -> None:
    """Drop bad objects (no texture, empty or clipped renders, bad metadata) and write the kept list."""
    from ouro.io.files import check_output_file
    from ouro.pipelines import filter as pipeline

    if not render_dir.is_dir():
        fail(f"{render_dir} is not a folder; give the render folder written by `ouro render -o DIR`")
    if not pipeline.find_objects(render_dir) and not pipeline.read_failures(render_dir):
        fail(f"no rendered objects in {render_dir} (expected <uid>/meta.json folders written by `ouro render`)")
    for name, value in (("--min-alpha", min_alpha), ("--min-color-std", min_color_std), ("--max-border-alpha", max_border_alpha)):
        if not 0 <= value <= 1:
            fail(f"{name} {value}: must lie in [0, 1]")
    kept_file, report_file = output or render_dir / "kept.txt", report or render_dir / "filter_report.csv"
    held_file = holdout_output or render_dir / "heldout.txt"
    for option, path in (("--output", kept_file), ("--report", report_file), ("--holdout-output", held_file)):
        if option != "--holdout-output" or holdout > 0:
            checked_output(check_output_file, path, option)
    allow = tuple(x.strip() for x in licenses.split(",") if x.strip()) if licenses else None
    meta = None
    if annotations is not None:
        try:
            meta = pipeline.load_annotations(annotations)
        except (OSError, ValueError) as e:
            fail(f"--annotations {annotations}: cannot read it ({e}); give a {{uid: annotation}} .json/.json.gz file or a folder of them")
    settings = pipeline.FilterSettings(min_alpha=min_alpha, min_color_std=min_color_std, max_border_alpha=max_border_alpha,
                                       licenses=allow, max_faces=max_faces or None, drop_animated=drop_animated,
                                       drop_untextured=drop_untextured)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]filtering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("filter", total=None)

        def on_report(rep, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        reports = pipeline.filter_renders(render_dir, settings, meta, workers=workers, progress=on_report)
    held = pipeline.holdout_uids(render_dir, [r.uid for r in reports if r.keep], holdout) if holdout > 0 else set()
    kept_path = pipeline.write_kept(reports, kept_file, exclude=held)
    report_path = pipeline.write_report(reports, report_file)
    kept = sum(r.keep for r in reports)
    reasons: dict[str, int] = {}
    for rep in reports:
        for reason in rep.reasons:
            key = reason.split(" (")[0].split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    typer.echo(f"kept {kept - len(held)} of {len(reports)} objects -> {kept_path}")
    if holdout > 0:
        held_path = pipeline.write_uids(held, held_file)
        typer.echo(f"held out {len(held)} of the {kept} good objects (mesh-hash split, {holdout:.0%}) -> {held_path}")
    for key, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        typer.echo(f"  dropped {count}: {key}")
    typer.echo(f"report: {report_path}")
