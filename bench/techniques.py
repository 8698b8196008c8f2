#!/usr/bin/env python3
"""The record techniques, each alone against the baseline, scored by the judge (prints a table).

Every idea of autoresearch.ideas.md that has a `source:` and a `knobs:` line is a technique:
its knobs are switches of benchmark/train_gpt_mlx.py (README: "Record techniques"). For each
seed the baseline and every technique train at the same size and seed (paired), and the
judge's own scoring (loop/judge/score.py: a separate model server, the holdout cut by
loop/judge/holdout.py from the front of the sample's val split, loss and bytes computed by
the judge) gives each artifact's val_bpb. Printed per technique: the judged gain (baseline
minus technique, mean over the seeds; positive = better), the spread of the paired
differences (sample standard deviation), the artifact size change, and the score the record
that credits it reported (with every other change that entry made: not the technique alone).

    nice -n 19 .venv/bin/python bench/techniques.py [--size medium] [--seeds 3] [--only I020,I024]

Sizes (all on the offline sample, judged on the smoke holdout: 16,384 tokens in windows of
128): `smoke` is autoresearch.sh's smoke profile (2 x 64: every matrix stays float16 in the
export, so the export techniques cannot show); `small` (3 x 192, 60 steps of 4,096 tokens)
is the largest that fits ~25 minutes for 17 variants x 3 seeds on a busy 2-core box;
`medium` (4 x 256, 300 steps of 8,192 tokens) is the size the evidence should come from: on
the 2-core Linux VM it trains at 2.1-2.3 s a step, about 11 minutes a run, so 18 variants x 3
seeds take about 10 hours (a night, or a GPU). Sample text on a CPU is not FineWeb on a GPU:
a technique's sign here says little about its sign on the leaderboard.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loop.backlog.ideas import IdeasFile  # noqa: E402
from loop.data import datasets, tokenbytes  # noqa: E402
from loop.judge import holdout, score  # noqa: E402
from loop.measure import logparse  # noqa: E402
from loop.platform import blas_env  # noqa: E402

TRAINER = REPO / "benchmark" / "train_gpt_mlx.py"
IDEAS = REPO / "autoresearch.ideas.md"
HOLDOUT_PROFILE = "smoke"  # its windows are 128 tokens: every size trains at that length
COMMON = {"GRAD_ACCUM_STEPS": "1", "WARMUP_STEPS": "1", "MAX_WALLCLOCK_SECONDS": "0",
          "TRAIN_SEQ_LEN": "128", "VAL_BATCH_SIZE": "8192", "MLP_MULT": "2",
          "VAL_MAX_TOKENS": str(holdout.CLAIM_TOKENS)}
SIZES = {
    "smoke": {"ITERATIONS": "30", "TRAIN_BATCH_TOKENS": "2048", "TRAIN_LOG_EVERY": "10",
              "WARMDOWN_ITERS": "6", "NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "2",
              "NUM_KV_HEADS": "1"},
    "small": {"ITERATIONS": "60", "TRAIN_BATCH_TOKENS": "4096", "TRAIN_LOG_EVERY": "20",
              "WARMDOWN_ITERS": "12", "NUM_LAYERS": "3", "MODEL_DIM": "192", "NUM_HEADS": "2",
              "NUM_KV_HEADS": "1"},
    "medium": {"ITERATIONS": "300", "TRAIN_BATCH_TOKENS": "8192", "TRAIN_LOG_EVERY": "50",
               "WARMDOWN_ITERS": "60", "NUM_LAYERS": "4", "MODEL_DIM": "256",
               "NUM_HEADS": "4", "NUM_KV_HEADS": "2"},
}
BASELINE_SCORE = 1.2244  # the leaderboard's naive baseline (9 x 512, sp1024)
RECORD_SCORE = re.compile(r"val_bpb (\d\.\d+)")


@dataclass
class Technique:
    idea: str
    knobs: dict[str, str]
    source: str
    scores: dict[int, float] = field(default_factory=dict)  # seed -> judged val_bpb
    bytes: dict[int, int] = field(default_factory=dict)  # seed -> artifact bytes
    wall: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.knobs.items()) or "baseline"

    @property
    def record_score(self) -> float | None:
        found = RECORD_SCORE.search(self.source)
        return float(found.group(1)) if found else None


def techniques(only: set[str] | None) -> list[Technique]:
    """The backlog's ideas with a source and knobs, in file order."""
    backlog = IdeasFile.load(IDEAS)
    found = [Technique(i.id, {k: str(v) for k, v in i.knobs.items()}, i.source)
             for i in backlog.ideas if i.valid and i.source and i.knobs]
    return [t for t in found if only is None or t.idea in only]


def ensure_blas() -> None:
    extra = blas_env()
    if extra and os.environ.get("LD_PRELOAD") != extra["LD_PRELOAD"]:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **extra})


def train_and_judge(t: Technique, seed: int, env: dict[str, str], prep: holdout.Prepared,
                    tables: tokenbytes.ByteTables, work: Path) -> None:
    """One run of the trainer at this seed, then the judge's holdout score of its artifact."""
    work.mkdir(parents=True, exist_ok=True)
    artifact = work / "model.bin"
    run_env = {**env, **t.knobs, "SEED": str(seed), "RUN_ID": f"s{seed}", "OUT_DIR": str(work),
               "AUTOGOLF_ARTIFACT_PATH": str(artifact)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(TRAINER)], env=run_env, cwd=REPO, text=True,
                          capture_output=True, timeout=3600)
    if done.returncode:
        sys.exit(f"{t.idea} {t.name} seed {seed}: trainer failed ({done.returncode}):\n"
                 f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    log = logparse.parse_trainer_log(done.stdout)
    judged = score.score_artifact(TRAINER, artifact, prep.holdout.tokens,
                                  prep.holdout.seq_len, tables, cwd=REPO)
    if not judged.ok:
        sys.exit(f"{t.idea} {t.name} seed {seed}: the judge could not score: {judged}")
    t.wall.append(time.perf_counter() - t0)
    t.scores[seed], t.bytes[seed] = judged.val_bpb, artifact.stat().st_size
    print(f"  {t.idea:5} seed {seed}: judged {judged.val_bpb:.5f} (trainer's own "
          f"{log.exact_val_bpb:.5f}), {t.bytes[seed]} bytes, {t.wall[-1]:.0f}s", flush=True)


def row(t: Technique, base: Technique) -> str:
    diffs = [base.scores[s] - t.scores[s] for s in sorted(t.scores)]
    gain = statistics.mean(diffs)
    spread = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
    size = statistics.mean(t.bytes[s] - base.bytes[s] for s in t.bytes)
    record = t.record_score
    reported = (f"{record:.4f} ({BASELINE_SCORE - record:+.4f} vs {BASELINE_SCORE})"
                if record is not None else "unknown")
    return (f"| {t.idea} | {t.name} | {gain:+.4f} | {spread:.4f} | "
            f"{' '.join(f'{d:+.4f}' for d in diffs)} | {size:+.0f} | {reported} |")


def main() -> int:
    ensure_blas()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="medium")
    parser.add_argument("--seeds", type=int, default=3, help="paired seeds 1337, 1338, ...")
    parser.add_argument("--only", default=None, help="idea ids, comma-separated")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    info = datasets.resolve("sample")
    tables = tokenbytes.build_byte_tables(info.tokenizer_path, info.vocab_size)
    base = Technique("-", {}, "")
    chosen = techniques(only)
    one, five, _ = os.getloadavg()
    print(f"techniques at size {args.size} ({SIZES[args.size]}), {args.seeds} seeds, sample "
          f"dataset, judged on the {HOLDOUT_PROFILE} holdout; load1={one:.2f} "
          f"load5={five:.2f} cores={os.cpu_count()}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="techniques-") as tmp:
        work = Path(tmp)
        prep = holdout.prepare(info, HOLDOUT_PROFILE, work)
        env = {**os.environ, **COMMON, **SIZES[args.size],
               "DATA_PATH": str(prep.data_path), "TOKENIZER_PATH": str(prep.tokenizer_path)}
        for seed in range(1337, 1337 + args.seeds):
            for t in [base, *chosen]:
                train_and_judge(t, seed, env, prep, tables, work / f"{t.idea}-{seed}")
    print(f"\nbaseline judged val_bpb per seed: "
          f"{' '.join(f'{v:.5f}' for v in base.scores.values())}; median run "
          f"{statistics.median(base.wall):.0f}s; all {(time.perf_counter() - started) / 60:.1f} "
          "min")
    print("\n| idea | switches | judged gain | spread (sd) | per seed | bytes | record "
          "(score; vs naive baseline) |")
    print("|---|---|---:|---:|---|---:|---|")
    for t in chosen:
        print(row(t, base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
