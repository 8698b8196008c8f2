#!/usr/bin/env bash
# Set up a fresh machine: virtualenv, the package and its test tools, the fast BLAS on Linux,
# and the offline sample dataset. Safe to re-run: every step is skipped when already done.
#
#   bash scripts/setup.sh [--cpu | --cuda | --cuda13]     (or AUTOGOLF_BACKEND=cpu|cuda|cuda13)
#
# The MLX backend on Linux: cpu (the default), cuda (NVIDIA GPU, CUDA 12, driver >= 550.54.14)
# or cuda13 (driver >= 580); compute capability 7.5 or newer. macOS always uses Metal.
# Switching backend re-installs MLX: the backend wheels share one library file.
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND=${AUTOGOLF_BACKEND:-cpu}
for arg in "$@"; do
    case "$arg" in
        --cpu) BACKEND=cpu ;;
        --cuda) BACKEND=cuda ;;
        --cuda13) BACKEND=cuda13 ;;
        -h | --help)
            sed -n "2,9p" "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "setup: unknown argument $arg (expected --cpu, --cuda or --cuda13)" >&2
            exit 2
            ;;
    esac
done
case "$BACKEND" in
    cpu | cuda | cuda13) ;;
    *)
        echo "setup: AUTOGOLF_BACKEND=$BACKEND is not a backend (expected cpu, cuda or cuda13)" >&2
        exit 2
        ;;
esac
if [ "$(uname -s)" = "Darwin" ]; then
    if [ "$BACKEND" != cpu ]; then
        echo "setup: MLX's CUDA backend is Linux-only; on macOS MLX uses Metal" >&2
        exit 2
    fi
    BACKEND=metal  # plain mlx on macOS; the Linux backend extras do not apply
fi

if [ "$(uname -s)" = "Linux" ] && ! ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "setup: installing libopenblas0-pthread (MLX's bundled BLAS is ~40x slower)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread) >/dev/null \
            || echo "setup: warning: could not install libopenblas0-pthread; training will be slow"
    else
        echo "setup: warning: libopenblas0-pthread not found; as root: apt-get install libopenblas0-pthread"
    fi
fi

# The judge runs the benchmark and the model server sealed (bubblewrap on Linux; macOS has
# sandbox-exec): without it `autogolf run` refuses to start unless judge.sealed is false.
if [ "$(uname -s)" = "Linux" ] && ! command -v bwrap >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "setup: installing bubblewrap (the judge's seal)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null \
            || echo "setup: warning: could not install bubblewrap; autogolf run will refuse to start"
    else
        echo "setup: warning: bubblewrap not found; as root: apt-get install bubblewrap (the judge's seal)"
    fi
fi

PY=${PYTHON_FOR_VENV:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
# The stamp holds the backend installed (an empty stamp predates backends: it was cpu).
stamp=.venv/.autogolf-installed
installed=$(cat "$stamp" 2>/dev/null || echo none)
if [ -z "$installed" ]; then installed=$([ "$(uname -s)" = Darwin ] && echo metal || echo cpu); fi
# An MLX that cannot load (no backend, or a backend wheel removed under it) is reinstalled.
if [ "$installed" != none ] && ! .venv/bin/python -c "import mlx.core" 2>/dev/null; then
    echo "setup: MLX in .venv does not load; reinstalling its $BACKEND backend"
    installed=broken
fi
if [ "$installed" != "$BACKEND" ] || [ pyproject.toml -nt "$stamp" ]; then
    extras="test"
    [ "$BACKEND" = metal ] || extras="test,$BACKEND"
    echo "setup: installing autogolf[$extras] and its dependencies into .venv (MLX backend: $BACKEND)"
    .venv/bin/python -m pip install -q --upgrade pip
    if [ "$installed" != "$BACKEND" ] && [ "$BACKEND" != metal ]; then
        # mlx-cpu, mlx-cuda-12 and mlx-cuda-13 all own mlx/lib/libmlx.so: remove every one
        # so that the backend installed next is the only owner of that file.
        .venv/bin/python -m pip uninstall -q -y mlx-cpu mlx-cuda-12 mlx-cuda-13 2>/dev/null || true
    fi
    if ! .venv/bin/python -m pip install -q -e ".[$extras]"; then
        echo "setup: pip could not install autogolf[$extras] (see above)." >&2
        [ "$BACKEND" = cpu ] || [ "$BACKEND" = metal ] || echo "setup: the CUDA wheels need" \
            "Linux with glibc >= 2.35 and PyPI access; or install the CPU backend: bash scripts/setup.sh --cpu" >&2
        exit 1
    fi
    echo "$BACKEND" > "$stamp"
fi
if [ "$BACKEND" = cuda ] || [ "$BACKEND" = cuda13 ]; then
    if ! .venv/bin/python -c "import mlx.core as mx, sys; sys.exit(0 if mx.cuda.is_available() else 1)" 2>/dev/null; then
        echo "setup: warning: MLX's CUDA backend is installed but sees no usable GPU" \
            "(driver, compute capability >= 7.5?); run: .venv/bin/autogolf doctor" >&2
    fi
fi

bash scripts/bootstrap-parameter-golf.sh --sample
