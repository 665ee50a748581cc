# Sourced by the local scripts: quiet, offline-safe, loopback-only Ray and Prefect.
# Ray runs in token mode (docs/security.md); its token is ~/.ray/auth_token unless
# RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH says otherwise.
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
export RAY_TMPDIR="${RAY_TMPDIR:-/tmp/restora-ray}"
mkdir -p "$RAY_TMPDIR"
