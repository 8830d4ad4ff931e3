#!/usr/bin/env bash
# The test command: sets up everything a fresh machine needs (Python environment, container
# engine, images), then runs the whole suite: unit, integration (real engine, real storage)
# and end-to-end (real Prefect server and workers). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
exec .venv/bin/pytest tests -ra "$@"
