#!/usr/bin/env bash
# Quickstart: set up, then serve the example FastAPI app with several workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pronghorn examples.main:app --host 0.0.0.0 --port "${PORT:-8000}" --workers "${WORKERS:-4}" "$@"
