"""The `agent` proposer: an external coding agent makes one change in the worktree.

The agent is any command, configured as an argument list with placeholders:

    {prompt_file}   the prompt written for this attempt (a Markdown file outside the worktree)
    {prompt}        the same text inline, for CLIs that take the prompt as an argument
    {worktree}      the daemon's worktree (also the agent's working directory)
    {summary_file}  where the agent may write a one-line description of its change

docs/AGENT_NIGHT.md lists command lines for pi, claude, codex and aider (tests/test_agent_clis.py
runs each of them, read from that page, against a stand-in executable of that name).

What the daemon enforces, whatever the prompt says: the agent runs in its own process group
with a timeout (loop.measure.runner), so a hung agent and everything it started is killed.
Afterwards the attempt gets one outcome (`AgentOutcome.kind`), most severe first:

    agent_touched_git  git metadata changed (config, hooks, refs other than the session
                       branch, HEAD, a nested .git): not undone here except the worktree's own
                       HEAD and `.git` file; the scheduler must not trust the repo blindly
    agent_timeout      ran past its timeout and was killed
    agent_failed       exited non-zero
    agent_no_change    finished, but no file differs from the session head
    agent_committed    it committed on the session branch itself: the branch is moved back
                       with `git reset --mixed <old head>`, which keeps the agent's files in
                       the worktree, so its change is validated as a diff like any other
    agent_ok           finished with a change to validate

The first four are terminal (`outcome.status` is the ledger status, the worktree is to be
restored); the last two go on to the usual validation (editable set, duplicate, checks,
benchmark). Commits are undone in every case, before the outcome is returned.

Around that (`propose`): a failed or empty attempt whose output names a rate limit or an
overload is retried after an exponential backoff (loop.proposers.agentlimits), the worktree
restored between tries; the summary file's `idea:` line decides which idea the experiment is
credited to (loop.proposers.claim); the budgets of this run (agent time, reported cost or
tokens) are checked before each attempt, and once spent the proposer has nothing left to
propose (`why_done` says why). The prompt carries the evidence of loop.proposers.evidence.

Beside this module: loop.proposers.agentprompt writes the prompt's parts, and
loop.proposers.agentgit snapshots and compares the git metadata the agent must not change.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loop.backlog.ideas import Idea, IdeasError, IdeasFile, families
from loop.measure.runner import run_command
from loop.proposers import evidence
from loop.proposers.agentgit import GitState, undo_commits
from loop.proposers.agentlimits import Limits, Spend, Usage, parse_usage, rate_limited, wait
from loop.proposers.agentprompt import (
    bounded,
    cut,
    idea_section,
    imported_lines,
    incumbents_section,
    pick_idea,
    rows_section,
    rules_section,
)
from loop.proposers.base import Proposal, Proposer
from loop.proposers.claim import credit, read_summary
from loop.proposers.sandbox import Sandbox
from loop.settings.agent import PLACEHOLDER_PATTERN, placeholders_allowed, unknown_placeholders
from loop.store.gitsession import GitError, changed_files, git
from loop.store.verdict import Verdict

TERMINAL = ("agent_touched_git", "agent_timeout", "agent_failed", "agent_no_change")
OUTCOMES = (*TERMINAL, "agent_committed", "agent_ok")
LAST_ROWS = 12
MAX_DESCRIPTION = 200
ROTATE_AFTER_LOSSES = 3
RETRYABLE = ("agent_failed", "agent_no_change")  # a rate limit may end an attempt either way
class AgentConfigError(ValueError):
    """The agent command is unusable; the message says how to fix it."""


@dataclass
class AgentOutcome:
    kind: str  # one of OUTCOMES
    reason: str
    exit_code: int | None
    wall_s: float
    log_path: Path
    prompt_path: Path
    changed: list[str] = field(default_factory=list)
    undone_commit: str | None = None  # the agent's HEAD before we moved the branch back

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL

    @property
    def status(self) -> str | None:
        """The ledger status to record without validating, or None to validate the diff."""
        return self.kind if self.terminal else None

    def for_the_row(self, work_dir: Path) -> dict:
        """The Proposal fields the loop records: the attempt (the row's `agent`), the
        verdict of an attempt that left nothing to validate, a note on an undone commit."""
        home = work_dir.parent.parent  # work_dir is <repo>/.autogolf/agent
        attempt = {"outcome": self.kind, "reason": self.reason, "exit_code": self.exit_code,
                   "wall_s": round(self.wall_s, 3), "log": _rel(self.log_path, home),
                   "prompt": _rel(self.prompt_path, home), "undone_commit": self.undone_commit}
        note = (f" (the agent's own commit {self.undone_commit[:10]} was undone)"
                if self.undone_commit else None)
        return {"attempt": attempt, "note": note,
                "verdict": Verdict(self.status, self.reason) if self.status else None,
                "touched_git": self.kind == "agent_touched_git"}


@dataclass
class AgentProposal(Proposal):
    outcome: AgentOutcome | None = None


class AgentProposer(Proposer):
    name = "agent"

    def __init__(self, command: Sequence[str] | str, timeout_s: float, work_dir: Path, *,
                 doc_path: Path | None = None, ideas_path: Path | None = None,
                 editable: Sequence[str] = (), protected: Sequence[str] = (),
                 last_rows: int = LAST_ROWS, env: dict[str, str] | None = None,
                 grace_s: float = 10.0, stop: Callable[[], bool] | None = None,
                 wait_stop: Callable[[], bool] | None = None,
                 imported: Callable[[], list[dict]] | None = None,
                 sandbox: Sandbox | None = None,
                 limits: Limits | None = None, cap_bytes: int = 16_000_000,
                 rotate_after_losses: int = ROTATE_AFTER_LOSSES, home: Path | None = None):
        """`command`: argument list (a string is split like a shell would); `work_dir`: where
        each attempt's prompt, log and summary go (e.g. .autogolf/agent). `doc_path` and
        `ideas_path` default to autoresearch.md and autoresearch.ideas.md in the worktree.
        `stop`: polled while the agent runs; True kills it (a stop signal, the deadline).
        `wait_stop` (default: `stop`): polled while it waits out a rate limit; True ends the
        wait (the stop file too: nothing is in flight to let finish). `imported`: the ledger's
        rows imported from pi-autoresearch, read per prompt. `sandbox`: how the agent is
        confined (loop/proposers/sandbox.py); None: unconfined. `limits`: budgets and backoff;
        `home`: the repo that rung log paths are relative to (default: work_dir's grandparent)."""
        self.command = _check_command(command)
        if not timeout_s > 0:
            raise AgentConfigError(f"agent timeout must be positive, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.work_dir = Path(work_dir)
        self.doc_path, self.ideas_path = doc_path, ideas_path
        self.editable, self.protected = tuple(editable), tuple(protected)
        self.last_rows = last_rows
        self.env = dict(env or {})
        self.grace_s = grace_s
        self.stop = stop
        self.wait_stop = wait_stop or stop
        self.imported = imported
        self.limits = limits or Limits()
        self.cap_bytes = cap_bytes
        self.rotate_after_losses = rotate_after_losses
        self.home = Path(home) if home is not None else self.work_dir.parent.parent
        self.spend = Spend()  # this run's (a night's) use, against self.limits
        self.done: str | None = None  # why there is nothing left to propose
        self.last_outcome: AgentOutcome | None = None
        self.sandbox = sandbox or Sandbox(None, why_none="no sandbox was given")

    def containment(self) -> str | None:
        return self.sandbox.describe()

    def propose(self, worktree: Path, history: list[dict]) -> AgentProposal | None:
        """Run the agent in `worktree` (again after a rate limit, with backoff); None only
        once this run's budget is spent (`why_done`). What it did is in `outcome`."""
        worktree = Path(worktree).resolve()
        if worktree == self.work_dir.resolve() or worktree in self.work_dir.resolve().parents:
            # Prompt and log files there would be edits of their own (forbidden_edit).
            raise AgentConfigError(f"agent work_dir {self.work_dir} must be outside the "
                                   f"worktree {worktree}")
        self.done = self.spend.exhausted(self.limits)
        if self.done:
            return None
        attempt = _new_attempt_dir(self.work_dir)
        backlog = self._backlog(worktree)
        idea = pick_idea(backlog, history, self._rotated(backlog, history))
        prompt_path, summary_path = attempt / "prompt.md", attempt / "summary.txt"
        prompt = self.build_prompt(worktree, history, backlog, idea, summary_path)
        prompt_path.write_text(prompt, encoding="utf-8")
        values = {"prompt_file": str(prompt_path), "prompt": prompt,
                  "worktree": str(worktree), "summary_file": str(summary_path)}
        outcome, tries = self._run_with_backoff(
            worktree, [_fill(arg, values) for arg in self.command], attempt, prompt_path, values)
        self.last_outcome = outcome
        return self._proposal(outcome, tries, idea, backlog, summary_path)

    def why_done(self) -> str | None:
        return self.done

    def _proposal(self, outcome: AgentOutcome, tries: Tries, idea: Idea | None,
                  backlog: IdeasFile | None, summary_path: Path) -> AgentProposal:
        """The proposal, credited to the idea the agent says it tried (loop.proposers.claim)."""
        summary = read_summary(_read(summary_path) or "")
        suggested = idea.id if idea else None
        known = {i.id for i in backlog.ideas if i.valid} if backlog is not None else set()
        given = credit(summary.claim, suggested, known)
        fields = outcome.for_the_row(self.work_dir)
        fields["attempt"].update(tries.as_row(), claim=summary.claim, suggested=suggested)
        if not outcome.terminal and given.note:  # a note only where the idea is tested
            fields["note"] = (fields["note"] or "") + given.note
        return AgentProposal(description=_description(summary.description, outcome, idea),
                             knobs=None, idea=given.idea if not outcome.terminal else suggested,
                             outcome=outcome, **fields)

    def _rotated(self, backlog: IdeasFile | None, history: list[dict]) -> set[str]:
        if backlog is None:
            return set()
        return evidence.rotated_families(history, families(backlog), self.rotate_after_losses)

    # ---- the prompt

    def build_prompt(self, worktree: Path, history: list[dict], backlog: IdeasFile | None,
                     idea: Idea | None, summary_path: Path) -> str:
        doc = bounded(_read(self.doc_path or worktree / "autoresearch.md"), "autoresearch.md")
        ideas_text = bounded(backlog.text if backlog is not None else None,
                              "autoresearch.ideas.md")
        rows = [r for r in history if r.get("type", "experiment") == "experiment"]
        kinds = families(backlog) if backlog is not None else {}
        parts = [
            "# autogolf: one experiment for you\n",
            f"You are in `{worktree}`, a git worktree of the research repository on the "
            "daemon's session branch. Make ONE small, falsifiable change that should lower "
            "`val_bpb` (see the session document below), then stop. The daemon validates, "
            "benchmarks and keeps or discards your change itself.\n",
            "## Rules (enforced by the daemon, not by trust)\n",
            rules_section(self.editable, self.protected, summary_path, self.timeout_s),
            "## Idea to try\n",
            idea_section(idea, evidence.rotated_families(rows, kinds,
                                                          self.rotate_after_losses)),
            "## Incumbents (val_bpb of the latest keep per profile)\n",
            incumbents_section(rows),
            "## Evidence: how the incumbent and the last runs trained\n",
            evidence.runs_section(rows, self.home, self.cap_bytes),
            "## What has been tried, by idea family (the backlog's headings)\n",
            evidence.family_section(rows, kinds, self.rotate_after_losses),
            f"## Last {self.last_rows} experiments\n",
            rows_section(rows[-self.last_rows:]),
            *self._imported_section(),
            "## Session document (autoresearch.md)\n",
            doc if doc is not None else "(autoresearch.md not found)\n",
            "## Ideas backlog (autoresearch.ideas.md)\n",
            ideas_text if ideas_text else "(the backlog is empty or missing)\n",
        ]
        return "\n".join(p.rstrip("\n") + "\n" for p in parts)

    def _imported_section(self) -> list[str]:
        rows = self.imported() if self.imported else []
        if not rows:
            return []
        return ["## Tried in pi-autoresearch (imported: pi's own numbers, not judged here; "
                "do not repeat its dead ends, and do not take its keeps as our incumbent)\n",
                imported_lines(rows[-self.last_rows:])]

    def _backlog(self, worktree: Path) -> IdeasFile | None:
        try:
            return IdeasFile.load(self.ideas_path or worktree / "autoresearch.ideas.md")
        except IdeasError:
            return None  # a missing or unreadable backlog must not stop the agent

    # ---- running and judging

    def _run(self, worktree: Path, argv: list[str], attempt: Path, prompt_path: Path,
             values: dict[str, str]) -> AgentOutcome:
        before = GitState.take(worktree)
        env = {**os.environ, "PYTHON": sys.executable, **self.env,
               "AUTOGOLF_PROMPT_FILE": values["prompt_file"],
               "AUTOGOLF_SUMMARY_FILE": values["summary_file"],
               "AUTOGOLF_WORKTREE": values["worktree"]}
        confined = self.sandbox.wrap(argv, worktree, attempt, env)
        log = attempt / "agent.log"
        result = run_command(confined.argv, cwd=worktree, env=confined.env,
                             timeout_s=self.timeout_s, log_path=log, grace_s=self.grace_s,
                             stop=self.stop)
        touched = before.changes(worktree)
        before.repair(worktree)
        try:
            undone = undo_commits(worktree, before.head)
            changed = changed_files(worktree)
        except GitError as e:  # git itself broken by the agent
            touched.append(f"git fails in the worktree ({str(e).split(': ', 1)[-1][:80]})")
            undone, changed = None, []
        kind, reason = _judge(result.exit_code, result.timed_out, touched, undone, changed,
                              self.timeout_s, log)
        return AgentOutcome(kind, reason, result.exit_code, result.wall_s, log, prompt_path,
                            changed, undone)

    def _run_with_backoff(self, worktree: Path, argv: list[str], attempt: Path,
                          prompt_path: Path, values: dict[str, str]
                          ) -> tuple[AgentOutcome, Tries]:
        """`_run`, again after a wait while the attempt ended on a rate limit or overload
        (up to `limits.max_retries`, within the budget, until a stop request)."""
        tries = Tries()
        while True:
            outcome = self._run(worktree, argv, attempt, prompt_path, values)
            tries.ran(outcome)
            limited = self._rate_limit(outcome)
            tries.limited = limited or tries.limited
            if not limited or not self._may_retry(tries):
                break
            started = time.monotonic()
            waited = wait(self.limits.delay(tries.retries), self.wait_stop)
            tries.waited_s += time.monotonic() - started
            if not waited:
                break  # a stop request: the scheduler records `interrupted`
            tries.retries += 1
            tries.logs.append(_set_aside_log(outcome.log_path, tries.retries))
            _restore_worktree(worktree)
        if limited:  # the last try too: given up (retries, budget) or stopped
            outcome.reason = cut(f"rate-limited or overloaded (output matched "
                                  f"{limited!r}) after {tries.retries} retries, "
                                  f"{tries.waited_s:.0f} s of waiting: {outcome.reason}")
        outcome.wall_s = tries.wall_s
        self.spend.add(tries.wall_s, tries.waited_s, tries.retries, tries.usage)
        return outcome, tries

    def _rate_limit(self, outcome: AgentOutcome) -> str | None:
        if outcome.kind not in RETRYABLE:
            return None
        return rate_limited(_read(outcome.log_path) or "", self.limits.rate_limit_patterns)

    def _may_retry(self, tries: Tries) -> bool:
        if tries.retries >= self.limits.max_retries:
            return False
        after = Spend(wall_s=self.spend.wall_s + tries.wall_s,
                      usage=self.spend.usage.add(tries.usage))
        return after.exhausted(self.limits) is None


@dataclass
class Tries:
    """One proposal's runs of the agent: the retries after rate limits, and what they used."""

    wall_s: float = 0.0
    waited_s: float = 0.0
    retries: int = 0
    usage: Usage | None = None
    limited: str | None = None  # the rate-limit pattern a try matched (the latest)
    logs: list[str] = field(default_factory=list)  # earlier tries' logs, set aside

    def ran(self, outcome: AgentOutcome) -> None:
        self.wall_s += outcome.wall_s
        usage = parse_usage(_read(outcome.log_path) or "")
        self.usage = usage if self.usage is None else self.usage.add(usage)

    def as_row(self) -> dict:
        return {"tries": self.retries + 1, "retries": self.retries,
                "waited_s": round(self.waited_s, 3), "rate_limited": self.limited,
                "usage": self.usage.as_row() if self.usage is not None else None,
                "retried_logs": self.logs}


# --------------------------------------------------------------------------- the outcome


def _judge(exit_code: int | None, timed_out: bool, touched: list[str], undone: str | None,
           changed: list[str], timeout_s: float, log: Path) -> tuple[str, str]:
    """The most severe thing that happened, with a reason for the ledger."""
    if touched:
        return "agent_touched_git", cut("the agent changed git metadata: " + ", ".join(touched))
    if timed_out:
        return "agent_timeout", f"the agent ran past its {timeout_s:g} s timeout and was killed"
    if exit_code != 0:
        return "agent_failed", cut(f"the agent exited {exit_code}: {_last_line(log)}")
    if not changed:
        extra = " (its commit was undone and left no difference)" if undone else ""
        return "agent_no_change", f"the agent finished but changed no file{extra}"
    files = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
    if undone:
        return "agent_committed", cut(f"the agent committed {undone[:10]} itself; the commit "
                                       f"was undone and its change is validated as a diff: "
                                       f"{files}")
    return "agent_ok", cut(f"the agent changed {files}")


# --------------------------------------------------------------------------- small helpers


def _check_command(command: Sequence[str] | str) -> list[str]:
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise AgentConfigError("agent command must be a non-empty list of strings, e.g. "
                               '["claude", "-p", "{prompt}"]')
    unknown = unknown_placeholders(argv)
    if unknown:
        raise AgentConfigError(f"agent command: unknown placeholder {{{unknown[0]}}}; "
                               f"known: {placeholders_allowed()}")
    if shutil.which(argv[0]) is None:
        raise AgentConfigError(f"agent command {argv[0]!r} not found on PATH (or not "
                               "executable); install it or give its full path")
    return argv


def _fill(arg: str, values: dict[str, str]) -> str:
    return PLACEHOLDER_PATTERN.sub(lambda m: values.get(m.group(1), m.group(0)), arg)


def _new_attempt_dir(work_dir: Path) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[8:]) for p in work_dir.glob("attempt-*") if p.name[8:].isdigit()]
    attempt = work_dir / f"attempt-{max(numbers, default=0) + 1:04d}"
    attempt.mkdir()
    return attempt


def _description(text: str, outcome: AgentOutcome, idea: Idea | None) -> str:
    if not text:
        target = f"idea {idea.id}" if idea else "own idea"
        files = ", ".join(outcome.changed[:3]) or "no files"
        text = f"agent ({target}): {files}"
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 3] + "..."


def _set_aside_log(log: Path, retry: int) -> str:
    """Keep a retried try's log as agent-try<N>.log (the next try writes agent.log)."""
    kept = log.with_name(f"agent-try{retry}.log")
    with contextlib.suppress(OSError):
        log.replace(kept)
    return kept.name


def _restore_worktree(worktree: Path) -> None:
    """Back to the session head before a retry (the scheduler committed a person's backlog
    edits before asking, so the head is what the first try started from)."""
    git(worktree, "reset", "-q", "--hard")
    git(worktree, "clean", "-ffdq")


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _read(path: Path) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _last_line(path: Path) -> str:
    lines = [ln for ln in (_read(path) or "").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "(no output)"
