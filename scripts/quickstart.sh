#!/usr/bin/env bash
# Set up a fresh machine and run the main job: the loop on the offline sample data with the
# smoke ladder for a few experiments, then the results table. Extra arguments go to `run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/autogolf doctor
.venv/bin/autogolf run --ladder smoke --max-experiments "${AUTOGOLF_DEMO_EXPERIMENTS:-3}" "$@"
.venv/bin/autogolf status
