#!/usr/bin/env python3
"""Throughput of benchmark/train_gpt_mlx.py on this machine (prints figures; not a test).

Measures the fp32 matmul peak with MLX, then runs the real trainer as a child for a few steps
on (a) a smoke-size model and (b) the 9x512 baseline, both at TRAIN_BATCH_TOKENS=8192 and
TRAIN_SEQ_LEN=1024, and reports ms/step, tokens/s, model-FLOPs utilisation and peak memory.

    .venv/bin/python bench/trainer_throughput.py [--steps N] [--only smoke|baseline]

On Linux the script re-executes itself with OpenBLAS preloaded (loop.platform.blas_env), as
the daemon does for the trainer: MLX's bundled BLAS is ~40x slower.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loop.platform import blas_env  # noqa: E402

TRAINER = REPO / "benchmark" / "train_gpt_mlx.py"
BATCH = {"TRAIN_BATCH_TOKENS": "8192", "TRAIN_SEQ_LEN": "1024"}
MODELS = {
    # The model of autoresearch.sh's smoke profile, at the benchmark's batch.
    "smoke": {"NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "2", "NUM_KV_HEADS": "1"},
    "baseline": {"NUM_LAYERS": "9", "MODEL_DIM": "512", "NUM_HEADS": "8", "NUM_KV_HEADS": "4"},
}


def ensure_blas() -> None:
    extra = blas_env()
    if extra and os.environ.get("LD_PRELOAD") != extra["LD_PRELOAD"]:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **extra})


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load1={one:.2f} load5={five:.2f} cores={os.cpu_count()}"


def matmul_peak(sizes: tuple[int, ...] = (1024, 2048), reps: int = 5) -> float:
    """Best fp32 GFLOP/s over square matmuls (median of reps per size).

    Measured again before and after each model: on a shared machine the load changes within
    minutes, and a peak taken under more load than the run would inflate the MFU.
    """
    import mlx.core as mx

    best = 0.0
    for n in sizes:
        a = mx.random.normal((n, n))
        b = mx.random.normal((n, n))
        mx.eval(a, b, a @ b)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            mx.eval(a @ b)
            times.append(time.perf_counter() - t)
        best = max(best, 2 * n**3 / sorted(times)[len(times) // 2] / 1e9)
    return best


def flops_per_token(params: int, layers: int, dim: int, seq_len: int) -> tuple[float, float]:
    """(6 x params, attention) training FLOPs per token.

    6 x params: forward 2 + backward 4 FLOPs per weight per token; the tied embedding counts
    because it is the output head's matmul. Attention score and value products: forward
    2 x 2 x seq_len x dim per token per layer for full T x T, halved for the causal mask,
    x3 for forward + backward = 6 x layers x seq_len x dim.
    """
    return 6.0 * params, 6.0 * layers * seq_len * dim


def run_model(name: str, settings: dict[str, str], steps: int, grad_accum: int,
              data: dict[str, str]) -> None:
    peak_before = matmul_peak()
    env = {**os.environ, **data, **BATCH, **settings, "ITERATIONS": str(steps),
           "GRAD_ACCUM_STEPS": str(grad_accum),
           "WARMUP_STEPS": "1", "WARMDOWN_ITERS": "0", "MAX_WALLCLOCK_SECONDS": "0",
           "TRAIN_LOG_EVERY": "1", "VAL_MAX_TOKENS": "8192", "RUN_ID": f"bench_{name}"}
    with tempfile.TemporaryDirectory() as out:
        env["OUT_DIR"] = out
        before = load()
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(TRAINER)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - t0
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    if proc.returncode != 0:
        print(proc.stdout[-3000:])
        raise SystemExit(f"{name}: trainer exited {proc.returncode}")
    log = proc.stdout
    params = int(re.search(r"^model_params:(\d+)", log, re.M).group(1))
    # Per-step times from train_time deltas; the first step is dropped (cache warm-up).
    times = [float(t) for t in re.findall(r"^step:\d+/\d+ train_loss:\S+ train_time:(\d+)ms",
                                          log, re.M)]
    deltas = [b - a for a, b in zip(times, times[1:], strict=False)] or times
    step_ms = sum(deltas) / len(deltas)
    tokens = int(BATCH["TRAIN_BATCH_TOKENS"])
    tok_s = tokens / (step_ms / 1000)
    dense, attn = flops_per_token(params, int(settings["NUM_LAYERS"]),
                                  int(settings["MODEL_DIM"]), int(BATCH["TRAIN_SEQ_LEN"]))
    achieved = (dense + attn) * tok_s / 1e9
    peak_after = matmul_peak()
    peak_gflops = max(peak_before, peak_after)  # the higher peak gives the lower, safer MFU
    peak_mlx = re.search(r"^peak_memory_mib:(\d+)", log, re.M).group(1)
    # ru_maxrss of the children (KiB on Linux): the trainer is the only child so far
    # that is this large, so the maximum is its peak resident memory.
    rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\n[{name}] layers={settings['NUM_LAYERS']} dim={settings['MODEL_DIM']} "
          f"heads={settings['NUM_HEADS']}/{settings['NUM_KV_HEADS']} params={params:,} "
          f"batch={tokens} seq={BATCH['TRAIN_SEQ_LEN']} grad_accum={grad_accum} "
          f"steps={steps} (+1 warmup)")
    print(f"  ms/step: {step_ms:.0f}  (mean over steps 2..{steps}; whole run {wall:.0f}s)")
    print(f"  tokens/s: {tok_s:.0f}")
    print(f"  FLOPs/token: 6N={dense / 1e6:.1f}M + attention={attn / 1e6:.1f}M "
          f"= {(dense + attn) / 1e6:.1f}M")
    print(f"  achieved: {achieved:.1f} GFLOP/s  MFU: {100 * achieved / peak_gflops:.1f}% "
          f"of {peak_gflops:.1f} GFLOP/s (fp32 matmul peak: {peak_before:.1f} before the run, "
          f"{peak_after:.1f} after; best of 1024^3 and 2048^3, median of 5)")
    print(f"  peak memory: MLX {peak_mlx} MiB, max RSS {rss_mib:.0f} MiB")
    print(f"  load before: {before}; after: {load()}")
    # On a shared machine the trainer gets less than all cores; this says how much it got
    # (OpenBLAS threads that spin while waiting count as busy, so it is an upper bound).
    print(f"  CPU share: {cpu_s / wall:.2f} cores busy on average over the whole run")


def main() -> None:
    ensure_blas()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="timed steps per model")
    ap.add_argument("--only", choices=sorted(MODELS), help="run one model only")
    ap.add_argument("--grad-accum", type=int, default=8,
                    help="GRAD_ACCUM_STEPS (8 = the trainer default: 1024-token microbatches)")
    opts = ap.parse_args()
    from loop.data import datasets

    info = datasets.resolve("sample", REPO)
    data = {"DATA_PATH": str(info.data_path), "TOKENIZER_PATH": str(info.tokenizer_path)}
    import mlx.core as mx

    print(f"trainer throughput: mlx {mx.__version__} on {mx.default_device()}, "
          f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}")
    print(f"  {load()}")
    for name, settings in MODELS.items():
        if opts.only in (None, name):
            run_model(name, settings, opts.steps, opts.grad_accum, data)


if __name__ == "__main__":
    main()
