#!/usr/bin/env bash
# A local Prefect server and UI on http://127.0.0.1:4200 (Ctrl-C stops it). Then, elsewhere:
#   export PREFECT_API_URL=http://127.0.0.1:4200/api ; restora restore ...
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec prefect server start --host 127.0.0.1 --port "${PREFECT_PORT:-4200}"
