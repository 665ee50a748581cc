#!/usr/bin/env bash
# The whole test suite, with the environment Ray and Prefect need on an offline machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec .venv/bin/python -m pytest -q -ra "$@"
