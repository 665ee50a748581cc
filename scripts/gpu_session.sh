#!/usr/bin/env bash
# Every GPU item of the open issues in one run on a lent GPU machine, inside a hard time budget:
#   1. the training stage (issue 11): loop-vs-bare-step benchmark, then photo32 / photo64 / mri64
#      trained in sequence with per-prior time limits (resumes from checkpoints in $OUT/train);
#   2. the inference benchmark (issue 12): matrix rate, fast paths, batches, sampler, pipeline ratio.
# Results land flat in $OUT: the priors as separate files (the device tool returns at most 8 files,
# 16 MiB each) and everything else packed into one tarball.
#
#   OUT=/tmp/gpu bash scripts/gpu_session.sh [--quick]      # --quick: CPU smoke test, tiny settings
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=0; [[ "${1:-}" == "--quick" ]] && QUICK=1
OUT=${OUT:?set OUT to the results folder}
TRAIN_BUDGET=${TRAIN_BUDGET:-330}
BENCH_BUDGET=${BENCH_BUDGET:-200}
PY=${PY:-python3}   # the GPU image's python3 holds torch; here: PY=.venv/bin/python
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$OUT/work/train" "$OUT/work/bench"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/work/session.log"; }

log "machine: $(uname -m), python $("$PY" -V 2>&1), $("$PY" -c 'import torch;print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))')"
command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/work/nvidia-smi.txt" 2>&1

if (( QUICK )); then TRAIN_ARGS=(--quick); BENCH_ARGS=(--quick --device cpu); else TRAIN_ARGS=(); BENCH_ARGS=(); fi

log "stage 1: training (budget ${TRAIN_BUDGET} s)"
timeout --signal=INT --kill-after=20 $((TRAIN_BUDGET + 15)) \
  "$PY" -m priors.gpu_stage --out "$OUT/work/train" --budget-s "$TRAIN_BUDGET" "${TRAIN_ARGS[@]}" \
  2>&1 | tee "$OUT/work/train.log"
log "stage 1 exit: ${PIPESTATUS[0]}"

log "stage 2: inference benchmark (budget ${BENCH_BUDGET} s)"
timeout --signal=INT --kill-after=20 $((BENCH_BUDGET + 15)) \
  "$PY" -m benchmarks.gpu --out "$OUT/work/bench" --budget-s "$BENCH_BUDGET" "${BENCH_ARGS[@]}" \
  2>&1 | tee "$OUT/work/bench.log"
log "stage 2 exit: ${PIPESTATUS[0]}"

if (( ! QUICK )); then
  log "stage 3: GPU-only tests"
  timeout 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/core/test_gpu_paths.py \
    tests/core/test_training.py 2>&1 | tee "$OUT/work/gpu_tests.log"
  log "stage 3 exit: ${PIPESTATUS[0]}"
fi

# Priors come back as files of their own; the rest in one tarball.
for f in "$OUT"/work/train/*.safetensors; do [[ -e "$f" ]] && cp "$f" "$OUT/"; done
tar -C "$OUT/work" --exclude='*.safetensors' --exclude='*.pt' -czf "$OUT/results.tar.gz" .
cp "$OUT/work/session.log" "$OUT/session.log"
rm -rf "$OUT/work"
ls -la "$OUT"
