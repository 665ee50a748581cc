#!/usr/bin/env bash
# Train the priors Restora ships (digits32, photo32, photo64, mri64) with the recipes in
# restora_core/training/config.py (SHIPPED_RECIPES) and write
#   restora_core/weights/<name>.safetensors  (+ _samples.png, or .npy without PIL)
#
# Runs `restora train` (the one training command: the train-prior Prefect flow, ephemeral unless
# PREFECT_API_URL is set) from the repository; a recipe's missing training set is built first.
#
#   scripts/train_shipped_priors.sh                      # cuda, bf16, 240 s each
#   SECONDS_EACH=200 scripts/train_shipped_priors.sh
#   DEVICE=cpu SECONDS_EACH=30 OUT_DIR=/tmp/p CKPT_ROOT=/tmp/ck \
#       scripts/train_shipped_priors.sh --max-steps 3   # a CPU smoke test
#
# Extra arguments go to every run (any `restora train` flag; --set FIELD=JSON for the rest).
# A rerun with the same CKPT_ROOT resumes from the last checkpoint (FRESH=1 starts over).
# If $OUT is set (the device tool's output folder), the priors, grids and logs are copied there.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
SECONDS_EACH=${SECONDS_EACH:-240}
OUT_DIR=${OUT_DIR:-restora_core/weights}
CKPT_ROOT=${CKPT_ROOT:-.cache/checkpoints}
NAMES=${NAMES:-"digits32 photo32 photo64 mri64"}
BF16=()
[[ "$DEVICE" == cuda* ]] && BF16=(--bf16)

"$PYTHON" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '', file=sys.stderr)"
mkdir -p "$OUT_DIR" "$CKPT_ROOT"
[[ -n "${OUT:-}" ]] && mkdir -p "$OUT"
status=0
for name in $NAMES; do
  [[ "${FRESH:-0}" == 1 ]] && rm -rf "${CKPT_ROOT:?}/$name"
  log="$OUT_DIR/${name}_train.log"
  echo "== $name -> $OUT_DIR/$name.safetensors (log $log)" >&2
  "$PYTHON" -m flows.cli train --recipe "$name" --device "$DEVICE" "${BF16[@]}" \
      --max-seconds "$SECONDS_EACH" --output "$OUT_DIR/$name.safetensors" \
      --checkpoint-dir "$CKPT_ROOT/$name" "$@" > "$log" 2>&1
  rc=$?
  grep -E '^(trained|prior:)|rror' "$log" >&2
  if [[ $rc -ne 0 ]]; then
    echo "!! $name failed; see $log" >&2
    status=1
  fi
  if [[ -n "${OUT:-}" ]]; then
    cp -f "$OUT_DIR/$name.safetensors" "$OUT_DIR/${name}_samples."* "$log" "$OUT/" 2>/dev/null || true
  fi
done
exit $status
