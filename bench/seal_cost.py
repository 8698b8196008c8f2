#!/usr/bin/env python3
"""What the seal (loop/measure/seal.py) costs: sealed against unsealed wall time (prints
figures; not a test).

For each size (bench/judge_cost.py's `smoke` and `medium`) it runs the real trainer the way
the daemon does, alternating, `--repeats` times each:

- unsealed: as before issue 24 (the daemon's environment, MLX's warm kernel cache);
- unsealed, no JIT: the same with MLX_DISABLE_COMPILE=1 (what the seal sets on a CPU), to
  tell the sandbox's own cost from the uncompiled kernels';
- sealed: inside bubblewrap, as `Pipeline.benchmark` runs it (minimal environment, read-only
  worktree and data folder, private /tmp, outputs folder);

then scores the artifact with the judge (two model servers) unsealed and sealed. It prints
the median wall seconds of each and the ratio to unsealed.

    nice -n 19 .venv/bin/python bench/seal_cost.py [--only smoke|medium] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from judge_cost import COMMON, SIZES, ensure_blas  # noqa: E402

from loop.data import datasets, tokenbytes  # noqa: E402
from loop.judge import holdout, score  # noqa: E402
from loop.measure import seal  # noqa: E402

TRAINER = Path("benchmark/train_gpt_mlx.py")


def run_trainer(how: str, the_seal: seal.Seal, env: dict[str, str], tree: Path,
                data: list[Path], outputs: Path) -> float:
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir(parents=True)
    env = {**env, "RUN_ID": "bench", "OUT_DIR": "logs",
           "AUTOGOLF_ARTIFACT_PATH": str(outputs / "model.ptz")}
    argv: list[str] = [sys.executable, str(TRAINER)]
    if how == "sealed":
        argv, env = the_seal.benchmark(argv, worktree=tree, outputs=outputs, readable=data,
                                       env=seal.minimal_env(env, {
                                           k: v for k, v in env.items()
                                           if k.isupper() and not k.startswith("LC_")}))
    elif how == "unsealed, no JIT":
        env = {**env, "MLX_DISABLE_COMPILE": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{how} run failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    return wall


def bench_size(name: str, repeats: int, info: datasets.DatasetInfo, root: Path,
               the_seal: seal.Seal) -> None:
    profile, settings = SIZES[name]
    prep = holdout.prepare(info, profile, root)
    tree = root / f"tree-{name}"
    (tree / "benchmark").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / TRAINER, tree / TRAINER)
    env = {**os.environ, **COMMON, **settings, "DATA_PATH": str(prep.data_path),
           "TOKENIZER_PATH": str(prep.tokenizer_path), "PYTHONUNBUFFERED": "1"}
    env.pop("SEED", None)
    data = [prep.data_path, prep.tokenizer_path]
    walls: dict[str, list[float]] = {"unsealed": [], "unsealed, no JIT": [], "sealed": []}
    for _ in range(repeats):
        for how in walls:
            walls[how].append(run_trainer(how, the_seal, env, tree, data, root / "out"))
    artifact = root / "out" / "model.ptz"
    kept = root / f"model-{name}.ptz"
    shutil.copy(artifact, kept)
    tables = tokenbytes.build_byte_tables(prep.tokenizer_path, info.vocab_size)
    sets = {"holdout": prep.holdout.tokens, "claim": prep.trainer_slice()}
    judged: dict[str, list[float]] = {"judge, unsealed": [], "judge, sealed": []}
    for _ in range(repeats):
        for how, s in (("judge, unsealed", seal.Seal(None)), ("judge, sealed", the_seal)):
            t0 = time.perf_counter()
            got = score.score_sets(tree / TRAINER, kept, sets, prep.holdout.seq_len, tables,
                                   seal=s, env=score.server_env(env))
            judged[how].append(time.perf_counter() - t0)
            if not got["holdout"].ok:
                raise SystemExit(f"{how}: {got['holdout'].reason}")
    base = statistics.median(walls["unsealed"])
    jbase = statistics.median(judged["judge, unsealed"])
    print(f"\n{name} ({repeats} runs each, median wall seconds)")
    for how, values in walls.items():
        med = statistics.median(values)
        print(f"  trainer {how:<18} {med:7.2f} s   x{med / base:5.3f}")
    for how, values in judged.items():
        med = statistics.median(values)
        print(f"  {how:<26} {med:7.2f} s   x{med / jbase:5.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ensure_blas()
    the_seal = seal.choose(True)
    info = datasets.resolve("sample", datasets.cache_root(REPO))
    print(f"seal: {the_seal.tool} (no_jit={the_seal.no_jit}); machine: {os.cpu_count()} "
          f"CPUs; load average at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="autogolf-sealbench-") as scratch:
        for name in ([args.only] if args.only else list(SIZES)):
            bench_size(name, args.repeats, info, Path(scratch), the_seal)


if __name__ == "__main__":
    main()
