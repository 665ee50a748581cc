#!/usr/bin/env bash
# Submit a restore (default) or train job to a Ray cluster: the driver runs on the cluster, actors
# or Ray Train workers on its nodes.
#   export RAY_AUTH_TOKEN_PATH=~/.ray/restora-cluster.token   # or RAY_AUTH_TOKEN (docs/security.md)
#   RAY_ADDRESS=http://<head>:8265 infra/ray/submit.sh --spec infra/jobs/demo-job.json [restore flags]
#   RAY_ADDRESS=http://<head>:8265 infra/ray/submit.sh train --data s3://b/imgs --resolution 64 \
#       --channels 3 --workers 8 --gpus-per-worker 1 --output s3://b/priors/p.safetensors
# Environment: RAY_ADDRESS (job server, default http://127.0.0.1:8265); RESTORA_PYTHON (the
# interpreter on the cluster, default python); RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / the default
# ~/.ray/auth_token: the cluster's token, sent by `ray job submit` in a header (token mode is
# turned on here when one of the variables is set). PREFECT_API_URL is forwarded when set, so
# the run shows up in your Prefect UI (else Prefect runs in ephemeral mode inside the job).
# Secrets are never forwarded: the job's runtime_env (env_vars included) is recorded by Ray and
# shown by `ray job list` and the dashboard to anyone who can reach it. Storage credentials and
# PREFECT_API_AUTH_STRING come from the cluster's nodes (instance role, Kubernetes Secret, image).
set -euo pipefail
cd "$(dirname "$0")/../.."
ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
PY="${RESTORA_PYTHON:-python}"
COMMAND=restore
case "${1:-}" in restore|train) COMMAND="$1"; shift ;; esac
# A credential in the flags would be recorded in the job's entrypoint: refuse it here.
python3 -m tasks.credentials "$@" || exit 2
if [ -n "${RAY_AUTH_TOKEN:-}${RAY_AUTH_TOKEN_PATH:-}" ]; then
  export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
fi
ENV_VARS="{\"RAY_USAGE_STATS_ENABLED\": \"0\", \"DO_NOT_TRACK\": \"1\", \"PREFECT_SERVER_ANALYTICS_ENABLED\": \"false\""
# Only names that carry no secret (AWS_PROFILE names a profile the nodes hold).
for var in PREFECT_API_URL PREFECT_HOME AWS_DEFAULT_REGION AWS_ENDPOINT_URL AWS_PROFILE; do
  if [ -n "${!var:-}" ]; then ENV_VARS="$ENV_VARS, \"$var\": \"${!var}\""; fi
done
ENV_VARS="$ENV_VARS}"
RUNTIME_ENV="{\"working_dir\": \".\", \"excludes\": [\".venv\", \".git\", \".cache\", \"demo_out\", \"test-artifacts\", \"*.pyc\"], \"env_vars\": $ENV_VARS}"
exec ray job submit --address "$ADDRESS" --runtime-env-json "$RUNTIME_ENV" -- \
  "$PY" -m flows.cli "$COMMAND" "$@"
