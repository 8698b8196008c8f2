"""Trustworthy decisions (issue 7): the noise-aware keep margin, close-win re-runs,
calibration of the incumbent, the frozen evaluation protocol and the re-evaluation of a kept
candidate's artifact with the daemon's own code.

The arithmetic is loop.judge.noise's, loop.judge.protocol's and loop.judge.verify's; this
module applies it to
one experiment. The scheduler builds one `Trust` with what it needs (a `measure` callback
that runs one benchmark, stage/stop callbacks, ways to set the candidate aside) and calls it.
"""

from __future__ import annotations

import itertools
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loop.config import Config
from loop.data import datasets
from loop.judge import noise, protocol, verify
from loop.measure import logparse


class Decided(Exception):
    """An experiment's outcome is known before its ladder finished (forbidden, failed...)."""

    def __init__(self, status: str, reason: str, margin: float | None = None):
        super().__init__(reason)
        self.verdict = {"status": status, "reason": reason, "margin": margin}


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4f}"


class Trust:
    """What the scheduler asks before it believes a score.

    Callbacks: `measure(exp, profile, tag="", env_extra=None)` runs one benchmark (a
    Measurement); `stage(exp, name)` records the stage; `stopping()` is the stop signal's
    name or None; `abandon_if_stopping(when)` raises when a stop was requested; `set_aside(exp)`
    and `put_back(exp)` take the candidate out of the worktree and re-apply it; `baseline(
    profile, description)` measures the incumbent; `out` prints one line.
    """

    def __init__(self, cfg: Config, repo: Path, worktree: Callable[[], Path],
                 dataset: datasets.DatasetInfo, dataset_id: str, *,
                 measure: Callable[..., Any], stage: Callable[[Any, str], None],
                 stopping: Callable[[], str | None],
                 abandon_if_stopping: Callable[[str], None],
                 set_aside: Callable[[Any], None], put_back: Callable[[Any], None],
                 baseline: Callable[[str, str], Any], out: Callable[[str], None]):
        self.cfg = cfg
        self.repo = repo
        self._worktree = worktree
        self.dataset = dataset
        self.dataset_id = dataset_id
        self._measure = measure
        self._stage = stage
        self._stopping = stopping
        self._abandon_if_stopping = abandon_if_stopping
        self._set_aside = set_aside
        self._put_back = put_back
        self._baseline = baseline
        self.out = out

    # ---- noise: margin, re-runs, calibration

    def noise_estimate(self, session_rows: list[dict], profile: str) -> noise.NoiseEstimate:
        """The pooled calibrated spread at `profile`, else the fixed one from autogolf.yaml."""
        groups, last = [], None
        for row in session_rows:
            rung = (row.get("rungs") or {}).get(profile)
            runs = rung.get("runs") if isinstance(rung, dict) else None
            if row.get("dataset") != self.dataset_id or not isinstance(runs, list):
                continue
            groups.append([v for v in runs if isinstance(v, (int, float))])
            if (row.get("calibration") or {}).get("profile") == profile:
                last = row
        spread = noise.pooled_spread(groups)
        if last is None or spread is None:
            return noise.NoiseEstimate(self.cfg.noise.get(profile), "fixed")
        return noise.NoiseEstimate(spread, "calibrated", sum(map(len, groups)), last["id"])

    def judge(self, session_rows: list[dict], exp: Any, profile: str, first: float,
              incumbent: float | None, n_incumbent: int) -> noise.Judgement:
        """Keep/discard by the noise-aware margin; a close win is re-run (noise.judge)."""
        estimate = self.noise_estimate(session_rows, profile)
        rule = noise.Rule(self.cfg.min_improvement, self.cfg.noise_k, estimate.spread,
                          self.cfg.noise_rerun_close)
        counter = itertools.count(2)
        judged = noise.judge(first, incumbent, n_incumbent, rule,
                             lambda: self.rerun(exp, profile, next(counter)))
        rung = exp.rungs[profile]
        if len(judged.values) > 1:
            rung.update(runs=judged.values, first_val_bpb=first, val_bpb=judged.mean)
        exp.trust["margin_source"] = estimate.describe()
        exp.trust.setdefault("noise", {})[profile] = {
            "spread": estimate.spread, "source": estimate.describe(), "k": self.cfg.noise_k,
            "margin": judged.margin, "runs": len(judged.values), "incumbent_runs": n_incumbent}
        return judged

    def rerun(self, exp: Any, profile: str, number: int) -> float:
        self._abandon_if_stopping(f"before re-run {number} at {profile}")
        self.out(f"{exp.id} {profile}: close win, re-run {number}")
        run = self._measure(exp, profile, tag=f"-r{number}")
        self._abandon_if_stopping(f"during re-run {number} at {profile}")
        if run.verdict is not None:
            raise Decided(run.verdict.status, f"at {profile} (re-run {number}): "
                          f"{run.verdict.reason}")
        return run.val_bpb

    def calibrate(self, exp: Any, profile: str) -> None:
        """Measure a valid baseline R times in all: its score becomes the mean (issue 7)."""
        total = self.cfg.noise_runs.get(profile, 1)
        rung = exp.rungs[profile]
        if total <= 1 or not isinstance(rung.get("val_bpb"), (int, float)):
            return
        values, failed = [rung["val_bpb"]], []
        for number in range(2, total + 1):
            if self._stopping():
                break
            run = self._measure(exp, profile, tag=f"-r{number}")
            if run.verdict is None:
                values.append(run.val_bpb)
            else:
                failed.append(f"run {number}: {run.verdict.status}")
        rung.update(runs=values, first_val_bpb=values[0], val_bpb=statistics.fmean(values))
        spread = noise.robust_spread(values)
        exp.trust["calibration"] = {
            "profile": profile, "runs": len(values), "spread": spread, "failed": failed,
            "margin": noise.margin_for(self.cfg.min_improvement, self.cfg.noise_k, spread, 1,
                                       len(values))}
        self.out(f"{exp.id} {profile}: calibrated from {len(values)} runs, spread "
                 f"{_fmt(spread)}")

    def maybe_recalibrate(self, session_rows: list[dict]) -> None:
        """After every N keeps, measure the incumbent again at each calibrated rung."""
        keeps = 0
        for row in reversed(session_rows):
            if row.get("calibration"):
                break
            keeps += row.get("status") == "keep" and not row.get("baseline")
        if not noise.calibration_due(keeps, self.cfg.noise_recalibrate_every_keeps):
            return
        for profile in self.cfg.ladder:
            if self.cfg.noise_runs.get(profile, 1) > 1 and not self._stopping():
                self._baseline(profile, f"recalibration of the incumbent at "
                                        f"{profile} after {keeps} keeps")

    # ---- the frozen evaluation protocol

    def check_protocol(self, exp: Any, profile: str, run: Any, incumbent: float | None,
                       inc_rung: dict) -> tuple[float | None, int]:
        """(incumbent score, its runs) under the candidate's protocol, or protocol_drift;
        `inc_rung` is the incumbent's ledger rung at `profile`."""
        n_incumbent = len(inc_rung.get("runs") or [None])
        if incumbent is None or "protocol" not in inc_rung:
            return incumbent, n_incumbent
        changed = protocol.differences(inc_rung["protocol"], run.rung.get("protocol") or {})
        forbidden, allowed = protocol.split_changes(changed, self.cfg.protocol_allow_change)
        if forbidden:
            self.drop_artifact(run.rung)
            raise Decided("protocol_drift", f"at {profile}: the candidate changed the frozen "
                          f"evaluation protocol: {protocol.describe(forbidden)}")
        if not allowed:
            return incumbent, n_incumbent
        return self.remeasure_incumbent(exp, profile, run.rung["protocol"], allowed), 1

    def remeasure_incumbent(self, exp: Any, profile: str, new: dict, allowed: dict) -> float:
        """The incumbent's score under the candidate's (allowed) protocol change."""
        env = protocol.overrides(new, allowed)
        self._stage(exp, f"incumbent:{profile}")
        self._set_aside(exp)
        try:
            run = self._measure(exp, profile, tag="-incumbent", env_extra={
                "AUTOGOLF_PROTOCOL_OVERRIDES": protocol.override_text(env)})
        finally:
            self._put_back(exp)
        exp.trust.setdefault("incumbent_remeasured", {})[profile] = {
            "changes": protocol.describe(allowed), "overrides": env, "val_bpb": run.val_bpb,
            "log": run.rung["log"]}
        if run.verdict is not None or run.val_bpb is None:
            raise Decided("discard", f"at {profile}: the incumbent could not be re-measured "
                          f"under the new protocol ({protocol.describe(allowed)})")
        self.out(f"{exp.id} {profile}: incumbent re-measured under the new protocol: "
                 f"{_fmt(run.val_bpb)}")
        return run.val_bpb

    # ---- artifacts and verification

    def artifact_of(self, rung: dict) -> Path | None:
        log = rung.get("log")
        if not log:
            return None
        try:
            text = (self.repo / log).read_text(errors="replace")
        except OSError:
            return None
        path = logparse.parse_trainer_log(text).settings.get("artifact_path")
        return None if not path else self._worktree() / path

    def drop_artifact(self, rung: dict) -> None:
        """Delete a model file kept only for verification (not when the user keeps models)."""
        if not self.cfg.verify_enabled or os.environ.get("KEEP_MODEL") == "1":
            return
        path = self.artifact_of(rung)
        if path is not None:
            path.unlink(missing_ok=True)

    def verify_keep(self, exp: Any) -> None:
        """Re-evaluate the kept candidate's last-rung artifact with the trusted code."""
        if not self.cfg.verify_enabled:
            return
        profile = self.cfg.ladder[-1]
        rung = exp.rungs.get(profile) or {}
        claimed = rung.get("first_val_bpb", rung.get("val_bpb"))
        self._stage(exp, f"verify:{profile}")
        try:
            check = self.verify_rung(rung, claimed)
        finally:
            self.drop_artifact(rung)
        exp.trust["verify"] = {"profile": profile, **check.record()}
        if check.status == "disagree":
            exp.verdict = {"status": "metric_mismatch", "reason": check.reason,
                           "margin": exp.verdict.get("margin")}
        else:
            exp.verdict["reason"] += f"; {check.reason}"

    def verify_rung(self, rung: dict, claimed: float | None) -> verify.Check:
        path = self.artifact_of(rung)
        p = rung.get("protocol") or {}
        if path is None or claimed is None or not path.exists():
            return verify.Check("error", "verify: no artifact_path in the trainer's log (or "
                                "the file is gone): nothing to verify", claimed, None)
        try:
            text = (self.repo / rung["log"]).read_text(errors="replace")
            s = logparse.parse_trainer_log(text).settings
            settings = verify.Settings(self.dataset.data_path, self.dataset.tokenizer_path,
                                       int(p["train_seq_len"]), int(p["val_max_tokens"]),
                                       float(s.get("logit_softcap", 30)),
                                       float(s.get("rope_base", 10000)),
                                       s.get("compute_dtype", "float32"))
        except (KeyError, TypeError, ValueError, OSError) as exc:
            return verify.Check("error", f"verify: the log lacks a setting it needs ({exc})",
                                claimed, None)
        return verify.verify(path, claimed, settings, self.cfg.verify_tolerance)
