#!/usr/bin/env python3
"""Throughput of benchmark/train_gpt_mlx.py on this machine (prints figures; not a test).

Measures the matmul peak with MLX (fp32; also bf16 on a GPU, where the trainer computes in
bf16), then runs the real trainer as a child for a few steps on (a) a smoke-size model and
(b) the 9x512 baseline, both at TRAIN_BATCH_TOKENS=8192 and TRAIN_SEQ_LEN=1024 unless told
otherwise, and reports ms/step, tokens/s, model-FLOPs utilisation and peak memory.

    .venv/bin/python bench/trainer_throughput.py [--steps N] [--only smoke|baseline]
        [--trainer PATH] [--batch-tokens N] [--json FILE]

--trainer runs another trainer file at the same settings (upstream's MLX trainer, for the
comparison bench/gpu_check.sh makes); --json writes the figures, one object per model.

On Linux the script re-executes itself with OpenBLAS preloaded (loop.platform.blas_env), as
the daemon does for the trainer: MLX's bundled BLAS is ~40x slower.
"""

from __future__ import annotations

import argparse
import json
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
MODEL_PARAMS = re.compile(r"^model_params:(\d+)", re.M)
PEAK_MEMORY = re.compile(r"^peak_memory_mib:(\d+)", re.M)
TRAIN_TIMES = re.compile(r"^step:\d+/\d+ train_loss:\S+ train_time:(\d+)ms", re.M)
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


def on_gpu() -> bool:
    import mlx.core as mx

    return mx.default_device() == mx.gpu


def matmul_peak(sizes: tuple[int, ...] = (1024, 2048), reps: int = 5,
                dtype: str = "float32") -> float:
    """Best GFLOP/s over square matmuls in `dtype` (median of reps per size).

    Measured again before and after each model: on a shared machine the load changes within
    minutes, and a peak taken under more load than the run would inflate the MFU.
    """
    import mlx.core as mx

    best = 0.0
    for n in sizes:
        a = mx.random.normal((n, n)).astype(getattr(mx, dtype))
        b = mx.random.normal((n, n)).astype(getattr(mx, dtype))
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


def peaks() -> dict[str, float]:
    """Matmul peaks in GFLOP/s: fp32 always; bf16 and a 4096 size too on a GPU."""
    if not on_gpu():
        return {"float32": matmul_peak()}
    sizes = (1024, 2048, 4096)
    return {"float32": matmul_peak(sizes), "bfloat16": matmul_peak(sizes, dtype="bfloat16")}


def parse_log(log: str) -> dict[str, float | int | None]:
    """Step time from a trainer log: train_time deltas, the first step dropped (warm-up).

    Upstream's trainer prints the same step lines; model_params and peak_memory_mib may be
    absent from another trainer's log, and are then None (unknown), never 0.
    """
    times = [float(t) for t in TRAIN_TIMES.findall(log)]
    deltas = [b - a for a, b in zip(times, times[1:], strict=False)] or times
    params = MODEL_PARAMS.search(log)
    memory = PEAK_MEMORY.search(log)
    return {"step_ms": sum(deltas) / len(deltas) if deltas else None,
            "timed_steps": len(deltas),
            "model_params": int(params.group(1)) if params else None,
            "peak_memory_mib": int(memory.group(1)) if memory else None}


def run_model(name: str, settings: dict[str, str], steps: int, grad_accum: int,
              data: dict[str, str], trainer: Path = TRAINER) -> dict:
    peak_before = peaks()
    env = {**os.environ, **data, **BATCH, **settings, "ITERATIONS": str(steps),
           "GRAD_ACCUM_STEPS": str(grad_accum),
           "WARMUP_STEPS": "1", "WARMDOWN_ITERS": "0", "MAX_WALLCLOCK_SECONDS": "0",
           "TRAIN_LOG_EVERY": "1", "VAL_MAX_TOKENS": "8192", "RUN_ID": f"bench_{name}"}
    with tempfile.TemporaryDirectory() as out:
        env["OUT_DIR"] = out
        before = load()
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(trainer)], env=env, text=True, cwd=out,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - t0
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    if proc.returncode != 0:
        print(proc.stdout[-3000:])
        raise SystemExit(f"{name}: trainer {trainer} exited {proc.returncode}")
    figures = parse_log(proc.stdout)
    if figures["step_ms"] is None:
        print(proc.stdout[-3000:])
        raise SystemExit(f"{name}: no step lines with train_time in the log of {trainer}")
    step_ms = figures["step_ms"]
    tokens = int(BATCH["TRAIN_BATCH_TOKENS"])
    tok_s = tokens / (step_ms / 1000)
    peak_after = peaks()
    # The higher peak gives the lower, safer MFU; bf16 is the trainer's dtype on a GPU.
    kind = "bfloat16" if "bfloat16" in peak_before else "float32"
    peak_gflops = max(peak_before[kind], peak_after[kind])
    params = figures["model_params"]
    mfu = None
    if params is not None:
        dense, attn = flops_per_token(params, int(settings["NUM_LAYERS"]),
                                      int(settings["MODEL_DIM"]), int(BATCH["TRAIN_SEQ_LEN"]))
        achieved = (dense + attn) * tok_s / 1e9
        mfu = 100 * achieved / peak_gflops
    # ru_maxrss of the children (KiB on Linux): the trainer is the only child so far
    # that is this large, so the maximum is its peak resident memory.
    rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\n[{name}] {trainer.name}: layers={settings['NUM_LAYERS']} "
          f"dim={settings['MODEL_DIM']} heads={settings['NUM_HEADS']}/"
          f"{settings['NUM_KV_HEADS']} params={params if params is None else f'{params:,}'} "
          f"batch={tokens} seq={BATCH['TRAIN_SEQ_LEN']} grad_accum={grad_accum} "
          f"steps={steps} (+1 warmup)")
    print(f"  ms/step: {step_ms:.1f}  (mean over steps 2..{steps}; whole run {wall:.0f}s)")
    print(f"  tokens/s: {tok_s:.0f}")
    if mfu is None:
        print("  MFU: unknown (the log has no model_params line)")
    else:
        print(f"  FLOPs/token: 6N={dense / 1e6:.1f}M + attention={attn / 1e6:.1f}M "
              f"= {(dense + attn) / 1e6:.1f}M")
        print(f"  achieved: {achieved:.1f} GFLOP/s  MFU: {mfu:.1f}% of {peak_gflops:.1f} "
              f"GFLOP/s ({kind} matmul peak: {peak_before[kind]:.1f} before the run, "
              f"{peak_after[kind]:.1f} after; best of the square sizes, median of 5)")
    print(f"  peak memory: MLX {figures['peak_memory_mib'] or 'unknown'} MiB, "
          f"max RSS {rss_mib:.0f} MiB")
    print(f"  load before: {before}; after: {load()}")
    # On a shared machine the trainer gets less than all cores; this says how much it got
    # (OpenBLAS threads that spin while waiting count as busy, so it is an upper bound).
    print(f"  CPU share: {cpu_s / wall:.2f} cores busy on average over the whole run")
    return {"model": name, "trainer": str(trainer), "settings": {**BATCH, **settings,
            "GRAD_ACCUM_STEPS": str(grad_accum), "ITERATIONS": str(steps)},
            **figures, "tok_s": tok_s, "mfu_pct": mfu, "matmul_peak_gflops": peak_gflops,
            "matmul_peak_dtype": kind, "wall_s": wall, "max_rss_mib": rss_mib}


def main() -> None:
    ensure_blas()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="timed steps per model")
    ap.add_argument("--only", choices=sorted(MODELS), help="run one model only")
    ap.add_argument("--grad-accum", type=int, default=8,
                    help="GRAD_ACCUM_STEPS (8 = the trainer default: 1024-token microbatches)")
    ap.add_argument("--batch-tokens", type=int, default=int(BATCH["TRAIN_BATCH_TOKENS"]),
                    help="TRAIN_BATCH_TOKENS (default %(default)s)")
    ap.add_argument("--trainer", type=Path, default=TRAINER,
                    help="the trainer file to run (default: ours, benchmark/train_gpt_mlx.py)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    opts = ap.parse_args()
    if not opts.trainer.is_file():
        raise SystemExit(f"--trainer {opts.trainer}: no such file")
    BATCH["TRAIN_BATCH_TOKENS"] = str(opts.batch_tokens)
    from loop.data import datasets

    info = datasets.resolve("sample", REPO)
    data = {"DATA_PATH": str(info.data_path), "TOKENIZER_PATH": str(info.tokenizer_path)}
    import mlx.core as mx

    print(f"trainer throughput: mlx {mx.__version__} on {mx.default_device()}, "
          f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}")
    print(f"  {load()}")
    results = [run_model(name, settings, opts.steps, opts.grad_accum, data,
                         opts.trainer.resolve())
               for name, settings in MODELS.items() if opts.only in (None, name)]
    if opts.json:
        opts.json.write_text(json.dumps({"mlx_version": mx.__version__,
                                         "device": str(mx.default_device()),
                                         "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
