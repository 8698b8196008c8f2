#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
eval "$(.venv/bin/python -m loop.platform --shell)"
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest "$@"
