"""The loop: one experiment's lifecycle (SPEC 5), the profile ladder and the stop rules.

The scheduler only wires the other modules: the keep rule is loop.judge.decision's, git is
loop.store.gitsession's, child processes are loop.measure.runner's, parsing is
loop.measure.metrics' and loop.measure.logparse's, the backlog bookkeeping in the worktree is
loop.backlog.bookkeeping's, and noise
margins, re-runs, calibration, protocol and verification are loop.judge.trust's. What it owns is
the order of the stages, the incumbents per profile (derived from the session's ledger rows,
so nothing else has to be kept in sync) and resuming: a small state file, written before
every stage, says what to finish or undo after a kill.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psutil

from loop.backlog import ideas
from loop.backlog.bookkeeping import BOOKKEEPING_FILES, IDEAS_FILE, Backlog, tried_rows
from loop.config import Config, is_editable
from loop.daemon import awake, preflight
from loop.daemon.events import RunEvents
from loop.daemon.lock import DaemonLock
from loop.data import datasets
from loop.judge import decision, protocol
from loop.judge.trust import Decided as _Decided
from loop.judge.trust import Trust
from loop.measure import logparse, runner, watchdog
from loop.measure import metrics as metriclines
from loop.platform import blas_env
from loop.proposers.agent import AgentConfigError, AgentProposer
from loop.proposers.ideas import IdeasProposer
from loop.proposers.model import ModelSearchProposer, SearchStorageError, default_storage
from loop.proposers.rotation import Rotation
from loop.proposers.search import KnobError, SearchProposer, read_knobs
from loop.store import gitsession
from loop.store.gitsession import GitSession, diff_hash
from loop.store.ledger import Ledger
from loop.workspace.hook import WorkspaceHook

# Statuses that count towards the consecutive-failures stop rule.
FAILURES = frozenset({"crash", "timeout", "checks_failed", "invalid_metric", "metric_mismatch",
                      "agent_failed", "agent_timeout", "agent_no_change", "agent_touched_git"})
# Rows that say nothing about the change itself, so the same diff may be tried again.
NOT_MEASURED = frozenset({"interrupted", "duplicate"})
# A proposer that only repeats measured changes would otherwise spin forever writing rows.
MAX_CONSECUTIVE_DUPLICATES = 25
TRAINER = "benchmark/train_gpt_mlx.py"


_MODEL_PARAMS = re.compile(r"^model_params:(\d+)(?:\s|$)", re.MULTILINE)


class UserError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits 2."""


class _Abandon(Exception):
    """A stop was requested mid-experiment: undo the change, record `interrupted`."""


class _BaselineFailed(Exception):
    """The incumbent itself failed at a rung: no candidate can be judged there."""


# --------------------------------------------------------------------------- paths, state


@dataclass(frozen=True)
class Paths:
    repo: Path

    @property
    def home(self) -> Path:
        return self.repo / ".autogolf"

    @property
    def ledger(self) -> Path:
        return self.home / "ledger.jsonl"

    @property
    def lock(self) -> Path:
        return self.home / "lock"

    @property
    def state(self) -> Path:
        return self.home / "state.json"

    def experiment(self, exp_id: str) -> Path:
        return self.home / "experiments" / exp_id

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.repo))
        except ValueError:
            return str(path)


def read_state(path: Path) -> dict | None:
    """The daemon's state file, or None when absent or unreadable (then nothing to resume)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(path: Path, state: dict) -> None:
    """Atomic replace: a kill leaves either the old or the new state, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# --------------------------------------------------------------------------- ledger views


def sessions(rows: list[dict]) -> list[str]:
    """Session names in the order their headers were written."""
    return [r["session"] for r in rows if r.get("type") == "session" and r.get("session")]


def session_experiments(rows: list[dict], session: str | None) -> list[dict]:
    return [
        r
        for r in rows
        if r.get("type") == "experiment" and r.get("session") == session and not r.get("manual")
    ]


def incumbents(rows: list[dict], session: str | None, head: str | None = None,
               dataset: str | None = None, code: str | None = None) -> dict[str, dict]:
    """Per profile: the latest kept/baseline measurement of the session.

    With `code` (GitSession.code_hash: the tree without the bookkeeping files), only
    measurements of that code count (a keep at breadth makes an older confirm figure stale;
    a bookkeeping commit changes nothing); rows written before code hashes existed are
    matched by `head`, their commit. With `dataset`, only rows from that dataset (never
    compared across). Each value: {"val_bpb", "id", "commit"}.
    """
    found: dict[str, dict] = {}
    for row in session_experiments(rows, session):
        if row.get("status") != "keep":
            continue
        if not _same_code(row, "code", code, "commit", head) or (
                dataset and row.get("dataset") != dataset):
            continue
        for profile, rung in (row.get("rungs") or {}).items():
            value = rung.get("val_bpb") if isinstance(rung, dict) else None
            if isinstance(value, (int, float)):
                found[profile] = {"val_bpb": value, "id": row.get("id"),
                                  "commit": row.get("commit")}
    return found


def _same_code(row: dict, code_key: str, code: str | None, commit_key: str,
               commit: str | None) -> bool:
    """Whether `row` measured that code: by code hash, else (older rows) by commit."""
    if code and row.get(code_key):
        return row[code_key] == code
    return not commit or row.get(commit_key) == commit


def find_duplicate(rows: list[dict], digest: str, base_commit: str,
                   dataset: str | None, base_code: str | None = None) -> dict | None:
    """An earlier measurement of the same diff on the same incumbent code and dataset."""
    for row in rows:
        if (
            row.get("type") == "experiment"
            and row.get("diff_hash") == digest
            and _same_code(row, "base_code", base_code, "base_commit", base_commit)
            and row.get("dataset") == dataset
            and row.get("status") not in NOT_MEASURED
            and not row.get("baseline")
        ):
            return row
    return None


def next_id(rows: list[dict], reserved: set[str] | frozenset[str] = frozenset()) -> str:
    """The id after the highest E<n> among rows and in-flight ids (no row written yet).

    Same rule as Ledger.next_id, but over the rows the daemon already holds in memory: a
    re-read of a long ledger per experiment would dominate the loop's own overhead.
    """
    highest = 0
    for exp_id in [r.get("id") for r in rows] + list(reserved):
        text = str(exp_id or "")
        if text[:1] == "E" and text[1:].isdigit():
            highest = max(highest, int(text[1:]))
    return f"E{highest + 1:04d}"


def normalise_id(text: str) -> str:
    """"7", "e7", "E0007" -> "E0007"; anything else unchanged."""
    digits = text[1:] if text[:1] in "eE" else text
    return f"E{int(digits):04d}" if digits.isdigit() else text


# --------------------------------------------------------------------------- stop rules


@dataclass
class StopRules:
    max_experiments: int | None = None
    deadline: float | None = None  # time.time() after which no experiment starts
    max_consecutive_failures: int = 5  # 0 = never stop on failures
    stop_file: Path | None = None
    hours: float | None = None  # --hours: awake time (loop.daemon.awake), counted from run()


def deadline_from(until: str | None, hours: float | None,
                  now: datetime | None = None) -> float | None:
    """The earlier of `--until HH:MM` (next such local time) and `--hours H` from now."""
    now = now or datetime.now().astimezone()
    limits = []
    if hours is not None:
        if hours <= 0:
            raise UserError(f"--hours must be a positive number of hours, got {hours}")
        limits.append(now + timedelta(hours=hours))
    if until is not None:
        limits.append(_next_clock_time(until, now))
    return min(limits).timestamp() if limits else None


def _next_clock_time(until: str, now: datetime) -> datetime:
    try:
        hh, mm = (int(p) for p in until.split(":"))
        target = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    except ValueError:
        raise UserError(
            f"--until must be a local time HH:MM (24-hour), e.g. --until 07:30; got {until!r}"
        ) from None
    return target if target > now else target + timedelta(days=1)


# --------------------------------------------------------------------------- experiments


@dataclass
class Experiment:
    """Everything a ledger row needs; serialised into the state file before every stage."""

    id: str
    session: str | None
    head: str | None
    proposer: str
    description: str = ""
    baseline: bool = False
    manual: bool = False
    idea: str | None = None
    knobs: dict | None = None
    diff_hash: str | None = None
    patch: str | None = None
    dataset: str | None = None
    trainer_hash: str | None = None
    rungs: dict[str, dict] = field(default_factory=dict)
    incumbent_before: dict[str, float | None] = field(default_factory=dict)
    stage: str = "propose"
    verdict: dict | None = None  # {"status", "reason", "margin"} once decided
    base_code: str | None = None  # code hash of `head` (GitSession.code_hash)
    agent: dict | None = None  # how an agent proposer's attempt ended (its outcome, log...)
    trust: dict = field(default_factory=dict)  # issue 7: margin source, calibration, verify

    def row(self, commit: str | None = None, code: str | None = None) -> dict:
        """`code`: the code hash `commit` measured (a keep's or a baseline's), else None."""
        verdict = self.verdict or {}
        extra = {"agent": self.agent} if self.agent else {}
        extra |= self.trust
        return {
            "type": "experiment", "id": self.id, "session": self.session,
            "timestamp": utc_now(), "proposer": self.proposer, "idea": self.idea,
            "description": self.description, "knobs": self.knobs, "rungs": self.rungs,
            "status": verdict.get("status"), "reason": verdict.get("reason"),
            "margin": verdict.get("margin"), "incumbent_before": self.incumbent_before,
            "base_commit": self.head, "commit": commit, "patch": self.patch,
            "diff_hash": self.diff_hash, "dataset": self.dataset,
            "trainer_hash": self.trainer_hash, "manual": self.manual, "baseline": self.baseline,
            "base_code": self.base_code, "code": code,
        } | extra

    @classmethod
    def from_state(cls, data: dict) -> Experiment:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Measurement:
    rung: dict  # METRIC values + wall_s, exit_code, timed_out, log
    verdict: decision.Verdict | None  # None = a valid run
    val_bpb: float | None  # the daemon's own reading of the score


def measure(command: str, cwd: Path, env: dict[str, str], timeout_s: float, log_path: Path,
            cap_bytes: int, on_line: Callable[[str], None] | None = None,
            stop: Callable[[], bool] | None = None, grace_s: float = 10.0,
            guard: watchdog.RunGuard | None = None) -> Measurement:
    """Run one benchmark in `cwd` and judge its output with the daemon's own parsers.

    `guard` (memory watchdog + early abort) may end the run early; its verdict then wins.
    """
    trainer = cwd / TRAINER
    # Completes the artifact size when the log has no size total (upstream's trainer).
    trainer_bytes = trainer.stat().st_size if trainer.is_file() else None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if guard is not None:
        guard.forward, on_line, stop = on_line, guard.on_line, _either(stop, guard.stop)
    result = runner.run_command(command, cwd=cwd, env=env, timeout_s=timeout_s,
                                log_path=log_path, on_line=on_line, stop=stop, grace_s=grace_s,
                                on_start=guard.on_start if guard is not None else None)
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    values = metriclines.parse_metric_lines(text)
    parsed = logparse.parse_trainer_log(text)
    verdict = decision.judge_run(values, parsed, cap_bytes, result.exit_code, result.timed_out,
                                 trainer_bytes=trainer_bytes)
    if guard is not None and guard.verdict is not None:
        verdict = decision.Verdict(guard.verdict.status, guard.verdict.reason)
    verdict = _explain_failure(verdict, trainer, log_path)
    rung = _rung_figures(values, parsed, verdict)
    rung.update(wall_s=round(result.wall_s, 3), exit_code=result.exit_code,
                timed_out=result.timed_out, log=str(log_path))
    rung["protocol"] = protocol.read_protocol(parsed)  # what the trainer says it used
    if m := _MODEL_PARAMS.search(text):  # the search's size model: bytes per parameter
        rung["model_params"] = int(m.group(1))
    if guard is not None and guard.verdict is not None:
        rung["early_abort"] = guard.verdict.reason
    return Measurement(rung, verdict, rung.get("val_bpb") if verdict is None else None)


def _either(first: Callable[[], bool] | None, second: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: bool(first is not None and first()) or second()


def _explain_failure(verdict: decision.Verdict | None, trainer: Path,
                     log_path: Path) -> decision.Verdict | None:
    """A crash reason with the benchmark's last output line, and a missing trainer named."""
    if (verdict is None or verdict.status != "crash"
            or verdict.reason.startswith(("oom:", "diverged:"))):
        return verdict
    reason = f"{verdict.reason}; last output: {_last_line(log_path)}"
    if not trainer.is_file():
        reason += f"; the trainer {TRAINER} is missing from {trainer.parents[1]}"
    return dataclasses.replace(verdict, reason=reason)


def _rung_figures(values: dict[str, float], parsed: logparse.TrainerLog,
                  verdict: decision.Verdict | None) -> dict[str, Any]:
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


def commit_message(exp: Experiment) -> str:
    """Description, then one trailer line per rung with the figures that won."""
    lines = [exp.description or exp.id, "", f"Autogolf-Experiment: {exp.id}"]
    for profile, rung in exp.rungs.items():
        figures = " ".join(
            f"{k}={rung[k]}" for k in ("val_bpb", "total_bytes", "step_ms", "wall_s") if k in rung
        )
        incumbent = _fmt(exp.incumbent_before.get(profile))
        lines.append(f"Autogolf-{profile.capitalize()}: {figures} incumbent={incumbent}")
    lines.append(f"Autogolf-Margin: {_fmt((exp.verdict or {}).get('margin'))}")
    return "\n".join(lines) + "\n"


def kill_orphans(token: str | None) -> int:
    """Kill children a killed daemon left running (they carry its token in their env).

    The runner puts each child in its own process group, so a SIGKILLed daemon's benchmark
    keeps running; without this the resumed daemon would race it for the machine.
    """
    if not token:
        return 0
    killed = 0
    for proc in psutil.process_iter(["pid", "environ"]):
        env = proc.info.get("environ") or {}
        if env.get("AUTOGOLF_DAEMON_TOKEN") == token and proc.pid != os.getpid():
            with contextlib.suppress(psutil.Error):
                proc.kill()
                killed += 1
    return killed


# --------------------------------------------------------------------------- the daemon


class Scheduler:
    """`autogolf run`: experiments one after another until a stop rule fires."""

    def __init__(self, repo: Path, cfg: Config, rules: StopRules, *, new_session: bool = False,
                 proposer: Any = None, out: Callable[[str], None] = print,
                 events: RunEvents | None = None):
        self.paths = Paths(Path(repo).resolve())
        self.cfg = cfg
        self.rules = rules
        self.out = out
        self.events = events if events is not None else RunEvents()  # the live display
        self._new_session = new_session
        self.token = f"{os.getpid()}-{time.time_ns()}"  # in children's env: orphans are found
        self.proposer = proposer if proposer is not None else make_proposer(
            cfg, self.paths.repo, lambda: self.git.worktree, self._stopping, self.token)
        # The backlog and the tried section in the worktree (loop/backlog/bookkeeping.py).
        self.backlog = Backlog(lambda: self.git, self.paths.repo,
                               lambda: tried_rows(self._history(), self.session),
                               lambda message: self.out(f"warning: {message}"))
        self._signal: str | None = None
        self.fatal: str | None = None  # why the run cannot go on (e.g. a failed baseline)
        self._budget: awake.AwakeBudget | None = None  # set by _start_guards
        self._preflight: preflight.Preflight | None = None
        self.session: str | None = None
        self.session_rows: list[dict] = []  # this session's experiment rows, in order
        self.cache_root = datasets.cache_root(self.paths.repo)
        self.dataset = datasets.resolve(cfg.dataset, self.cache_root)  # DatasetError: fix-it text
        self.dataset_id = datasets.dataset_id(self.dataset)
        # The shared workspace (SPEC 10), or None; its hooks never raise into the loop.
        self.workspace = WorkspaceHook.create(cfg, self.paths.repo,
                                              lambda: self.git.worktree / IDEAS_FILE,
                                              ignore=BOOKKEEPING_FILES, out=out)
        # Trustworthy decisions (loop/judge/trust.py): noise margin, re-runs, calibration, the
        # frozen protocol, verification of a keep. Lambdas: overrides and patches still apply.
        self.trust = Trust(
            cfg, self.paths.repo, lambda: self.git.worktree, self.dataset, self.dataset_id,
            measure=lambda *args, **kw: self._measure(*args, **kw),
            stage=lambda exp, stage: self._stage(exp, stage),
            stopping=lambda: self._signal,
            abandon_if_stopping=lambda when: self._abandon_if_stopping(when),
            set_aside=lambda exp: self.backlog.restore_keeping(self.backlog.edits(exp.patch)),
            put_back=lambda exp: self.git.apply_patch((self.paths.repo / exp.patch).read_text()),
            baseline=lambda profile, text: self._baseline(profile, description=text),
            out=lambda line: self.out(line))

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
            with self._signals():
                try:
                    # Inside the try: a failure to resume or open the session also leaves
                    # a stop row saying why.
                    self._recover()
                    self._open_session()
                    self._clear_stale_stop_file()
                    self._start_guards()
                    reason = self._loop()
                except Exception as exc:
                    # The ledger says why the night ended; the next `run` resumes the rest.
                    self._stop_row(f"error: {type(exc).__name__}: {exc}")
                    raise
            self._stop_row(reason)
            write_state(self.paths.state, {"session": self.session, "experiment": None,
                                           "stage": "stopped", "reason": reason})
        self.out(f"stopped: {reason}")
        return reason

    def _stop_row(self, reason: str) -> None:
        self._append({"type": "stop", "session": self.session, "timestamp": utc_now(),
                      "reason": reason})

    def _loop(self) -> str:
        done = failures = duplicates = 0
        while True:
            reason = self._stop_reason(done, failures, duplicates)
            if reason:
                return reason
            if not self._first_rung_incumbent():
                continue  # the baseline failed or was interrupted: _stop_reason says why
            row = self._experiment()
            if row is None:
                return "the proposer has nothing left to propose"
            done += 1
            failures = failures + 1 if row["status"] in FAILURES else 0
            duplicates = duplicates + 1 if row["status"] == "duplicate" else 0
            if row["status"] == "keep":
                self._maybe_full()
                self.trust.maybe_recalibrate(self.session_rows)
            if row["status"] == "agent_touched_git":
                self.fatal = (f"{row['id']} agent_touched_git: {row['reason']}; check the "
                              "repository's git config, hooks and refs before running again")

    def _stop_reason(self, done: int, failures: int, duplicates: int) -> str | None:
        rules = self.rules
        if self._signal:
            return f"stopped by {self._signal}"
        if self.fatal:
            return self.fatal
        if rules.max_experiments is not None and done >= rules.max_experiments:
            return f"reached --max-experiments {rules.max_experiments}"
        if rules.deadline is not None and time.time() >= rules.deadline:
            return "reached the time limit (--until/--hours)"
        if self._budget is not None and self._budget.expired():
            return f"reached --hours {rules.hours:g} of awake time (sleep is not counted)"
        if rules.stop_file is not None and rules.stop_file.exists():
            rules.stop_file.unlink(missing_ok=True)  # consumed, so the next `run` runs
            return f"stop file {self.paths.rel(rules.stop_file)} found (removed)"
        if 0 < rules.max_consecutive_failures <= failures:
            return (f"{failures} consecutive failures (crash/timeout/checks/metric); "
                    "see the last rows")
        if duplicates >= MAX_CONSECUTIVE_DUPLICATES:
            return f"{duplicates} duplicates in a row: the proposer only repeats measured changes"
        problem = self._preflight.problem() if self._preflight is not None else None
        return f"pre-flight: {problem}" if problem else None

    def _start_guards(self) -> None:
        """The --hours budget (awake time) and the pre-flight checks, from now on."""
        self._budget = awake.AwakeBudget(self.rules.hours) if self.rules.hours else None
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

    def _signals(self) -> contextlib.AbstractContextManager[None]:
        # The handler only sets the flag (printing there could re-enter a print in
        # progress); the runner's stop callback then ends the child, and the loop records.
        def note(name: str) -> None:
            self._signal = name

        return catch_stop_signals(note)

    def _stopping(self) -> bool:
        return self._signal is not None

    # ---- session and resume

    def _open_session(self) -> None:
        names = sessions(self.rows)
        if names and not self._new_session:
            self.session = names[-1]
            self.git = GitSession.open(self.paths.repo, self.session)
            self.out(f"continuing session {self.session} (branch {self.git.branch})")
        else:
            self.session = _unique_session_name(names)
            self.git = GitSession.open(self.paths.repo, self.session)
            self._append({"type": "session", "session": self.session, "timestamp": utc_now(),
                          "branch": self.git.branch, "base_commit": self.git.head(),
                          "dataset": self.dataset_id, "ladder": list(self.cfg.ladder),
                          "proposer": self.cfg.proposer})
            self.out(f"new session {self.session} (branch {self.git.branch})")
        # The worktree is the daemon's: start every run from the branch head, except a
        # person's uncommitted backlog edits (`autogolf ideas add`), committed before proposing.
        self.backlog.restore_keeping(self.backlog.edits(None))
        self.out(f"ladder {' -> '.join(self.cfg.ladder)}, dataset {self.dataset_id}, "
                 f"worktree {self.paths.rel(self.git.worktree)}")
        # Views kept in memory: re-scanning a long ledger per stage would dominate the loop.
        self.session_rows = session_experiments(self.rows, self.session)
        self._next_number = int(next_id(self.rows)[1:])
        self.backlog.commit()  # a person's backlog edits; rows recorded before a kill

    def _recover(self) -> None:
        """Finish or undo the experiment a killed daemon left (state.json says which)."""
        state = read_state(self.paths.state)
        if not state or not state.get("experiment"):
            return
        kill_orphans(state.get("token"))
        git = GitSession.open(self.paths.repo, state["session"])
        known = {r.get("id") for r in self.rows if r.get("type") == "experiment"}
        undo_to = None
        for key in ("nested", "experiment"):
            data = state.get(key)
            if data and data.get("id") not in known:
                exp = Experiment.from_state(data)
                commit = self._recovered_commit(git, exp)
                code = gitsession.tree_hash(git.worktree, BOOKKEEPING_FILES, commit) \
                    if commit else None
                self._append(exp.row(commit, code))
                self.out(f"resumed: recorded {exp.id} as {exp.verdict['status']}")
                if key == "experiment" and commit is None and not exp.baseline:
                    undo_to = exp.head  # e.g. an agent killed with us had committed
        # To the branch head, never further back: a keep recorded before the kill stays.
        git.restore(to=undo_to)
        write_state(self.paths.state, {"session": state["session"], "experiment": None,
                                       "stage": "idle"})

    def _recovered_commit(self, git: GitSession, exp: Experiment) -> str | None:
        """Set exp.verdict for a row left unwritten; returns the kept commit, if any."""
        stage = exp.stage
        won = (exp.verdict or {}).get("status") == "keep"
        if exp.baseline:
            exp.verdict = {"status": "interrupted", "margin": None,
                           "reason": f"daemon stopped during the baseline ({stage})"}
            return None
        if won and git.head() != exp.head:
            return git.head()  # the kill came after the commit
        if won and diff_hash(git.diff()) == exp.diff_hash:
            return git.commit(commit_message(exp))  # the winning change is still on disk
        if won or not exp.verdict:
            exp.verdict = {"status": "interrupted", "margin": None,
                           "reason": f"daemon stopped during {stage}; change undone, patch kept"}
        return None

    # ---- one experiment

    def _new_experiment(self, proposer: str, **kw: Any) -> Experiment:
        exp_id = f"E{self._next_number:04d}"  # ids are never reused, even when unrecorded
        self._next_number += 1
        return Experiment(id=exp_id, session=self.session, head=self.git.head(),
                          proposer=proposer, dataset=self.dataset_id,
                          base_code=self.git.code_hash(BOOKKEEPING_FILES), **kw)

    def _experiment(self) -> dict | None:
        if self.workspace:  # others' claims, results and kept patches (ideas) before choosing
            self.workspace.sync()
        self.backlog.commit()  # e.g. a person's `autogolf ideas add` since the last one
        exp = self._new_experiment(getattr(self.proposer, "name", self.cfg.proposer))
        self._stage(exp, "propose")
        self._emit("proposing", exp.id, exp.proposer)
        proposal = self.proposer.propose(self.git.worktree, self._history())
        if proposal is None:
            self.git.restore()
            self.backlog.report_skipped(self.proposer)
            self.backlog.commit()
            self._idle()
            self._next_number -= 1  # nothing was tried: the id stays free
            return None
        exp.description, exp.knobs, exp.idea = proposal.description, proposal.knobs, proposal.idea
        exp.proposer = getattr(self.proposer, "name", exp.proposer)  # a rotation's current one
        self._emit("experiment_started", exp.id, exp.proposer, exp.idea, exp.description)
        try:
            self._agent_outcome(exp, getattr(proposal, "outcome", None))
            self._validate(exp)
            self._claim_in_workspace(exp)
            self._checks(exp)
            self._climb(exp)
        except _Decided as decided:
            exp.verdict = decided.verdict
        except _Abandon as stop:
            exp.verdict = {"status": "interrupted", "reason": str(stop), "margin": None}
        except _BaselineFailed as failed:
            self.fatal = str(failed)
            exp.verdict = {"status": "interrupted", "margin": None,
                           "reason": f"not judged: {failed}"}
        return self._finish(exp)

    def _agent_outcome(self, exp: Experiment, outcome: Any) -> None:
        """An agent proposer's attempt: record how it ended; one that left nothing to
        validate (failed, timed out, no change, touched git) is decided here."""
        if outcome is None:
            return
        exp.agent = {"outcome": outcome.kind, "reason": outcome.reason,
                     "exit_code": outcome.exit_code, "wall_s": round(outcome.wall_s, 3),
                     "log": self.paths.rel(outcome.log_path),
                     "prompt": self.paths.rel(outcome.prompt_path),
                     "undone_commit": outcome.undone_commit}
        self._abandon_if_stopping("while the agent worked")
        if outcome.status is None:
            return  # agent_ok / agent_committed (already undone): validated like any diff
        if outcome.status != "agent_touched_git":  # no more git there than the restore
            with contextlib.suppress(gitsession.GitError):
                diff = self.git.diff()
                exp.diff_hash, exp.patch = diff_hash(diff), self._save_patch(exp.id, diff)
        raise _Decided(outcome.status, outcome.reason)

    def _validate(self, exp: Experiment) -> None:
        self._stage(exp, "validate")
        changed = self.git.changed_files()
        diff = self.git.diff()
        exp.diff_hash = diff_hash(diff)
        exp.patch = self._save_patch(exp.id, diff)
        exp.trainer_hash = file_hash(self.git.worktree / TRAINER)
        forbidden = [f for f in changed if not is_editable(self.cfg, f)]
        if forbidden:
            raise _Decided("forbidden_edit", "touches files outside the editable set: "
                           + ", ".join(sorted(forbidden)))
        if not changed:
            raise _Decided("duplicate", "the proposal changed nothing: it is the incumbent")
        earlier = find_duplicate(self.rows, exp.diff_hash, exp.head, self.dataset_id,
                                 exp.base_code)
        if earlier:
            raise _Decided("duplicate", f"same change as {earlier['id']} ({earlier['status']}) "
                           f"on incumbent {exp.head[:10]}; not re-run")

    def _claim_in_workspace(self, exp: Experiment) -> None:
        """Skip a change another agent claimed or measured on the same incumbent; else claim."""
        if not self.workspace:
            return
        taken = self.workspace.duplicate(exp)
        if taken:
            raise _Decided("duplicate", taken)
        self.workspace.claim(exp)

    def _checks(self, exp: Experiment) -> None:
        self._abandon_if_stopping("before the checks")
        self._stage(exp, "checks")
        log = self.paths.experiment(exp.id) / "checks.log"
        result = runner.run_command(self.cfg.checks_command, cwd=self.git.worktree,
                                    env=self._env(exp.id, None),
                                    timeout_s=self.cfg.checks_timeout_s, log_path=log,
                                    stop=self._stopping, grace_s=self.cfg.kill_grace_s)
        self._abandon_if_stopping("during the checks")
        if result.timed_out:
            raise _Decided("checks_failed", f"checks timed out after {self.cfg.checks_timeout_s:g}"
                           f" s (see {self.paths.rel(log)})")
        if result.exit_code != 0:
            raise _Decided("checks_failed", f"checks exited {result.exit_code}: "
                           f"{_last_line(log)} (see {self.paths.rel(log)})")

    def _climb(self, exp: Experiment) -> None:
        """The ladder: win at every rung (cheap first) or stop at the first that is not won."""
        known = incumbents(self.session_rows, self.session, exp.head, self.dataset_id,
                           exp.base_code)
        exp.incumbent_before = {p: known.get(p, {}).get("val_bpb") for p in self.cfg.ladder}
        reasons = []
        for profile in self.cfg.ladder:
            incumbent = self._incumbent_at(exp, profile)
            self._abandon_if_stopping(f"before the {profile} benchmark")
            self._stage(exp, f"benchmark:{profile}")
            self.out(f"{exp.id} {profile}: {exp.description}")
            run = self._measure(exp, profile)
            self._abandon_if_stopping(f"during the {profile} benchmark")
            if run.verdict is not None:
                raise _Decided(run.verdict.status, f"at {profile}: {run.verdict.reason}")
            incumbent, n_incumbent = self.trust.check_protocol(
                exp, profile, run, incumbent, self._incumbent_rung(exp, profile))
            judged = self.trust.judge(self.session_rows, exp, profile, run.val_bpb, incumbent,
                                      n_incumbent)
            verdict, margin = judged.verdict, judged.margin
            if verdict.status != "keep":
                self.trust.drop_artifact(exp.rungs[profile])
                raise _Decided(verdict.status, f"at {profile}: {verdict.reason}", margin)
            reasons.append(f"at {profile}: {verdict.reason}")
            self.out(f"{exp.id} wins at {profile}: {_fmt(run.val_bpb)} vs {_fmt(incumbent)}")
        exp.verdict = {"status": "keep", "reason": "; ".join(reasons), "margin": margin}
        self.trust.verify_keep(exp)

    def _incumbent_at(self, exp: Experiment, profile: str) -> float | None:
        """The incumbent's score at a rung, measuring it first if this session has none."""
        if exp.incumbent_before.get(profile) is not None:
            return exp.incumbent_before[profile]
        # Set the candidate aside (its patch is saved), measure the branch head, put it back.
        self._stage(exp, f"baseline:{profile}")
        # A person's backlog edits stay (git apply below leaves files outside the patch alone).
        self.backlog.restore_keeping(self.backlog.edits(exp.patch))
        row = self._baseline(profile, parent=exp)
        if row["status"] == "interrupted":
            raise _Abandon(f"stopped by {self._signal} during the {profile} baseline")
        if row["status"] != "keep":
            raise _BaselineFailed(f"the incumbent failed its {profile} baseline "
                                  f"({row['id']}: {row['status']})")
        try:
            self.git.apply_patch((self.paths.repo / exp.patch).read_text())
        except (OSError, gitsession.GitError) as exc:
            # A saved patch that is damaged or gone: the candidate cannot be put back.
            raise _Abandon(f"its saved patch {exp.patch} could not be re-applied after the "
                           f"{profile} baseline: {' '.join(str(exc).split())}") from exc
        exp.incumbent_before[profile] = row["rungs"][profile]["val_bpb"]
        return exp.incumbent_before[profile]

    def _finish(self, exp: Experiment) -> dict:
        """Commit a winner or restore the worktree, then append the one row."""
        commit = code = None
        touched_git = exp.verdict["status"] == "agent_touched_git"
        # A person's backlog edits made meanwhile are neither the candidate nor to be lost.
        saved = {} if touched_git else self.backlog.edits(exp.patch)
        if exp.verdict["status"] == "keep":
            self._stage(exp, "commit")
            self.backlog.reset_files(saved)
            commit = self.git.commit(commit_message(exp))
            code = self.git.code_hash(BOOKKEEPING_FILES)
            self.backlog.put_back(saved)
        else:
            self._stage(exp, "restore")
            self.backlog.restore_keeping(saved, to=exp.head)  # also undoes a proposer's own commits
        if (exp.agent or {}).get("undone_commit"):
            exp.verdict["reason"] += (f" (the agent's own commit "
                                      f"{exp.agent['undone_commit'][:10]} was undone)")
        row = exp.row(commit, code)
        if self.workspace:  # result post, results JSON, kept patch; sets row["workspace"]
            self.workspace.publish(exp, row)
        self._stage(exp, "record")
        self._append(row)
        self._observe(row)
        self._idle()
        self.out(_summary(row))
        self._emit("decided", row["id"], row["status"], row["reason"])
        if not touched_git:  # no more git in a repository the agent may have rigged
            self.backlog.record(row, self.proposer)
        return row

    # ---- baselines and `full`

    def _first_rung_incumbent(self) -> bool:
        """Measure the incumbent at the ladder's first rung when the session has none yet."""
        profile = self.cfg.ladder[0]
        head = self.git.head()
        if profile in incumbents(self.session_rows, self.session, head, self.dataset_id,
                                 self.git.code_hash(BOOKKEEPING_FILES)):
            return True
        row = self._baseline(profile)
        if row["status"] not in ("keep", "interrupted"):
            self.fatal = (f"the incumbent failed its {profile} baseline ({row['id']}: "
                           f"{row['status']}): fix the benchmark, then `autogolf run` again")
        return row["status"] == "keep"

    def _baseline(self, profile: str, parent: Experiment | None = None,
                  description: str | None = None) -> dict:
        head = self.git.head()
        exp = self._new_experiment("baseline", baseline=True,
                                   description=description or f"baseline {head[:10]} at {profile}")
        exp.trainer_hash = file_hash(self.git.worktree / TRAINER)
        exp.knobs = self._incumbent_knobs()  # the search proposer moves from these
        exp.stage = f"benchmark:{profile}"
        self._write_state(parent or exp, exp if parent else None)
        self.out(f"{exp.id} {profile}: {exp.description}")
        self._emit("experiment_started", exp.id, "baseline", None, exp.description)
        run = self._measure(exp, profile)
        if self._signal:
            exp.verdict = {"status": "interrupted", "margin": None,
                           "reason": f"stopped by {self._signal} during the baseline"}
        elif run.verdict is not None:
            exp.verdict = {"status": run.verdict.status, "margin": None,
                           "reason": f"baseline at {profile}: {run.verdict.reason}"}
        else:
            self.trust.calibrate(exp, profile)
            exp.verdict = {"status": "keep", "reason": "baseline", "margin": None}
        row = exp.row(commit=head, code=exp.base_code)
        self._append(row)
        if parent is None:
            self._idle()
        self.out(_summary(row))
        self._emit("decided", row["id"], row["status"], row["reason"])
        return row

    def _incumbent_rung(self, exp: Experiment, profile: str) -> dict:
        known = incumbents(self.session_rows, self.session, exp.head, self.dataset_id,
                           exp.base_code).get(profile) or {}
        row = next((r for r in self.session_rows if r.get("id") == known.get("id")), {})
        return (row.get("rungs") or {}).get(profile) or {}

    def _maybe_full(self) -> None:
        every = self.cfg.full_every_keeps
        if every <= 0 or "full" not in self.cfg.profiles or self._signal:
            return
        keeps = sum(1 for r in self.session_rows
                    if r.get("status") == "keep" and not r.get("baseline"))
        if keeps % every == 0:
            self._baseline("full", description=f"full evaluation of the incumbent after "
                                               f"{keeps} keeps")

    # ---- plumbing

    def _measure(self, exp: Experiment, profile: str, tag: str = "",
                 env_extra: dict[str, str] | None = None) -> Measurement:
        """One benchmark run; `tag` marks an extra run (re-run, calibration) kept apart."""
        if profile not in self.cfg.profiles:
            raise UserError(f"profile {profile!r} is in the ladder but not under `profiles:` "
                            "in autogolf.yaml; add it with a timeout_s")
        log = self.paths.experiment(exp.id) / f"bench-{profile}{tag}.log"
        self._emit("rung_started", exp.id, profile, tag)
        env = self._env(exp.id + tag, profile) | (env_extra or {})
        if self.cfg.verify_enabled:
            env["KEEP_MODEL"] = "1"  # the artifact outlives the script, for loop/judge/verify.py
        run = measure(self.cfg.benchmark_command, self.git.worktree, env,
                      self.cfg.profiles[profile].timeout_s, log, self.cfg.artifact_cap_bytes,
                      on_line=lambda line: self._emit("output_line", line),
                      stop=self._stopping, grace_s=self.cfg.kill_grace_s,
                      guard=bench_guard(self.cfg, profile))
        run.rung["log"] = self.paths.rel(log)
        if tag:
            self.trust.drop_artifact(run.rung)
            exp.rungs.setdefault(profile, {}).setdefault("run_logs", []).append(run.rung["log"])
        else:
            exp.rungs[profile] = run.rung
            if exp.baseline or profile != self.cfg.ladder[-1]:
                self.trust.drop_artifact(run.rung)  # only a last-rung candidate is ever verified
        return run

    def _env(self, exp_id: str, profile: str | None) -> dict[str, str]:
        return bench_env(self.cache_root, self.dataset, self.token, exp_id, profile)

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

    def _save_patch(self, exp_id: str, diff: str) -> str:
        path = self.paths.experiment(exp_id) / "patch.diff"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic, like the state file: a kill mid-write must not leave half a patch that a
        # resumed daemon (or `show`) would take for the whole change.
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(diff)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return self.paths.rel(path)

    def _abandon_if_stopping(self, when: str) -> None:
        if self._signal:
            raise _Abandon(f"stopped by {self._signal} {when}")

    def _stage(self, exp: Experiment, stage: str) -> None:
        exp.stage = stage
        self._write_state(exp)

    def _write_state(self, exp: Experiment, nested: Experiment | None = None) -> None:
        write_state(self.paths.state, {
            "session": self.session, "pid": os.getpid(), "token": self.token,
            "experiment": dataclasses.asdict(exp),
            "nested": dataclasses.asdict(nested) if nested else None,
            "stage": (nested or exp).stage, "updated": utc_now(),
        })

    def _idle(self) -> None:
        write_state(self.paths.state, {"session": self.session, "pid": os.getpid(),
                                       "experiment": None, "stage": "idle"})

    def _append(self, row: dict) -> None:
        self.ledger.append(row)
        self.rows.append(row)
        if row.get("type") == "experiment" and row.get("session") == self.session:
            self.session_rows.append(row)

    def _observe(self, row: dict) -> None:
        """Tell a proposer that learns after each verdict (the search's Optuna study)."""
        observe = getattr(self.proposer, "observe", None)
        if not callable(observe):
            return
        try:
            observe(row)
        except Exception as exc:  # a study that cannot be written must not stop the night
            self.out(f"warning: the proposer could not record {row.get('id')}: {exc}")

    def _emit(self, event: str, *args: Any) -> None:
        """Tell the observer (loop.daemon.events); a display that fails never stops the loop."""
        with contextlib.suppress(Exception):
            getattr(self.events, event)(*args)


@contextlib.contextmanager
def catch_stop_signals(on_signal: Callable[[str], None]) -> Iterator[None]:
    """SIGINT/SIGTERM call `on_signal(name)` instead of killing us (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        on_signal(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def bench_guard(cfg: Config, profile: str) -> watchdog.RunGuard:
    """Memory watchdog (limits:) and early abort (the profile's timeout) for one benchmark."""
    return watchdog.guard_for(cfg.profiles[profile].timeout_s, cfg.max_memory_mb,
                              cfg.min_available_memory_mb)


def bench_env(cache_root: Path, dataset: datasets.DatasetInfo, token: str, exp_id: str,
              profile: str | None) -> dict[str, str]:
    """The environment of a benchmark (or checks) child, per DESIGN.md."""
    env = dict(os.environ)
    env.update(blas_env(env))
    env.update(PYTHON=sys.executable, AUTOGOLF_CACHE_ROOT=str(cache_root),
               AUTOGOLF_DAEMON_TOKEN=token,
               # The benchmark measures exactly the dataset the ledger row will name.
               DATA_PATH=str(dataset.data_path), TOKENIZER_PATH=str(dataset.tokenizer_path))
    if profile is not None:
        env.update(PROFILE=profile, RUN_ID=f"{exp_id}-{profile}")
    return env


def manual_bench(repo: Path, cfg: Config, profile: str,
                 on_line: Callable[[str], None] | None = None,
                 out: Callable[[str], None] = print) -> dict:
    """`autogolf bench`: one run of one profile on the user's checkout, one manual row."""
    paths = Paths(Path(repo).resolve())
    if profile not in cfg.profiles:
        raise UserError(f"unknown profile {profile!r}; known: {', '.join(cfg.profiles)}")
    cache = datasets.cache_root(paths.repo)
    dataset = datasets.resolve(cfg.dataset, cache)
    stopped: list[str] = []
    # The same lock as the daemon's: one benchmark at a time on this machine.
    with DaemonLock(paths.lock), catch_stop_signals(stopped.append):
        ledger = Ledger(paths.ledger)
        exp = Experiment(id=next_id(ledger.rows()), session=None, head=None, proposer="manual",
                         manual=True, dataset=datasets.dataset_id(dataset),
                         description=f"manual bench at {profile}")
        _describe_checkout(paths, exp)
        log = paths.experiment(exp.id) / f"bench-{profile}.log"
        out(f"{exp.id}: log {paths.rel(log)}")
        run = measure(cfg.benchmark_command, paths.repo,
                      bench_env(cache, dataset, f"manual-{os.getpid()}", exp.id, profile),
                      cfg.profiles[profile].timeout_s, log, cfg.artifact_cap_bytes,
                      on_line=on_line, stop=lambda: bool(stopped), grace_s=cfg.kill_grace_s,
                      guard=bench_guard(cfg, profile))
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
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(diff)
        exp.patch = paths.rel(path)


def _manual_verdict(run: Measurement, stopped: list[str]) -> dict:
    if stopped:
        return {"status": "interrupted", "reason": f"stopped by {stopped[0]}", "margin": None}
    if run.verdict is not None:
        return {"status": run.verdict.status, "reason": run.verdict.reason, "margin": None}
    return {"status": "keep", "margin": None,
            "reason": "manual run: recorded, never compared with the incumbents"}


def make_proposer(cfg: Config, repo: Path, worktree: Callable[[], Path] | None = None,
                  stop: Callable[[], bool] | None = None, token: str | None = None) -> Any:
    """The proposer `autogolf.yaml` names (or its rotation), built from its settings.

    `worktree` gives the session worktree once it exists (the ideas proposer reads the
    backlog there); `stop` ends a running agent early (a stop signal); `token` goes into the
    agent's environment so a resumed daemon kills an agent its killed predecessor left.
    """
    names = cfg.proposer_rotation or (cfg.proposer,)
    built = {name: _proposer(name, cfg, repo, worktree or (lambda: repo), stop, token)
             for name in dict.fromkeys(names)}
    return built[names[0]] if len(names) == 1 else Rotation([built[n] for n in names])


def _proposer(name: str, cfg: Config, repo: Path, worktree: Callable[[], Path],
              stop: Callable[[], bool] | None, token: str | None) -> Any:
    if name == "ideas":
        return IdeasProposer(lambda: ideas.IdeasFile.load(worktree() / IDEAS_FILE,
                                                          missing_ok=True), cfg.knobs)
    if name == "agent":
        return _agent_proposer(cfg, repo, stop, token)
    if not cfg.knobs:
        raise UserError("the search proposer has no knobs: declare some under `knobs:` in "
                        "autogolf.yaml")
    # A knob whose file or line is missing is refused now, naming both, not after a baseline.
    read_knobs(repo, list(cfg.knobs))
    if cfg.search_strategy == "local":
        return SearchProposer(list(cfg.knobs), seed=cfg.proposer_seed,
                              cap_bytes=cfg.artifact_cap_bytes)
    try:
        return ModelSearchProposer(
            list(cfg.knobs), strategy=cfg.search_strategy, ladder=cfg.ladder,
            storage=cfg.search_storage or default_storage(Paths(repo).home),
            cap_bytes=cfg.artifact_cap_bytes, seed=cfg.proposer_seed)
    except SearchStorageError as exc:
        raise UserError(str(exc)) from None


def _agent_proposer(cfg: Config, repo: Path, stop: Callable[[], bool] | None,
                    token: str | None) -> AgentProposer:
    if not cfg.agent_command:
        raise UserError("the agent proposer has no command: set `agent: command: [...]` in "
                        "autogolf.yaml (README has examples for pi, claude, codex and aider)")
    try:
        return AgentProposer(cfg.agent_command, cfg.agent_timeout_s,
                             Paths(repo).home / "agent", editable=cfg.editable,
                             protected=cfg.protected, last_rows=cfg.agent_last_rows,
                             grace_s=cfg.kill_grace_s, stop=stop,
                             env={"AUTOGOLF_DAEMON_TOKEN": token} if token else None)
    except AgentConfigError as exc:
        raise UserError(f"agent.command: {exc}") from None


def _unique_session_name(existing: list[str]) -> str:
    base = datetime.now().strftime("%Y%m%d-%H%M")
    name, n = base, 1
    while name in existing:
        n += 1
        name = f"{base}-{n}"
    return name


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no output)"
    return lines[-1][:200] if lines else "(no output)"


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4f}"


def _summary(row: dict) -> str:
    scores = " ".join(f"{p}={_fmt(r.get('val_bpb'))}" for p, r in (row.get("rungs") or {}).items())
    why = "" if row.get("reason") == "baseline" else f"  ({row.get('reason')})"
    return f"{row['id']} {row['status']:<15} {scores or '-'}  {row.get('description')}{why}"
