#!/usr/bin/env bash
# The GPU check of issue 19, made to run ONCE on a lent NVIDIA machine within 10 minutes:
# smoke and breadth 5 times each (run-to-run spread of val_bpb), the trainer throughput
# benchmark for our trainer and, when .upstream/parameter-golf/train_gpt_mlx.py is present,
# upstream's MLX trainer at the same settings; one results file, JSON + markdown.
#
#   bash bench/gpu_check.sh [--out DIR] [--budget-s S] [--wheels DIR] [--cpu] [--dry-run] [...]
#   bash bench/gpu_check.sh --stash DIR      (only keep DIR's wheel parts for the next call)
#
# Python, first that works: $PYTHON; .venv or .venv-cuda, or python3, whose MLX sees CUDA;
# python3 with MLX's CUDA wheels from --wheels DIR (default .whl/ when present; made here by
# bench/gpu_wheels.sh, for a machine with no package registry: parts of a wheel too big for
# one transfer are stashed by an earlier --stash call and joined here); else a new .venv-cuda
# with `pip install -e .[cuda]` (PyPI). A failed install is reported in the results, which
# are written in any case. --cpu tests this script without a GPU (--cpu --runs 1 --profiles
# smoke is enough); --dry-run runs nothing and writes the plan with its exact commands.
# Results: DIR/results.json, DIR/results.md, DIR/logs/ (default docs/results/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
invocation="bash bench/gpu_check.sh $*"

out=docs/results/gpu
budget=540
cpu=0
dry=0
wheels=""
stash=""
# Survives between two calls on a machine that stays up; /tmp, so never inside the checkout.
STASH=${GPU_CHECK_STASH:-/tmp/gpu_check_wheels}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
rest=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --budget-s) budget=$2; shift 2 ;;
        --wheels) wheels=$2; shift 2 ;;
        --stash) stash=$2; shift 2 ;;
        --cpu) cpu=1; rest+=("$1"); shift ;;
        --dry-run) dry=1; rest+=("$1"); shift ;;
        -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) rest+=("$1"); shift ;;
    esac
done
case "$budget" in
    '' | *[!0-9]*) echo "gpu_check: --budget-s must be whole seconds, got '$budget'" >&2; exit 2 ;;
esac

if [ -n "$stash" ]; then
    [ -d "$stash" ] || { echo "gpu_check: --stash $stash: no such folder" >&2; exit 2; }
    mkdir -p "$STASH"
    cp -- "$stash"/* "$STASH"/
    echo "gpu_check: stashed $(find "$stash" -maxdepth 1 -type f | wc -l) file(s) in $STASH; now run the check"
    exit 0
fi
mkdir -p "$out"

if ! command -v python3 >/dev/null 2>&1; then
    # The helper needs a Python 3 (standard library only); say so where the results go.
    printf '# GPU check: not run\n\nNo python3 on PATH on %s; nothing measured.\n' \
        "$(uname -n)" >"$out/results.md"
    echo "gpu_check: no python3 on PATH; wrote $out/results.md" >&2
    exit 1
fi

sees_cuda() {
    [ -x "$1" ] && "$1" -c "import mlx.core as mx, sys; sys.exit(0 if mx.cuda.is_available() else 1)" 2>/dev/null
}

# Wheels in $1 (and any stashed by an earlier call) -> $SITE, on python3's path. Split wheels
# (NAME.whl.part-aa, -ab, ...) are joined in name order and checked against SHA256SUMS.
install_wheels() {
    mkdir -p "$STASH"
    cp -- "$1"/* "$STASH"/
    local first whole
    for first in "$STASH"/*.whl.part-aa; do
        [ -e "$first" ] || continue
        whole=${first%.part-aa}
        cat -- "$whole".part-* >"$whole.joining" && mv -- "$whole.joining" "$whole"
    done
    if ! (cd "$STASH" && sha256sum --quiet -c SHA256SUMS) >"$out/install.log" 2>&1; then
        echo "wheels in $STASH incomplete or damaged (was the --stash call made on this machine?): $(tr '\n' ' ' <"$out/install.log")"
        return 1
    fi
    if ! python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" \
        "$STASH"/*.whl >>"$out/install.log" 2>&1; then
        echo "pip could not install the wheels: $(tail -n 3 "$out/install.log" | tr '\n' ' ')"
        return 1
    fi
    echo "installed $(cd "$STASH" && echo ./*.whl) into $SITE"
}

# MLX's library looks for the CUDA libraries beside itself (RPATH ../../nvidia/*/lib); from
# $SITE they are in python3's own site-packages instead, as NVIDIA's pip packages.
cuda_library_path() {
    python3 - <<'PY' 2>/dev/null || true
import os
try:
    import nvidia
except ImportError:
    raise SystemExit
dirs = sorted({os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)
               if os.path.isdir(os.path.join(p, d, "lib"))})
print(":".join(dirs))
PY
}

note=""
[ -n "$wheels" ] || { [ -d .whl ] && wheels=.whl; } || true
if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
elif [ "$cpu" = 1 ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
elif sees_cuda .venv/bin/python; then
    py=.venv/bin/python
elif sees_cuda .venv-cuda/bin/python; then
    py=.venv-cuda/bin/python
elif sees_cuda "$(command -v python3)"; then
    py=$(command -v python3)  # a machine image with mlx[cuda] already installed
elif [ "$dry" = 1 ]; then
    py=.venv-cuda/bin/python
    note="would create .venv-cuda and pip install -e .[cuda]"
    if [ -n "$wheels" ]; then py=python3; note="would install the wheels in $wheels into $SITE"; fi
elif [ -n "$wheels" ]; then
    py=$(command -v python3)
    if [ ! -d "$wheels" ]; then
        note="--wheels $wheels: no such folder"
    elif note=$(install_wheels "$wheels"); then
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
        libs=$(cuda_library_path)
        [ -z "$libs" ] || export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        note="$note in $(($(date +%s) - start)) s"
        sees_cuda "$py" || note="$note, but MLX sees no CUDA device"
    fi
    echo "gpu_check: $note"
else
    py=.venv-cuda/bin/python
    # Half the budget at most: the measurements need the rest.
    limit=$((budget / 2))
    echo "gpu_check: installing autogolf[cuda] into .venv-cuda (at most ${limit} s)"
    if { [ -x "$py" ] || python3 -m venv .venv-cuda; } &&
        timeout "$limit" "$py" -m pip install -q --timeout 20 --retries 1 -e ".[cuda]" \
            >"$out/install.log" 2>&1; then
        note="installed .venv-cuda with pip install -e .[cuda] in $(($(date +%s) - start)) s"
        sees_cuda "$py" || note="$note, but MLX sees no CUDA device"
    else
        note="install failed after $(($(date +%s) - start)) s: $(tail -n 3 "$out/install.log" 2>/dev/null | tr '\n' ' ')"
    fi
    echo "gpu_check: $note"
fi

left=$((budget - ($(date +%s) - start)))
# The helper needs only the standard library, so it reports even when $py has no MLX.
exec python3 bench/gpu_check.py --out "$out" --budget-s "$left" --python "$py" \
    --install-note "$note" --invocation "$invocation" ${rest[@]+"${rest[@]}"}
