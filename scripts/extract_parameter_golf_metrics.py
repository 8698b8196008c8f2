#!/usr/bin/env python3
"""Trainer log -> `METRIC name=value` lines (the benchmark contract, SPEC section 4).

Usage: extract_parameter_golf_metrics.py LOG [--trainer PATH] [--data-path DIR]

Reads a log of benchmark/train_gpt_mlx.py (ours, or upstream parameter-golf's MLX trainer)
and prints one METRIC line per metric it can derive. A metric it cannot derive (missing line,
nan/inf value, missing setting) is left out: unknown is never printed as 0.

Line rules: trainer lines are matched at the start of a line only (upstream's own log file
starts with a copy of the trainer source, whose indented f-strings must not count), and when a
line occurs more than once (a log appended to by a re-run) the last one wins.

Standalone on purpose: standard library only, no `loop` import. This file is editable by
proposers, so the daemon never trusts it; it re-derives the score from the raw log itself.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import re
import struct
import sys
from decimal import Decimal
from pathlib import Path

ARTIFACT_CAP_BYTES = 16_000_000  # decimal, the parameter-golf rule
DEFAULT_TRAINER = Path(__file__).resolve().parent.parent / "benchmark" / "train_gpt_mlx.py"
SHARD_MAGIC = 20240520
SHARD_VERSION = 1

TRAIN_RE = re.compile(r"^step:(\d+)/(\d+) train_loss:(\S+) train_time:(\S+)ms step_avg:(\S+)ms")
VAL_RE = re.compile(r"^step:(\d+)/(\d+) val_loss:(\S+) val_bpb:(\S+)")
SERIALIZED_RE = re.compile(r"^serialized_model_int8_zlib:(\d+) bytes")
ROUNDTRIP_RE = re.compile(
    r"^final_int8_zlib_roundtrip val_loss:(\S+) val_bpb:(\S+) eval_time:(\S+)ms"
)
EXACT_RE = re.compile(r"^final_int8_zlib_roundtrip_exact val_loss:(\S+) val_bpb:(\S+)")
CODE_RE = re.compile(r"^Code size: (\d+) bytes")
TOTAL_RE = re.compile(r"^Total submission size int8\+zlib: (\d+) bytes")
# Settings lines: upstream prints `iterations:N train_batch_tokens:N grad_accum_steps:N ...`;
# digits must follow at once, so source lines like `train_batch_tokens:{args...}` never match.
BATCH_TOKENS_RE = re.compile(r"(?:^|\s)train_batch_tokens[:=](\d+)(?=\s|$)")
TRAIN_PATTERN_RE = re.compile(r"^train_loader:shards pattern=(\S+)/fineweb_train_\*\.bin")
# Our trainer counts what its stream actually read; upstream's prints no such line.
CONSUMED_RE = re.compile(r"^train_tokens_consumed:(\d+)(?:\s+train_shards_opened:(\d+))?")

# Printed in this order; names and meanings are SPEC section 4's.
ORDER = (
    "val_bpb",
    "total_bytes",
    "artifact_headroom_bytes",
    "artifact_cap_used_pct",
    "step_ms",
    "eval_ms",
    "pre_quant_val_bpb",
    "delta_bpb_roundtrip",
    "train_tokens_consumed",
    "train_shards_touched_est",
    "train_shard_coverage_pct",
    "model_bytes",
    "code_bytes",
    "train_steps",
)


def finite(text: str) -> float | None:
    """The number in `text`, or None when it is not a finite number (nan, inf, junk)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_log(text: str) -> dict:
    """The raw facts of a trainer log; a key is absent when the log does not say it."""
    facts: dict = {}
    last_val_bpb: float | None = None
    saw_val_line = False
    for line in text.splitlines():
        if m := TRAIN_RE.match(line):
            facts["last_step"] = int(m.group(1))
            facts["step_ms"] = finite(m.group(5))
        elif m := VAL_RE.match(line):
            facts["last_step"] = int(m.group(1))
            last_val_bpb = finite(m.group(4))
            saw_val_line = True
        elif m := SERIALIZED_RE.match(line):
            facts["model_bytes"] = int(m.group(1))
            # The validation just before export is the pre-quantization score of this run.
            facts["pre_quant_val_bpb"] = last_val_bpb if saw_val_line else None
        elif m := ROUNDTRIP_RE.match(line):
            facts["eval_ms"] = finite(m.group(3))
        elif m := EXACT_RE.match(line):
            facts["val_bpb"] = finite(m.group(2))
        elif m := CODE_RE.match(line):
            facts["code_bytes"] = int(m.group(1))
        elif m := TOTAL_RE.match(line):
            facts["total_bytes"] = int(m.group(1))
        elif m := TRAIN_PATTERN_RE.match(line):
            facts["logged_data_path"] = m.group(1)
        elif m := CONSUMED_RE.match(line):
            facts["logged_tokens_consumed"] = int(m.group(1))
            facts["logged_shards_opened"] = int(m.group(2)) if m.group(2) else None
        if m := BATCH_TOKENS_RE.search(line):
            facts["train_batch_tokens"] = int(m.group(1))
    if "pre_quant_val_bpb" not in facts and saw_val_line:
        # No export line (the run died after validating): the last validation still is the
        # pre-quantization score as far as it got.
        facts["pre_quant_val_bpb"] = last_val_bpb
    return {k: v for k, v in facts.items() if v is not None}


def train_shard_tokens(data_path: Path) -> list[int] | None:
    """Token counts of the train shards present, in the order the trainer streams them.

    Read from each shard's header (the count the trainer itself trusts); None when there are
    no shards or any header is unreadable, because a partial count would understate coverage.
    """
    files = sorted(glob.glob(str(data_path / "fineweb_train_*.bin")))
    if not files:
        return None
    counts = []
    for name in files:
        try:
            with open(name, "rb") as f:
                head = f.read(12)
        except OSError:
            return None
        if len(head) < 12:
            return None
        magic, version, tokens = struct.unpack("<3i", head)
        if magic != SHARD_MAGIC or version != SHARD_VERSION or tokens < 0:
            return None
        counts.append(tokens)
    return counts


def derive(facts: dict, trainer: Path, data_path: Path | None) -> dict[str, float | int]:
    """Every SPEC section 4 metric that follows from the facts; unknown ones are absent."""
    out: dict[str, float | int] = {}
    for key in ("val_bpb", "step_ms", "eval_ms", "pre_quant_val_bpb", "model_bytes"):
        if key in facts:
            out[key] = facts[key]

    code_bytes = facts.get("code_bytes")
    if code_bytes is None and trainer.is_file():
        # Upstream's trainer prints no code size; the rule counts the trainer file's bytes.
        code_bytes = trainer.stat().st_size
    if code_bytes is not None:
        out["code_bytes"] = code_bytes
    total = facts.get("total_bytes")
    if total is None and "model_bytes" in facts and code_bytes is not None:
        total = facts["model_bytes"] + code_bytes
    if total is not None:
        out["total_bytes"] = total
        out["artifact_headroom_bytes"] = ARTIFACT_CAP_BYTES - total
        out["artifact_cap_used_pct"] = round(100.0 * total / ARTIFACT_CAP_BYTES, 4)

    if "val_bpb" in out and "pre_quant_val_bpb" in out:
        out["delta_bpb_roundtrip"] = round(out["val_bpb"] - out["pre_quant_val_bpb"], 8)

    steps = facts.get("last_step")
    if steps is not None:
        out["train_steps"] = steps
    consumed = facts.get("logged_tokens_consumed")
    if consumed is None and steps is not None and "train_batch_tokens" in facts:
        # Upstream-style log: every optimizer step reads one TRAIN_BATCH_TOKENS batch.
        consumed = steps * facts["train_batch_tokens"]
    if consumed is not None:
        out["train_tokens_consumed"] = consumed
        if data_path is None and "logged_data_path" in facts:
            data_path = Path(facts["logged_data_path"])
        counts = train_shard_tokens(data_path) if data_path is not None else None
        if counts is None and "logged_shards_opened" in facts:
            out["train_shards_touched_est"] = facts["logged_shards_opened"]
        if counts is not None and sum(counts) > 0:
            # The stream reads shards in sorted order and wraps around after the last one.
            touched, running = 0, 0
            for count in counts:
                if running >= consumed:
                    break
                running += count
                touched += 1
            out["train_shards_touched_est"] = touched
            # Share of the train tokens present that the run read; above 100 = it wrapped.
            out["train_shard_coverage_pct"] = round(100.0 * consumed / sum(counts), 4)
    return out


def format_value(value: float | int) -> str:
    """A finite decimal without exponent notation (the METRIC grammar)."""
    if isinstance(value, int):
        return str(value)
    # repr is the shortest text that reads back as the same float; Decimal drops the exponent.
    return format(Decimal(repr(value)), "f")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="trainer log (its stdout or $OUT_DIR/$RUN_ID.txt)")
    parser.add_argument(
        "--trainer",
        type=Path,
        default=DEFAULT_TRAINER,
        help="trainer file whose size counts as code bytes when the log has no `Code size:` line",
    )
    parser.add_argument(
        "--data-path",
        type=Path,
        default=Path(os.environ["DATA_PATH"]) if os.environ.get("DATA_PATH") else None,
        help="dataset directory with the train shards (default: $DATA_PATH, else the log's)",
    )
    args = parser.parse_args(argv)
    try:
        text = args.log.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        print(f"extract: cannot read log {args.log}: {exc}", file=sys.stderr)
        return 2

    metrics = derive(parse_log(text), args.trainer, args.data_path)
    for name in ORDER:
        if name in metrics:
            print(f"METRIC {name}={format_value(metrics[name])}")
    unknown = [name for name in ORDER if name not in metrics]
    if unknown:
        print(f"extract: unknown (not printed): {', '.join(unknown)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
