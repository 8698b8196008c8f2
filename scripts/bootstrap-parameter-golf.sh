#!/usr/bin/env bash
# Get the data the trainer needs, into the cache root (the main checkout, or
# $AUTOGOLF_CACHE_ROOT):
#   --sample            build the offline sample dataset from CPython's own text (no network);
#                       a no-op when it exists and validates; --force rebuilds it.
#   --vocab V           with --sample: its tokenizer's size, 1024 (default), 4096 or 8192
#                       (dataset sample_spV; `dataset: sample_spV` in autogolf.yaml).
#   --train-shards N    the real FineWeb data: clone upstream openai/parameter-golf at the
#                       commit in benchmark/UPSTREAM_COMMIT.txt into .upstream/parameter-golf
#                       and run its downloader; a no-op when complete; fails fast offline.
#   --variant V         with --train-shards: sp1024 (default), sp4096, sp8192 or byte260
#                       (`dataset: fineweb_V` in autogolf.yaml; sp1024 is `fineweb`).
# Both verify every shard's header and size when done.
# Overrides (mirrors, tests): AUTOGOLF_UPSTREAM_URL, AUTOGOLF_UPSTREAM_COMMIT,
# AUTOGOLF_HUB_URL (the reachability probe), AUTOGOLF_NET_TIMEOUT (seconds, default 15).
set -euo pipefail

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    echo "usage: $0 --sample [--vocab V] [--force] | --train-shards N [--variant V] [--force]"
}

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x "$REPO/.venv/bin/python" ]; then
    PY=$REPO/.venv/bin/python
else
    PY=python3
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

UPSTREAM_URL=${AUTOGOLF_UPSTREAM_URL:-https://github.com/openai/parameter-golf.git}
HUB_URL=${AUTOGOLF_HUB_URL:-https://huggingface.co/api/datasets}
NET_TIMEOUT=${AUTOGOLF_NET_TIMEOUT:-15}

die() {
    echo "bootstrap: error: $*" >&2
    exit 1
}

mode=""
force=0
shards=""
vocab=1024
variant=sp1024
while [ $# -gt 0 ]; do
    case "$1" in
        --sample) mode=sample ;;
        --train-shards)
            [ $# -ge 2 ] || die "--train-shards needs a number"
            mode=real; shards=$2; shift ;;
        --train-shards=*) mode=real; shards=${1#*=} ;;
        --vocab)
            [ $# -ge 2 ] || die "--vocab needs a number"
            vocab=$2; shift ;;
        --vocab=*) vocab=${1#*=} ;;
        --variant)
            [ $# -ge 2 ] || die "--variant needs a name"
            variant=$2; shift ;;
        --variant=*) variant=${1#*=} ;;
        --force) force=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
[ -n "$mode" ] || { usage >&2; die "say --sample or --train-shards N"; }
[ "$mode" = sample ] || [ "$vocab" = 1024 ] \
    || die "--vocab goes with --sample; for the real data say --variant sp$vocab"
[ "$mode" = real ] || [ "$variant" = sp1024 ] \
    || die "--variant goes with --train-shards; for the sample say --vocab N"

ROOT=$("$PY" -m loop.data.datasets --root) || die "cannot run $PY -m loop.data.datasets (run scripts/setup.sh)"

# ---------------------------------------------------------------------------- sample
if [ "$mode" = sample ]; then
    case "$vocab" in
        1024|4096|8192) ;;
        *) die "--vocab must be 1024, 4096 or 8192, got '$vocab'" ;;
    esac
    args=(--root "$ROOT" --vocab "$vocab")
    [ "$force" = 1 ] && args+=(--force)
    exec "$PY" -m loop.data.sample_data "${args[@]}"
fi

# ---------------------------------------------------------------------------- real data
case "$shards" in
    ''|*[!0-9]*) die "--train-shards needs a whole number, got '$shards'" ;;
esac
[ "$shards" -ge 1 ] || die "--train-shards must be at least 1"

COMMIT=${AUTOGOLF_UPSTREAM_COMMIT:-$(tr -d '[:space:]' < "$REPO/benchmark/UPSTREAM_COMMIT.txt")} \
    || die "cannot read benchmark/UPSTREAM_COMMIT.txt"
[ -n "$COMMIT" ] || die "benchmark/UPSTREAM_COMMIT.txt is empty"
case "$variant" in
    sp1024|sp4096|sp8192) TOKENIZER_FILE="fineweb_${variant#sp}_bpe.model" ;;
    byte260) TOKENIZER_FILE=fineweb_pure_byte_260.json ;;
    *) die "--variant must be sp1024, sp4096, sp8192 or byte260, got '$variant'" ;;
esac
UP="$ROOT/.upstream/parameter-golf"
DATA_DIR="$UP/data/datasets/fineweb10B_$variant"
TOKENIZER="$UP/data/tokenizers/$TOKENIZER_FILE"
OFFLINE_HINT="without network, build the offline sample instead: bash scripts/bootstrap-parameter-golf.sh --sample"

verify() {
    [ -f "$TOKENIZER" ] || { echo "bootstrap: missing tokenizer $TOKENIZER" >&2; return 1; }
    "$PY" -m loop.data.shards --validate "$DATA_DIR" --train-shards "$1"
}

have_commit() {
    [ -d "$UP/.git" ] && [ "$(git -C "$UP" rev-parse HEAD 2>/dev/null)" = "$COMMIT" ]
}

check_network() {
    # A short, bounded probe so an offline machine fails in seconds, not minutes. The
    # timeout is Python's: macOS has no `timeout` command.
    "$PY" - "$UPSTREAM_URL" "$NET_TIMEOUT" <<'EOF' || die "cannot reach $UPSTREAM_URL (no network, or no answer within ${NET_TIMEOUT}s); $OFFLINE_HINT"
import os, subprocess, sys
env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
try:
    # No pipes: a killed git's children must not keep us waiting on its output.
    done = subprocess.run(["git", "ls-remote", "--heads", sys.argv[1]], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=float(sys.argv[2]))
except subprocess.TimeoutExpired:
    sys.exit(1)
sys.exit(done.returncode)
EOF
}

check_hub() {
    "$PY" - "$HUB_URL" "$NET_TIMEOUT" <<'EOF' || die "cannot reach $HUB_URL (no network, or no answer within ${NET_TIMEOUT}s); $OFFLINE_HINT"
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).close()
EOF
}

ensure_downloader_deps() {
    # Only what the pinned downloader itself imports; installed on demand (we are online).
    grep -q huggingface_hub "$UP/data/cached_challenge_fineweb.py" || return 0
    "$PY" -c "import huggingface_hub" 2>/dev/null && return 0
    echo "bootstrap: installing huggingface_hub (upstream's downloader needs it)"
    "$PY" -m pip install -q huggingface_hub \
        || die "could not install huggingface_hub: $PY -m pip install huggingface_hub"
}

if [ "$force" = 0 ] && have_commit && verify "$shards" >/dev/null 2>&1; then
    echo "bootstrap: real $variant data already complete ($shards train shards) in $DATA_DIR"
    exit 0
fi

if ! have_commit; then
    command -v git >/dev/null || die "git is not installed"
    check_network
    echo "bootstrap: fetching upstream parameter-golf at $COMMIT into $UP"
    mkdir -p "$UP"
    [ -d "$UP/.git" ] || git -C "$UP" init -q
    git -C "$UP" remote remove origin 2>/dev/null || true
    git -C "$UP" remote add origin "$UPSTREAM_URL"
    git -C "$UP" fetch -q --depth 1 origin "$COMMIT" || git -C "$UP" fetch -q origin \
        || die "git fetch from $UPSTREAM_URL failed"
    git -C "$UP" -c advice.detachedHead=false checkout -q "$COMMIT" \
        || die "commit $COMMIT not found in $UPSTREAM_URL"
fi

[ -f "$UP/data/cached_challenge_fineweb.py" ] \
    || die "$UP has no data/cached_challenge_fineweb.py; remove $UP and re-run"
check_hub
ensure_downloader_deps
echo "bootstrap: downloading $variant data ($shards train shards) with upstream's downloader"
(cd "$UP" && "$PY" data/cached_challenge_fineweb.py --variant "$variant" --train-shards "$shards") \
    || die "upstream's downloader failed (see above); $OFFLINE_HINT"

echo "bootstrap: verifying every shard's header and size"
verify "$shards" || die "downloaded data failed verification (see above); delete the files named there and re-run"
echo "bootstrap: real $variant data ready in $DATA_DIR"
