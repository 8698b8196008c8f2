"""The ladder: one experiment's keep decision, cheap rung first (SPEC section 6).

Reading order - one experiment's path through this module:

1. `Judge.climb(exp, rows)`: at each rung the candidate is measured (`Judge.measure`: one
   benchmark through the loop's `Bench`, loop.judge.bench), the run is checked for validity
   (loop.judge.validity.assess) and scored by the daemon (loop.judge.artifact_judge), its
   protocol is compared with the incumbent's (`check_protocol`), and it is compared with the
   incumbent: by the sequential rule (`judge_sequential`, loop.judge.sequential: paired runs
   at the judge's seeds) or by the margin rule (`judge_rung`, loop.judge.margin). The first
   rung not won decides.
2. A candidate that won every rung is verified (`verify_keep`): its artifact re-scored by
   the daemon's own code, when `verify.enabled`.
3. Incumbents: a rung with no incumbent yet asks the loop for a baseline (`Bench.baseline`);
   a baseline's own measurement is judged by `measure_baseline` (calibrated by repeated
   runs under the margin rule); `maybe_recalibrate` re-measures the incumbent after N keeps.

What it decides is a `Verdict` (loop.judge.verdict), the one type that ends in the row. The
judge never touches git or the ledger: it measures through `Bench`, which the daemon
implements (loop.daemon.loopbench), and writes its evidence into the experiment.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from loop.config import Config
from loop.data import datasets
from loop.errors import UserError
from loop.judge import artifact as artifacts
from loop.judge import margin, noise, protocol, sequential, verify
from loop.judge.artifact_judge import ArtifactJudge, run_name
from loop.judge.bench import Bench
from loop.judge.margin import Judgement, Rule, fmt
from loop.judge.validity import Measurement, assess, budget_verdict
from loop.judge.verdict import Abandon, Decided, Verdict
from loop.measure import logparse
from loop.measure.logparse import TrainerLog
from loop.measure.pipeline import Run
from loop.measure.pruning import CurvePruner, pruner_for
from loop.measure.seal import Seal, mlx_on_gpu
from loop.store.rows import Experiment, incumbent_rung, incumbents

# Decisions of earlier sessions whose spread a new session starts from (per profile).
EARLIER_SESSION_DECISIONS = 30
# The protocol's seed (autoresearch.sh's trainer default): the first pair of a sequential
# decision is the candidate's and the incumbent's run at it; the others follow the schedule.
BASE_SEED = 1337


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
        # The compute cap's back-to-back pair of each (experiment, profile), once measured.
        self._back_to_back: dict[tuple[str, str], dict] = {}

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
                measured = self.scorer.judge(measured, run, profile,
                                             run_name(exp, profile, tag), self.bench.stopped)
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
            self.bench.say(f"{exp.id} wins at {profile}: {fmt(run.val_bpb)} vs "
                           f"{fmt(incumbent)}")
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

    def judge_rung(self, rows: list[dict], exp: Experiment, profile: str, first: float,
                   incumbent: float | None, n_incumbent: int) -> Judgement:
        """Keep/discard by the noise-aware margin; a close win is re-run."""
        estimate = margin.noise_estimate(rows, profile, self.dataset_id,
                                         self.cfg.noise.get(profile))
        rule = Rule(self.cfg.min_improvement, self.cfg.noise_k, estimate.spread,
                    self.cfg.noise_rerun_close)
        judged = margin.judge_first(first, incumbent, n_incumbent, rule)
        if margin.wants_reruns(judged, incumbent, rule):
            reruns = [self.rerun(exp, profile, n) for n in range(2, rule.rerun_close + 2)]
            judged = margin.judge_mean([first, *reruns], incumbent, n_incumbent, rule)
        rung = exp.rungs[profile]
        if len(judged.values) > 1:
            rung.update(runs=judged.values, first_val_bpb=first, val_bpb=judged.mean)
        exp.trust["margin_source"] = estimate.describe()
        exp.trust.setdefault("noise", {})[profile] = {
            "spread": estimate.spread, "source": estimate.describe(), "k": self.cfg.noise_k,
            "margin": judged.margin, "runs": len(judged.values), "incumbent_runs": n_incumbent}
        return judged

    # ---- the sequential rule (keep_rule.enabled)

    def judge_sequential(self, rows: list[dict], exp: Experiment, profile: str, first: float,
                         inc_rung: dict) -> Judgement:
        """Paired runs of the candidate and the incumbent at the judge's seeds until the
        sequential test decides (loop.judge.sequential), or its cap: `inconclusive`."""
        rule = self.cfg.sequential_rule(profile)
        pool = sequential.SpreadPool.from_decisions(
            self._earlier_diffs(rows, profile), max_pooled_dof=self.cfg.keep_max_pooled_dof)
        seeds = sequential.seed_schedule(BASE_SEED, rule.max_runs)
        known = self._incumbent_runs(rows, exp, profile, inc_rung)
        done: list[tuple[float, float]] = []  # the pairs so far, for a decision cut short
        ran: dict[int, float] = {}  # the incumbent's runs made for this decision, by seed
        early: dict[str, Any] = {}  # the compute cap's look after the first pair

        def next_pair(i: int) -> tuple[float, float]:
            seed = seeds[i]
            if i == 1:  # still in the running after its first pair: within the compute cap?
                self._early_budget(rows, exp, profile, seeds[0], inc_rung, done[0], early)
            if i == 2:  # ahead after two seeds: does it follow the seed at all?
                self._early_seed(exp, profile, seeds[:2], done)
            if i > 0 and seed not in known:  # first: its curve can prune the candidate's run
                known[seed] = ran[seed] = self._seeded(exp, profile, seed, incumbent=True)
            candidate = first if i == 0 else self._seeded(exp, profile, seed, incumbent=False,
                                                          rows=rows)
            if seed not in known:
                known[seed] = ran[seed] = self._seeded(exp, profile, seed, incumbent=True)
            done.append((candidate, known[seed]))
            return candidate, known[seed]

        rung = exp.rungs[profile]
        inc = incumbents(rows, exp.session, exp.head, self.dataset_id, exp.base_code)
        inc_id = (inc.get(profile) or {}).get("id")
        try:
            outcome = sequential.run_decision(next_pair, rule, pool)
        except Decided as cut:  # pruned, crashed...: its pairs still measured the spread
            if done:
                rung["sequential"] = {**_pairs_record(seeds, done, "cut short", inc_id),
                                      "status": cut.verdict.status, **early}
                # the incumbent's run at the seed whose candidate run failed: later
                # decisions reuse it (_incumbent_runs) instead of running it again
                unpaired = {s: v for s, v in ran.items() if s not in seeds[:len(done)]}
                if unpaired:
                    rung["sequential"]["unpaired"] = {"seeds": list(unpaired),
                                                      "incumbent": list(unpaired.values())}
            raise
        n = len(outcome.pairs)
        rung["sequential"] = {**_pairs_record(seeds, outcome.pairs, outcome.decision, inc_id),
                              "stats": outcome.stats}
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
                self._budget_verdict(exp, profile, walls)) or verdict
        return Judgement(verdict, [c for c, _ in outcome.pairs], 0.0)

    def _early_budget(self, rows: list[dict], exp: Experiment, profile: str, seed: int,
                      inc_rung: dict, first: tuple[float, float], record: dict) -> None:
        """The compute cap, looked at when the candidate is ahead after its first pair and
        the futility look let it go on: one over the allowance (confirmed back to back) can
        never be kept, so it stops now, `over_budget` (raises Decided), instead of after up
        to max_runs pairs. The walls it looked at go to `record`."""
        if not self._early_look_applies([first]):
            return
        record["walls"] = walls = self._paired_walls(rows, exp, profile, [seed], inc_rung)
        verdict = self._budget_verdict(exp, profile, walls, "ahead")
        if verdict is not None:
            raise Decided(verdict.status, f"at {profile}, after its first pair: "
                          f"{verdict.reason}")

    def _early_seed(self, exp: Experiment, profile: str, seeds: list[int],
                    pairs: list[tuple[float, float]]) -> None:
        """The seed check, looked at when the candidate is ahead after two seeds and the rule
        goes on: a trainer that gave the same result at both ignores the seed, and no later
        pair can change that, so it stops now, `seed_ignored` (raises Decided), instead of
        after up to max_runs pairs."""
        if not self._early_look_applies(pairs):
            return
        verdict = self._seed_verdict(exp, profile, seeds, pairs)
        if verdict is not None:
            raise Decided(verdict.status, f"at {profile}, after its second pair: "
                          f"{verdict.reason}")

    def _early_look_applies(self, pairs: list[tuple[float, float]]) -> bool:
        """Whether a look before the rule decides (compute, seed) applies: the candidate is
        ahead over `pairs` (candidate, incumbent), and the judge is on (the scheduler's fake
        benchmarks measure no compute and print seed-free scores)."""
        return self.scorer is not None and sum(inc - cand for cand, inc in pairs) > 0

    def _budget_verdict(self, exp: Experiment, profile: str, walls: dict,
                        standing: str = "won") -> Verdict | None:
        """over_budget, decided on runs made back to back: the incumbent's recorded runs may
        come from earlier decisions under another load, and load adds compute (even CPU
        time). So when they say over budget, the incumbent and then the candidate run once
        more at the protocol seed and that pair decides (`walls["back_to_back"]`); at load 5-7
        the recorded runs made 12 winners of three 10-minute smoke sessions over budget.
        The pair is run once per candidate and rung: the look after the first pair and the
        decision's end share it."""
        allowed = self.cfg.judge_compute_allowance
        if budget_verdict(walls, allowed) is None:
            return None
        pair = self._back_to_back.get((exp.id, profile))
        if pair is None:
            self._seeded(exp, profile, BASE_SEED, incumbent=True, purpose="budget-")
            self._seeded(exp, profile, BASE_SEED, incumbent=False, purpose="budget-")
            pair = {"measure": walls["measure"],
                    "candidate": [self._facts[(exp.id, profile, False, BASE_SEED)]["compute_s"]],
                    "incumbent": [self._facts[(exp.id, profile, True, BASE_SEED)]["compute_s"]]}
            self._back_to_back[exp.id, profile] = pair
        walls["back_to_back"] = pair
        return budget_verdict(pair, allowed, standing)

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
                rows: list[dict] | None = None, purpose: str = "") -> float:
        """One run at `seed` of the candidate, or of the incumbent (the candidate set aside);
        `purpose` ("budget-") marks a run made again to measure compute: never pruned."""
        who = "the incumbent" if incumbent else "the candidate"
        self._abandon_if_stopping(f"before {who}'s run at seed {seed} ({profile})")
        self.bench.say(f"{exp.id} {profile}: {who} at seed {seed}"
                       + (" again, back to back, for its compute" if purpose else ""))
        tag = f"-{purpose}{'incumbent-' if incumbent else ''}seed{seed}"
        pruner = None if incumbent or purpose else self._pruner(rows or [], exp, profile, seed)
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
        EARLIER_SESSION_DECISIONS of earlier sessions (`earlier_rows`), then this session's;
        only this dataset's, measured on the same kind of compute (`walls.measure`). A new
        session starts from the spread the last ones measured; the pool weighs them by how
        alike the decisions' spreads are (sequential.SpreadPool)."""
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
        """The incumbent's known runs by seed: a kept candidate's own runs at its decision's
        seeds (or a baseline's at the protocol seed), then those earlier decisions added
        (their pairs, and a run whose candidate's run then failed: `unpaired`).
        Selected runs are reused (loop.judge.sequential's docstring says why: pairs cancel a
        seed's luck; bench/false_keeps.py measured false keeps and power alike)."""
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
                unpaired = seq.get("unpaired") if isinstance(seq.get("unpaired"), dict) else {}
                for record in (seq, unpaired):
                    for seed, value in zip(record.get("seeds") or [],
                                           record.get("incumbent") or [], strict=False):
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
        """Measure a valid baseline R times in all: its score becomes the mean."""
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
                       f"{fmt(spread)}")

    def maybe_recalibrate(self, rows: list[dict]) -> None:
        """After every N keeps, measure the incumbent again at each calibrated rung (the
        margin rule's calibration; the sequential rule re-measures incumbents in its pairs)."""
        if self.cfg.keep_rule_enabled:
            return
        keeps = margin.keeps_since_calibration(rows)
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
                       f"{fmt(run.val_bpb)}")
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
        return str(path.relative_to(self.repo) if path.is_relative_to(self.repo) else path)


def _pairs_record(seeds: list[int], pairs: list[tuple[float, float]], decision: str,
                  incumbent_id: object) -> dict:
    """A decision's paired runs as the ledger keeps them (the spread pool and the
    incumbent's known runs read them back): seeds, both sides, differences, the outcome."""
    return {"seeds": seeds[:len(pairs)], "candidate": [c for c, _ in pairs],
            "incumbent": [i for _, i in pairs], "diffs": [i - c for c, i in pairs],
            "decision": decision, "incumbent_id": incumbent_id}
