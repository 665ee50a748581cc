#!/usr/bin/env bash
# A local Prefect server and UI on http://127.0.0.1:4200 (Ctrl-C stops it), guarded by an auth
# string: PREFECT_SERVER_API_AUTH_STRING, else the one kept in $PREFECT_HOME/server_auth_string
# (made here once, mode 600). The UI asks for it; clients send it from the environment:
#   export PREFECT_API_URL=http://127.0.0.1:4200/api
#   export PREFECT_API_AUTH_STRING="$(cat ~/.prefect/server_auth_string)"
#   restora restore ...
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ -z "${PREFECT_SERVER_API_AUTH_STRING:-}" ]; then
  file="${PREFECT_HOME:-$HOME/.prefect}/server_auth_string"
  if [ ! -s "$file" ]; then
    mkdir -p "$(dirname "$file")"
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$file")
    echo "made a Prefect auth string in $file" >&2
  fi
  PREFECT_SERVER_API_AUTH_STRING="$(cat "$file")"
  export PREFECT_SERVER_API_AUTH_STRING
fi
exec prefect server start --host 127.0.0.1 --port "${PREFECT_PORT:-4200}"
