#!/usr/bin/env bash
# Build (once per machine) the separate virtual env that runs MONAI Label 0.8.5 for medsr, and print its folder.
# The pinned requirement list lives in pipeline/label_app/env.py (REQUIREMENTS, NO_DEPS); the env is cached in
# $MEDSR_LABEL_ENV or ~/.cache/medsr/label-env-<hash of that list>. Extra arguments: --force, --env-dir DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 -m medsr.pipeline.label_app.env "$@"
