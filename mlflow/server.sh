#!/usr/bin/env bash
# Start an MLflow tracking server on 127.0.0.1 with a sqlite backend and an artifacts folder.
#
#   bash mlflow/server.sh [PORT] [FOLDER]
#
# PORT defaults to 5000; FOLDER (default: mlflow/server_data) holds mlflow.db and artifacts/.
# Then train against it:
#   MLFLOW_TRACKING_URI=http://127.0.0.1:PORT python -m monai.bundle run training \
#       --config_file bundles/srcnn/train.json --tracking mlflow/tracking.json
# Env: PYTHON (interpreter, default python3), MLFLOW_SERVER_WORKERS (default 1), MLFLOW_HOST (default 127.0.0.1).
set -euo pipefail
PORT="${1:-5000}"
FOLDER="${2:-$(dirname "$0")/server_data}"
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || (( PORT < 1 || PORT > 65535 )); then
    echo "server.sh: PORT must be a number from 1 to 65535, got '$PORT'" >&2
    exit 2
fi
mkdir -p "$FOLDER/artifacts"
FOLDER="$(cd "$FOLDER" && pwd)"
exec "${PYTHON:-python3}" -m mlflow server \
    --backend-store-uri "sqlite:///$FOLDER/mlflow.db" \
    --artifacts-destination "$FOLDER/artifacts" \
    --host "${MLFLOW_HOST:-127.0.0.1}" \
    --port "$PORT" \
    --workers "${MLFLOW_SERVER_WORKERS:-1}"
