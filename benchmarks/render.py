"""Seconds per object for `ouro render` (2 orbits x 16 frames), and objects per hour per core.

Renders the same objects with each configuration through ``ouro.pipelines.render`` (one worker
process per object, as the CLI does; the worker uses every core) and prints one table row per
configuration: wall seconds per object (process start, BlenderProc import, mesh load, render,
writing), the render part alone, and objects/hour/core = 3600 / (seconds per object x cores).

    python benchmarks/render.py                       # cycles@512 and workbench@256 on the default objects
    python benchmarks/render.py MESH_OR_GSO ... --config workbench:256

Default objects: the sweethome3d-furniture chicken and basketball (textured OBJs, from the test asset
cache) when available, else generated textured and vertex-coloured boxes. Machine load matters on
shared machines: the script prints ``uptime`` before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def default_objects(folder: Path) -> list[Path]:
    import render_assets as assets

    try:
        models = assets.furniture_models(folder / "furniture")
        return [models["chicken"] / "chicken.obj", models["basketball"] / "basketball.obj"]
    except BaseException:  # noqa: BLE001  (pytest.skip raises BaseException subclasses)
        return [assets.textured_box(folder / "checker_box.glb"), assets.vertex_colored_box(folder / "vc_box.glb")]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("objects", nargs="*", type=Path, help="meshes or GSO folders (default: see above)")
    parser.add_argument("--config", action="append", help="ENGINE:RESOLUTION, repeatable (default cycles:512 and workbench:256)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from ouro.pipelines import render as pipeline

    configs = args.config or ["cycles:512", "workbench:256"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        objects = args.objects or default_objects(tmp)
        sources = pipeline.collect_sources(objects)
        print(f"# {len(sources)} objects: {', '.join(s.uid for s in sources)}; {cores} cores")
        print(f"# load before: {uptime()}")
        for config in configs:
            engine, resolution = config.split(":")
            settings = pipeline.RenderSettings(engine=engine, resolution=int(resolution), orbits=2, frames=16)
            out = tmp / f"out-{engine}-{resolution}"
            start = time.time()
            summary = pipeline.render_objects(sources, out, settings)
            wall = time.time() - start
            if summary.failed:
                raise SystemExit(f"{config}: {summary.failed} objects failed: {pipeline.summary_dict(summary)['failures']}")
            render_s = [json.loads((out / s.uid / "meta.json").read_text())["timing"]["render_seconds"] for s in sources]
            per_object = wall / len(sources)
            row = {"config": config, "objects": len(sources), "seconds_per_object": per_object,
                   "render_seconds_per_object": sum(render_s) / len(render_s),
                   "objects_per_hour_per_core": 3600 / (per_object * cores), "cores": cores}
            rows.append(row)
            print(f"{engine} {resolution}x{resolution}, 2 x 16 frames: {per_object:.1f} s/object wall "
                  f"(render {row['render_seconds_per_object']:.1f} s), "
                  f"{row['objects_per_hour_per_core']:.0f} objects/hour/core")
        print(f"# load after: {uptime()}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "uptime": uptime()}, indent=1))


if __name__ == "__main__":
    main()
