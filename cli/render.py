"""`ouro render`: BlenderProc orbits of Objaverse ids, GLB/GLTF/OBJ files and GSO folders."""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ouro.conventions import OFFICIAL_FOV_DEG, OFFICIAL_RADIUS
from ouro.paths import DEFAULT_RENDER_DIR
from ouro.pipelines.choices import ENGINES, NORMALIZE_MODES

from ._common import checked_output, choice_enum, err_console, fail, seed_callback


Engine = choice_enum("Engine", ENGINES)
Normalize = choice_enum("Normalize", NORMALIZE_MODES)


def _download_default() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in {"1", "true", "yes", "on"}


def render(
    inputs: Annotated[
        Optional[list[Path]],
        typer.Argument(help="GLB/GLTF/OBJ files, GSO object folders (meshes/model.obj), or folders of them.", show_default=False),
    ] = None,
    objaverse_ids: Annotated[
        Optional[Path],
        typer.Option("--objaverse-ids", help="Text file of Objaverse uids, one per line (or LGM filter-CSV rows `000-001,<uid>`), resolved through the local objaverse cache."),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Render folder: one sub-folder per object.")] = DEFAULT_RENDER_DIR,
    engine: Annotated[Engine, typer.Option(help="`cycles` (CPU path tracing, 16 samples) or `workbench` (fast previews and tests).")] = Engine.cycles,
    resolution: Annotated[int, typer.Option(min=16, help="Square image size in pixels.")] = 512,
    orbits: Annotated[int, typer.Option(min=1, help="Orbits per object, each at its own random elevation.")] = 2,
    frames: Annotated[int, typer.Option(min=1, help="Frames per orbit, evenly spaced in azimuth.")] = 16,
    elevation_min: Annotated[float, typer.Option(help="Lowest orbit elevation, degrees.")] = -5.0,
    elevation_max: Annotated[float, typer.Option(help="Highest orbit elevation, degrees.")] = 30.0,
    radius: Annotated[float, typer.Option(help="Camera distance from the object centre (object normalised to a unit box); the public checkpoint's cameras use 1.741697.")] = OFFICIAL_RADIUS,
    fov: Annotated[float, typer.Option(help="Horizontal field of view, degrees; the public checkpoint's cameras use 39.598 (50 mm lens on a 36 mm sensor).")] = OFFICIAL_FOV_DEG,
    depth: Annotated[bool, typer.Option("--depth", help="Also write depth and world-XYZ maps (16-bit PNGs under <uid>/depth/ and <uid>/xyz/; encodings in meta.json).")] = False,
    seed: Annotated[int, typer.Option(callback=seed_callback, help="Seed for orbit elevations; same seed, same cameras (0 to 2^63 - 1).")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Objects rendered in parallel (one subprocess each).")] = 1,
    shard: Annotated[Optional[str], typer.Option(help="Render only shard I of N (`I/N`, 0-based), a deterministic split for cluster array jobs.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per object before it is recorded as failed.")] = 900.0,
    blender: Annotated[Optional[Path], typer.Option(help="Use this Blender 4.2 executable instead of the bundled bpy wheel.")] = None,
    samples: Annotated[int, typer.Option(min=1, help="Cycles samples per pixel (no denoiser).")] = 16,
    gso_up_axis: Annotated[str, typer.Option(help="Up axis of the meshes in GSO folders: z (Google Scanned Objects, Gazebo's convention) or y.")] = "z",
    normalize: Annotated[Normalize, typer.Option(help="Object scale: `diagonal` = bounding-box diagonal 1 (always in frame); `extent` = longest side 1 (Zero123-style unit box; corners can leave the frame).")] = Normalize.diagonal,
    objaverse_dir: Annotated[Optional[Path], typer.Option(help="Objaverse cache (the folder holding object-paths.json.gz and glbs/). Default: $OURO_OBJAVERSE_DIR, else the objaverse package's ~/.objaverse/hf-objaverse-v1.")] = None,
    download: Annotated[Optional[bool], typer.Option("--download/--no-download", help="Download Objaverse objects missing from the cache. Default: on, off when HF_HUB_OFFLINE=1.", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the objects of this shard (uid, state, source) and exit without rendering.")] = False,
) -> None:
    """Render 16-frame RGBA orbits of 3D objects with BlenderProc (training and evaluation data).

    Writes `<output>/<uid>/meta.json` and `<output>/<uid>/<orbit>/<frame>.png`; failed objects go to
    `<output>/failures.jsonl`. Finished objects are skipped on a second run. Exit code 0 if every
    object rendered, 1 if some failed, 2 for usage errors.
    """
    # Heavy imports (torch, the pipeline) only after typer has parsed the line.
    from ouro.data.objaverse import ObjaverseCache
    from ouro.io.files import check_output_folder
    from ouro.pipelines import render as pipeline

    if not inputs and objaverse_ids is None:
        fail("nothing to render: give GLB/GLTF/OBJ files, GSO folders or folders of them, or --objaverse-ids FILE")
    settings = pipeline.RenderSettings(
        engine=engine.value, resolution=resolution, orbits=orbits, frames=frames, elevation_min=elevation_min,
        elevation_max=elevation_max, radius=radius, fov_deg=fov, depth=depth, seed=seed, samples=samples,
        normalize=normalize.value, gso_up_axis=gso_up_axis, timeout=timeout, workers=workers, blender=blender,
    )
    try:
        settings.check()
        shard_spec = pipeline.parse_shard(shard)
        if blender is not None:
            pipeline.resolve_blender(blender)
        sources = pipeline.select_shard(pipeline.collect_sources(inputs or [], objaverse_ids), shard_spec)
    except ValueError as e:
        fail(str(e))

    if output.exists() and not output.is_dir():
        fail(f"--output {output} is a file; give a folder (it is created if missing)")
    done = pipeline.finished_uids(output)
    if dry_run:
        for src in sources:
            state = "error" if src.error else ("done" if src.uid in done else "todo")
            typer.echo(f"{src.uid}\t{state}\t{src.source}" + (f"\t{src.error}" if src.error else ""))
        return

    checked_output(check_output_folder, output)
    needed = ["blenderproc"] + ([] if blender is not None else ["bpy"])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        fail(f"{' and '.join(missing)} not installed in this Python: pip install 'ouro3d[render]' (bpy 4.2 needs Python 3.11)")
    cache = ObjaverseCache(objaverse_dir, download=_download_default() if download is None else download)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    todo = sum(1 for s in sources if s.uid not in done or s.error)
    shard_text = f" (shard {shard})" if shard else ""
    err_console.print(f"ouro render: {len(sources)} objects{shard_text}, {len(sources) - todo} already finished, "
                      f"{engine.value} {resolution}x{resolution}, {orbits} x {frames} frames -> {output}", soft_wrap=True)
    columns = (TextColumn("[bold]rendering"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TextColumn("{task.fields[failed]}"), TimeElapsedColumn(), TimeRemainingColumn())
    progress = Progress(*columns, console=err_console, transient=False)
    start = time.time()
    rendered = 0
    failed = 0

    def on_result(result, count: int, total: int) -> None:
        nonlocal rendered, failed
        rendered += result.status == "rendered"
        failed += result.status == "failed"
        hours = max(time.time() - start, 1e-6) / 3600
        progress.update(task, completed=count, rate=f"{rendered / hours:,.0f} objects/h",
                        failed=f"[red]{failed} failed[/]" if failed else "")
        if result.status == "failed":
            progress.console.print(f"[red]failed[/] {result.uid}: {result.reason}", soft_wrap=True)

    def _terminate(signum, frame):  # a cluster's SIGTERM ends the workers like Ctrl-C does
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        with progress:
            task = progress.add_task("render", total=todo, rate="", failed="")
            summary = pipeline.render_objects(sources, output, settings, cache=cache, progress=on_result)
    except KeyboardInterrupt:
        err_console.print("ouro render: interrupted; finished objects are kept, rerun to continue")
        raise typer.Exit(130) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    rate = summary.rendered / max(summary.seconds, 1e-6) * 3600
    typer.echo(f"rendered {summary.rendered}, skipped {summary.skipped} (already finished), failed {summary.failed} "
               f"of {summary.total} objects in {summary.seconds:.1f} s ({rate:,.0f} objects/hour) -> {output}")
    if summary.failed:
        typer.echo(f"failures: {output / pipeline.FAILURES}")
    raise typer.Exit(summary.exit_code)

