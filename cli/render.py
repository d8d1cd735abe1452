"""`ouro render`: BlenderProc orbits of Objaverse ids, GLB/GLTF/OBJ files and GSO folders."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ouro.geometry.cameras import OFFICIAL_FOV_DEG, OFFICIAL_RADIUS
from ouro.paths import DEFAULT_RENDER_DIR

from ._common import not_implemented


class Engine(str, Enum):
    cycles = "cycles"
    workbench = "workbench"


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
    depth: Annotated[bool, typer.Option("--depth", help="Also write depth and world-XYZ maps.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for orbit elevations; same seed, same cameras.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Objects rendered in parallel (one subprocess each).")] = 1,
    shard: Annotated[Optional[str], typer.Option(help="Render only shard I of N (`I/N`, 0-based), a deterministic split for cluster array jobs.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per object before it is recorded as failed.")] = 900.0,
    blender: Annotated[Optional[Path], typer.Option(help="Use this Blender 4.2 executable instead of the bundled bpy wheel.")] = None,
) -> None:
    """Render 16-frame RGBA orbits of 3D objects with BlenderProc (training and evaluation data).

    Writes `<output>/<uid>/meta.json` and `<output>/<uid>/<orbit>/<frame>.png`; failed objects go to
    `<output>/failures.jsonl`. Finished objects are skipped on a second run.
    """
    not_implemented("render")
