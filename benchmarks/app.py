"""Time one `ouro app` request at the page's defaults, without the browser: wall time and stages.

    .venv/bin/python benchmarks/app.py [--image examples/chair.png] [--threads 2]

The request is what the page's Generate button runs (:meth:`ouro.pipelines.app.OuroApp.run`): the
model's steps, a 512 px turntable of 60 frames, the default mesh, the zip. Model loading is timed apart.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=ROOT / "examples" / "chair.png")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ouro.pipelines.app import AppRequest, OuroApp, available_models

    with tempfile.TemporaryDirectory() as tmp:
        app = OuroApp(Path(tmp) / "out", available_models())
        t0 = time.perf_counter()
        app.pipeline(app.default_model)
        load = time.perf_counter() - t0
        result = app.run(AppRequest(args.image, app.default_model))
        meta = json.loads(result.files.meta.read_text())
    stages = {k: round(v, 1) for k, v in meta["timings"].items()}
    print(f"model: {result.description}; load {load:.1f} s")
    print(f"request: {result.seconds:.1f} s wall, {result.settings.num_steps} steps, {meta['outputs']}")
    print(f"stages (s): {stages}")


if __name__ == "__main__":
    main()
