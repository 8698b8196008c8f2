"""`autogolf run`: experiments one after another until a stop rule fires.

One experiment is three steps, like an Optuna trial:

- **ask** (`_ask`): the proposer edits the session worktree and returns a `Proposal`;
- **run** (`_run`): the diff is validated (editable files only, not a duplicate), the shared
  workspace is asked and told (claims), the checks run, and the judge climbs the ladder
  (`Judge.climb`, loop.judge.judge: the whole keep rule), measuring through the pipeline;
- **tell** (`_tell`): the judge's verdict becomes a commit (keep) or a restore (anything
  else), then one ledger row, then events to the subscribers (the live display, the
  backlog's bookkeeping, the workspace) and to the proposer.

This module only wires those pieces: the keep rule is loop.judge's (it measures through
loop.daemon.loopbench, which sees only the `Loop` parts of this class), measuring is
loop.measure's, git and the ledger are loop.store's, the state file and resuming after a
kill are loop.daemon.session's, a stop request loop.daemon.stops', the stop rules
loop.daemon.stoprules'. What it owns is the
order of the steps and the incumbents per profile (derived from the session's ledger rows,
so nothing else has to be kept in sync).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from loop.backlog.bookkeeping import BOOKKEEPING_FILES, IDEAS_FILE, Bookkeeping, tried_rows
from loop.config import Config, is_editable
from loop.daemon import awake, briefing, continuity, nightcost, preflight
from loop.daemon.lock import DaemonLock
from loop.daemon.loopbench import Loop, LoopBench
from loop.daemon.session import Paths, StateFile, recover, unique_session_name
from loop.daemon.stoprules import (
    StopRules,
    Tally,
    budget_reason,
    expected_cost_s,
    streak_reason,
)
from loop.daemon.stops import Stops, catch_stop_signals
from loop.daemon.tamper import Fingerprint, Tampered
from loop.data import datasets
from loop.events import EventBus, RunEvents
from loop.judge.judge import Judge
from loop.judge.verdict import Abandon, BaselineFailed, Decided, Verdict
from loop.measure import seal, watchdog
from loop.measure.pipeline import TRAINER, Pipeline, last_line
from loop.proposers.base import Proposal, Proposer
from loop.proposers.registry import make_proposer
from loop.proposers.search import KnobError, read_knobs
from loop.store import gitsession
from loop.store.files import atomic_write, file_hash
from loop.store.gitsession import GitSession, diff_hash
from loop.store.ledger import Ledger
from loop.store.rows import (
    Experiment,
    commit_message,
    find_duplicate,
    incumbents,
    next_id,
    session_experiments,
    sessions,
    summary_line,
    utc_now,
)
from loop.store.statuses import names_where
from loop.workspace.hook import WorkspaceHook

__all__ = ["LoopBench", "Scheduler", "StopRules", "catch_stop_signals"]


FULL_REQUEST = "FULL"  # .autogolf/FULL: measure the incumbent at `full` after this experiment
# Outcomes of a baseline that say nothing about the incumbent's code (a stop): not fatal.
NOT_ABOUT_THE_CODE = names_where(says_about_change=False)


class Scheduler(Loop):
    """`autogolf run`: ask -> run -> tell, experiment after experiment."""

    def __init__(self, repo: Path, cfg: Config, rules: StopRules, *, new_session: bool = False,
                 resume: bool = False, proposer: Proposer | None = None,
                 out: Callable[[str], None] = print, events: RunEvents | None = None):
        self.paths = Paths(Path(repo).resolve())
        self.cfg = cfg
        self.rules = rules
        self.out = out
        self._new_session = new_session
        self._resume = resume  # continue the latest session even if what shapes results changed
        self.stops = Stops(rules, self.paths)
        self.fatal: str | None = None  # why the run cannot go on (e.g. a failed baseline)
        self.token = f"{os.getpid()}-{time.time_ns()}"  # in children's env: orphans are found
        self.state = StateFile(self.paths.state, self.token)
        self.proposer = proposer if proposer is not None else make_proposer(
            cfg, self.paths.repo, self.worktree, self.stops.stopping, self.token,
            self.stops.asked_to_stop)
        self.session: str | None = None
        self.session_rows: list[dict] = []  # this session's experiment rows, in order
        self.cache_root = datasets.cache_root(self.paths.repo)
        self.dataset = datasets.resolve(cfg.dataset, self.cache_root)  # DatasetError: fix-it text
        self.dataset_id = datasets.dataset_id(self.dataset)
        # The shared workspace (SPEC 10), or None; its hooks never raise into the loop.
        self.workspace = WorkspaceHook.create(cfg, self.paths.repo, self.ideas_file,
                                              ignore=BOOKKEEPING_FILES, out=out)
        # Subscribers: the workspace, the bookkeeping (from when the session opens), then the
        # caller's (the live display): the workspace syncs before the backlog commits.
        self.events = EventBus([s for s in (self.workspace, events) if s is not None],
                               warn=self.warn)
        # The judged code runs sealed (SealError, with the fix, when no seal is possible).
        hidden = seal.off_limits(self.paths.repo, self.dataset.data_path)[1]
        self.seal = seal.choose(cfg.judge_enabled and cfg.judge_sealed, hidden)
        self.pipeline = Pipeline(cfg, self.cache_root, self.dataset, self.token,
                                 stop=self.stops.stopping, on_line=self.events.output_line,
                                 seal=self.seal)
        self.fingerprint = Fingerprint.of_protected(self.paths.repo, self.dataset)
        self._preflight: preflight.Preflight | None = None
        self._in_flight: set[str] = set()  # ids of experiments not yet recorded

    # ---- the run

    def run(self) -> str:
        """Run until a stop rule fires; returns the stop reason (also in the ledger)."""
        self.paths.home.mkdir(parents=True, exist_ok=True)
        with DaemonLock(self.paths.lock) as lock:
            if lock.taken_over:
                self.out(f"warning: {lock.taken_over}")
            self.ledger = Ledger(self.paths.ledger)
            self.rows = self.ledger.rows()
            for problem in self.ledger.problems:
                self.out(f"warning: ledger: {problem}")
            with catch_stop_signals(self.stops.note_signal):
                try:
                    # Inside the try: a failure to resume or open the session also leaves
                    # a stop row saying why.
                    recover(self.paths, self.rows, self._record_recovered, self.out)
                    self._open_session()
                    self.events.session_opened(self.session, self.dataset_id)
                    self._clear_stale_stop_file()
                    self._start_guards()
                    reason = self._loop()
                except Exception as exc:
                    # The ledger says why the night ended; the next `run` resumes the rest.
                    self._stop_row(f"error: {type(exc).__name__}: {exc}")
                    self.events.stopped(f"error: {type(exc).__name__}: {exc}")
                    raise
            self._stop_row(reason)
            self.events.stopped(reason)
            self.state.stopped(reason)
        self.out(f"stopped: {reason}")
        return reason

    def _loop(self) -> str:
        tally = Tally()
        while True:
            reason = self._stop_reason(tally)
            if reason:
                return reason
            if not self._first_rung_incumbent():
                continue  # the baseline failed or was interrupted: _stop_reason says why
            row = self._experiment()
            if row is None:
                why = self.proposer.why_done()
                return "the proposer has nothing left to propose" + (f" ({why})" if why else "")
            tally.add(row["status"])
            self._full_if_requested()
            if row["status"] == "keep":
                self._maybe_full()
                self.judge.maybe_recalibrate(self.session_rows)
            if row["status"] == "agent_touched_git":
                self.fatal = (f"{row['id']} agent_touched_git: {row['reason']}; check the "
                              "repository's git config, hooks and refs before running again")

    def _stop_reason(self, tally: Tally) -> str | None:
        rules = self.rules
        if self.stops.signal:
            return f"stopped by {self.stops.signal}"
        if self.fatal:
            return self.fatal
        budget = budget_reason(rules, tally)
        if budget:
            return budget
        expected = expected_cost_s(self.session_rows, self.cfg.ladder)
        if rules.deadline is not None and expected is not None and (
                time.time() + expected > rules.deadline):
            return (f"the next experiment (about {expected:.0f} s, from this session's "
                    "measured runs) does not fit before the time limit (--until/--hours)")
        if self.stops.budget is not None and self.stops.budget.expired():
            return f"reached --hours {rules.hours:g} of awake time (sleep is not counted)"
        if rules.stop_file is not None and rules.stop_file.exists():
            rules.stop_file.unlink(missing_ok=True)  # consumed, so the next `run` runs
            return f"stop file {self.paths.rel(rules.stop_file)} found (removed)"
        streak = streak_reason(rules, tally)
        if streak:
            return streak
        problem = self._preflight.problem() if self._preflight is not None else None
        return f"pre-flight: {problem}" if problem else None

    def _stop_row(self, reason: str) -> None:
        self._append({"type": "stop", "session": self.session, "timestamp": utc_now(),
                      "reason": reason})

    # ---- one experiment: ask -> run -> tell

    def _experiment(self) -> dict | None:
        exp, proposal = self._ask()
        if proposal is None:
            return None
        try:
            verdict = self._run(exp, proposal)
        except Decided as decided:
            verdict = decided.verdict
        except Abandon as stop:
            verdict = Verdict("interrupted", str(stop))
        except BaselineFailed as failed:
            self.fatal = str(failed)
            verdict = Verdict("interrupted", f"not judged: {failed}")
        except Tampered as tampered:
            self.fatal = str(tampered)
            verdict = Verdict("interrupted", str(tampered))
        return self._tell(exp, verdict, proposal)

    def _ask(self) -> tuple[Experiment, Proposal | None]:
        """A new experiment and the proposer's change for it (None: nothing left)."""
        # First the subscribers (the workspace syncs the board, the backlog commits a person's
        # edits), then the experiment: its head is the branch after those commits.
        self.events.proposing(next_id(self.rows, self._in_flight), self.proposer.name)
        exp = self._new_experiment(self.proposer.name)
        self.state.stage(exp, "propose")
        before = self.fingerprint.take()
        started = time.monotonic()
        proposal = self.proposer.propose(self.git.worktree, self._history())
        exp.spent("propose", time.monotonic() - started)
        try:
            self.fingerprint.check(before, f"the {self.proposer.name} proposer of {exp.id}")
        except Tampered as tampered:  # recorded like any outcome, then the run stops
            self.fatal = str(tampered)
            proposal = proposal or Proposal("(tampered)", None)
            proposal.verdict = Verdict("interrupted", str(tampered))
        if proposal is None:
            self.git.restore()
            self.events.nothing_proposed()
            self.state.idle()
            self._in_flight.discard(exp.id)  # nothing was tried: the id stays free
            return exp, None
        exp.description, exp.knobs, exp.idea = proposal.description, proposal.knobs, proposal.idea
        exp.proposer = self.proposer.name  # a rotation's current one
        exp.agent = proposal.attempt
        self.events.experiment_started(exp.id, exp.proposer, exp.idea, exp.description)
        return exp, proposal

    def _run(self, exp: Experiment, proposal: Proposal) -> Verdict:
        """Validate, claim, check, then the judge's climb; raises Decided/Abandon early."""
        who = "agent" if proposal.attempt is not None else "proposer"  # an agent's attempt
        self.stops.abandon_if_requested(f"while the {who} worked")
        if proposal.verdict is not None:  # the attempt left nothing to validate
            if not proposal.touched_git:  # no more git there than the restore
                with contextlib.suppress(gitsession.GitError):
                    self._save_diff(exp)
            raise Decided(proposal.verdict.status, proposal.verdict.reason)
        self._validate(exp)
        self._claim_in_workspace(exp)
        self._checks(exp)
        return self.judge.climb(exp, self.session_rows)

    def _tell(self, exp: Experiment, verdict: Verdict, proposal: Proposal) -> dict:
        """Commit a winner or restore the worktree, then append the one row and tell."""
        exp.verdict = verdict
        commit = code = None
        # A person's backlog edits made meanwhile are neither the candidate nor to be lost.
        saved = {} if proposal.touched_git else self.bookkeeping.edits(exp.patch)
        if verdict.status == "keep":
            self.state.stage(exp, "commit")
            self.bookkeeping.reset_files(saved)
            commit = self.git.commit(commit_message(exp))
            code = self.git.code_hash(BOOKKEEPING_FILES)
            self.bookkeeping.put_back(saved)
        else:
            self.state.stage(exp, "restore")
            self.bookkeeping.restore_keeping(saved, to=exp.head)  # also a proposer's commits
        if proposal.note:
            verdict.reason += proposal.note
        row = self._record(exp, exp.row(commit, code))
        self.proposer.after_verdict(row)
        return row

    def _record(self, exp: Experiment, row: dict) -> dict:
        """Append `row` and tell the subscribers, before (they may add a field) and after."""
        self.events.recording(exp, row)  # the workspace publishes and sets row["workspace"]
        self.state.stage(exp, "record")
        self._append(row)
        self.state.idle()
        self.out(summary_line(row))
        self.events.decided(row["id"], row["status"], row["reason"])
        self.events.recorded(row)  # the backlog's evidence and tried section
        return row

    # ---- the steps of `run`

    def _validate(self, exp: Experiment) -> None:
        self.state.stage(exp, "validate")
        changed = self.git.changed_files()
        self._save_diff(exp)
        exp.trainer_hash = file_hash(self.git.worktree / TRAINER)
        forbidden = [f for f in changed if not is_editable(self.cfg, f)]
        if forbidden:
            raise Decided("forbidden_edit", "touches files outside the editable set: "
                          + ", ".join(sorted(forbidden)))
        if not changed:
            raise Decided("duplicate", "the proposal changed nothing: it is the incumbent")
        earlier = find_duplicate(self.rows, exp.diff_hash, exp.head, self.dataset_id,
                                 exp.base_code)
        if earlier:
            raise Decided("duplicate", f"same change as {earlier['id']} ({earlier['status']}) "
                          f"on incumbent {exp.head[:10]}; not re-run")

    def _claim_in_workspace(self, exp: Experiment) -> None:
        """Skip a change another agent claimed or measured on the same incumbent; else claim."""
        if not self.workspace:
            return
        taken = self.workspace.duplicate(exp)
        if taken:
            raise Decided("duplicate", taken)
        self.workspace.claim(exp)

    def _checks(self, exp: Experiment) -> None:
        self.stops.abandon_if_requested("before the checks")
        self.state.stage(exp, "checks")
        log = self.paths.experiment(exp.id) / "checks.log"
        before = self.fingerprint.take()
        started = time.monotonic()
        data = self.judge.scorer.trainer_env(self.cfg.ladder[0]) if self.judge.scorer else {}
        result = self.pipeline.checks(self.git.worktree, exp.id, log, data)
        exp.spent("checks", time.monotonic() - started)
        self.fingerprint.check(before, f"the checks of {exp.id}")
        self.stops.abandon_if_requested("during the checks")
        if result.timed_out:
            raise Decided("checks_failed", f"checks timed out after {self.cfg.checks_timeout_s:g}"
                          f" s (see {self.paths.rel(log)})")
        if result.exit_code != 0:
            raise Decided("checks_failed", f"checks exited {result.exit_code}: "
                          f"{last_line(log)} (see {self.paths.rel(log)})")

    # ---- baselines and `full`

    def _first_rung_incumbent(self) -> bool:
        """Measure the incumbent at the ladder's first rung when the session has none yet."""
        profile = self.cfg.ladder[0]
        if profile in incumbents(self.session_rows, self.session, self.git.head(),
                                 self.dataset_id, self.git.code_hash(BOOKKEEPING_FILES)):
            return True
        row = self.baseline(profile)
        if row["status"] != "keep" and row["status"] not in NOT_ABOUT_THE_CODE:
            self.fatal = (f"the incumbent failed its {profile} baseline ({row['id']}: "
                          f"{row['status']}): fix the benchmark, then `autogolf run` again")
        return row["status"] == "keep"

    def baseline(self, profile: str, parent: Experiment | None = None,
                  description: str | None = None) -> dict:
        """Measure the branch head at `profile` as its own (baseline) row."""
        head = self.git.head()
        exp = self._new_experiment("baseline", baseline=True,
                                   description=description or f"baseline {head[:10]} at {profile}")
        exp.trainer_hash = file_hash(self.git.worktree / TRAINER)
        exp.knobs = self._incumbent_knobs()  # the search proposer moves from these
        exp.stage = f"benchmark:{profile}"
        if parent is None:
            self.state.write(exp)
        else:
            self.state.write(parent, exp)
        self.out(f"{exp.id} {profile}: {exp.description}")
        self.events.experiment_started(exp.id, "baseline", None, exp.description)
        exp.verdict = self.judge.measure_baseline(exp, profile)
        row = exp.row(commit=head, code=exp.base_code)
        self._append(row)
        if parent is None:
            self.state.idle()
        self.out(summary_line(row))
        self.events.decided(row["id"], row["status"], row["reason"])
        self.events.recorded(row)
        return row

    def _full_if_requested(self) -> None:
        """`touch .autogolf/FULL`: the incumbent is measured at `full` after the current
        experiment (its own baseline row, never compared with the proxies)."""
        request = self.paths.home / FULL_REQUEST
        if not request.exists() or "full" not in self.cfg.profiles or self.stops.requested():
            return
        request.unlink(missing_ok=True)  # consumed: one full run per request
        self.baseline("full", description=f"full evaluation of the incumbent on request "
                                           f"({self.paths.rel(request)})")

    def _maybe_full(self) -> None:
        every = self.cfg.full_every_keeps
        if every <= 0 or "full" not in self.cfg.profiles or self.stops.requested():
            return
        keeps = sum(1 for r in self.session_rows
                    if r.get("status") == "keep" and not r.get("baseline"))
        if keeps % every == 0:
            self.baseline("full", description=f"full evaluation of the incumbent after "
                                               f"{keeps} keeps")

    # ---- session

    def _open_session(self) -> None:
        self.out(briefing.proposer_line(self.cfg))
        contained = self.proposer.containment()  # how an agent is confined, said at start
        if contained:
            self.out(contained)
        if self.cfg.judge_enabled:
            self.out(self.seal.describe())
        self.out(self.memory_line())
        now = self.start_facts()
        decision = continuity.decide(self.rows, now, new_session=self._new_session,
                                     resume=self._resume)
        if decision.session is not None:
            self.session = decision.session
            self.git = GitSession.open(self.paths.repo, self.session)
            self.out(f"continuing session {self.session} (branch {self.git.branch}): "
                     f"{decision.why}")
        else:
            self.session = unique_session_name(sessions(self.rows))
            self.git = GitSession.open(self.paths.repo, self.session)
            self._append({"type": "session", "session": self.session, "timestamp": utc_now(),
                          "branch": self.git.branch, "base_commit": self.git.head(),
                          **now.header_fields(), "proposer": self.cfg.proposer,
                          "sealed": self.seal.sealed,
                          **({"containment": contained} if contained else {})})
            self.out(f"new session {self.session} (branch {self.git.branch}): {decision.why}")
        self.state.session = self.session
        self.bookkeeping = Bookkeeping(self.git, self.paths.repo, self.proposer,
                                       self.tried_rows, self.warn)
        self.events.subscribers.insert(1 if self.workspace else 0, self.bookkeeping)
        self.judge = Judge(self.cfg, self.paths.repo, self.git.worktree, self.dataset,
                           self.dataset_id, LoopBench(self), self.seal)
        self.judge.earlier_rows = [r for r in self.rows if r.get("type") == "experiment"
                                   and r.get("session") != self.session]
        self._prove_seal()
        # The worktree is the daemon's: start every run from the branch head, except a
        # person's uncommitted backlog edits (`autogolf ideas add`), committed before proposing.
        self.bookkeeping.restore_keeping(self.bookkeeping.edits(None))
        self.out(f"ladder {' -> '.join(self.cfg.ladder)}, dataset {self.dataset_id}, "
                 f"worktree {self.paths.rel(self.git.worktree)}")
        for line in self._notes(self.rows, self.session):
            self.out(line)
        # Views kept in memory: re-scanning a long ledger per stage would dominate the loop.
        self.session_rows = session_experiments(self.rows, self.session)
        self.bookkeeping.commit()  # a person's backlog edits; rows recorded before a kill

    def start_facts(self) -> continuity.Start:
        """What a session is built from, now: your HEAD, the dataset, ladder and settings."""
        head = gitsession.git(self.paths.repo, "rev-parse", "HEAD").strip()
        return continuity.Start(head, self.dataset_id, tuple(self.cfg.ladder),
                                continuity.shaping_settings(self.cfg))

    def plan(self) -> list[str]:
        """What `run` would do now (`run --dry-run`), without running, locking or writing."""
        rows = Ledger(self.paths.ledger).rows()
        decision = continuity.decide(rows, self.start_facts(), new_session=self._new_session,
                                     resume=self._resume)
        contained = self.proposer.containment()
        session = (f"would continue session {decision.session}" if decision.session
                   else "would start a new session")
        return [briefing.proposer_line(self.cfg), *([contained] if contained else []),
                self.memory_line(), f"{session}: {decision.why}",
                f"ladder {' -> '.join(self.cfg.ladder)}, dataset {self.dataset_id}",
                *self._notes(rows, decision.session)]

    def memory_line(self) -> str:
        """The memory watchdog's setting, said at start (it is off by default)."""
        return watchdog.describe(self.cfg.max_memory_mb, self.cfg.min_available_memory_mb)

    def _notes(self, rows: list[dict], session: str | None) -> list[str]:
        """Warnings about what the night will not use or cannot show, then its cost."""
        warnings = [briefing.uncommitted_warning(self.paths.repo, self.cfg),
                    briefing.sample_warning(self.dataset, self.cfg.ladder),
                    *briefing.budget_warnings(self.cfg)]
        hours = self.rules.hours
        if self.rules.deadline is not None:
            hours = max(0.0, self.rules.deadline - time.time()) / 3600
        return [*(f"warning: {w}" for w in warnings if w),
                *nightcost.night_lines(rows, self.cfg, self.cfg.ladder, self.dataset_id,
                                       session, hours or None)]

    def _prove_seal(self) -> None:
        """The seal is proved, not assumed: a probe inside it must fail to read the
        validation shards, to write outside its outputs and to connect out."""
        if not self.seal.sealed:
            return
        prep = self.judge.scorer.prepared(self.cfg.ladder[0])
        seal.holds(self.seal, self.paths.repo, self.dataset.data_path,
                   worktree=self.git.worktree, data=[prep.data_path, prep.tokenizer_path],
                   trainer=self.git.worktree / TRAINER)

    def _start_guards(self) -> None:
        """The --hours budget (awake time) and the pre-flight checks, from now on."""
        self.stops.budget = awake.AwakeBudget(self.rules.hours) if self.rules.hours else None
        watch = preflight.DatasetWatch(self.cfg.dataset, self.dataset, self.dataset_id,
                                       self.cache_root)
        self._preflight = preflight.Preflight(self.paths.home, self.cfg.min_free_disk_mb, watch,
                                              self.git.worktree, self._foreign_changes)

    def _foreign_changes(self) -> list[str]:
        """Worktree changes the daemon did not make (a person's backlog edits are expected)."""
        return [f for f in self.git.changed_files() if f not in BOOKKEEPING_FILES]

    def _clear_stale_stop_file(self) -> None:
        # A stop file left from before this run started would stop it at once, silently.
        stop_file = self.rules.stop_file
        if stop_file is not None and stop_file.exists():
            stop_file.unlink(missing_ok=True)
            self.out(f"removed a stale stop file {self.paths.rel(stop_file)}")

    # ---- plumbing

    def _new_experiment(self, proposer: str, **kw) -> Experiment:
        exp_id = next_id(self.rows, self._in_flight)  # a nested baseline's parent is in flight
        self._in_flight.add(exp_id)
        return Experiment(id=exp_id, session=self.session, head=self.git.head(),
                          proposer=proposer, dataset=self.dataset_id,
                          base_code=self.git.code_hash(BOOKKEEPING_FILES), **kw)

    def _save_diff(self, exp: Experiment) -> None:
        """The candidate's diff as its patch file (atomic: `show` and resume read it)."""
        diff = self.git.diff()
        exp.diff_hash = diff_hash(diff)
        path = self.paths.experiment(exp.id) / "patch.diff"
        atomic_write(path, diff)
        exp.patch = self.paths.rel(path)

    def _incumbent_knobs(self) -> dict | None:
        if not self.cfg.knobs:
            return None
        try:
            return read_knobs(self.git.worktree, list(self.cfg.knobs))
        except KnobError:
            return None  # a knob line the proposer cannot read: it will say so itself

    def _history(self) -> list[dict]:
        """What proposers learn from: every session's experiments on this dataset, so a dead
        end of an earlier session is not tried again."""
        return [r for r in self.rows if r.get("type") == "experiment" and not r.get("manual")
                and r.get("dataset") == self.dataset_id]

    def worktree(self) -> Path:
        """The session worktree (known once the session is open)."""
        return self.git.worktree

    def ideas_file(self) -> Path:
        """The live ideas backlog, in the session worktree."""
        return self.git.worktree / IDEAS_FILE

    def tried_rows(self) -> list[dict]:
        """The rows the backlog's tried section lists (loop.backlog.bookkeeping)."""
        return tried_rows(self._history(), self.session)

    def say(self, line: str) -> None:
        self.out(line)

    def warn(self, message: str) -> None:
        self.out(f"warning: {message}")

    def _record_recovered(self, exp: Experiment, row: dict) -> None:
        """The row of an experiment a killed daemon left (the workspace releases its claim)."""
        self.events.recording(exp, row)
        self._append(row)

    def _append(self, row: dict) -> None:
        self.ledger.append(row)
        self.rows.append(row)
        self._in_flight.discard(row.get("id"))
        if row.get("type") == "experiment" and row.get("session") == self.session:
            self.session_rows.append(row)
