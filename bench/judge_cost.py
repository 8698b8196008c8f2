#!/usr/bin/env python3
"""What the judge (loop/judge/score.py) costs per run, old against new (prints figures).

For each size it assembles the trainer's data folder and the holdout (loop/judge/holdout.py,
sample dataset) and runs the real trainer twice as a child: with the printout slice as it was
(16,384 tokens) and as it is now (holdout.CLAIM_TOKENS, 4,096). Then it scores the new run's
artifact as the daemon does (holdout + claim slice from one model server), alternating:

- old: logits through the float32 pipe, the 16,384-token claim slice, 8,192 tokens a batch;
- new: logits through shared memory (a memfd), the 4,096-token claim slice, the batch the
  daemon sends on this device (2,048 tokens on a CPU), the next batch sent before this one's
  loss is computed;

and prints, side by side, the judge's seconds per run (start, load, probe, holdout forward,
loss, claim), the model's own forward over the same windows in-process (what a free
transport would cost), the trainer's own final evaluation (two passes: before and after the
roundtrip; 2 x its `eval_time`) with each slice, and the judge's share of a run. It also
checks that both transports give the same holdout score.

    nice -n 19 .venv/bin/python bench/judge_cost.py [--only smoke|medium] [--repeats N]
    .venv/bin/python bench/judge_cost.py --only medium --batch-tokens 2048,8192 --repeats 6

`--batch-tokens` instead times the judge's whole scoring of one artifact at each batch size
(tokens per forward request), alternating, and prints the median beside each score (the
daemon uses score.CPU_TOKENS_PER_BATCH on a CPU, score.EVAL_TOKENS_PER_BATCH on a GPU).

Sizes: `smoke` is autoresearch.sh's smoke profile; `medium` is breadth-like (seq 1024, a
4x256 model, batch 8192) capped to 24 steps so that it runs in a couple of minutes on 2 CPU
cores, with the sample's breadth holdout (32,768 tokens).
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

from loop import platform  # noqa: E402
from loop.data import datasets, shards, tokenbytes  # noqa: E402
from loop.judge import holdout, model_server, score  # noqa: E402
from loop.measure import logparse  # noqa: E402
from loop.platform import blas_env  # noqa: E402

TRAINER = REPO / "benchmark" / "train_gpt_mlx.py"
OLD_CLAIM = 16_384  # the printout slice before issue 26 (now holdout.CLAIM_TOKENS)
NEW_BATCH = score.batch_tokens_for(platform.device_class())  # what the daemon sends here
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
    work.mkdir(parents=True, exist_ok=True)
    artifact = work / "model.bin"
    env = {**env, "RUN_ID": "bench", "OUT_DIR": str(work), "AUTOGOLF_ARTIFACT_PATH": str(artifact)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(TRAINER)], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=1800)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"trainer failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr}")
    return wall, logparse.parse_trainer_log(done.stdout), artifact


def old_data_folder(prep: holdout.Prepared, info: datasets.DatasetInfo, work: Path) -> Path:
    """The trainer's data folder as it was before issue 26: a 16,384-token printout slice."""
    folder = work / "old-data"
    folder.mkdir()
    for shard in shards.shard_files(prep.data_path, "train"):
        (folder / shard.name).symlink_to(shard.resolve())
    shards.write_shard(folder / holdout.VAL_FILE, holdout.train_front(info, OLD_CLAIM + 1))
    return folder


def model_compute_s(artifact: Path, tokens, seq: int, batch_tokens: int) -> float:
    """The model's own forward over the holdout's windows in this process (no transport,
    no loss): what the judge's forward time would be with a free transport."""
    _, forward = model_server.load(TRAINER, artifact, 30.0, 10000.0)
    x, _ = score.windows(tokens, seq)
    per = max(1, batch_tokens // seq)
    t0 = time.perf_counter()
    for first in range(0, len(x), per):
        forward(x[first:first + per].astype("int32"))
    return time.perf_counter() - t0


def measure(name: str, repeats: int, info: datasets.DatasetInfo, tables) -> dict:
    profile, settings = SIZES[name]
    with tempfile.TemporaryDirectory(prefix="judge-cost-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        prep = holdout.prepare(info, profile, work)
        prepare_s = time.perf_counter() - t0
        env = {**os.environ, **COMMON, **settings, "TOKENIZER_PATH": str(prep.tokenizer_path)}
        old_wall, old_log, _ = run_trainer(
            {**env, "DATA_PATH": str(old_data_folder(prep, info, work))}, work / "old")
        wall, log, artifact = run_trainer({**env, "DATA_PATH": str(prep.data_path)},
                                          work / "new")
        seq = prep.holdout.seq_len
        assert seq == int(settings["TRAIN_SEQ_LEN"]), "the judge's windows follow the profile"
        slices = {"old": shards.load_tokens(work / "old-data" / holdout.VAL_FILE),
                  "new": prep.trainer_slice()}
        runs: dict[str, list] = {"old": [], "new": []}
        for _ in range(repeats):  # alternating: both see the same load
            for key, transport, batch in (("old", "pipe", score.EVAL_TOKENS_PER_BATCH),
                                          ("new", "shm", NEW_BATCH)):
                t1 = time.perf_counter()
                got = score.score_sets(TRAINER, artifact, {"holdout": prep.holdout.tokens,
                                                           "claim": slices[key]},
                                       seq, tables, cwd=REPO, transport=transport,
                                       batch_tokens=batch)
                if not all(g.ok for g in got.values()):
                    sys.exit(f"{name}: the judge could not score: {got}")
                runs[key].append((time.perf_counter() - t1, got))
        compute = statistics.median(model_compute_s(artifact, prep.holdout.tokens, seq,
                                                    NEW_BATCH)
                                    for _ in range(repeats))
    return {"name": name, "wall": wall, "old_wall": old_wall, "eval_s": log.eval_ms / 1000,
            "old_eval_s": old_log.eval_ms / 1000, "prepare_s": prepare_s, "runs": runs,
            "compute_s": compute, "trainer_bpb": log.exact_val_bpb,
            "slices": {k: v.size - 1 for k, v in slices.items()}}


def batch_sizes(name: str, batches: list[int], repeats: int, info: datasets.DatasetInfo,
                tables) -> None:
    """The judge's seconds per artifact at each batch size, alternating (printed)."""
    profile, settings = SIZES[name]
    with tempfile.TemporaryDirectory(prefix="judge-cost-") as tmp:
        work = Path(tmp)
        prep = holdout.prepare(info, profile, work)
        env = {**os.environ, **COMMON, **settings, "TOKENIZER_PATH": str(prep.tokenizer_path),
               "DATA_PATH": str(prep.data_path), "VAL_MAX_TOKENS": str(holdout.CLAIM_TOKENS)}
        _, _, artifact = run_trainer(env, work / "run")
        sets = {"holdout": prep.holdout.tokens, "claim": prep.trainer_slice()}
        times: dict[int, list[float]] = {b: [] for b in batches}
        scores: dict[int, float] = {}
        for _ in range(repeats):
            for b in batches:
                t0 = time.perf_counter()
                got = score.score_sets(TRAINER, artifact, sets, prep.holdout.seq_len, tables,
                                       cwd=REPO, batch_tokens=b)
                times[b].append(time.perf_counter() - t0)
                scores[b] = got["holdout"].val_bpb
    print(f"\n== {name}: the judge's whole scoring of one artifact, {repeats} alternating runs")
    for b in batches:
        print(f"{b:>7,} tokens per batch: median {statistics.median(times[b]):.2f} s "
              f"(all {' '.join(f'{t:.2f}' for t in times[b])}); holdout val_bpb "
              f"{scores[b]:.9f}")


def med(runs: list, key: str | None = None, name: str = "holdout") -> float:
    if key is None:
        return statistics.median(total for total, _ in runs)
    return statistics.median(got[name].timings.get(key, 0.0) for _, got in runs)


def report(r: dict) -> None:
    old, new = r["runs"]["old"], r["runs"]["new"]
    print(f"\n== {r['name']}: trainer wall {r['old_wall']:.1f}s with the old slice, "
          f"{r['wall']:.1f}s with the new; data folder + holdout {1000 * r['prepare_s']:.0f}ms")
    print(f"{'':44}{'old (pipe, 16,384-token claim)':>32}{'new (shm, 4,096)':>18}")
    rows = [
        ("trainer's final evaluation (2 passes, s)", 2 * r["old_eval_s"], 2 * r["eval_s"]),
        ("judge per run, all in (s)", med(old), med(new)),
        ("  model server start + load (s)", med(old, "load_s"), med(new, "load_s")),
        ("  causality probe (s)", med(old, "probe_s"), med(new, "probe_s")),
        ("  holdout forward: model + transport (s)", med(old, "forward_s"),
         med(new, "forward_s")),
        ("  holdout loss in numpy (s)", med(old, "loss_s"), med(new, "loss_s")),
        ("  claim slice, all in (s)", med(old, "total_s", "claim"),
         med(new, "total_s", "claim")),
    ]
    for label, a, b in rows:
        print(f"{label:44}{a:>32.2f}{b:>18.2f}")
    print(f"{'holdout forward, the model alone in-process':44}{r['compute_s']:>32.2f}"
          f"{r['compute_s']:>18.2f}")
    for key, wall in (("old", r["old_wall"]), ("new", r["wall"])):
        judge = med(r["runs"][key])
        print(f"{key}: judge share of a run (trainer wall + judge): "
              f"{100 * judge / (wall + judge):.1f}%; judge / the trainer's final evaluation "
              f"with the old slice: {judge / (2 * r['old_eval_s']):.2f}x")
    pipe, shm = old[0][1]["holdout"], new[0][1]["holdout"]
    print(f"holdout val_bpb pipe {pipe.val_bpb:.9f} shm {shm.val_bpb:.9f} "
          f"(diff {shm.val_bpb - pipe.val_bpb:+.1e}); trainer on its new slice "
          f"{r['trainer_bpb']:.6f}, judge {new[0][1]['claim'].val_bpb:.6f}")


def main() -> int:
    ensure_blas()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SIZES))
    parser.add_argument("--repeats", type=int, default=3, help="judge runs per size (median)")
    parser.add_argument("--batch-tokens", help="compare these batch sizes instead, e.g. 2048,8192")
    args = parser.parse_args()
    info = datasets.resolve("sample")
    tables = tokenbytes.build_byte_tables(info.tokenizer_path, info.vocab_size)
    one, five, _ = os.getloadavg()
    print(f"judge cost, sample dataset; load1={one:.2f} load5={five:.2f} cores={os.cpu_count()}")
    for name in [args.only] if args.only else list(SIZES):
        if args.batch_tokens:
            batch_sizes(name, [int(b) for b in args.batch_tokens.split(",")], args.repeats,
                        info, tables)
        else:
            report(measure(name, args.repeats, info, tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
