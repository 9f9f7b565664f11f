#!/usr/bin/env bash
# Serve the SR bundles with MONAI Label on a loopback address (builds the env first if needed).
# Usage: pipeline/label_app/start_server.sh DATASTORE_DIR [PORT] [extra `medsr label serve` options]
# e.g.   pipeline/label_app/start_server.sh ~/images 8000 --models espcn,srcnn --runs-dir runs
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 DATASTORE_DIR [PORT] [--models ...] [--runs-dir ...]" >&2
  exit 2
fi
datastore=$1; shift
port=8000
if [ $# -gt 0 ] && [[ $1 != -* ]]; then port=$1; shift; fi
cd "$(dirname "$0")/../.."
exec python3 -m medsr.pipeline.cli label serve --datastore "$datastore" --port "$port" "$@"
