#!/usr/bin/env bash
# The prepared GPU check of ouro (issue #29): under 8 minutes on one H100.
#
#   benchmarks/gpu_check.sh [OUT]          results in OUT (default: gpu-check/): summary.md, JSON, logs
#
# 1. the CUDA tests (`pytest -m cuda`: the gsplat rasterizer against ours, --offload on CUDA);
# 2. a synthetic public checkpoint at paper size (random weights, the release's layout, float16
#    files; benchmarks/paper_size.py write);
# 3. `ouro sample examples/chair.png --model official` on it in float16 through the normal loader,
#    default and low-memory (--decode-chunk 2 --offload): wall time, stage times, peak RSS and
#    torch.cuda.max_memory_allocated / max_memory_reserved;
# 4. 3 paper-size training steps from those weights (`ouro train --init-official`, bf16 mixed
#    precision, --gradient-checkpointing, batch 1, one held-out demo render as data): time per
#    step and peak CUDA memory.
#
# Environment (defaults in brackets): PYTHON [python], OURO_CHECK_PRESET [paper], OURO_CHECK_STEPS
# [25 sampling steps], OURO_CHECK_TESTS [1: run step 1]. With OURO_CHECK_PRESET=tiny the same script
# runs on a CPU in minutes (tests/test_paper_size.py does that), so its parts are checked without a GPU.
# Stage times on a GPU are wall times without synchronisation (kernels run asynchronously): the
# totals are exact, the split between stages is approximate.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-check}
PY=${PYTHON:-python}
PRESET=${OURO_CHECK_PRESET:-paper}
STEPS=${OURO_CHECK_STEPS:-25}
RUN_TESTS=${OURO_CHECK_TESTS:-1}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
unset OURO_SVD
start=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/progress.log"; }

stamp "machine"
{ nvidia-smi 2>/dev/null || echo "no nvidia-smi"; "$PY" -c "import importlib.util as u, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '', 'gsplat', u.find_spec('gsplat') is not None)"; } > "$OUT/machine.txt" 2>&1

if [ "$RUN_TESTS" = 1 ]; then
  stamp "1. CUDA tests"
  set +e
  "$PY" -m pytest -q -m cuda tests/ > "$OUT/cuda-tests.txt" 2>&1
  echo "exit code $?" >> "$OUT/cuda-tests.txt"
  set -e
  tail -n 3 "$OUT/cuda-tests.txt"
fi

stamp "2. synthetic public checkpoint ($PRESET, float16 files)"
"$PY" benchmarks/paper_size.py write "$OUT/weights" --preset "$PRESET" --dtype float16 > "$OUT/write.log" 2>&1

# a failing step is recorded (its exit code in summary.md, its log beside it) and the check goes on
stamp "3. ouro sample --model official, $STEPS steps: default"
"$PY" benchmarks/paper_size.py sample "$OUT/weights" --steps "$STEPS" --label default --out "$OUT/sample-default" \
  --json "$OUT/sample-default.json" > "$OUT/sample-default.log" 2>&1 || stamp "default sample failed (exit $?)"
stamp "3. ouro sample --model official, $STEPS steps: --decode-chunk 2 --offload"
"$PY" benchmarks/paper_size.py sample "$OUT/weights" --steps "$STEPS" --label low-memory --out "$OUT/sample-low" \
  --json "$OUT/sample-low.json" -- --decode-chunk 2 --offload > "$OUT/sample-low.log" 2>&1 || stamp "low-memory sample failed (exit $?)"

stamp "4. ouro train: 3 steps, bf16, gradient checkpointing, batch 1"
"$PY" benchmarks/paper_size.py cli --preset "$PRESET" --stats "$OUT/train.cuda.json" -- train --preset "$PRESET" \
  --init-official "$OUT/weights" --data tests/data/demo-heldout -o "$OUT/train" --max-steps 3 --batch-size 1 \
  --mixed-precision bf16 --gradient-checkpointing --workers 2 --sample-every 0 --checkpoint-every 1000 \
  > "$OUT/train.log" 2>&1 || stamp "training failed (exit $?; see train.log)"

stamp "summary"
"$PY" - "$OUT" "$PRESET" "$STEPS" <<'EOF' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path

out, preset, steps = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print(f"# ouro GPU check ({preset}, {steps} sampling steps)\n")
print("```\n" + (out / "machine.txt").read_text().strip()[-1500:] + "\n```\n")
tests = out / "cuda-tests.txt"
if tests.is_file():
    print("CUDA tests: " + " / ".join(tests.read_text().strip().splitlines()[-2:]) + "\n")


def read(name):
    path = out / name
    return json.loads(path.read_text() or "{}") if path.is_file() else None


print("| sample run | wall s | load s | condition / unet / decode / reconstruct / render / write / video s | peak RSS GB | CUDA max allocated / reserved GB |")
print("|---|---|---|---|---|---|")
for label, name in (("default", "sample-default.json"), ("--decode-chunk 2 --offload", "sample-low.json")):
    run = read(name)
    if run is None:
        print(f"| {label} | failed before measuring: see {name.replace('.json', '.log')} | | | | |")
        continue
    t = run["timings"]
    stages = " / ".join(f"{t.get(s, 0.0):.1f}" for s in ("condition", "unet", "decode", "reconstruct", "render", "write_images", "video"))
    cuda = run.get("cuda") or {}
    mem = f"{cuda['max_memory_allocated_gb']:.2f} / {cuda['max_memory_reserved_gb']:.2f}" if cuda else "- (no CUDA)"
    load = f"{run['load_s']:.0f}" if run.get("load_s") is not None else "?"
    print(f"| {label} (exit {run['returncode']}) | {run['wall_s']:.0f} | {load} | {stages} | {run['peak_rss_gb']:.2f} | {mem} |")
metrics = out / "train" / "metrics.jsonl"
rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
cuda = read("train.cuda.json") or {}
mem = f"{cuda['max_memory_allocated_gb']:.2f} / {cuda['max_memory_reserved_gb']:.2f}" if cuda else "- (no CUDA)"
times = ", ".join(f"{r['step_time']:.2f}" for r in rows) or "- (see train.log)"
losses = ", ".join("nan" if r["loss"] is None else f"{r['loss']:.4f}" for r in rows) or "-"
print(f"\ntraining ({len(rows)} steps, batch 1, bf16, gradient checkpointing): s/step {times}; loss {losses}; "
      f"CUDA max allocated / reserved {mem} GB")
EOF
stamp "done"
