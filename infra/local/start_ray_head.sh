#!/usr/bin/env bash
# A local Ray head with its dashboard/job server on http://127.0.0.1:8265 (Ctrl-C stops it), in
# token mode: `ray start` would otherwise leave a cluster unauthenticated. The token is
# RAY_AUTH_TOKEN, else RAY_AUTH_TOKEN_PATH's file, else ~/.ray/auth_token (made here if missing).
# Then, in a shell with the same token variables:
#   RAY_ADDRESS=http://127.0.0.1:8265 infra/ray/submit.sh --input ... --output ...
#   or: RAY_AUTH_MODE=token restora restore --ray-address 127.0.0.1:6379 ...
set -euo pipefail
source "$(dirname "$0")/env.sh"
export RAY_AUTH_MODE=token
if [ -z "${RAY_AUTH_TOKEN:-}${RAY_AUTH_TOKEN_PATH:-}" ]; then
  ray get-auth-token --generate > /dev/null   # prints the token: keep it off the terminal
fi
exec ray start --head --block --node-ip-address=127.0.0.1 --port "${RAY_PORT:-6379}" \
  --dashboard-host=127.0.0.1 --dashboard-port "${RAY_DASHBOARD_PORT:-8265}" \
  --include-dashboard=true --temp-dir "$RAY_TMPDIR"
