"""`ouro train` at the `tiny` preset on this machine: optimiser steps per second and peak memory.

    python benchmarks/train.py                      # 1 and 2 processes, 12 steps each, batch 1
    python benchmarks/train.py --data RENDERS --steps 20 --procs 1 2
    python benchmarks/train.py --procs 2 --deepspeed   # data parallel and ZeRO-2

Each configuration runs the real command line (``ouro train --preset tiny ... --gpus N``) in a
fresh process tree; steps/s is the median over the steps after the first two (warm-up) of the main
rank's ``step_time`` in ``metrics.jsonl`` (one step = every rank's batch-1 micro-step), samples/s =
processes x batch / step time. Peak memory: the largest resident set size (RSS) seen, polling
every 0.1 s, of one training process and of the whole process tree (launcher included). The data
is two objects rendered by ``ouro render --engine workbench`` at 64 px (the test fixture's
objects) unless ``--data`` is given. LPIPS is on (the paper's loss). Shared machines: the script
prints ``uptime`` before and after; the load matters.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def make_renders(folder: Path) -> Path:
    """Two objects rendered at 64 px, one orbit (the furniture chicken when cached, else generated boxes)."""
    import render_assets as assets

    try:
        obj = assets.furniture_models(folder / "furniture")["chicken"] / "chicken.obj"
    except BaseException:  # noqa: BLE001  (pytest.skip raises a BaseException subclass)
        obj = assets.textured_box(folder / "checker_box.glb")
    box = assets.vertex_colored_box(folder / "vc_box.glb")
    out = folder / "renders"
    cmd = [str(Path(sys.executable).with_name("ouro")), "render", str(obj), str(box), "-o", str(out), "--engine",
           "workbench", "--resolution", "64", "--orbits", "1", "--workers", "2", "--seed", "5"]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def run(data: Path, out: Path, procs: int, steps: int, threads: int, deepspeed: bool = False) -> dict:
    import psutil

    cmd = [str(Path(sys.executable).with_name("ouro")), "train", "--preset", "tiny", "--data", str(data), "-o", str(out),
           "--gpus", str(procs), "--max-steps", str(steps), "--batch-size", "1", "--workers", "0", "--sample-every", "0",
           "--checkpoint-every", str(steps), "--mixed-precision", "no"] + (["--deepspeed"] if deepspeed else [])
    env = {**__import__("os").environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    root = psutil.Process(proc.pid)
    peak_one = peak_tree = 0
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
            rss = []
            for p in tree:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            peak_tree, peak_one = max(peak_tree, sum(rss)), max([peak_one, *rss])
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"ouro train --gpus {procs} failed ({proc.returncode}):\n{err[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    times = [r["step_time"] for r in rows[2:]] or [r["step_time"] for r in rows]
    step = statistics.median(times)
    return {"procs": procs, "deepspeed": deepspeed, "steps": steps, "step_s": step, "steps_per_s": 1 / step, "samples_per_s": procs / step,
            "peak_rss_process_gb": peak_one / 1e9, "peak_rss_tree_gb": peak_tree / 1e9, "wall_s": wall,
            "world_size": rows[-1]["world_size"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a render folder (default: render two objects at 64 px)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (OMP_NUM_THREADS)")
    parser.add_argument("--deepspeed", action="store_true", help="also run each process count with DeepSpeed ZeRO-2")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    print("before:", uptime())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_renders(Path(tmp))
        for procs in args.procs:
            for ds in ([False, True] if args.deepspeed else [False]):
                results.append(run(data, Path(tmp) / f"run{procs}{'ds' if ds else ''}", procs, args.steps, args.threads, ds))
    print("after:", uptime())
    print("| processes | s/step | steps/s | samples/s | peak RSS, one process | peak RSS, process tree | wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['procs']} (world size {r['world_size']}){' ZeRO-2' if r['deepspeed'] else ''} | {r['step_s']:.2f} | {r['steps_per_s']:.2f} | {r['samples_per_s']:.2f} "
              f"| {r['peak_rss_process_gb']:.2f} GB | {r['peak_rss_tree_gb']:.2f} GB | {r['wall_s']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
