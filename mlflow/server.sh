#!/usr/bin/env bash
# Start the team MLflow tracking server from environment variables (see mlflow/README.md and
# mlflow/server.env.example). Credentials are read from the environment only, never echoed.
set -euo pipefail

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI (postgresql://user@host:5432/db)}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION (s3://bucket/prefix)}"

case "$MLFLOW_BACKEND_STORE_URI" in
  *://*:*@*) echo "server.sh: put the database password in PGPASSWORD, not in the URI" >&2; exit 2 ;;
esac

export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
args=(
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI"
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION"
  --serve-artifacts
  --host "${MLFLOW_HOST:-127.0.0.1}"
  --port "${MLFLOW_PORT:-5000}"
  --workers "${MLFLOW_WORKERS:-2}"
)
if [[ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]]; then
  args+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")
fi

echo "mlflow server on ${MLFLOW_HOST:-127.0.0.1}:${MLFLOW_PORT:-5000}," \
  "artifacts in $MLFLOW_ARTIFACTS_DESTINATION" >&2
exec mlflow server "${args[@]}" "$@"
