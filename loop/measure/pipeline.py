"""The measurement pipeline: one benchmark (or checks) run, from environment to parsed log.

`Pipeline.benchmark` builds the child's environment (fast BLAS, the dataset the row will
name, PROFILE and RUN_ID), runs `PROFILE=p bash autoresearch.sh` in its own process group
with the profile's timeout, the memory watchdog and the early abort (loop.measure.runner,
loop.measure.watchdog), and parses the captured output once: the METRIC lines
(loop.measure.metrics) and the trainer's own lines (loop.measure.logparse). It returns a
`Run`: what happened and what was printed. Whether that is a valid measurement, and what
the score is, is the judge's business (loop.judge.judge), never this module's.

`autogolf run` (through the loop) and `autogolf bench` (loop.ui.bench) both measure here.

Sealed (loop.measure.seal, issue 24): the command runs inside the seal with a minimal
environment; every run gets a fresh output folder (`<log>.out/`, outside the worktree) that is
its `logs/` and the only place it can write; the daemon's artifact path points into it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loop.config import Config
from loop.data import datasets
from loop.measure import logparse, runner, watchdog
from loop.measure import metrics as metriclines
from loop.measure.pruning import CurvePruner
from loop.measure.seal import Seal, minimal_env
from loop.platform import blas_env

TRAINER = "benchmark/train_gpt_mlx.py"
ARTIFACT_NAME = "model.ptz"  # in the run's output folder: AUTOGOLF_ARTIFACT_PATH


@dataclass
class Run:
    """One finished benchmark run: how it ended and what it printed (claims, not scores)."""

    exit_code: int | None
    timed_out: bool
    wall_s: float
    log_path: Path
    metrics: dict[str, float]  # the METRIC lines (an editable script's output)
    log: logparse.TrainerLog  # the daemon's own reading of the trainer's lines
    trainer_bytes: int | None  # size of the trainer file, for logs without a size total
    trainer_missing: bool
    early_abort: tuple[str, str] | None = None  # (status, reason) of the watchdog/early abort
    outputs: Path | None = None  # the run's own output folder (AUTOGOLF_ARTIFACT_PATH is in it)
    logs_dir: Path | None = None  # where the run's `logs/` writes went (outputs when sealed)
    sealed: bool = False
    cpu_s: float | None = None  # CPU seconds of the whole run (loop.measure.runner)

    def last_line(self) -> str:
        return last_line(self.log_path)


class Pipeline:
    """Runs benchmarks and checks for one dataset; `stop()` ends a running child early."""

    def __init__(self, cfg: Config, cache_root: Path, dataset: datasets.DatasetInfo,
                 token: str, stop: Callable[[], bool] | None = None,
                 on_line: Callable[[str], None] | None = None, seal: Seal | None = None):
        self.cfg = cfg
        self.seal = seal or Seal(None)
        self.cache_root = cache_root
        self.dataset = dataset
        self.token = token  # in every child's environment: a resumed daemon finds orphans
        self.stop = stop
        self.on_line = on_line

    def env(self, run_id: str, profile: str | None) -> dict[str, str]:
        return bench_env(self.cache_root, self.dataset, self.token, run_id, profile)

    def benchmark(self, worktree: Path, profile: str, run_id: str, log_path: Path,
                  env_extra: dict[str, str] | None = None,
                  pruner: CurvePruner | None = None) -> Run:
        """One run of the benchmark command at `profile` in `worktree`; `pruner` stops a
        candidate clearly behind the incumbent's curve (status `pruned`)."""
        trainer = worktree / TRAINER
        # Completes the artifact size when the log has no size total (upstream's trainer).
        trainer_bytes = trainer.stat().st_size if trainer.is_file() else None
        outputs = fresh_outputs(log_path)
        env = self.env(run_id, profile) | {"AUTOGOLF_ARTIFACT_PATH": str(outputs / ARTIFACT_NAME)}
        argv, env = self._command(self.cfg.benchmark_command, worktree, outputs,
                                  env | (env_extra or {}))
        guard = bench_guard(self.cfg, profile)
        guard.forward = self.on_line
        guard.pruner = pruner
        guard.daemon_stop = self.stop
        result = runner.run_command(
            argv, cwd=worktree, env=env,
            timeout_s=self.cfg.profiles[profile].timeout_s, log_path=log_path,
            on_line=guard.on_line, stop=guard.stop, grace_s=self.cfg.kill_grace_s,
            on_start=guard.on_start)
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        early = (guard.verdict.status, guard.verdict.reason) if guard.verdict else None
        return Run(result.exit_code, result.timed_out, result.wall_s, log_path,
                   metriclines.parse_metric_lines(text), logparse.parse_trainer_log(text),
                   trainer_bytes, not trainer.is_file(), early, outputs,
                   outputs if self.seal.sealed else worktree / "logs", self.seal.sealed,
                   result.cpu_s)

    def checks(self, worktree: Path, run_id: str, log_path: Path,
               env_extra: dict[str, str] | None = None) -> runner.RunResult:
        """The checks command (autoresearch.checks.sh) in `worktree`, sealed like a
        benchmark; `env_extra` names the data folder it may read."""
        outputs = fresh_outputs(log_path)
        argv, env = self._command(self.cfg.checks_command, worktree, outputs,
                                  self.env(run_id, None) | (env_extra or {}))
        try:
            return runner.run_command(argv, cwd=worktree, env=env,
                                      timeout_s=self.cfg.checks_timeout_s, log_path=log_path,
                                      stop=self.stop, grace_s=self.cfg.kill_grace_s)
        finally:
            shutil.rmtree(outputs, ignore_errors=True)

    def _command(self, command: str, worktree: Path, outputs: Path,
                 env: dict[str, str]) -> tuple[str | list[str], dict[str, str]]:
        """The command and environment as run: unchanged when unsealed, else inside the
        seal with the allowlisted environment and only the data folder readable."""
        if not self.seal.sealed:
            return command, env
        keep = {k: v for k, v in env.items() if k in RUN_VARS or k.startswith("AUTOGOLF_")}
        keep.pop("AUTOGOLF_CACHE_ROOT", None)  # it names the folder that holds data/
        readable = [Path(env[k]) for k in ("DATA_PATH", "TOKENIZER_PATH") if env.get(k)]
        return self.seal.benchmark(["/bin/sh", "-c", command], worktree=worktree,
                                   outputs=outputs, readable=readable,
                                   env=minimal_env(env, keep))


# What a sealed run gets besides minimal_env's allowlist and the AUTOGOLF_ run variables.
RUN_VARS = ("PYTHON", "PROFILE", "RUN_ID", "DATA_PATH", "TOKENIZER_PATH", "KEEP_MODEL",
            "DATASET_NAME", runner.MARKER)


def fresh_outputs(log_path: Path) -> Path:
    """An empty output folder beside the run's log (`bench-smoke.log` -> `bench-smoke.out/`):
    a stale artifact must never be scored for this run."""
    outputs = Path(log_path).with_suffix(".out")
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir(parents=True)
    return outputs


def bench_guard(cfg: Config, profile: str) -> watchdog.RunGuard:
    """Memory watchdog (limits:) and early abort (the profile's timeout) for one benchmark."""
    return watchdog.guard_for(cfg.profiles[profile].timeout_s, cfg.max_memory_mb,
                              cfg.min_available_memory_mb)


def bench_env(cache_root: Path, dataset: datasets.DatasetInfo, token: str, run_id: str,
              profile: str | None) -> dict[str, str]:
    """The environment of a benchmark (or checks) child, per DESIGN.md."""
    env = dict(os.environ)
    env.update(blas_env(env))
    env.update(PYTHON=sys.executable, AUTOGOLF_CACHE_ROOT=str(cache_root),
               AUTOGOLF_DAEMON_TOKEN=token,
               # The benchmark measures exactly the dataset the ledger row will name.
               DATA_PATH=str(dataset.data_path), TOKENIZER_PATH=str(dataset.tokenizer_path))
    if profile is not None:
        env.update(PROFILE=profile, RUN_ID=f"{run_id}-{profile}")
    return env


def last_line(path: Path) -> str:
    """The last non-blank line of a log (200 characters at most), for a reason."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no output)"
    return lines[-1][:200] if lines else "(no output)"
