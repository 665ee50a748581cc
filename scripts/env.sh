# Environment for local runs and tests on an offline machine (sourced, not executed).
# Ray keeps its default for a local cluster: token authentication, with the token Ray makes in
# ~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH's file) - docs/security.md.
export RAY_USAGE_STATS_ENABLED=0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_TMPDIR="${RAY_TMPDIR:-/tmp/rt$$}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=60
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
mkdir -p "$RAY_TMPDIR"
