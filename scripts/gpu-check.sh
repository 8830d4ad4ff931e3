#!/usr/bin/env bash
# The whole device check in one command, for a lent GPU machine: Python with a CUDA build of
# torch, no container engine, no network, no JobCloud install. Runs the application's code
# directly (PYTHONPATH=images/torchfit) from the repository root, in under 5 minutes:
#   1. the environment (nvidia-smi, torch, CUDA)                        $OUT/environment.txt
#   2. bench/gpu.py: the reference workload's training step on the CPU
#      and the GPU (fp32, bf16, bf16 + torch.compile), ms/step and ratio  $OUT/gpu-bench.{txt,json}
#   3. torchfit train, frames kind (sample/frames-bench.yaml), on the GPU $OUT/frames/{model,output,log}
#   4. torchfit predict on the CPU with that GPU-trained model            $OUT/frames/predict
# and a summary of every stage (exit code, seconds) in $OUT/gpu-check.json. Every stage has a
# hard time limit. Exit 0 when every stage passed.
#
#   OUT=/some/folder scripts/gpu-check.sh [--quick]
# --quick: the small sample config and short windows (a smoke test on a CPU-only machine).
# PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
export PYTHONPATH="$PWD/images/torchfit${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export MPLCONFIGDIR=${MPLCONFIGDIR:-$OUT/.matplotlib}

check() {
if [ "$QUICK" = 1 ]; then
  BENCH_ARGS=(--quick --budget 60); CONFIG=images/torchfit/sample/frames.yaml; TRAIN_LIMIT=20
  T_BENCH=75; T_TRAIN=120; T_PREDICT=60
else
  BENCH_ARGS=(--budget 160); CONFIG=images/torchfit/sample/frames-bench.yaml; TRAIN_LIMIT=20
  T_BENCH=175; T_TRAIN=75; T_PREDICT=30
fi
STAGES=()
FAILED=0
stage() {  # stage NAME LIMIT_S COMMAND...: run it under a hard limit, record rc and seconds
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=5 "$limit" "$@"
  local rc=$?
  local took=$((SECONDS - t0))
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "== $name: TIMED OUT after ${limit}s"
  [ "$rc" = 0 ] || FAILED=1
  echo "== $name: exit $rc in ${took}s"
  STAGES+=("{\"stage\": \"$name\", \"exit\": $rc, \"seconds\": $took}")
}

stage environment 30 bash -c "
  date -u; uname -a; nproc
  (command -v nvidia-smi >/dev/null && nvidia-smi) || echo 'no nvidia-smi'
  $PY -c 'import sys, torch; print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available()); print(\"gpu\", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
  for m in yaml numpy matplotlib triton; do $PY -c \"import \$m; print('\$m', getattr(\$m, '__version__', '?'))\" 2>/dev/null || echo \"\$m: not installed\"; done
" > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

stage bench "$T_BENCH" "$PY" bench/gpu.py "${BENCH_ARGS[@]}" --json "$OUT/gpu-bench.json" --table "$OUT/gpu-bench.txt"

# Training for real on the GPU (the CPU here), capped by the config's time_limit.
mkdir -p "$OUT/frames"
sed "s/^time_limit:.*/time_limit: $TRAIN_LIMIT/" "$CONFIG" > "$OUT/frames/config.yaml"
stage train "$T_TRAIN" "$PY" -m torchfit.train --config "$OUT/frames/config.yaml" \
  --model "$OUT/frames/model" --output "$OUT/frames/output" --log "$OUT/frames/log"

# The GPU-trained model on the CPU, with no GPU visible at all.
stage predict-cpu "$T_PREDICT" env CUDA_VISIBLE_DEVICES= TORCHFIT_DEVICE=cpu "$PY" -m torchfit.predict \
  --artifact "$OUT/frames/model" --output "$OUT/frames/predict"

echo
echo "== summary"
[ -f "$OUT/gpu-bench.txt" ] && cat "$OUT/gpu-bench.txt"
for f in "$OUT/frames/output/metrics.json" "$OUT/frames/predict/metrics.json"; do
  [ -f "$f" ] && { echo "-- $f"; cat "$f"; }
done
(IFS=,; echo "{\"quick\": $QUICK, \"failed\": $FAILED, \"stages\": [${STAGES[*]}]}") > "$OUT/gpu-check.json"
cat "$OUT/gpu-check.json"
echo "== results in $OUT"
return "$FAILED"
}

check 2>&1 | tee "$OUT/gpu-check.log"
exit "${PIPESTATUS[0]}"
