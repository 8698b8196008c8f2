#!/usr/bin/env bash
# Set up a fresh machine: virtualenv, the package and its test tools, the fast BLAS on Linux,
# and the offline sample dataset. Safe to re-run: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -s)" = "Linux" ] && ! ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "setup: installing libopenblas0-pthread (MLX's bundled BLAS is ~40x slower)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread) >/dev/null \
            || echo "setup: warning: could not install libopenblas0-pthread; training will be slow"
    else
        echo "setup: warning: libopenblas0-pthread not found; as root: apt-get install libopenblas0-pthread"
    fi
fi

PY=${PYTHON_FOR_VENV:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
stamp=.venv/.autogolf-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing autogolf and its dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test]"
    touch "$stamp"
fi

bash scripts/bootstrap-parameter-golf.sh --sample
