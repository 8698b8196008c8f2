#!/usr/bin/env bash
# Start the autogolf daemon in a detached tmux session that survives logout:
#   bash scripts/tmux-pi-autoresearch.sh [autogolf run arguments...]
#   e.g. bash scripts/tmux-pi-autoresearch.sh --until 07:00
# First it prints what the night will do (`autogolf run --dry-run`: the proposer autogolf.yaml
# configures, the session, warnings, what a night costs), then the session runs
# scripts/run-pi-autoresearch.sh (caffeinate on macOS, a log under .autogolf/logs/). Watch it
# with `tmux attach -t autogolf` (detach again: Ctrl-b d).
# Does nothing (exit 0) when the session already exists.
# Overrides: AUTOGOLF_TMUX_SESSION (session name, default autogolf), AUTOGOLF_LOG (log file).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SESSION=${AUTOGOLF_TMUX_SESSION:-autogolf}

if ! command -v tmux >/dev/null 2>&1; then
    echo "tmux-pi-autoresearch: tmux is not installed (macOS: brew install tmux;" \
        "Debian/Ubuntu: sudo apt-get install tmux)," >&2
    echo "  or run the daemon in this terminal: bash scripts/run-pi-autoresearch.sh $*" >&2
    exit 2
fi

if tmux has-session -t "=$SESSION" 2>/dev/null; then
    echo "tmux-pi-autoresearch: the tmux session '$SESSION' already exists; nothing started."
    echo "  watch it:  tmux attach -t $SESSION"
    echo "  stop it:   touch $REPO/.autogolf/STOP  (after the run in flight)"
    exit 0
fi

# What the night will do, said before it detaches: the proposer (autogolf.yaml's, e.g. the
# built-in search or an agent), the session it continues or starts and why, the warnings and
# what a night costs here. A configuration autogolf refuses stops here, with its message.
AUTOGOLF_CMD=${AUTOGOLF:-$REPO/.venv/bin/autogolf}
if command -v "$AUTOGOLF_CMD" >/dev/null 2>&1; then
    if ! plan=$(cd "$REPO" && "$AUTOGOLF_CMD" run --dry-run "$@" 2>&1); then
        echo "tmux-pi-autoresearch: autogolf would not start; nothing started:" >&2
        printf '%s\n' "$plan" | sed 's/^/  | /' >&2
        exit 1
    fi
    echo "tmux-pi-autoresearch: the night's plan (autogolf run --dry-run):"
    printf '%s\n' "$plan" | sed 's/^/  /'
fi

LOG=${AUTOGOLF_LOG:-$REPO/.autogolf/logs/run-$(date +%Y%m%d-%H%M%S).log}
mkdir -p "$(dirname "$LOG")"
printf -v run '%q ' bash "$REPO/scripts/run-pi-autoresearch.sh" "$@"
# The log path goes in the command, not tmux's environment: a tmux server that is already
# running would not pass our environment on to the new session.
printf -v env_prefix 'env AUTOGOLF_LOG=%q ' "$LOG"
if [ -n "${AUTOGOLF:-}" ]; then
    printf -v env_prefix '%sAUTOGOLF=%q ' "$env_prefix" "$AUTOGOLF"
fi
tmux new-session -d -s "$SESSION" -c "$REPO" "$env_prefix$run"

settled_log() {
    # The daemon's last lines reach the log through `tee` a moment after it exits: wait
    # (at most 5 s) until the log stops growing.
    local before after
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        before=$(wc -c <"$1" 2>/dev/null || echo 0)
        sleep 0.5
        after=$(wc -c <"$1" 2>/dev/null || echo 0)
        [ "$before" = "$after" ] && return 0
    done
}

# A daemon that refuses to start (another holds the lock, a config error) ends its session
# at once, and with it what it printed: watch it for a few seconds and show that here instead.
settle_s=${AUTOGOLF_TMUX_SETTLE_S:-3}
for ((i = 0; i < settle_s * 10; i++)); do
    if ! tmux has-session -t "=$SESSION" 2>/dev/null; then
        settled_log "$LOG"
        echo "tmux-pi-autoresearch: the daemon stopped right after starting; its log ($LOG) ends:" >&2
        tail -n 15 "$LOG" 2>/dev/null | sed 's/^/  | /' >&2
        exit 1
    fi
    sleep 0.1
done

echo "tmux-pi-autoresearch: autogolf is running in the tmux session '$SESSION'."
echo "  watch it:  tmux attach -t $SESSION    (detach: Ctrl-b d; it keeps running)"
echo "  its log:   $LOG"
echo "  stop it:   touch $REPO/.autogolf/STOP  (after the run in flight)"
