#!/usr/bin/env bash
# Fast correctness gate run before every benchmark (SPEC section 4): exit 0 = pass.
#
#   bash autoresearch.checks.sh
#
# Checks, in order (the tiny run is skipped when a static check already failed):
#   compile      the trainer and the extractor are valid Python
#   no-network   no networking import in benchmark/*.py or the extractor
#   tiny-run     the real trainer does one forward/backward/optimizer step on a tiny model, then
#                export + roundtrip, and prints a finite score (a few seconds on a CPU)
# Every failure is printed as `checks: FAILED <check>: <why>`.
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
TRAINER=benchmark/train_gpt_mlx.py
EXTRACTOR=scripts/extract_parameter_golf_metrics.py
failed=()

fail() {
    echo "checks: FAILED $1: $2" >&2
    failed+=("$1")
}

# compile: compile() in memory, so no __pycache__ is written into the tree.
if out=$("$PYTHON" - "$TRAINER" "$EXTRACTOR" 2>&1 <<'EOF'
import sys

bad = 0
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as f:
            compile(f.read(), path, "exec")
    except (OSError, SyntaxError, ValueError) as exc:
        print(f"{path}: {exc}")
        bad = 1
sys.exit(bad)
EOF
); then
    echo "checks: ok compile"
else
    fail compile "$out"
fi

# no-network: the benchmark must not open sockets or download (SPEC section 4). Static, from
# the syntax tree: `import x`, `from x import y`, and __import__/import_module("x") calls.
if out=$("$PYTHON" - benchmark/*.py "$EXTRACTOR" 2>&1 <<'EOF'
import ast
import sys

BANNED = {
    "socket", "ssl", "http", "urllib", "urllib2", "urllib3", "requests", "httpx", "aiohttp",
    "ftplib", "smtplib", "poplib", "imaplib", "nntplib", "telnetlib", "xmlrpc", "socketserver",
    "websocket", "websockets", "paramiko", "huggingface_hub", "webbrowser", "asyncio",
}
bad = 0
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        continue  # the compile check reports it
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            fname = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            arg = node.args[0]
            if fname in ("__import__", "import_module") and isinstance(arg, ast.Constant):
                names = [str(arg.value)]
        for name in names:
            if name.split(".")[0] in BANNED:
                print(f"{path}:{node.lineno}: imports {name}")
                bad = 1
sys.exit(bad)
EOF
); then
    echo "checks: ok no-network"
else
    fail no-network "$out"
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "checks: skipped tiny-run (a static check failed)" >&2
    echo "checks: FAILED (${failed[*]})" >&2
    exit 1
fi

# tiny-run: the real code path end to end on the cached data, in a throwaway output folder.
if [ -z "${DATA_PATH:-}" ] || [ -z "${TOKENIZER_PATH:-}" ]; then
    if ! dataset_shell=$("$PYTHON" -m loop.data.datasets --shell ${DATASET:+"$DATASET"} 2>&1); then
        fail tiny-run "no dataset: $dataset_shell"
        exit 1
    fi
    eval "$dataset_shell"
fi
eval "$("$PYTHON" -m loop.platform --shell)"  # fast BLAS, as in autoresearch.sh
tmp=$(mktemp -d "${TMPDIR:-/tmp}/autoresearch-checks.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
set +e
out=$(env -u SEED -u VAL_LOSS_EVERY DATA_PATH="$DATA_PATH" TOKENIZER_PATH="$TOKENIZER_PATH" \
    OUT_DIR="$tmp" RUN_ID=checks ITERATIONS=1 WARMUP_STEPS=0 TRAIN_LOG_EVERY=1 \
    TRAIN_BATCH_TOKENS=256 GRAD_ACCUM_STEPS=1 TRAIN_SEQ_LEN=64 VAL_MAX_TOKENS=512 \
    VAL_BATCH_SIZE=512 MAX_WALLCLOCK_SECONDS=0 NUM_LAYERS=2 MODEL_DIM=32 NUM_HEADS=2 \
    NUM_KV_HEADS=1 MLP_MULT=2 "$PYTHON" "$TRAINER" 2>&1)
rc=$?
set -e
# A finite loss after the step and a finite roundtrip score (digits only: nan/inf fail).
if [ $rc -ne 0 ]; then
    fail tiny-run "trainer exited $rc; last lines:
$(printf '%s\n' "$out" | tail -n 15)"
elif ! grep -Eq '^step:1/1 train_loss:[0-9]+\.[0-9]+ ' <<<"$out"; then
    fail tiny-run "no finite train_loss after one step"
elif ! grep -Eq '^final_int8_zlib_roundtrip_exact val_loss:[0-9.]+ val_bpb:[0-9]+\.[0-9]+$' \
    <<<"$out"; then
    fail tiny-run "no finite final_int8_zlib_roundtrip_exact line"
else
    echo "checks: ok tiny-run"
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "checks: FAILED (${failed[*]})" >&2
    exit 1
fi
echo "checks: all passed"
