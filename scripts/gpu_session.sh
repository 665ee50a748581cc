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
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$OUT/work/train" "$OUT/work/bench"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/work/session.log"; }

log "machine: $(uname -m), python $(python3 -V 2>&1), $(python3 -c 'import torch;print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))')"
command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/work/nvidia-smi.txt" 2>&1

if (( QUICK )); then TRAIN_ARGS=(--quick); BENCH_ARGS=(--quick --device cpu); else TRAIN_ARGS=(); BENCH_ARGS=(); fi

log "stage 1: training (budget ${TRAIN_BUDGET} s)"
timeout --signal=INT --kill-after=20 $((TRAIN_BUDGET + 40)) \
  python3 -m TRAIN_MODULE --out "$OUT/work/train" --budget-s "$TRAIN_BUDGET" "${TRAIN_ARGS[@]}" \
  2>&1 | tee "$OUT/work/train.log"
log "stage 1 exit: ${PIPESTATUS[0]}"

log "stage 2: inference benchmark (budget ${BENCH_BUDGET} s)"
timeout --signal=INT --kill-after=20 $((BENCH_BUDGET + 40)) \
  python3 -m benchmarks.gpu --out "$OUT/work/bench" --budget-s "$BENCH_BUDGET" "${BENCH_ARGS[@]}" \
  2>&1 | tee "$OUT/work/bench.log"
log "stage 2 exit: ${PIPESTATUS[0]}"

# Priors come back as files of their own; the rest in one tarball.
for f in "$OUT"/work/train/*.safetensors; do [[ -e "$f" ]] && cp "$f" "$OUT/"; done
tar -C "$OUT/work" --exclude='*.safetensors' --exclude='*.pt' -czf "$OUT/results.tar.gz" .
cp "$OUT/work/session.log" "$OUT/session.log"
rm -rf "$OUT/work"
log "done" 2>/dev/null || true
ls -la "$OUT"
