#!/usr/bin/env python3
"""Is the in-run pruner safe, and what does it save? Real paired runs (prints figures; not a test).

Collect (slow, resumable): the real trainer at autoresearch.sh's smoke settings on the sample
dataset, the baseline knobs (the incumbent) and knob moves of the kind the search proposes,
each at several seeds, every step's train_loss logged (logging does not change a run). The
val_bpb is the trainer's own on the front of the sample's validation split with
VAL_MAX_TOKENS=16384: exactly the smoke holdout's tokens, so it is the judge's score (the
judge agrees with the trainer to ~1e-7 on the same tokens).

Analyse (instant): replay each candidate run against the incumbent's run at the same seed
through loop.measure.pruning.CurvePruner, seeing only the lines the profile logs (steps 1-10
and every TRAIN_LOG_EVERY=10th at smoke), and print:

- would-be keeps dropped: runs whose final val_bpb beats the incumbent's at that seed by at
  least min_improvement (0.002) but that the pruner stopped (target: under 2%), and the same
  for decisions (a config whose mean paired gain over the seeds reaches min_improvement);
- compute saved: the share of the would-be runs' steps not trained (plus their evaluation
  and the judge's scoring, which a pruned run skips), over all candidate runs;
- the worst late catch-up: how far a candidate behind at the pruner's first look came back.

    nice -n 19 .venv/bin/python bench/pruning.py collect [--seeds 5] [--out F]
    .venv/bin/python bench/pruning.py analyse [--out F] [--margin M] [--min-fraction F]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loop.data import datasets  # noqa: E402
from loop.measure import logparse, pruning  # noqa: E402
from loop.platform import blas_env  # noqa: E402

TRAINER = REPO / "benchmark" / "train_gpt_mlx.py"
DEFAULT_OUT = REPO / "bench" / "data" / "pruning-curves.json"  # committed: analyse at once
MIN_IMPROVEMENT = 0.002
# autoresearch.sh's smoke block and knob defaults (WARMDOWN_ITERS = 0.2 x 30, momentum
# warmup = 0.1 x 30), with every step logged so that any log schedule can be replayed.
SMOKE = {"ITERATIONS": "30", "TRAIN_BATCH_TOKENS": "2048", "GRAD_ACCUM_STEPS": "1",
         "TRAIN_SEQ_LEN": "128", "VAL_MAX_TOKENS": "16384", "VAL_BATCH_SIZE": "8192",
         "WARMUP_STEPS": "1", "TRAIN_LOG_EVERY": "1", "MAX_WALLCLOCK_SECONDS": "0",
         "NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "2", "NUM_KV_HEADS": "1",
         "MLP_MULT": "2", "WARMDOWN_ITERS": "6", "MUON_MOMENTUM_WARMUP_STEPS": "3"}
BASE_KNOBS = {"MATRIX_LR": 0.04, "SCALAR_LR": 0.04, "TIED_EMBED_LR": 0.05, "MUON_MOMENTUM": 0.95,
              "BETA2": 0.95, "QK_GAIN_INIT": 1.5, "LOGIT_SOFTCAP": 30, "TIED_EMBED_INIT_STD":
              0.005, "WARMDOWN_ITERS": 6}
# Moves of the size the search makes (1-3 knobs, log-scale rates), losers and winners both.
CONFIGS: dict[str, dict[str, float]] = {
    "base": {},
    "matrix_lr_x0.5": {"MATRIX_LR": 0.02}, "matrix_lr_x0.8": {"MATRIX_LR": 0.032},
    "matrix_lr_x1.25": {"MATRIX_LR": 0.05}, "matrix_lr_x2": {"MATRIX_LR": 0.08},
    "matrix_lr_x4": {"MATRIX_LR": 0.16},
    "scalar_lr_x0.5": {"SCALAR_LR": 0.02}, "scalar_lr_x3": {"SCALAR_LR": 0.12},
    "embed_lr_x0.3": {"TIED_EMBED_LR": 0.015}, "embed_lr_x2": {"TIED_EMBED_LR": 0.1},
    "embed_lr_x4": {"TIED_EMBED_LR": 0.2},
    "warmdown_0.05": {"WARMDOWN_ITERS": 2}, "warmdown_0.5": {"WARMDOWN_ITERS": 15},
    "momentum_0.86": {"MUON_MOMENTUM": 0.86}, "beta2_0.99": {"BETA2": 0.99},
    "qk_gain_0.7": {"QK_GAIN_INIT": 0.7}, "qk_gain_3": {"QK_GAIN_INIT": 3.0},
    "softcap_12": {"LOGIT_SOFTCAP": 12}, "init_std_0.03": {"TIED_EMBED_INIT_STD": 0.03},
    "lr_pair_up": {"MATRIX_LR": 0.06, "TIED_EMBED_LR": 0.08},
    "lr_pair_mixed": {"MATRIX_LR": 0.08, "SCALAR_LR": 0.015},
}


def run_once(info: datasets.DatasetInfo, knobs: dict[str, float], seed: int) -> dict:
    env = {**os.environ, **blas_env(), **SMOKE,
           **{k: str(v) for k, v in {**BASE_KNOBS, **knobs}.items()},
           "SEED": str(seed), "DATA_PATH": str(info.data_path),
           "TOKENIZER_PATH": str(info.tokenizer_path), "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="prune-bench-") as tmp:
        env.update(OUT_DIR=tmp, RUN_ID="bench", AUTOGOLF_ARTIFACT_PATH=f"{tmp}/model.ptz")
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, str(TRAINER)], env=env, cwd=REPO, text=True,
                              capture_output=True, timeout=900)
        wall = time.perf_counter() - t0
    if done.returncode:
        return {"exit": done.returncode, "wall_s": wall}
    log = logparse.parse_trainer_log(done.stdout)
    curve = {}
    for line in done.stdout.splitlines():
        parts = dict(p.split(":", 1) for p in line.split() if ":" in p)
        if "train_loss" in parts and "step" in parts:
            curve[int(parts["step"].split("/")[0])] = float(parts["train_loss"])
    return {"exit": 0, "wall_s": wall, "val_bpb": log.exact_val_bpb, "curve": curve,
            "step_ms": log.step_ms, "eval_ms": log.eval_ms}


def collect(out: Path, seeds: list[int]) -> None:
    info = datasets.resolve("sample")
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.read_text()) if out.is_file() else {"runs": {}}
    data["machine"] = {"cpus": os.cpu_count(), "uname": " ".join(os.uname()),
                       "date": time.strftime("%Y-%m-%d")}
    for seed in seeds:  # seed-major: a partial collection still has complete seeds
        for name, knobs in CONFIGS.items():
            key = f"{name}@{seed}"
            if key in data["runs"]:
                continue
            data["runs"][key] = {"config": name, "seed": seed, **run_once(info, knobs, seed)}
            r = data["runs"][key]
            print(f"{key}: exit {r['exit']} val_bpb {r.get('val_bpb')} {r['wall_s']:.1f}s",
                  flush=True)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["collect", "analyse"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--margin", type=float, default=None)
    parser.add_argument("--min-fraction", type=float, default=None)
    args = parser.parse_args()
    if args.mode == "collect":
        collect(args.out, list(range(1337, 1337 + args.seeds)))
        return 0
    return analyse(args.out, args.margin, args.min_fraction)


def visible(curve: dict[int, float], total: int, log_every: int) -> dict[int, float]:
    """The steps the trainer logs at the profile: 1-10, every log_every-th, the last."""
    return {s: v for s, v in curve.items()
            if s <= 10 or s == total or (log_every > 0 and s % log_every == 0)}


def replay(run: dict, base: dict, margin: float, min_fraction: float,
           log_every: int) -> int | None:
    """The step at which CurvePruner would stop `run` against `base` (None: never)."""
    total = int(SMOKE["ITERATIONS"])
    inc = visible({int(s): v for s, v in base["curve"].items()}, total, log_every)
    cand = visible({int(s): v for s, v in run["curve"].items()}, total, log_every)
    pruner = pruning.CurvePruner(inc, total, margin, min_fraction)
    for step in sorted(cand):
        if pruner.feed(f"step:{step}/{total} train_loss:{cand[step]:.4f} train_time:0ms"):
            return step
    return None


def count(stopped: dict, config: str) -> int:
    return sum(1 for (c, _), v in stopped.items() if c == config and v[0] is not None)


def analyse(out: Path, margin: float | None, min_fraction: float | None,
            log_every: int = 10) -> int:
    margin = pruning.MARGIN if margin is None else margin
    min_fraction = pruning.MIN_FRACTION if min_fraction is None else min_fraction
    data = json.loads(out.read_text())
    runs = [r for r in data["runs"].values() if r["exit"] == 0]
    base = {r["seed"]: r for r in runs if r["config"] == "base"}
    pairs = [r for r in runs if r["config"] != "base" and r["seed"] in base]
    total = int(SMOKE["ITERATIONS"])
    print(f"pruning on real paired smoke runs ({data['machine']['date']}, "
          f"{data['machine']['cpus']} CPUs, {data['machine']['uname']})")
    print(f"{len(pairs)} candidate runs ({len({r['config'] for r in pairs})} knob moves x "
          f"{len(base)} seeds), each against the baseline at its seed; the pruner sees steps "
          f"1-10 and every {log_every}th; margin {margin:g} nats, first look at "
          f"{min_fraction:.0%} of {total} steps")
    stopped, saved, spent, lags = {}, 0.0, 0.0, []
    first = math.ceil(min_fraction * total)
    for r in pairs:
        b = base[r["seed"]]
        step = replay(r, b, margin, min_fraction, log_every)
        gain = b["val_bpb"] - r["val_bpb"]  # > 0: the candidate won at this seed
        stopped[r["config"], r["seed"]] = (step, gain)
        # a run's cost: its steps, its two evaluations and the judge's scoring (about one
        # more evaluation of the holdout): a pruned run spends only its steps so far
        train_s = r["step_ms"] * total / 1000
        full = train_s + 3 * r["eval_ms"] / 1000
        spent += full
        if step is not None:
            saved += full - train_s * step / total
        gaps = [r["curve"][str(s)] - b["curve"][str(s)] for s in range(first, total + 1)
                if str(s) in r["curve"] and s in visible({s: 0.0}, total, log_every)]
        if gain >= MIN_IMPROVEMENT and gaps:
            # the pruner needs the lag above the margin at every look so far: a run comes
            # closest to being pruned at its first look
            lags.append((gaps[0], r["config"], r["seed"]))
    wins = [(k, v) for k, v in stopped.items() if v[1] >= MIN_IMPROVEMENT]
    dropped = [(k, v) for k, v in wins if v[0] is not None]
    print(f"\nrun level: {len(wins)} candidate runs beat the incumbent at their seed by >= "
          f"{MIN_IMPROVEMENT}; the pruner stopped {len(dropped)} of them "
          f"({100 * len(dropped) / max(len(wins), 1):.1f}%)")
    configs = sorted({c for c, _ in stopped})
    means = {c: statistics.fmean(v[1] for (cc, _), v in stopped.items() if cc == c)
             for c in configs}
    keeps = [c for c in configs if means[c] >= MIN_IMPROVEMENT]
    lost = [c for c in keeps if any(v[0] is not None for (cc, _), v in stopped.items()
                                    if cc == c)]
    print(f"decision level: {len(keeps)} knob moves gain >= {MIN_IMPROVEMENT} on average over "
          f"the seeds (would-be keeps); the pruner stopped a run of {len(lost)} of them "
          f"({100 * len(lost) / max(len(keeps), 1):.1f}%){': ' + ', '.join(lost) if lost else ''}")
    pruned = sorted({c for (c, _), v in stopped.items() if v[0] is not None})
    print(f"pruned runs: {sum(v[0] is not None for v in stopped.values())} of {len(pairs)} "
          f"({', '.join(f'{c} x{count(stopped, c)}' for c in pruned)})")
    print(f"compute saved: {100 * saved / spent:.1f}% of the candidate runs' training, "
          "evaluations and scoring (a run = its steps + the trainer's two evaluations + "
          "about one more for the judge)")
    if lags:
        worst = max(lags)
        print(f"largest lag of a winning run at the first look (step >= {first}): {worst[0]:+.3f} "
              f"nats ({worst[1]} at seed {worst[2]}); margin / that = "
              f"{margin / worst[0] if worst[0] > 0 else math.inf:.1f}x")
    early = [(r["curve"]["10"] - base[r["seed"]]["curve"]["10"], r["config"], r["seed"])
             for r in pairs if base[r["seed"]]["val_bpb"] - r["val_bpb"] >= MIN_IMPROVEMENT]
    worst_early = max(early)
    print(f"crossing curves: the largest lag of a winning run at step 10 (a third of the run) "
          f"was {worst_early[0]:+.3f} nats ({worst_early[1]} at seed {worst_early[2]}): why no "
          "look comes before 60%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
