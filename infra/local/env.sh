# Sourced by the local scripts: quiet, offline-safe, loopback-only Ray and Prefect.
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
export RAY_TMPDIR="${RAY_TMPDIR:-/tmp/restora-ray}"
mkdir -p "$RAY_TMPDIR"
