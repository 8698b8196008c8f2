#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
eval "$(.venv/bin/python -c 'import shlex; from loop.platform import blas_env; print("".join(f"export {k}={shlex.quote(v)}\n" for k, v in blas_env().items()))')"
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest "$@"
