"""`autogolf bench --profile P`: one manual run of one profile on the user's own checkout.

It measures with the loop's pipeline (loop.measure.pipeline) and reads the run with the
judge's validity check (loop.judge.validity.assess) and, when the judge is on (the
default), the judge's own score of the artifact (loop.judge.artifact_judge.ArtifactJudge:
the holdout, and the trainer's own slice to check its printout), under the same lock as the
daemon (one benchmark at a time on this machine), and writes one ledger row marked manual:
recorded, never compared with the incumbents. `judge_lines` says which score is which, in words.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from loop.config import Config
from loop.daemon.lock import DaemonLock
from loop.daemon.session import Paths
from loop.daemon.stops import catch_stop_signals
from loop.data import datasets
from loop.errors import UserError
from loop.judge import artifact as artifacts
from loop.judge.artifact_judge import ArtifactJudge, run_name
from loop.judge.validity import Measurement, assess
from loop.measure import seal
from loop.measure.pipeline import TRAINER, Pipeline
from loop.store import gitsession
from loop.store.files import atomic_write, file_hash
from loop.store.gitsession import diff_hash
from loop.store.ledger import Ledger
from loop.store.rows import Experiment, next_id
from loop.store.verdict import Verdict


def manual_bench(repo: Path, cfg: Config, profile: str,
                 on_line: Callable[[str], None] | None = None,
                 out: Callable[[str], None] = print) -> dict:
    """One run of `profile` on the checkout at `repo`; returns the manual ledger row."""
    paths = Paths(Path(repo).resolve())
    if profile not in cfg.profiles:
        raise UserError(f"unknown profile {profile!r}; known: {', '.join(cfg.profiles)}")
    cache = datasets.cache_root(paths.repo)
    dataset = datasets.resolve(cfg.dataset, cache)
    stopped: list[str] = []
    with DaemonLock(paths.lock), catch_stop_signals(stopped.append):
        ledger = Ledger(paths.ledger)
        exp = Experiment(id=next_id(ledger.rows()), session=None, head=None, proposer="manual",
                         manual=True, dataset=datasets.dataset_id(dataset),
                         description=f"manual bench at {profile}")
        _describe_checkout(paths, exp)
        log = paths.experiment(exp.id) / f"bench-{profile}.log"
        out(f"{exp.id}: log {paths.rel(log)}")
        scorer, env, sealed = None, {}, seal.Seal(None)
        if cfg.judge_enabled:
            scorer = ArtifactJudge(cfg, paths.repo, paths.repo, dataset)
            env = scorer.trainer_env(profile)
            sealed = seal.for_checkout(cfg.judge_sealed, paths.repo, dataset.data_path,
                                       worktree=paths.repo, data=[Path(v) for v in env.values()],
                                       trainer=paths.repo / TRAINER)
            scorer.seal = sealed
            out(sealed.describe())
            artifacts.upstream_path(paths.repo / "logs", run_name(exp, profile)).unlink(
                missing_ok=True)
        pipeline = Pipeline(cfg, cache, dataset, f"manual-{os.getpid()}",
                            stop=lambda: bool(stopped), on_line=on_line, seal=sealed)
        raw = pipeline.benchmark(paths.repo, profile, exp.id, log, env)
        run = assess(raw, cfg.artifact_cap_bytes)
        try:
            if scorer is not None and not stopped:
                out(f"{exp.id}: judging the artifact (the holdout, and the trainer's own slice)")
                run = scorer.judge(run, raw, profile, run_name(exp, profile))
        finally:
            if raw.outputs is not None and os.environ.get("KEEP_MODEL") != "1":
                shutil.rmtree(raw.outputs, ignore_errors=True)
        run.rung["sealed"] = raw.sealed
        run.rung["log"] = paths.rel(log)
        exp.rungs[profile] = run.rung
        exp.verdict = _manual_verdict(run, stopped)
        row = exp.row(commit=exp.head)
        ledger.append(row)
    return row


def _describe_checkout(paths: Paths, exp: Experiment) -> None:
    """What a manual run measured: the user's HEAD plus their uncommitted tracked edits."""
    exp.trainer_hash = file_hash(paths.repo / TRAINER)
    try:
        exp.head = gitsession.git(paths.repo, "rev-parse", "--verify", "HEAD").strip()
        diff = gitsession.git(paths.repo, "diff", "--binary", "HEAD")
    except gitsession.GitError:
        return  # no commits yet: the row says commit null
    if diff.strip():
        exp.diff_hash = diff_hash(diff)
        path = paths.experiment(exp.id) / "patch.diff"
        atomic_write(path, diff)
        exp.patch = paths.rel(path)


def _manual_verdict(run: Measurement, stopped: list[str]) -> Verdict:
    if stopped:
        return Verdict("interrupted", f"stopped by {stopped[0]}")
    if run.verdict is not None:
        return Verdict(run.verdict.status, run.verdict.reason)
    return Verdict("keep", "manual run: recorded, never compared with the incumbents")


def judge_lines(rung: dict) -> list[str]:
    """The judge's score beside the trainer's printout, each labelled with its tokens."""
    judge = rung.get("judge") or {}
    scores = judge.get("scores") or {}
    held, claim = scores.get("holdout") or {}, scores.get("claim") or {}
    holdout = judge.get("holdout") or {}
    printed = rung.get("printed_val_bpb", rung.get("val_bpb") if not judge else None)
    lines = []
    if held.get("val_bpb") is not None:
        lines.append(f"judge's val_bpb   {held['val_bpb']:.6f}  on {held.get('tokens', 0):,} "
                     f"held-out tokens of the validation split (never given to the trainer; "
                     f"{held.get('loader')} loader) - the score that decides")
    elif judge:
        lines.append("judge's val_bpb   unknown (not judged: see the reason above)")
    if printed is not None:
        slice_end = (holdout.get("trainer_slice") or [0, 0])[1]
        where = (f"its own 'validation' slice: the first {slice_end:,} train tokens it was "
                 "given" if slice_end else "its own validation tokens")
        lines.append(f"trainer's val_bpb {printed:.6f}  printed by the trainer on {where}")
    if claim.get("val_bpb") is not None and printed is not None:
        lines.append(f"  the judge on those same tokens: {claim['val_bpb']:.6f} (differs by "
                     f"{abs(claim['val_bpb'] - printed):.6f})")
    return lines
