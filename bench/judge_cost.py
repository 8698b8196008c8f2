#!/usr/bin/env python3
"""What the judge (loop/judge/score.py) costs per experiment (prints figures; not a test).

For each size it assembles the trainer's data folder and the holdout (loop/judge/holdout.py,
sample dataset), runs the real trainer once as a child, then scores its artifact with the
judge twice: on the holdout (what the daemon will do) and on the trainer's own validation
slice (the same tokens as the trainer's final evaluation, for a like-for-like time). It prints
the judge's seconds and its share of the experiment beside the trainer's own final
evaluation time (`eval_time` of the roundtrip line).

    nice -n 19 .venv/bin/python bench/judge_cost.py [--only smoke|medium] [--repeats N]

Sizes: `smoke` is autoresearch.sh's smoke profile; `medium` is breadth-like (seq 1024, a
4x256 model, batch 8192) capped to 24 steps so that it runs in a couple of minutes on 2 CPU
cores, with the sample's breadth holdout (32,768 tokens) and a 16,384-token trainer slice.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loop.data import datasets, tokenbytes  # noqa: E402
from loop.judge import holdout, score  # noqa: E402
from loop.measure import logparse  # noqa: E402
from loop.platform import blas_env  # noqa: E402

TRAINER = REPO / "benchmark" / "train_gpt_mlx.py"
COMMON = {"GRAD_ACCUM_STEPS": "1", "WARMUP_STEPS": "1", "MAX_WALLCLOCK_SECONDS": "0",
          "MLP_MULT": "2", "VAL_MAX_TOKENS": "16384"}
SIZES = {
    "smoke": ("smoke", {"ITERATIONS": "30", "TRAIN_BATCH_TOKENS": "2048", "TRAIN_SEQ_LEN": "128",
                        "VAL_BATCH_SIZE": "8192", "TRAIN_LOG_EVERY": "10", "NUM_LAYERS": "2",
                        "MODEL_DIM": "64", "NUM_HEADS": "2", "NUM_KV_HEADS": "1"}),
    "medium": ("breadth", {"ITERATIONS": "24", "TRAIN_BATCH_TOKENS": "8192",
                           "TRAIN_SEQ_LEN": "1024", "VAL_BATCH_SIZE": "65536",
                           "TRAIN_LOG_EVERY": "8", "NUM_LAYERS": "4", "MODEL_DIM": "256",
                           "NUM_HEADS": "4", "NUM_KV_HEADS": "2"}),
}


def ensure_blas() -> None:
    extra = blas_env()
    if extra and os.environ.get("LD_PRELOAD") != extra["LD_PRELOAD"]:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **extra})


def run_trainer(env: dict[str, str], work: Path) -> tuple[float, logparse.TrainerLog, Path]:
    artifact = work / "model.bin"
    env = {**env, "RUN_ID": "bench", "OUT_DIR": str(work), "AUTOGOLF_ARTIFACT_PATH": str(artifact)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(TRAINER)], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=1800)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"trainer failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr}")
    return wall, logparse.parse_trainer_log(done.stdout), artifact


def measure(name: str, repeats: int, info: datasets.DatasetInfo, tables) -> dict:
    profile, settings = SIZES[name]
    with tempfile.TemporaryDirectory(prefix="judge-cost-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        prep = holdout.prepare(info, profile, work)
        prepare_s = time.perf_counter() - t0
        env = {**os.environ, **COMMON, **settings, "DATA_PATH": str(prep.data_path),
               "TOKENIZER_PATH": str(prep.tokenizer_path)}
        wall, log, artifact = run_trainer(env, work)
        seq = prep.holdout.seq_len
        assert seq == int(settings["TRAIN_SEQ_LEN"]), "the judge's windows follow the profile"
        slice_tokens = prep.trainer_slice()
        runs = {"holdout": [], "slice": []}
        for _ in range(repeats):
            for key, tokens in (("holdout", prep.holdout.tokens), ("slice", slice_tokens)):
                got = score.score_artifact(TRAINER, artifact, tokens, seq, tables, cwd=REPO)
                if not got.ok:
                    sys.exit(f"{name}: the judge could not score: {got.reason}")
                runs[key].append(got)
    med = {k: statistics.median(s.timings["total_s"] for s in v) for k, v in runs.items()}
    return {"name": name, "wall": wall, "eval_s": log.eval_ms / 1000, "prepare_s": prepare_s,
            "judge": med, "runs": runs, "trainer_tokens": slice_tokens.size - 1,
            "trainer_bpb": log.exact_val_bpb}


def report(r: dict) -> None:
    h, s = r["runs"]["holdout"][0], r["runs"]["slice"][0]
    judge = r["judge"]["holdout"]
    experiment = r["wall"] + judge + r["prepare_s"]
    print(f"\n== {r['name']}: trainer wall {r['wall']:.1f}s, data folder + holdout "
          f"{1000 * r['prepare_s']:.0f}ms")
    print(f"{'':34}{'tokens':>8}{'seconds':>9}{'ms/1k tok':>11}")
    print(f"{'trainer final eval (eval_time)':34}{r['trainer_tokens']:>8}{r['eval_s']:>9.2f}"
          f"{1000 * r['eval_s'] / r['trainer_tokens'] * 1000:>11.1f}")
    print(f"{'judge, same tokens as the trainer':34}{s.tokens:>8}{r['judge']['slice']:>9.2f}"
          f"{1000 * r['judge']['slice'] / s.tokens * 1000:>11.1f}")
    print(f"{'judge, holdout (what counts)':34}{h.tokens:>8}{judge:>9.2f}"
          f"{1000 * judge / h.tokens * 1000:>11.1f}")
    runs = r["runs"]["holdout"]
    parts = ", ".join(f"{k[:-2]} {statistics.median(x.timings.get(k, 0) for x in runs):.2f}s"
                      for k in ("load_s", "probe_s", "forward_s", "loss_s"))
    print(f"judge holdout breakdown (median): {parts}")
    print(f"judge share of the experiment (trainer + prepare + judge): "
          f"{100 * judge / experiment:.1f}%; judge / trainer eval (same tokens): "
          f"{r['judge']['slice'] / r['eval_s']:.2f}x")
    print(f"agreement on the trainer's tokens: trainer {r['trainer_bpb']:.6f}, judge "
          f"{s.val_bpb:.6f} (diff {s.val_bpb - r['trainer_bpb']:+.2e})")


def main() -> int:
    ensure_blas()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SIZES))
    parser.add_argument("--repeats", type=int, default=3, help="judge runs per size (median)")
    args = parser.parse_args()
    info = datasets.resolve("sample")
    tables = tokenbytes.build_byte_tables(info.tokenizer_path, info.vocab_size)
    one, five, _ = os.getloadavg()
    print(f"judge cost, sample dataset; load1={one:.2f} load5={five:.2f} cores={os.cpu_count()}")
    for name in [args.only] if args.only else list(SIZES):
        report(measure(name, args.repeats, info, tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
