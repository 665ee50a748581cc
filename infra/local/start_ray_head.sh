#!/usr/bin/env bash
# A local Ray head with its dashboard/job server on http://127.0.0.1:8265 (Ctrl-C stops it). Then:
#   RAY_ADDRESS=http://127.0.0.1:8265 infra/ray/submit.sh --input ... --output ...
#   or: restora restore --ray-address 127.0.0.1:6379 ...
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec ray start --head --block --node-ip-address=127.0.0.1 --port "${RAY_PORT:-6379}" \
  --dashboard-host=127.0.0.1 --dashboard-port "${RAY_DASHBOARD_PORT:-8265}" \
  --include-dashboard=true --temp-dir "$RAY_TMPDIR"
