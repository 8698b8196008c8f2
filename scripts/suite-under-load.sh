#!/usr/bin/env bash
# Run the whole test suite N times in a row (default 5) beside a CPU hog on one core, to show
# that no test depends on timing luck: bash scripts/suite-under-load.sh [N] [pytest args...]
# Prints one line per run (passed/failed and its duration) and exits non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
eval "$(.venv/bin/python -m loop.platform --shell)"
# The hog: one busy process per core but one, so the suite gets a loaded machine, not none.
hogs=$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))
pids=()
for _ in $(seq "$hogs"); do
    .venv/bin/python -c "while True: pass" &
    pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
failed=0
for n in $(seq "$runs"); do
    start=$(date +%s)
    if .venv/bin/python -m pytest -q -p no:cacheprovider "$@" > ".autogolf-suite-run-$n.log" 2>&1; then
        result=passed
    else
        result=FAILED
        failed=1
    fi
    summary=$(grep -E "[0-9]+ (passed|failed|errors?)" ".autogolf-suite-run-$n.log" | tail -1 || true)
    echo "run $n/$runs: $result in $(( $(date +%s) - start )) s (${summary:-no summary line})"
done
exit "$failed"
