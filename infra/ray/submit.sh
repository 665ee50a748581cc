#!/usr/bin/env bash
# Submit a restore job to a Ray cluster: the driver runs on the cluster, actors on its GPUs.
#   RAY_ADDRESS=http://<head>:8265 infra/ray/submit.sh --spec infra/jobs/demo-job.json [restore flags]
# Environment: RAY_ADDRESS (job server, default http://127.0.0.1:8265); RESTORA_PYTHON (the
# interpreter on the cluster, default python); PREFECT_API_URL is forwarded when set, so the
# run shows up in your Prefect UI (else Prefect runs in ephemeral mode inside the job).
set -euo pipefail
cd "$(dirname "$0")/../.."
ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
PY="${RESTORA_PYTHON:-python}"
ENV_VARS="{\"RAY_USAGE_STATS_ENABLED\": \"0\", \"DO_NOT_TRACK\": \"1\", \"PREFECT_SERVER_ANALYTICS_ENABLED\": \"false\""
for var in PREFECT_API_URL PREFECT_HOME AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION AWS_ENDPOINT_URL; do
  if [ -n "${!var:-}" ]; then ENV_VARS="$ENV_VARS, \"$var\": \"${!var}\""; fi
done
ENV_VARS="$ENV_VARS}"
RUNTIME_ENV="{\"working_dir\": \".\", \"excludes\": [\".venv\", \".git\", \".cache\", \"demo_out\", \"test-artifacts\", \"*.pyc\"], \"env_vars\": $ENV_VARS}"
exec ray job submit --address "$ADDRESS" --runtime-env-json "$RUNTIME_ENV" -- \
  "$PY" -m flows.cli restore "$@"
