#!/usr/bin/env bash
# Benchmark entry point (SPEC section 4).
#
#   PROFILE=smoke|breadth|confirm|full bash autoresearch.sh      (default: breadth)
#
# Runs benchmark/train_gpt_mlx.py with the profile's budget and the research knobs below on the
# cached dataset, streams the trainer's output, saves it to logs/autoresearch/<RUN_ID>.log, and
# prints `METRIC name=value` lines last. A failed trainer makes this script exit with the
# trainer's exit code and print no METRIC lines. Never touches the network.
#
# Environment it honours: PROFILE, RUN_ID, PYTHON, DATASET (a dataset name for
# `python -m loop.data.datasets`), DATA_PATH + TOKENIZER_PATH (both set: used as they are),
# KEEP_MODEL=1 (keep the run's model files, e.g. to submit the artifact).
# Budget settings come from the profile block and knobs from the knob block; caller values for
# those are overridden on purpose, so a stray variable in a shell cannot change the protocol.
#
# The settings are exported by name through TRAINER_SETTINGS, which shellcheck cannot follow:
# shellcheck disable=SC2034
set -euo pipefail
cd "$(dirname "$0")"

PROFILE=${PROFILE:-breadth}

# ---------------------------------------------------------------------------------------------
# Research knobs. The `search` proposer rewrites these lines with the regex ^NAME=value$, so
# keep each one alone on its line, at column 0, unquoted, with no comment after the value.
# Schedule lengths are fractions of ITERATIONS so that a setting found at breadth means the
# same schedule at confirm and full (absolute step counts would not carry up the ladder).
# From MLP_LEAKY_SLOPE on: the record techniques, switches of the trainer, each off at the
# value below (the baseline); the ideas backlog turns them on; README lists their sources.
# autogolf:knobs:start
MATRIX_LR=0.04
SCALAR_LR=0.04
TIED_EMBED_LR=0.05
MUON_MOMENTUM=0.95
MUON_MOMENTUM_WARMUP_START=0.85
MUON_MOMENTUM_WARMUP_FRAC=0.1
MUON_BACKEND_STEPS=5
WARMDOWN_FRAC=0.2
BETA1=0.9
BETA2=0.95
GRAD_CLIP_NORM=0
TIED_EMBED_INIT_STD=0.005
LOGIT_SOFTCAP=30
QK_GAIN_INIT=1.5
ROPE_BASE=10000
NUM_LAYERS=9
MODEL_DIM=512
NUM_HEADS=8
NUM_KV_HEADS=4
MLP_MULT=2
MLP_LEAKY_SLOPE=0
ROPE_DIMS=0
LN_SCALE=0
SMEAR_GATE=0
BIGRAM_HASH=0
ORTHO_INIT=0
RECUR_LAYERS=0
PARALLEL_RESID=0
MUON_WD=0
LR_FLOOR=0
SWA_START_LR=0
EMBED_FP16=0
BLOCK_QUANT_BITS=8
CLIP_SEARCH=0
EXPORT_LZMA=0
# autogolf:knobs:end

# ---------------------------------------------------------------------------------------------
# Profiles: budget settings only. Never compare results across profiles. Expected times and
# the reasoning behind the sizes are in autoresearch.md. MAX_WALLCLOCK_SECONDS=0 everywhere:
# a wallclock-aware warmdown would make the learning-rate schedule depend on machine load,
# which is noise; the daemon's per-profile timeout is the runaway guard instead.
case "$PROFILE" in
    smoke)  # seconds on a 2-core CPU: a tiny model, for tests and the demo
        ITERATIONS=30
        TRAIN_BATCH_TOKENS=2048
        GRAD_ACCUM_STEPS=1
        TRAIN_SEQ_LEN=128
        VAL_MAX_TOKENS=16384
        VAL_BATCH_SIZE=8192
        WARMUP_STEPS=1
        TRAIN_LOG_EVERY=10
        MAX_WALLCLOCK_SECONDS=0
        NUM_LAYERS=2
        MODEL_DIM=64
        NUM_HEADS=2
        NUM_KV_HEADS=1
        MLP_MULT=2
        ;;
    breadth)  # ~4 min on an M-series Mac: baseline model, 3.3M train tokens, 0.5M val tokens
        ITERATIONS=200
        TRAIN_BATCH_TOKENS=16384
        GRAD_ACCUM_STEPS=1
        TRAIN_SEQ_LEN=1024
        VAL_MAX_TOKENS=524288
        VAL_BATCH_SIZE=65536
        WARMUP_STEPS=3
        TRAIN_LOG_EVERY=20
        MAX_WALLCLOCK_SECONDS=0
        ;;
    confirm)  # ~3.5x breadth: same batch (knobs transfer), 3.5x the steps, 4x the val tokens
        ITERATIONS=700
        TRAIN_BATCH_TOKENS=16384
        GRAD_ACCUM_STEPS=1
        TRAIN_SEQ_LEN=1024
        VAL_MAX_TOKENS=2097152
        VAL_BATCH_SIZE=65536
        WARMUP_STEPS=3
        TRAIN_LOG_EVERY=50
        MAX_WALLCLOCK_SECONDS=0
        ;;
    full)  # the whole validation split (62M tokens on real data); hours, so sparingly
        ITERATIONS=1500
        TRAIN_BATCH_TOKENS=32768
        GRAD_ACCUM_STEPS=1
        TRAIN_SEQ_LEN=1024
        VAL_MAX_TOKENS=0
        VAL_BATCH_SIZE=65536
        WARMUP_STEPS=3
        TRAIN_LOG_EVERY=100
        MAX_WALLCLOCK_SECONDS=0
        ;;
    *)
        echo "autoresearch: unknown PROFILE=$PROFILE (expected smoke, breadth, confirm or full)" >&2
        exit 2
        ;;
esac

# Frozen protocol: when a candidate changed a protocol field that autogolf.yaml allows to
# change (protocol.allow_change), the daemon re-measures the incumbent under the candidate's
# value by setting AUTOGOLF_PROTOCOL_OVERRIDES="NAME=value ..." (loop/judge/protocol.py). Only these
# budget settings can be overridden; the seed and the data never.
for setting in ${AUTOGOLF_PROTOCOL_OVERRIDES:-}; do
    case "${setting%%=*}" in
        VAL_MAX_TOKENS | ITERATIONS | TRAIN_BATCH_TOKENS | TRAIN_SEQ_LEN | MAX_WALLCLOCK_SECONDS)
            printf -v "${setting%%=*}" '%s' "${setting#*=}"
            ;;
        *)
            echo "autoresearch: ignoring protocol override $setting" >&2
            ;;
    esac
done

# Fractions -> the trainer's step counts for this profile (awk: bash has no floats).
WARMDOWN_ITERS=$(awk -v n="$ITERATIONS" -v f="$WARMDOWN_FRAC" 'BEGIN { printf "%d", n * f + 0.5 }')
MUON_MOMENTUM_WARMUP_STEPS=$(awk -v n="$ITERATIONS" -v f="$MUON_MOMENTUM_WARMUP_FRAC" \
    'BEGIN { printf "%d", n * f + 0.5 }')

TRAINER_SETTINGS=(
    ITERATIONS TRAIN_BATCH_TOKENS GRAD_ACCUM_STEPS TRAIN_SEQ_LEN VAL_MAX_TOKENS VAL_BATCH_SIZE
    WARMUP_STEPS TRAIN_LOG_EVERY MAX_WALLCLOCK_SECONDS WARMDOWN_ITERS MUON_MOMENTUM_WARMUP_STEPS
    MATRIX_LR SCALAR_LR TIED_EMBED_LR MUON_MOMENTUM MUON_MOMENTUM_WARMUP_START MUON_BACKEND_STEPS
    BETA1 BETA2 GRAD_CLIP_NORM TIED_EMBED_INIT_STD LOGIT_SOFTCAP QK_GAIN_INIT ROPE_BASE
    NUM_LAYERS MODEL_DIM NUM_HEADS NUM_KV_HEADS MLP_MULT
    MLP_LEAKY_SLOPE ROPE_DIMS LN_SCALE SMEAR_GATE BIGRAM_HASH ORTHO_INIT RECUR_LAYERS
    PARALLEL_RESID MUON_WD LR_FLOOR SWA_START_LR EMBED_FP16 BLOCK_QUANT_BITS CLIP_SEARCH
    EXPORT_LZMA
)
export "${TRAINER_SETTINGS[@]}"
# Frozen protocol: the seed and the validation are never knobs. Changing the seed is the
# cheapest fake "improvement" an optimiser finds, so a caller's SEED never reaches the trainer.
unset SEED VAL_LOSS_EVERY
# The one seed that reaches the trainer is the judge's: paired runs of the candidate and the
# incumbent at its seed schedule (keep_rule; the trainer's printed seed is checked).
if [ -n "${AUTOGOLF_JUDGE_SEED:-}" ]; then
    export SEED=$AUTOGOLF_JUDGE_SEED
fi
# Python writes to a pipe in blocks; unbuffered output makes the progress live through tee.
export PYTHONUNBUFFERED=1

# Python per docs/DESIGN.md: $PYTHON, else the repo's virtualenv, else python3.
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# Dataset: both paths given -> used as they are; else the dataset autogolf.yaml names (or
# $DATASET). loop.data.datasets only reads local files; a missing dataset is an error with a fix-it.
if [ -n "${DATA_PATH:-}" ] && [ -n "${TOKENIZER_PATH:-}" ]; then
    DATASET_NAME=${DATASET_NAME:-custom}
else
    if ! dataset_shell=$("$PYTHON" -m loop.data.datasets --shell ${DATASET:+"$DATASET"}); then
        echo "autoresearch: no dataset (see the message above)" >&2
        exit 2
    fi
    eval "$dataset_shell"
fi
export DATA_PATH TOKENIZER_PATH
# The vocabulary is the dataset's (sp1024, sp4096, sp8192, byte260): the trainer must embed
# every id of it, so VOCAB_SIZE is the tokenizer's, whatever the caller's shell says.
# (A sentencepiece .model, or upstream's pure-byte .json for byte260.)
# A missing tokenizer file is left to the trainer, which names it in its own error.
if [ -f "$TOKENIZER_PATH" ]; then
    VOCAB_SIZE=$("$PYTHON" - "$TOKENIZER_PATH" <<'EOF'
import json, sys
path = sys.argv[1]
if path.endswith(".json"):
    print(json.load(open(path, encoding="utf-8"))["vocab_size"])
else:
    import sentencepiece
    print(sentencepiece.SentencePieceProcessor(model_file=path).vocab_size())
EOF
    ) || VOCAB_SIZE=""
    case "$VOCAB_SIZE" in
        '' | *[!0-9]*)
            echo "autoresearch: cannot read the vocabulary size of $TOKENIZER_PATH" >&2
            exit 2
            ;;
    esac
    export VOCAB_SIZE
    TRAINER_SETTINGS+=(VOCAB_SIZE)
fi
[ -n "${SEED:-}" ] && TRAINER_SETTINGS+=(SEED)

# On Linux MLX's bundled reference BLAS is ~40x slower than OpenBLAS: preload it when present
# (loop/platform.py knows where). macOS uses Accelerate.
eval "$("$PYTHON" -m loop.platform --shell)"

RUN_ID=${RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)-$PROFILE-$$}
export RUN_ID
LOG_DIR=logs/autoresearch
export OUT_DIR=$LOG_DIR
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/$RUN_ID.log"

echo "autoresearch: profile=$PROFILE run_id=$RUN_ID dataset=${DATASET_NAME:-?} log=$LOG"
echo "autoresearch: $(for v in "${TRAINER_SETTINGS[@]}"; do printf '%s=%s ' "$v" "${!v}"; done)"

set +e
"$PYTHON" benchmark/train_gpt_mlx.py 2>&1 | tee "$LOG"
status=("${PIPESTATUS[@]}")
set -e
# The trainer writes its model files next to its own log; the raw fp32 model is tens of MB per
# run and the compressed one ~10 MB, which fills a disk overnight. Their sizes are in the log.
# When the daemon asked for the artifact (AUTOGOLF_ARTIFACT_PATH), upstream's trainer, which
# ignores that variable, leaves it here as ${RUN_ID}_mlx_model.int8.ptz: the judge reads it
# after this script and deletes it.
if [ "${KEEP_MODEL:-0}" != 1 ]; then
    for model_file in "$OUT_DIR/${RUN_ID}"_mlx_model*; do
        if [ -n "${AUTOGOLF_ARTIFACT_PATH:-}" ] \
            && [ "$model_file" = "$OUT_DIR/${RUN_ID}_mlx_model.int8.ptz" ]; then
            continue
        fi
        rm -f -- "$model_file"
    done
fi

if [ "${status[0]}" -ne 0 ]; then
    echo "autoresearch: trainer failed with exit code ${status[0]}; no metrics (log: $LOG)" >&2
    exit "${status[0]}"
fi
if [ "${status[1]}" -ne 0 ]; then
    echo "autoresearch: could not write the log $LOG (tee exit ${status[1]})" >&2
    exit 1
fi

"$PYTHON" scripts/extract_parameter_golf_metrics.py "$LOG" \
    --trainer benchmark/train_gpt_mlx.py --data-path "$DATA_PATH"
