#!/usr/bin/env bash
# Start the autogolf daemon for the night, in the foreground:
#   bash scripts/run-pi-autoresearch.sh [autogolf run arguments...]
#   e.g. bash scripts/run-pi-autoresearch.sh --until 07:00
# - every argument goes to `autogolf run` unchanged; its first line names the proposer that
#   autogolf.yaml configures (the built-in search unless `proposer:` says agent or ideas);
# - on macOS `caffeinate -i` keeps the Mac from idle-sleeping while it runs (when present);
# - everything it prints also goes to .autogolf/logs/run-<timestamp>.log
#   (.autogolf/logs/latest.log points at the newest one: `tail -f .autogolf/logs/latest.log`);
# - a second daemon is refused by autogolf's lock: the message says which process holds it.
# Stop it with Ctrl-C, `touch .autogolf/STOP` (after the run in flight) or SIGTERM.
# Overrides (tests, unusual layouts): AUTOGOLF (the autogolf command, default
# .venv/bin/autogolf), AUTOGOLF_LOG (the log file to write).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

AUTOGOLF=${AUTOGOLF:-$REPO/.venv/bin/autogolf}
if ! command -v "$AUTOGOLF" >/dev/null 2>&1; then
    echo "run-pi-autoresearch: $AUTOGOLF not found; set up first: bash scripts/setup.sh" >&2
    exit 2
fi

LOG=${AUTOGOLF_LOG:-$REPO/.autogolf/logs/run-$(date +%Y%m%d-%H%M%S).log}
mkdir -p "$(dirname "$LOG")"
: >>"$LOG"
ln -sfn "$(basename "$LOG")" "$(dirname "$LOG")/latest.log" 2>/dev/null || true

command=("$AUTOGOLF" run "$@")
if [ "$(uname -s)" = Darwin ] && command -v caffeinate >/dev/null 2>&1; then
    command=(caffeinate -i "${command[@]}")
fi

{
    echo "run-pi-autoresearch: $(date '+%Y-%m-%d %H:%M:%S %Z') in $REPO"
    echo "run-pi-autoresearch: ${command[*]}"
    echo "run-pi-autoresearch: log $LOG"
} | tee -a "$LOG"

# From here the daemon replaces this shell, so a SIGTERM (launchd, kill) or a Ctrl-C reaches
# it directly and it can finish or abandon the current experiment cleanly. Its output goes
# through `tee`, which ignores those signals so the daemon's last lines still reach the log.
export PYTHONUNBUFFERED=1
exec > >(trap '' INT TERM HUP; exec tee -a "$LOG") 2>&1
exec "${command[@]}"
