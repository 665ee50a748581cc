#!/usr/bin/env bash
# The main job on the embedded default: restore the bundled digits with the shipped digits32 prior
# on a local Ray, Prefect in ephemeral mode, and a local folder as the object store.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.cache/prefect-home}"
# A fresh clone has no .cache/: Prefect cannot create its SQLite database without the folder.
mkdir -p "$PREFECT_HOME"
rm -rf demo_out
.venv/bin/python scripts/make_demo_data.py demo_out/input
.venv/bin/restora restore --input demo_out/input/images --output demo_out/restored \
    --task box --inputs clean --prior digits32 --steps 32 --shard-size 16
echo
.venv/bin/restora inspect demo_out/restored
echo
echo "Restored images: demo_out/restored/images/   manifests: demo_out/restored/manifests/   summary: demo_out/restored/summary.json"
