"""The keep rule (SPEC section 6), all of it: is a run valid, is the candidate better, by how
much, on how many runs, under the same protocol, and does the kept artifact say the same.

Reading order - one experiment's path through this module:

1. `Judge.climb(exp, rows)`: the ladder, cheap rung first. At each rung the candidate is
   measured (`Judge.measure`, one benchmark through the loop's `Bench`), the run is checked
   for validity (`assess`: exit status, timeout, a finite score, printed figures that agree
   with the trainer's own lines, the size cap), its protocol is compared with the
   incumbent's (`check_protocol`), and it is compared with the incumbent (`judge_rung`:
   the noise-aware margin, re-runs of a close win). The first rung not won decides.
2. A candidate that won every rung is verified (`verify_keep`): its artifact re-scored by
   the daemon's own code, when `verify.enabled`.
3. Incumbents: a rung with no incumbent yet asks the loop for a baseline (`Bench.baseline`);
   a baseline's own measurement is judged by `measure_baseline` (calibrated by repeated
   runs, loop.judge.noise); `maybe_recalibrate` re-measures the incumbent after N keeps.

What it decides is a `Verdict` (loop.judge.verdict), the one type that ends in the row.
The arithmetic lives in loop.judge.noise (spread, margin), loop.judge.protocol (what must
stay equal) and loop.judge.verify (the trusted re-evaluation); this module applies it.
The judge never touches git or the ledger: it measures through `Bench`, an interface the
loop implements (loop.daemon.scheduler), and writes its evidence into the experiment.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import shutil
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loop.config import Config
from loop.data import datasets, tokenbytes
from loop.errors import UserError
from loop.judge import artifact as artifacts
from loop.judge import holdout, loader, noise, protocol, score, sequential, verify
from loop.judge.verdict import Abandon, Decided, Verdict
from loop.measure import logparse
from loop.measure.logparse import TrainerLog
from loop.measure.pipeline import ARTIFACT_NAME, TRAINER, Run
from loop.measure.pruning import CurvePruner, pruner_for
from loop.measure.seal import Seal, mlx_on_gpu
from loop.store.files import file_hash
from loop.store.rows import Experiment, incumbent_rung, incumbents

# The METRIC val_bpb may be rounded by the extractor (4 decimals at worst, error <= 5e-5);
# the raw log's exact line has 8. A larger difference is a different number, not rounding.
BPB_TOLERANCE = 5e-5
# What a sealed run's last output line says when it reached for something the seal hides.
SEALED_OUT = ("No such file or directory", "Read-only file system", "Permission denied",
              "Network is unreachable", "Temporary failure in name resolution")
# Decisions of earlier sessions whose spread a new session starts from (per profile).
EARLIER_SESSION_DECISIONS = 30
# The protocol's seed (autoresearch.sh's trainer default): the first pair of a sequential
# decision is the candidate's and the incumbent's run at it; the others follow the schedule.
BASE_SEED = 1337
# Scores are printed with 8 decimals, so differences below 1e-9 are float noise: a candidate
# exactly at the margin must not lose because 1.2365 - 1.2345 is 0.0019999999999997797.
_FLOAT_SLACK = 1e-9


class Bench(ABC):
    """What the judge needs from the loop: runs of the benchmark, and incumbents.

    The loop implements it because it owns the worktree, the ledger and the state file.
    """

    @abstractmethod
    def run(self, exp: Experiment, profile: str, tag: str = "",
            env_extra: dict[str, str] | None = None, pruner: CurvePruner | None = None) -> Run:
        """One benchmark of the worktree as it is (the candidate, or a baseline's head);
        `pruner` stops a candidate clearly behind the incumbent's curve (`pruned`)."""

    @abstractmethod
    def set_aside(self, exp: Experiment) -> None:
        """Take the candidate out of the worktree (its patch is saved): the incumbent's code."""

    @abstractmethod
    def put_back(self, exp: Experiment) -> None:
        """Re-apply the candidate set aside."""

    @abstractmethod
    def baseline(self, profile: str, parent: Experiment | None = None,
                 description: str | None = None) -> dict:
        """Measure the incumbent at `profile` as its own ledger row (returned); with
        `parent`, that candidate is set aside meanwhile and put back after."""

    @abstractmethod
    def checkpoint(self, exp: Experiment, stage: str) -> None:
        """`exp` is entering `stage` (the loop records it, to resume after a kill)."""

    @abstractmethod
    def stop_requested(self) -> str | None:
        """The stop signal's name once a stop was requested, else None."""

    @abstractmethod
    def say(self, line: str) -> None:
        """One line for the person watching."""


@dataclass
class Measurement:
    """A run as the judge reads it."""

    rung: dict  # the ledger rung: METRIC values + wall_s, exit_code, timed_out, log
    verdict: Verdict | None  # None = a valid run
    val_bpb: float | None  # the daemon's own reading of the score (None unless valid)


# --------------------------------------------------------------------------- validity


def assess(run: Run, cap_bytes: int) -> Measurement:
    """Is this run a valid measurement, and what are its figures?"""
    verdict = judge_run(run.metrics, run.log, cap_bytes, run.exit_code, run.timed_out,
                        trainer_bytes=run.trainer_bytes)
    if run.early_abort is not None:
        verdict = Verdict(*run.early_abort)
    verdict = _explain_failure(verdict, run)
    rung = _rung_figures(run.metrics, run.log, verdict)
    rung.update(wall_s=round(run.wall_s, 3), exit_code=run.exit_code,
                timed_out=run.timed_out, log=str(run.log_path))
    rung["protocol"] = protocol.read_protocol(run.log)  # what the trainer says it used
    if run.log.run_settings:  # what the benchmark says it gave the trainer
        rung["run_settings"] = dict(run.log.run_settings)
    params = run.log.settings.get("model_params", "")
    if params.isdigit():  # the search's size model: bytes per parameter
        rung["model_params"] = int(params)
    if run.early_abort is not None:
        rung["early_abort"] = run.early_abort[1]
    return Measurement(rung, verdict, rung.get("val_bpb") if verdict is None else None)


def judge_run(metrics: dict[str, float], log: TrainerLog, cap_bytes: int,
              exit_code: int | None, timed_out: bool, *,
              trainer_bytes: int | None = None) -> Verdict | None:
    """Why a finished benchmark is not a valid measurement, or None when it is.

    `metrics` are the script's METRIC lines, `log` the daemon's own reading of the raw output.
    `trainer_bytes` (the trainer file's UTF-8 size) completes the artifact size of a log that
    has neither a total line nor a `Code size:` line (upstream's trainer).
    """
    failure = _process_failure(log, exit_code, timed_out)
    if failure is not None:
        return failure
    bpb = _claimed(metrics, "val_bpb")
    if bpb is None:
        return Verdict("invalid_metric", "no finite METRIC val_bpb line in the output "
                       "(unknown, not 0)")
    total = _claimed(metrics, "total_bytes")
    if total is None:
        return Verdict("invalid_metric", "no finite METRIC total_bytes line: the artifact size "
                       "is unknown, and unknown is never under the cap")
    log_total = _log_total(log, trainer_bytes)
    mismatch = _bpb_mismatch(bpb, log) or _bytes_mismatch(total, log_total)
    if mismatch is not None:
        return mismatch
    if log_total is not None and log_total > cap_bytes:
        return Verdict("over_cap", f"artifact {log_total:,} bytes > cap {cap_bytes:,} bytes "
                       f"(over by {log_total - cap_bytes:,})", val_bpb=bpb)
    return None


def _process_failure(log: TrainerLog, exit_code: int | None, timed_out: bool) -> Verdict | None:
    if timed_out:
        return Verdict("timeout", "benchmark exceeded its time limit and was stopped"
                       + (f" at step {log.last_step}/{log.iterations}" if log.last_step else ""))
    if exit_code is None:
        return Verdict("crash", "benchmark ended without an exit status (killed by a signal?)")
    if exit_code != 0:
        hint = "; the trainer printed a non-finite train_loss" if log.nonfinite_loss else ""
        return Verdict("crash", f"benchmark exited with code {exit_code}{hint}")
    if log.nonfinite_loss:
        # The trainer exits non-zero on a non-finite loss; exit 0 means the editable script
        # swallowed it. A diverged run is a crash whatever the script says.
        return Verdict("crash", "benchmark exited 0 but the trainer printed a non-finite "
                       "train_loss (diverged)")
    return None


def _claimed(metrics: dict[str, float], name: str) -> float | None:
    value = metrics.get(name)
    return value if value is not None and math.isfinite(value) else None


def _bpb_mismatch(claimed: float, log: TrainerLog) -> Verdict | None:
    exact = log.exact_val_bpb
    if exact is None:
        return Verdict("metric_mismatch", f"METRIC val_bpb={claimed} but the raw log has no "
                       "finite final_int8_zlib_roundtrip_exact val_bpb")
    if abs(claimed - exact) > BPB_TOLERANCE + _FLOAT_SLACK:
        return Verdict("metric_mismatch", f"METRIC val_bpb={claimed} but the trainer's "
                       f"final_int8_zlib_roundtrip_exact says {exact:.8f} "
                       f"(differs by {abs(claimed - exact):.8f} > {BPB_TOLERANCE})")
    return None


def _bytes_mismatch(claimed: float, log_total: int | None) -> Verdict | None:
    if log_total is None:
        return Verdict("metric_mismatch", f"METRIC total_bytes={claimed:.0f} but the raw log "
                       "has no size lines to confirm it (serialized_model_int8_zlib + code)")
    if abs(claimed - log_total) >= 0.5:  # a byte count: any whole-byte difference
        return Verdict("metric_mismatch", f"METRIC total_bytes={claimed:.0f} but the trainer's "
                       f"own size lines say {log_total} bytes")
    return None


def _log_total(log: TrainerLog, trainer_bytes: int | None) -> int | None:
    total = log.artifact_bytes()
    if total is None and log.serialized_bytes is not None and trainer_bytes is not None:
        total = log.serialized_bytes + trainer_bytes  # upstream's log has no Code size line
    return total


def _explain_failure(verdict: Verdict | None, run: Run) -> Verdict | None:
    """A crash reason with the benchmark's last output line, and a missing trainer named."""
    if (verdict is None or verdict.status != "crash"
            or verdict.reason.startswith(("oom:", "diverged:"))):
        return verdict
    last = run.last_line()
    reason = f"{verdict.reason}; last output: {last}"
    if run.trainer_missing:
        reason += f"; the trainer {TRAINER} is missing from the worktree"
    if run.sealed and any(sign in last for sign in SEALED_OUT):
        reason += ("; the run is sealed: it sees only the worktree (read-only), its logs/ "
                   "folder, the data folder the daemon gave it ($DATA_PATH, $TOKENIZER_PATH) "
                   "and a private /tmp, without network. Read inputs from those, write under "
                   "logs/ (docs/THREAT_MODEL.md); `judge: {sealed: false}` runs unsealed")
    return dataclasses.replace(verdict, reason=reason)


def _rung_figures(values: dict[str, float], parsed: TrainerLog,
                  verdict: Verdict | None) -> dict[str, Any]:
    """The METRIC values, with val_bpb as the daemon reads it from the raw log."""
    rung: dict[str, Any] = dict(values)
    claimed = rung.pop("val_bpb", None)
    if verdict is None or verdict.status == "over_cap":
        # The score the daemon believes is its own re-reading of the raw log; the METRIC
        # value agreed with it (judge_run checked), but it comes from an editable script.
        rung["val_bpb"] = parsed.exact_val_bpb if parsed.exact_val_bpb is not None else claimed
        return rung
    # A run the daemon did not accept has no score; what each side said is kept apart.
    if claimed is not None:
        rung["metric_val_bpb"] = claimed
    if parsed.exact_val_bpb is not None:
        rung["log_val_bpb"] = parsed.exact_val_bpb
    return rung


# --------------------------------------------------------------------------- comparison


def compare(val_bpb: float, incumbent: float | None, margin: float) -> Verdict:
    """keep when val_bpb <= incumbent - margin, else discard; no incumbent = a baseline keep."""
    if not math.isfinite(val_bpb):
        raise ValueError(f"compare() needs a finite val_bpb (judge_run first), got {val_bpb}")
    if incumbent is None:
        return Verdict("keep", f"baseline: val_bpb {_fmt(val_bpb)} measured with no incumbent "
                       "at this profile; it becomes the incumbent", margin, val_bpb)
    gain = incumbent - val_bpb
    head = "val_bpb {} vs incumbent {}: ".format(*_fmt_pair(val_bpb, incumbent))
    shown_gain, shown_margin = _fmt_pair(gain, margin)
    if gain >= margin - _FLOAT_SLACK:
        return Verdict("keep", head + f"improved by {shown_gain} >= margin {shown_margin}",
                       margin, val_bpb)
    if gain > 0:
        why = f"improved by only {shown_gain} < margin {shown_margin}"
    elif gain == 0:
        why = f"no change; needs an improvement of at least margin {_fmt(margin)}"
    else:
        why = f"worse by {_fmt(-gain)} (margin {_fmt(margin)})"
    return Verdict("discard", head + why, margin, val_bpb)


@dataclass(frozen=True)
class Rule:
    """The decision settings of one profile."""

    min_improvement: float
    k: float
    spread: float | None
    rerun_close: int = 0  # extra runs for a candidate that wins by less than the margin


@dataclass
class Judgement:
    verdict: Verdict
    values: list[float] = field(default_factory=list)  # every run of the candidate, in order
    margin: float = 0.0

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)


def judge_with_reruns(first: float, incumbent: float | None, n_incumbent: int, rule: Rule,
                      rerun: Callable[[], float]) -> Judgement:
    """Keep or discard a candidate whose first run scored `first`.

    `incumbent` is a mean of `n_incumbent` runs. A close win is re-run `rule.rerun_close`
    times (`rerun()` returns one more score; it may raise to end the experiment) and judged
    on the mean of all its runs, against the margin for that many runs.
    """
    margin = noise.margin_for(rule.min_improvement, rule.k, rule.spread, 1, n_incumbent)
    verdict = compare(first, incumbent, margin)
    values = [first]
    if incumbent is None or rule.rerun_close <= 0 or not noise.is_close(first, incumbent,
                                                                         margin):
        return Judgement(verdict, values, margin)
    values += [rerun() for _ in range(rule.rerun_close)]
    margin = noise.margin_for(rule.min_improvement, rule.k, rule.spread, len(values),
                              n_incumbent)
    verdict = compare(statistics.fmean(values), incumbent, margin)
    verdict.reason = f"mean of {len(values)} runs (a close win was re-run): {verdict.reason}"
    return Judgement(verdict, values, margin)


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4f}"


def _fmt_pair(a: float, b: float) -> tuple[str, str]:
    """Both numbers with 4 decimals, or more when 4 would print two different numbers alike
    (a reason saying "improved by only 0.0020 < margin 0.0020" would read as a bug)."""
    for digits in range(4, 9):
        left, right = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if left != right:
            return left, right
    return f"{a:.4f}", f"{b:.4f}"  # equal to 8 decimals: the same score


# --------------------------------------------------------------------------- the judge


class Judge:
    """The keep rule applied to experiments, measuring through `bench`."""

    def __init__(self, cfg: Config, repo: Path, worktree: Path,
                 dataset: datasets.DatasetInfo, dataset_id: str, bench: Bench,
                 seal: Seal | None = None):
        self.cfg = cfg
        self.repo = repo  # logs are recorded relative to it
        self.worktree = worktree  # the candidate's code (the counted code files)
        self.dataset = dataset
        self.dataset_id = dataset_id
        self.bench = bench
        self.scorer = ArtifactJudge(cfg, repo, worktree, dataset, seal) \
            if cfg.judge_enabled else None
        # The trainer's lines of each run, parsed once by the pipeline (by rung log path).
        self._logs: dict[str, TrainerLog] = {}
        # Compute and artifact hash of each seeded run: (experiment, profile, incumbent?,
        # seed) -> {"compute_s", "sha256"}, for the compute cap and the seed check.
        self._facts: dict[tuple[str, str, bool, int], dict] = {}
        # What a run spent: CPU seconds when MLX computes on the CPU (robust to whatever else
        # loads the machine), wall seconds on a GPU (its work is not CPU time).
        self.compute_key = "wall_s" if mlx_on_gpu() else "cpu_s"
        # The incumbent's runs by (code, profile, seed): the curves a candidate is pruned by.
        self._incumbent_logs: dict[tuple[str | None, str, int], Path] = {}
        # Earlier sessions' experiment rows: their decisions' spread seeds this session's.
        self.earlier_rows: list[dict] = []

    # ---- one run

    def measure(self, exp: Experiment, profile: str, tag: str = "",
                env_extra: dict[str, str] | None = None, *,
                incumbent: bool = False, pruner: CurvePruner | None = None) -> Measurement:
        """One benchmark of the worktree, assessed and judged; `tag` marks an extra run
        (re-run, calibration, a seed) whose log is listed under the rung's `run_logs`;
        `incumbent`: of the incumbent's code (the candidate set aside meanwhile);
        `pruner`: stops a candidate run clearly behind the incumbent's curve."""
        if profile not in self.cfg.profiles:
            raise UserError(f"profile {profile!r} is in the ladder but not under `profiles:` "
                             "in autogolf.yaml; add it with a timeout_s")
        env_extra = dict(env_extra or {})
        if self.cfg.verify_enabled:
            env_extra["KEEP_MODEL"] = "1"  # the artifact outlives the script, for verify.py
        if self.scorer is not None:
            env_extra.update(self.scorer.trainer_env(profile))
            # Unsealed, upstream's export lands in the worktree's logs/: never a stale one.
            artifacts.upstream_path(self.worktree / "logs", run_name(exp, profile, tag)).unlink(
                missing_ok=True)
        if not incumbent:
            return self._record(exp, profile, tag,
                                self.bench.run(exp, profile, tag, env_extra, pruner))
        self.bench.set_aside(exp)
        try:  # judged while the incumbent's code is in the worktree
            return self._record(exp, profile, tag, self.bench.run(exp, profile, tag, env_extra))
        finally:
            self.bench.put_back(exp)

    def _record(self, exp: Experiment, profile: str, tag: str, run: Run) -> Measurement:
        measured = assess(run, self.cfg.artifact_cap_bytes)
        exp.spent("screen" if not tag else "incumbent" if tag.startswith("-incumbent")
                  else "repeats", run.wall_s)
        try:
            if self.scorer is not None:
                started = time.monotonic()
                measured = self.scorer.judge(
                    measured, run, profile, run_name(exp, profile, tag),
                    stop=lambda: self.bench.stop_requested() is not None)
                exp.spent("judge", time.monotonic() - started)
        finally:
            keep = self.cfg.verify_enabled or os.environ.get("KEEP_MODEL") == "1"
            if run.outputs is not None and not keep:
                shutil.rmtree(run.outputs, ignore_errors=True)  # nothing outlives the run
        measured.rung["sealed"] = run.sealed
        if run.cpu_s is not None:
            measured.rung["cpu_s"] = round(run.cpu_s, 3)
        measured.rung["log"] = self._rel(run.log_path)
        self._logs[measured.rung["log"]] = run.log
        if tag:
            self.drop_artifact(measured.rung)
            exp.rungs.setdefault(profile, {}).setdefault("run_logs", []).append(
                measured.rung["log"])
        else:
            exp.rungs[profile] = measured.rung
            if exp.baseline or profile != self.cfg.ladder[-1]:
                self.drop_artifact(measured.rung)  # only a last-rung candidate is verified
        return measured

    # ---- the ladder

    def climb(self, exp: Experiment, rows: list[dict]) -> Verdict:
        """Win at every rung (cheap first), or the verdict of the first rung not won.

        `rows` are the session's experiment rows (incumbents, noise). Raises Decided for an
        outcome known early, Abandon when a stop was requested.
        """
        known = incumbents(rows, exp.session, exp.head, self.dataset_id, exp.base_code)
        exp.incumbent_before = {p: known.get(p, {}).get("val_bpb") for p in self.cfg.ladder}
        reasons, margin = [], None
        for profile in self.cfg.ladder:
            incumbent = self._incumbent_at(exp, profile)
            self._abandon_if_stopping(f"before the {profile} benchmark")
            self.bench.checkpoint(exp, f"benchmark:{profile}")
            self.bench.say(f"{exp.id} {profile}: {exp.description}")
            run = self.measure(exp, profile, pruner=self._pruner(rows, exp, profile, BASE_SEED))
            self._abandon_if_stopping(f"during the {profile} benchmark")
            if run.verdict is not None:
                raise Decided(run.verdict.status, f"at {profile}: {run.verdict.reason}")
            inc_rung = incumbent_rung(rows, exp.session, profile, exp.head, self.dataset_id,
                                      exp.base_code)
            incumbent, n_incumbent = self.check_protocol(exp, profile, run, incumbent, inc_rung)
            if self.cfg.keep_rule_enabled and incumbent is not None:
                judged = self.judge_sequential(rows, exp, profile, run.val_bpb, inc_rung)
            else:
                judged = self.judge_rung(rows, exp, profile, run.val_bpb, incumbent, n_incumbent)
            margin = judged.margin
            if self._promote_inconclusive(exp, profile, judged.verdict):
                reasons.append(f"at {profile}: {judged.verdict.reason}; promoted to the next "
                               "rung to decide")
                continue
            if judged.verdict.status != "keep":
                self.drop_artifact(exp.rungs[profile])
                raise Decided(judged.verdict.status, f"at {profile}: {judged.verdict.reason}",
                              margin)
            reasons.append(f"at {profile}: {judged.verdict.reason}")
            self.bench.say(f"{exp.id} wins at {profile}: {_fmt(run.val_bpb)} vs "
                           f"{_fmt(incumbent)}")
        return self.verify_keep(exp, Verdict("keep", "; ".join(reasons), margin))

    def _promote_inconclusive(self, exp: Experiment, profile: str, verdict: Verdict) -> bool:
        """An undecided candidate that leans to a win goes on to the stronger rung (SPEC 6:
        undecided at the cap is queued for a stronger profile); the last rung decides."""
        if (not self.cfg.keep_promote_inconclusive or verdict.status != "inconclusive"
                or profile == self.cfg.ladder[-1]):
            return False
        diffs = (exp.rungs[profile].get("sequential") or {}).get("diffs") or []
        return bool(diffs) and statistics.fmean(diffs) > 0

    def _incumbent_at(self, exp: Experiment, profile: str) -> float | None:
        """The incumbent's score at a rung, measuring a baseline first if there is none."""
        if exp.incumbent_before.get(profile) is not None:
            return exp.incumbent_before[profile]
        self.bench.checkpoint(exp, f"baseline:{profile}")
        row = self.bench.baseline(profile, parent=exp)
        exp.incumbent_before[profile] = row["rungs"][profile]["val_bpb"]
        return exp.incumbent_before[profile]

    def _abandon_if_stopping(self, when: str) -> None:
        signal = self.bench.stop_requested()
        if signal:
            raise Abandon(f"stopped by {signal} {when}")

    # ---- baselines and noise

    def measure_baseline(self, exp: Experiment, profile: str) -> Verdict:
        """A baseline's verdict: `keep` (it is the incumbent) when valid, calibrated by
        repeated runs; the failure otherwise; `interrupted` when a stop came meanwhile."""
        run = self.measure(exp, profile)
        signal = self.bench.stop_requested()
        if signal:
            return Verdict("interrupted", f"stopped by {signal} during the baseline")
        if run.verdict is None:
            self._incumbent_logs[exp.base_code, profile, BASE_SEED] = self.repo / run.rung["log"]
        if run.verdict is not None:
            return Verdict(run.verdict.status, f"baseline at {profile}: {run.verdict.reason}")
        if not self.cfg.keep_rule_enabled:  # the sequential rule measures its own spread
            self.calibrate(exp, profile)
        return Verdict("keep", "baseline")

    def noise_estimate(self, rows: list[dict], profile: str) -> noise.NoiseEstimate:
        """The pooled calibrated spread at `profile`, else the fixed one from autogolf.yaml."""
        groups, last = [], None
        for row in rows:
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

    def judge_rung(self, rows: list[dict], exp: Experiment, profile: str, first: float,
                   incumbent: float | None, n_incumbent: int) -> Judgement:
        """Keep/discard by the noise-aware margin; a close win is re-run."""
        estimate = self.noise_estimate(rows, profile)
        rule = Rule(self.cfg.min_improvement, self.cfg.noise_k, estimate.spread,
                          self.cfg.noise_rerun_close)
        counter = itertools.count(2)
        judged = judge_with_reruns(first, incumbent, n_incumbent, rule,
                             lambda: self.rerun(exp, profile, next(counter)))
        rung = exp.rungs[profile]
        if len(judged.values) > 1:
            rung.update(runs=judged.values, first_val_bpb=first, val_bpb=judged.mean)
        exp.trust["margin_source"] = estimate.describe()
        exp.trust.setdefault("noise", {})[profile] = {
            "spread": estimate.spread, "source": estimate.describe(), "k": self.cfg.noise_k,
            "margin": judged.margin, "runs": len(judged.values), "incumbent_runs": n_incumbent}
        return judged

    # ---- the sequential rule (issue 16, keep_rule.enabled)

    def judge_sequential(self, rows: list[dict], exp: Experiment, profile: str, first: float,
                         inc_rung: dict) -> Judgement:
        """Paired runs of the candidate and the incumbent at the judge's seeds until the
        sequential test decides (loop.judge.sequential), or its cap: `inconclusive`."""
        rule = self.cfg.sequential_rule(profile)
        pool = sequential.SpreadPool.from_decisions(
            self._earlier_diffs(rows, profile), max_pooled_dof=self.cfg.keep_max_pooled_dof)
        seeds = sequential.seed_schedule(BASE_SEED, rule.max_runs)
        known = self._incumbent_runs(rows, exp, profile, inc_rung)

        def next_pair(i: int) -> tuple[float, float]:
            seed = seeds[i]
            if i > 0 and seed not in known:  # first: its curve can prune the candidate's run
                known[seed] = self._seeded(exp, profile, seed, incumbent=True)
            candidate = first if i == 0 else self._seeded(exp, profile, seed, incumbent=False,
                                                          rows=rows)
            if seed not in known:
                known[seed] = self._seeded(exp, profile, seed, incumbent=True)
            return candidate, known[seed]

        outcome = sequential.run_decision(next_pair, rule, pool)
        n = len(outcome.pairs)
        rung = exp.rungs[profile]
        inc = incumbents(rows, exp.session, exp.head, self.dataset_id, exp.base_code)
        rung["sequential"] = {"seeds": seeds[:n], "candidate": [c for c, _ in outcome.pairs],
                              "incumbent": [i for _, i in outcome.pairs],
                              "diffs": outcome.diffs, "decision": outcome.decision,
                              "stats": outcome.stats,
                              "incumbent_id": (inc.get(profile) or {}).get("id")}
        if outcome.decision == "keep":  # its runs won because they were lucky too
            rung["sequential"]["estimate"] = outcome.incumbent_estimate()
        if n > 1:
            rung.update(runs=[c for c, _ in outcome.pairs], first_val_bpb=first,
                        val_bpb=outcome.candidate_mean)
        status = {"keep": "keep", "discard": "discard"}.get(outcome.decision, "inconclusive")
        if outcome.stats.get("below_resolution"):  # ruled out only above what it can resolve
            status = "inconclusive"
        rung["sequential"]["status"] = status
        verdict = Verdict(status, f"sequential ({n} paired runs): {outcome.reason}", None,
                          rung["val_bpb"])
        walls = self._paired_walls(rows, exp, profile, seeds[:n], inc_rung)
        rung["sequential"]["walls"] = walls
        if self.scorer is not None and status in ("keep", "inconclusive"):
            # A (leaning) win, judged: an honest seed and compute? (The fake benchmarks of
            # the scheduler's own tests, with the judge off, print seed-free scores.)
            verdict = self._seed_verdict(exp, profile, seeds[:n], outcome.pairs) or (
                self._budget_verdict(profile, walls)) or verdict
        return Judgement(verdict, [c for c, _ in outcome.pairs], 0.0)

    def _paired_walls(self, rows: list[dict], exp: Experiment, profile: str,
                      seeds: list[int], inc_rung: dict) -> dict[str, Any]:
        """What the candidate's and the incumbent's run at each seed spent (compute_key)."""
        key = self.compute_key
        known: dict[int, float] = {}
        kept = inc_rung.get("sequential")
        kept_walls = kept.get("walls") if isinstance(kept, dict) else None
        if isinstance(kept_walls, dict) and kept_walls.get("measure") == key:
            known.update({s: w for s, w in zip(kept.get("seeds") or [],  # its own runs
                                               kept_walls.get("candidate") or [], strict=False)
                          if isinstance(w, (int, float))})
        elif isinstance(inc_rung.get(key), (int, float)) and kept is None:
            known[BASE_SEED] = inc_rung[key]  # a baseline's own run at the protocol seed
        for row in rows:
            seq = ((row.get("rungs") or {}).get(profile) or {}).get("sequential")
            walls = (seq or {}).get("walls") if isinstance(seq, dict) else None
            if isinstance(walls, dict) and row.get("base_code") == exp.base_code and (
                    walls.get("measure") == key):
                known.update({s: w for s, w in zip(seq.get("seeds") or [],
                                                   walls.get("incumbent") or [], strict=False)
                              if isinstance(w, (int, float))})
        cand = [exp.rungs[profile].get(key)]
        cand += [self._facts.get((exp.id, profile, False, s), {}).get("compute_s")
                 for s in seeds[1:]]
        inc = [self._facts.get((exp.id, profile, True, s), {}).get("compute_s", known.get(s))
               for s in seeds]
        return {"measure": key, "candidate": cand, "incumbent": inc}

    def _budget_verdict(self, profile: str, walls: dict) -> Verdict | None:
        """over_budget when the candidate's runs spent more than the allowance times the
        incumbent's at the same seeds: the median of the per-seed ratios (each pair ran back
        to back, so a machine busier at one time than another cancels out)."""
        pairs = [(c, i) for c, i in zip(walls["candidate"], walls["incumbent"], strict=False)
                 if isinstance(c, (int, float)) and isinstance(i, (int, float)) and i > 0]
        what = {"cpu_s": "CPU time", "wall_s": "wall time"}[walls["measure"]]
        if not pairs:
            return Verdict("over_budget", f"the {what} of the runs is unknown, so the compute "
                           "cap cannot be checked (fail closed)")
        ratio = statistics.median(c / i for c, i in pairs)
        allowed = self.cfg.judge_compute_allowance
        if ratio <= allowed:
            return None
        mine, theirs = (statistics.median(side) for side in zip(*pairs, strict=True))
        return Verdict("over_budget", f"won, but its runs spent {ratio:.2f}x the incumbent's "
                       f"{what} at the same seeds (median of {len(pairs)} pairs; {mine:.1f} s "
                       f"against {theirs:.1f} s) > judge.compute_allowance {allowed:g}x: compute "
                       "is capped like bytes (the challenge caps training time); make the change "
                       "cheaper, or raise the allowance in autogolf.yaml if the extra compute is "
                       "intended")

    def _seed_verdict(self, exp: Experiment, profile: str, seeds: list[int],
                      pairs: list[tuple[float, float]]) -> Verdict | None:
        """seed_ignored when the candidate's runs at different seeds gave the very same
        artifact or the very same score while the incumbent's did not."""
        hashes = [self._facts.get((exp.id, profile, False, s), {}).get("sha256") for s in seeds]
        hashes[0] = (exp.rungs[profile].get("judge") or {}).get("artifact_sha256")
        cand, inc = [c for c, _ in pairs], [i for _, i in pairs]
        same_file = len(hashes) > 1 and None not in hashes and len(set(hashes)) == 1
        same_score = (len(cand) > 1 and max(cand) - min(cand) < 1e-12
                      and max(inc) - min(inc) >= 1e-12)
        if not (same_file or same_score):
            return None
        what = "the same artifact, byte for byte" if same_file else f"the same score {cand[0]:.8f}"
        return Verdict("seed_ignored", f"the trainer gave {what} at the judge's "
                       f"seeds {', '.join(map(str, seeds))}: it ignores the seed it is given "
                       "(SEED); a result of one frozen seed is luck, not an improvement")

    def _seeded(self, exp: Experiment, profile: str, seed: int, incumbent: bool,
                rows: list[dict] | None = None) -> float:
        """One run at `seed` of the candidate, or of the incumbent (the candidate set aside)."""
        who = "the incumbent" if incumbent else "the candidate"
        self._abandon_if_stopping(f"before {who}'s run at seed {seed} ({profile})")
        self.bench.say(f"{exp.id} {profile}: {who} at seed {seed}")
        tag = f"-{'incumbent-' if incumbent else ''}seed{seed}"
        pruner = None if incumbent else self._pruner(rows or [], exp, profile, seed)
        run = self.measure(exp, profile, tag, {"AUTOGOLF_JUDGE_SEED": str(seed)},
                           incumbent=incumbent, pruner=pruner)
        self._facts[(exp.id, profile, incumbent, seed)] = {
            "compute_s": run.rung.get(self.compute_key),
            "sha256": (run.rung.get("judge") or {}).get("artifact_sha256")}
        if incumbent and run.verdict is None:
            self._incumbent_logs[exp.base_code, profile, seed] = self.repo / run.rung["log"]
        self._abandon_if_stopping(f"during {who}'s run at seed {seed} ({profile})")
        if run.verdict is not None:
            status = "inconclusive" if incumbent else run.verdict.status
            raise Decided(status, f"at {profile}, {who} at seed {seed}: {run.verdict.reason}")
        printed = (run.rung.get("protocol") or {}).get("seed")
        if printed is None:  # upstream's trainer prints no seed line: the benchmark's word
            printed = (run.rung.get("run_settings") or {}).get("SEED")
        if printed != str(seed):
            raise Decided("metric_mismatch", f"at {profile}: the judge asked {who} for seed "
                          f"{seed}; the run says it used seed {printed} (the trainer's "
                          "`seed:` line, else SEED= on autoresearch.sh's settings line)")
        return run.val_bpb

    def _pruner(self, rows: list[dict], exp: Experiment, profile: str,
                seed: int) -> CurvePruner | None:
        """A pruner for the candidate's run at `seed` against the incumbent's run there:
        one measured this session (by code), or the incumbent's own run at that seed from
        the ledger (a baseline's at the protocol seed, a kept candidate's at the seeds of its
        decision); None without one (keep_rule.prune: false, or no comparable curve:
        loop/measure/pruning.py)."""
        if not self.cfg.keep_prune:
            return None
        log = self._incumbent_logs.get((exp.base_code, profile, seed))
        if log is None:
            rung = incumbent_rung(rows, exp.session, profile, exp.head, self.dataset_id,
                                  exp.base_code)
            own = [rung.get("log")] if seed == BASE_SEED else [
                name for name in rung.get("run_logs") or []
                if str(name).endswith(f"bench-{profile}-seed{seed}.log")]
            log = self.repo / own[0] if own and own[0] else None
        return pruner_for(log)

    def _earlier_diffs(self, rows: list[dict], profile: str) -> list[list[float]]:
        """The paired differences of the earlier decisions at `profile`: the last
        EARLIER_SESSION_DECISIONS of earlier sessions (`earlier_rows`), then this session's.

        Only decisions on this dataset whose runs were measured on the same kind of compute
        (CPU time on a CPU, wall time on a GPU: `walls.measure`) count, so a new session - one
        per commit of yours - starts with the spread the last ones measured instead of paying
        five pairs a decision to learn it again. The pool weighs them by how alike the
        decisions' spreads are (loop.judge.sequential.SpreadPool), so a trainer whose spread
        changed loses their weight as its own decisions come in."""
        def diffs_of(source: list[dict]) -> list[list[float]]:
            found = []
            for row in source:
                seq = ((row.get("rungs") or {}).get(profile) or {}).get("sequential")
                if isinstance(seq, dict) and row.get("dataset") == self.dataset_id and (
                        (seq.get("walls") or {}).get("measure", self.compute_key)
                        == self.compute_key):
                    found.append([float(d) for d in seq.get("diffs") or []])
            return found

        earlier = diffs_of(self.earlier_rows)[-EARLIER_SESSION_DECISIONS:]
        return earlier + diffs_of(rows)

    def _incumbent_runs(self, rows: list[dict], exp: Experiment, profile: str,
                        inc_rung: dict) -> dict[int, float]:
        """The incumbent's runs by seed that are already known: a kept candidate's own runs
        at the seeds of its decision (or a baseline's run at the protocol seed), then the
        runs of it that earlier decisions added at further seeds.

        A kept candidate's runs were selected because they won, and are reused all the
        same: the next decisions look only at paired differences at the same seeds, where
        the incumbent's own luck at a seed cancels; on a deterministic CPU a re-run would
        give the very same number, and on a GPU the selected runs' luck only makes the next
        candidate's task harder, never easier (bench/false_keeps.py measures both ways:
        false keeps and power alike, 1.5-2.8 fewer runs per decision after a keep)."""
        if profile in exp.trust.get("incumbent_remeasured", {}):
            return {BASE_SEED: exp.trust["incumbent_remeasured"][profile]["val_bpb"]}
        known: dict[int, float] = {}
        kept = inc_rung.get("sequential")
        if isinstance(kept, dict):  # a kept candidate: its runs as the incumbent's
            known.update(zip(kept.get("seeds") or [], kept.get("candidate") or [], strict=False))
        else:  # a baseline (or a margin-rule keep): its run at the protocol seed
            known[BASE_SEED] = inc_rung.get("first_val_bpb", inc_rung.get("val_bpb"))
        for row in rows:
            seq = ((row.get("rungs") or {}).get(profile) or {}).get("sequential")
            if isinstance(seq, dict) and row.get("base_code") == exp.base_code and (
                    row.get("dataset") == self.dataset_id):
                for seed, value in zip(seq.get("seeds") or [], seq.get("incumbent") or [],
                                       strict=False):
                    known.setdefault(seed, value)
        return known

    def rerun(self, exp: Experiment, profile: str, number: int) -> float:
        self._abandon_if_stopping(f"before re-run {number} at {profile}")
        self.bench.say(f"{exp.id} {profile}: close win, re-run {number}")
        run = self.measure(exp, profile, tag=f"-r{number}")
        self._abandon_if_stopping(f"during re-run {number} at {profile}")
        if run.verdict is not None:
            raise Decided(run.verdict.status, f"at {profile} (re-run {number}): "
                          f"{run.verdict.reason}")
        return run.val_bpb

    def calibrate(self, exp: Experiment, profile: str) -> None:
        """Measure a valid baseline R times in all: its score becomes the mean (issue 7)."""
        total = self.cfg.noise_runs.get(profile, 1)
        rung = exp.rungs[profile]
        if total <= 1 or not isinstance(rung.get("val_bpb"), (int, float)):
            return
        values, failed = [rung["val_bpb"]], []
        for number in range(2, total + 1):
            if self.bench.stop_requested():
                break
            run = self.measure(exp, profile, tag=f"-r{number}")
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
        self.bench.say(f"{exp.id} {profile}: calibrated from {len(values)} runs, spread "
                       f"{_fmt(spread)}")

    def maybe_recalibrate(self, rows: list[dict]) -> None:
        """After every N keeps, measure the incumbent again at each calibrated rung (the
        margin rule's calibration; the sequential rule re-measures incumbents in its pairs)."""
        if self.cfg.keep_rule_enabled:
            return
        keeps = 0
        for row in reversed(rows):
            if row.get("calibration"):
                break
            keeps += row.get("status") == "keep" and not row.get("baseline")
        if not noise.calibration_due(keeps, self.cfg.noise_recalibrate_every_keeps):
            return
        for profile in self.cfg.ladder:
            if self.cfg.noise_runs.get(profile, 1) > 1 and not self.bench.stop_requested():
                self.bench.baseline(profile, description=f"recalibration of the incumbent at "
                                                         f"{profile} after {keeps} keeps")

    # ---- the frozen evaluation protocol

    def check_protocol(self, exp: Experiment, profile: str, run: Measurement,
                       incumbent: float | None, inc_rung: dict) -> tuple[float | None, int]:
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

    def remeasure_incumbent(self, exp: Experiment, profile: str, new: dict,
                            allowed: dict) -> float:
        """The incumbent's score under the candidate's (allowed) protocol change."""
        env = protocol.overrides(new, allowed)
        self.bench.checkpoint(exp, f"incumbent:{profile}")
        self._abandon_if_stopping(f"before the incumbent's re-measure at {profile}")
        run = self.measure(exp, profile, "-incumbent",
                           {"AUTOGOLF_PROTOCOL_OVERRIDES": protocol.override_text(env)},
                           incumbent=True)
        self._abandon_if_stopping(f"during the incumbent's re-measure at {profile}")
        exp.trust.setdefault("incumbent_remeasured", {})[profile] = {
            "changes": protocol.describe(allowed), "overrides": env, "val_bpb": run.val_bpb,
            "log": run.rung["log"]}
        if run.verdict is not None or run.val_bpb is None:
            raise Decided("discard", f"at {profile}: the incumbent could not be re-measured "
                          f"under the new protocol ({protocol.describe(allowed)})")
        self.bench.say(f"{exp.id} {profile}: incumbent re-measured under the new protocol: "
                       f"{_fmt(run.val_bpb)}")
        return run.val_bpb

    # ---- artifacts and verification

    def _settings(self, rung: dict) -> dict[str, str] | None:
        """The trainer's settings lines of a rung's run (parsed once; a resumed experiment's
        older runs are read from their log)."""
        log = rung.get("log")
        if not log:
            return None
        if log not in self._logs:
            try:
                text = (self.repo / log).read_text(errors="replace")
            except OSError:
                return None
            self._logs[log] = logparse.parse_trainer_log(text)
        return self._logs[log].settings

    def artifact_of(self, rung: dict) -> Path | None:
        path = (self._settings(rung) or {}).get("artifact_path")
        return None if not path else self.worktree / path

    def drop_artifact(self, rung: dict) -> None:
        """Delete a model file kept only for verification (not when the user keeps models)."""
        if not self.cfg.verify_enabled or os.environ.get("KEEP_MODEL") == "1":
            return
        path = self.artifact_of(rung)
        if path is not None:
            path.unlink(missing_ok=True)

    def verify_keep(self, exp: Experiment, verdict: Verdict) -> Verdict:
        """Re-evaluate the kept candidate's last-rung artifact with the trusted code."""
        if not self.cfg.verify_enabled:
            return verdict
        profile = self.cfg.ladder[-1]
        rung = exp.rungs.get(profile) or {}
        claimed = rung.get("first_val_bpb", rung.get("val_bpb"))
        self.bench.checkpoint(exp, f"verify:{profile}")
        try:
            check = self.verify_rung(rung, claimed)
        finally:
            self.drop_artifact(rung)
        exp.trust["verify"] = {"profile": profile, **check.record()}
        if check.status == "disagree":
            return Verdict("metric_mismatch", check.reason, verdict.margin)
        return dataclasses.replace(verdict, reason=f"{verdict.reason}; {check.reason}")

    def verify_rung(self, rung: dict, claimed: float | None) -> verify.Check:
        path = self.artifact_of(rung)
        p = rung.get("protocol") or {}
        if path is None or claimed is None or not path.exists():
            return verify.Check("error", "verify: no artifact_path in the trainer's log (or "
                                "the file is gone): nothing to verify", claimed, None)
        try:
            s = self._settings(rung)
            if s is None:
                raise OSError(f"cannot read {rung.get('log')}")
            settings = verify.Settings(self.dataset.data_path, self.dataset.tokenizer_path,
                                       int(p["train_seq_len"]), int(p["val_max_tokens"]),
                                       float(s.get("logit_softcap", 30)),
                                       float(s.get("rope_base", 10000)),
                                       s.get("compute_dtype", "float32"))
        except (KeyError, TypeError, ValueError, OSError) as exc:
            return verify.Check("error", f"verify: the log lacks a setting it needs ({exc})",
                                claimed, None)
        return verify.verify(path, claimed, settings, self.cfg.verify_tolerance)

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.repo))
        except ValueError:
            return str(path)


# --------------------------------------------------------------------------- the artifact


def run_name(exp: Experiment, profile: str, tag: str = "") -> str:
    """The RUN_ID a benchmark of `exp` is given: the loop passes `exp.id + tag` as the run id
    and the pipeline appends the profile (loop.measure.pipeline.bench_env)."""
    return f"{exp.id}{tag}-{profile}"


class ArtifactJudge:
    """The score that decides, measured by the daemon (issue 15), not printed by the trainer.

    For each benchmark run the daemon gives the trainer a data folder without the holdout
    (loop.judge.holdout) and a path to write its artifact to; afterwards it measures the
    artifact and the counted code files itself (the size), and scores the artifact on the
    held-out tokens in a separate model-server process that sees input tokens only, computing
    log-softmax, cross-entropy and the target bytes itself (loop.judge.score). What the
    trainer and the benchmark script printed are claims compared with that: a size or score
    that disagrees is `metric_mismatch`; an artifact that cannot be scored is `unjudged`.
    """

    def __init__(self, cfg: Config, repo: Path, worktree: Path, dataset: datasets.DatasetInfo,
                 seal: Seal | None = None):
        self.cfg = cfg
        self.repo = repo
        self.worktree = worktree
        self.dataset = dataset
        self.seal = seal or Seal(None)
        self._prepared: dict[str, holdout.Prepared] = {}
        self._tables: tokenbytes.ByteTables | None = None

    def prepared(self, profile: str) -> holdout.Prepared:
        if profile not in self._prepared:
            try:
                self._prepared[profile] = holdout.prepare(self.dataset, profile, self.repo)
            except holdout.HoldoutError as exc:
                raise UserError(f"judge: {exc}") from None
        return self._prepared[profile]

    def trainer_env(self, profile: str) -> dict[str, str]:
        """The data folder (no holdout) the trainer is given (the pipeline names the
        artifact path: the run's own output folder)."""
        prep = self.prepared(profile)
        return {"DATA_PATH": str(prep.data_path), "TOKENIZER_PATH": str(prep.tokenizer_path)}

    def judge(self, measured: Measurement, run: Run, profile: str,
              run_id: str = "", stop: Callable[[], bool] | None = None) -> Measurement:
        """The judge's figures for a run whose printed lines were consistent; `stop` ends
        the scoring early (the deadline or a signal: the caller records `interrupted`).

        The artifact is the one the trainer was asked to write (AUTOGOLF_ARTIFACT_PATH, in
        the run's output folder) or, with `run_id`, upstream's export where the run's `logs/`
        went (loop.judge.artifact). An unsealed upstream export is deleted afterwards unless
        KEEP_MODEL=1 (the output folder itself is the loop's to delete).
        """
        prep = self.prepared(profile)
        rung = measured.rung
        rung["judge"] = {"holdout": prep.holdout.identity()}
        found, where = None, "no output folder was set for this run"
        if run.outputs is not None:
            found, where = artifacts.find_artifact(run.outputs / ARTIFACT_NAME,
                                                   run.logs_dir or run.outputs, run_id)
        try:
            if measured.verdict is not None and measured.verdict.status != "over_cap":
                return measured  # a crash, a timeout, no score printed: nothing to judge
            if found is None:
                rung["printed_val_bpb"] = rung.pop("val_bpb", None)
                return self._fail(measured, "unjudged", f"judge: {where}")
            rung["judge"]["artifact"] = where
            return self._judge(measured, run, prep, found, stop)
        finally:
            if found is not None and os.environ.get("KEEP_MODEL") != "1":
                found.unlink(missing_ok=True)

    def _judge(self, measured: Measurement, run: Run, prep: holdout.Prepared,
               artifact: Path, stop: Callable[[], bool] | None = None) -> Measurement:
        rung = measured.rung
        claimed_bpb = rung.pop("val_bpb", None)
        rung["printed_val_bpb"] = claimed_bpb
        try:
            size = score.measure_total_bytes(artifact, self.worktree)
        except score.Unscorable as exc:
            return self._fail(measured, "unjudged", f"judge: {exc}")
        rung["judge"]["total_bytes"] = {"artifact": size.artifact_bytes,
                                        "code": size.code_files, "total": size.total}
        rung["judge"]["artifact_sha256"] = file_hash(artifact)
        printed = run.metrics.get("total_bytes")
        if printed is not None and abs(printed - size.total) >= 0.5:
            return self._fail(measured, "metric_mismatch", f"METRIC total_bytes={printed:.0f} "
                              f"but the judge measures {size.total:,} bytes (artifact "
                              f"{size.artifact_bytes:,} + code {size.code_bytes:,})")
        rung["total_bytes"] = size.total
        cap = self.cfg.artifact_cap_bytes
        if size.total > cap:
            return self._fail(measured, "over_cap", f"artifact {size.total:,} bytes (measured) > "
                              f"cap {cap:,} bytes (over by {size.total - cap:,})")
        settings = loader.settings_env(run.log.run_settings)
        rung["judge"]["settings"] = settings
        scores = score.score_sets(
            self.worktree / TRAINER, artifact,
            {"holdout": prep.holdout.tokens, "claim": prep.trainer_slice()},
            prep.holdout.seq_len, self.tables(), cwd=self.worktree,
            env=score.server_env() | settings, seal=self.seal, stop=stop)
        rung["judge"]["scores"] = {name: s.record() for name, s in scores.items()}
        held, claim = scores["holdout"], scores["claim"]
        if not held.ok:
            return self._fail(measured, "unjudged", held.reason)
        disagreement = claim_disagreement(run.log.exact_val_bpb, claim,
                                          self.cfg.judge_claim_tolerance)
        if disagreement is not None:
            return self._fail(measured, *disagreement)
        rung["val_bpb"] = held.val_bpb
        return Measurement(rung, None, held.val_bpb)

    @staticmethod
    def _fail(measured: Measurement, status: str, reason: str) -> Measurement:
        measured.rung.pop("val_bpb", None)
        return Measurement(measured.rung, Verdict(status, reason), None)

    def tables(self) -> tokenbytes.ByteTables:
        if self._tables is None:
            self._tables = tokenbytes.build_byte_tables(self.dataset.tokenizer_path,
                                                         self.dataset.vocab_size)
        return self._tables


def claim_disagreement(printed: float | None, claim: score.Score, tolerance: float
                       ) -> tuple[str, str] | None:
    """(status, reason) when the judge's score of the trainer's own slice and the trainer's
    printed roundtrip score differ by more than `tolerance`, else None.

    Under the trainer's `load_for_eval` the trainer itself says how its model is loaded, so a
    difference is the trainer's: `metric_mismatch`. Under the built-in loader the judge
    built the model (through the trainer's code), so a difference means the loader did not
    load it as the trainer does: `unjudged`, with both numbers and the fix. A lying trainer
    gains nothing by the softer word: both statuses are never kept.
    """
    if not claim.ok or printed is None or abs(printed - claim.val_bpb) <= tolerance:
        return None
    numbers = (f"the trainer printed val_bpb {printed:.6f} but the judge scores the same "
               f"tokens at {claim.val_bpb:.6f} (differs by {abs(printed - claim.val_bpb):.6f} > "
               f"{tolerance:g})")
    if claim.loader == "builtin":
        return "unjudged", (
            f"judge: the built-in loader did not load the model as the trainer does: "
            f"{numbers}. It builds the trainer's model class under the settings autoresearch.sh "
            f"printed and makes logits as upstream's loss does (hidden states, tied head, "
            f"softcap); this trainer differs somewhere. Fix: {loader.FIX}")
    return "metric_mismatch", numbers
