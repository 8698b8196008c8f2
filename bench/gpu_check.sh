#!/usr/bin/env bash
# The GPU check of issue 19, made to run ONCE on a lent NVIDIA machine within 10 minutes:
# smoke and breadth 5 times each (run-to-run spread of val_bpb), the trainer throughput
# benchmark for our trainer and, when .upstream/parameter-golf/train_gpt_mlx.py is present,
# upstream's MLX trainer at the same settings; one results file, JSON + markdown.
#
#   bash bench/gpu_check.sh [--out DIR] [--budget-s S] [--cpu] [--dry-run] [gpu_check.py options]
#
# Python: $PYTHON if set; else .venv/bin/python or .venv-cuda/bin/python when its MLX sees
# CUDA; else a fresh .venv-cuda with `pip install -e .[cuda]` (PyPI needed; a failed install
# is reported in the results, which are written in any case). --cpu tests this script on a
# machine without a GPU (one tiny smoke is enough: --cpu --runs 1 --profiles smoke);
# --dry-run runs nothing and writes the plan with its exact commands.
# Results: DIR/results.json, DIR/results.md, DIR/logs/ (default docs/results/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
invocation="bash bench/gpu_check.sh $*"

out=docs/results/gpu
budget=540
cpu=0
dry=0
rest=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --budget-s) budget=$2; shift 2 ;;
        --cpu) cpu=1; rest+=("$1"); shift ;;
        --dry-run) dry=1; rest+=("$1"); shift ;;
        -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) rest+=("$1"); shift ;;
    esac
done
case "$budget" in
    '' | *[!0-9]*) echo "gpu_check: --budget-s must be whole seconds, got '$budget'" >&2; exit 2 ;;
esac
mkdir -p "$out"

sees_cuda() {
    [ -x "$1" ] && "$1" -c "import mlx.core as mx, sys; sys.exit(0 if mx.cuda.is_available() else 1)" 2>/dev/null
}

if ! command -v python3 >/dev/null 2>&1; then
    # The helper needs a Python 3 (standard library only); say so where the results go.
    printf '# GPU check: not run\n\nNo python3 on PATH on %s; nothing measured.\n' \
        "$(uname -n)" >"$out/results.md"
    echo "gpu_check: no python3 on PATH; wrote $out/results.md" >&2
    exit 1
fi

note=""
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
