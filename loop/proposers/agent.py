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
Afterwards
the attempt gets one outcome (`AgentOutcome.kind`), most severe first:

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
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loop.backlog.ideas import Idea, IdeasError, IdeasFile, families, row_delta, tested_ideas
from loop.judge.verdict import Verdict
from loop.measure.runner import run_command
from loop.proposers import evidence
from loop.proposers.agentlimits import Limits, Spend, Usage, parse_usage, rate_limited, wait
from loop.proposers.base import Proposal, Proposer
from loop.proposers.claim import credit, read_summary
from loop.proposers.sandbox import Sandbox
from loop.store.gitsession import GitError, git

PLACEHOLDERS = ("prompt_file", "prompt", "worktree", "summary_file")
TERMINAL = ("agent_touched_git", "agent_timeout", "agent_failed", "agent_no_change")
OUTCOMES = (*TERMINAL, "agent_committed", "agent_ok")
LAST_ROWS = 12
MAX_REASON = 200
MAX_DESCRIPTION = 200
MAX_FILE_CHARS = 16_000  # of autoresearch.md and of the backlog in the prompt: it stays bounded
ROTATE_AFTER_LOSSES = 3
RETRYABLE = ("agent_failed", "agent_no_change")  # a rate limit may end an attempt either way
PLACEHOLDER_PATTERN = re.compile(r"(?<!\$)\{([a-z_]+)\}")
_PLACEHOLDER = PLACEHOLDER_PATTERN
# Files under a git dir that ordinary read-only git use or our own commit/reset rewrite:
# not evidence that the agent tampered with the repository.
_VOLATILE_DIRS = frozenset({"objects", "logs", "refs"})  # refs are compared by for-each-ref
_VOLATILE_FILES = frozenset({"index", "ORIG_HEAD", "FETCH_HEAD", "COMMIT_EDITMSG", "AUTO_MERGE",
                             "packed-refs", "gc.pid", "gc.log", "sharedindex"})


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
                 imported: Callable[[], list[dict]] | None = None,
                 sandbox: Sandbox | None = None,
                 limits: Limits | None = None, cap_bytes: int = 16_000_000,
                 rotate_after_losses: int = ROTATE_AFTER_LOSSES, home: Path | None = None):
        """`command`: argument list (a string is split like a shell would); `work_dir`: where
        each attempt's prompt, log and summary go (e.g. .autogolf/agent). `doc_path` and
        `ideas_path` default to autoresearch.md and autoresearch.ideas.md in the worktree.
        `stop`: polled while the agent runs and while it waits out a rate limit; True kills
        it (the daemon got a stop signal). `imported`: the ledger's rows imported from
        pi-autoresearch, read per prompt. `sandbox`: how the agent is confined
        (loop/proposers/sandbox.py); None: unconfined. `limits`: budgets and backoff;
        `home`: the repo that rung log paths are relative to (default: work_dir's
        grandparent)."""
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
        doc = _bounded(_read(self.doc_path or worktree / "autoresearch.md"), "autoresearch.md")
        ideas_text = _bounded(backlog.text if backlog is not None else None,
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
            _rules(self.editable, self.protected, summary_path, self.timeout_s),
            "## Idea to try\n",
            _idea_section(idea, evidence.rotated_families(rows, kinds,
                                                          self.rotate_after_losses)),
            "## Incumbents (val_bpb of the latest keep per profile)\n",
            _incumbents_section(rows),
            "## Evidence: how the incumbent and the last runs trained\n",
            evidence.runs_section(rows, self.home, self.cap_bytes),
            "## What has been tried, by idea family (the backlog's headings)\n",
            evidence.family_section(rows, kinds, self.rotate_after_losses),
            f"## Last {self.last_rows} experiments\n",
            _rows_section(rows[-self.last_rows:]),
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
            undone = _undo_commits(worktree, before.head)
            changed = _changed_files(worktree)
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
            waited = wait(self.limits.delay(tries.retries), self.stop)
            tries.waited_s += time.monotonic() - started
            if not waited:
                break  # a stop request: the scheduler records `interrupted`
            tries.retries += 1
            tries.logs.append(_set_aside_log(outcome.log_path, tries.retries))
            _restore_worktree(worktree)
        if limited:  # the last try too: given up (retries, budget) or stopped
            outcome.reason = _cut(f"rate-limited or overloaded (output matched "
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
        return "agent_touched_git", _cut("the agent changed git metadata: " + ", ".join(touched))
    if timed_out:
        return "agent_timeout", f"the agent ran past its {timeout_s:g} s timeout and was killed"
    if exit_code != 0:
        return "agent_failed", _cut(f"the agent exited {exit_code}: {_last_line(log)}")
    if not changed:
        extra = " (its commit was undone and left no difference)" if undone else ""
        return "agent_no_change", f"the agent finished but changed no file{extra}"
    files = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
    if undone:
        return "agent_committed", _cut(f"the agent committed {undone[:10]} itself; the commit "
                                       f"was undone and its change is validated as a diff: "
                                       f"{files}")
    return "agent_ok", _cut(f"the agent changed {files}")


@dataclass
class GitState:
    """What of a repository's git metadata an agent must not change, and the session head."""

    head: str
    head_ref: str | None  # e.g. refs/heads/autogolf/<session>; None when detached
    refs: dict[str, str]  # every ref except head_ref -> sha
    files: dict[str, str]  # git-dir file -> sha256 (config, hooks, info, HEAD files, ...)
    dot_git: bytes | None  # the worktree's `.git` file (a linked worktree) or None (a dir)
    head_file: Path
    head_bytes: bytes
    nested: frozenset[str]  # .git entries below the worktree root

    @classmethod
    def take(cls, worktree: Path) -> GitState:
        head_ref = _git_out(worktree, "symbolic-ref", "-q", "HEAD") or None
        git_dir = Path(_git_out(worktree, "rev-parse", "--absolute-git-dir"))
        dot_git = worktree / ".git"
        head_file = git_dir / "HEAD"
        return cls(head=_git_out(worktree, "rev-parse", "HEAD"), head_ref=head_ref,
                   refs=_refs(worktree, head_ref), files=_git_files(worktree),
                   dot_git=dot_git.read_bytes() if dot_git.is_file() else None,
                   head_file=head_file, head_bytes=head_file.read_bytes(),
                   nested=_nested_git(worktree))

    def changes(self, worktree: Path) -> list[str]:
        """What differs now, as short descriptions; [] when git metadata is as it was."""
        dot_git = worktree / ".git"
        if self.dot_git is not None and (not dot_git.is_file()
                                         or dot_git.read_bytes() != self.dot_git):
            return ["the worktree's .git file"]
        try:
            if (_git_out(worktree, "symbolic-ref", "-q", "HEAD") or None) != self.head_ref:
                return ["HEAD (switched branch or detached)"]
            refs, files = _refs(worktree, self.head_ref), _git_files(worktree)
        except GitError as e:
            return [f"git no longer works in the worktree ({e})"]
        found = _dict_changes("ref", self.refs, refs) + _dict_changes("file", self.files, files)
        found += [f"nested {p}" for p in sorted(_nested_git(worktree) - self.nested)]
        return found

    def repair(self, worktree: Path) -> None:
        """Put back the two things that are the daemon's own: the worktree's `.git` file and
        its HEAD, so the session branch stays checked out. Anything else stays for a person
        to look at (it may be theirs)."""
        dot_git = worktree / ".git"
        if self.dot_git is not None and (not dot_git.is_file()
                                         or dot_git.read_bytes() != self.dot_git):
            if dot_git.is_dir():
                shutil.rmtree(dot_git)
            dot_git.write_bytes(self.dot_git)
        if not self.head_file.is_file() or self.head_file.read_bytes() != self.head_bytes:
            self.head_file.write_bytes(self.head_bytes)


def _undo_commits(worktree: Path, old_head: str) -> str | None:
    """Move the session branch back to `old_head`, keeping the files; the agent's head or None."""
    head = _git_out(worktree, "rev-parse", "HEAD")
    if head == old_head:
        return None
    _git_out(worktree, "reset", "-q", "--mixed", old_head)
    return head


def _changed_files(worktree: Path) -> list[str]:
    out = _git_out(worktree, "status", "--porcelain=v1", "-z", "--untracked-files=all",
                   strip=False)
    paths, entries, index = set(), out.split("\0"), 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if entry:
            paths.add(entry[3:])
            if entry[0] in "RC":  # a rename is followed by its source path
                paths.add(entries[index])
                index += 1
    return sorted(paths)


def _refs(worktree: Path, head_ref: str | None) -> dict[str, str]:
    out = _git_out(worktree, "for-each-ref", "--format=%(refname) %(objectname)")
    refs = dict(line.split(" ", 1) for line in out.splitlines() if line)
    refs.pop(head_ref or "", None)
    return refs


def _git_files(worktree: Path) -> dict[str, str]:
    """Content hashes of the private and common git dirs' files, minus the volatile ones."""
    private = Path(_git_out(worktree, "rev-parse", "--absolute-git-dir"))
    common = Path(_git_out(worktree, "rev-parse", "--git-common-dir"))
    common = common if common.is_absolute() else (worktree / common).resolve()
    hashes: dict[str, str] = {}
    for root in dict.fromkeys((common, private)):
        for path in _walk(root):
            hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def _walk(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _VOLATILE_DIRS]
        for name in filenames:
            if name in _VOLATILE_FILES or name.endswith(".lock") or name.startswith("index"):
                continue
            path = Path(dirpath) / name
            if path.is_file():
                found.append(path)
    return sorted(found)


def _nested_git(worktree: Path) -> frozenset[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(worktree):
        top = Path(dirpath) == worktree
        for name in (*dirnames, *filenames):
            if name == ".git" and not top:
                found.add(str((Path(dirpath) / name).relative_to(worktree)))
        dirnames[:] = [d for d in dirnames if d != ".git"]
    return frozenset(found)


def _dict_changes(what: str, old: dict[str, str], new: dict[str, str]) -> list[str]:
    out = [f"{what} {k} (new)" for k in sorted(new.keys() - old.keys())]
    out += [f"{what} {k} (deleted)" for k in sorted(old.keys() - new.keys())]
    out += [f"{what} {k}" for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]
    return out


def _git_out(cwd: Path, *args: str, strip: bool = True) -> str:
    # `symbolic-ref -q` exits 1 on a detached HEAD: an answer, not a failure.
    out = git(cwd, *args, ok=(0, 1) if args[:2] == ("symbolic-ref", "-q") else (0,))
    return out.strip() if strip else out


# --------------------------------------------------------------------------- prompt parts


def pick_idea(backlog: IdeasFile | None, history: list[dict],
              avoid: set[str] | frozenset[str] = frozenset()) -> Idea | None:
    """The untried idea to suggest: ones that need code (no knobs, no patch: the `ideas`
    proposer applies the others without an agent) first, in file order; untested only, and
    none of a family in `avoid` (rotated away from after losses)."""
    if backlog is None:
        return None
    tested, kinds = tested_ideas(history), families(backlog)
    fresh = [i for i in backlog.untried() if i.id not in tested and kinds.get(i.id) not in avoid]
    return next((i for i in fresh if not i.applicable), fresh[0] if fresh else None)


def _rules(editable: Sequence[str], protected: Sequence[str], summary: Path,
           timeout_s: float) -> str:
    allowed = ", ".join(f"`{g}`" for g in editable) or "(see the Files table below)"
    never = ", ".join(f"`{g}`" for g in protected) or "(see the Files table below)"
    return (
        f"- Edit only files matching: {allowed}. Never edit: {never}. Any other edit makes "
        "the whole experiment `forbidden_edit` and it is thrown away.\n"
        "- Do not run git commands that change anything (no commit, branch, checkout, stash, "
        "reset, config or hooks). The daemon commits a kept change itself; a change to git "
        "metadata discards the experiment.\n"
        "- One change per experiment. Never change the seed, the validation data or window, "
        "or how the metric is computed.\n"
        "- Do not run long benchmarks: the daemon measures your change. A quick "
        "`bash autoresearch.checks.sh` is fine.\n"
        f"- You have {timeout_s:g} seconds; after that you are stopped and the change is lost.\n"
        f"- When done, write two lines to `{summary}`: first, what you changed and why it "
        "should lower val_bpb (it becomes the experiment's description); then `idea: <id>` "
        "with the backlog id of the idea you implemented (e.g. `idea: I002`), or `idea: own` "
        "for an idea of your own. The experiment is credited to the idea you name. Then "
        "exit.\n"
    )


def _idea_section(idea: Idea | None, avoid: set[str]) -> str:
    away = (f" Stay away from these families, which lost several times in a row: "
            f"{', '.join(sorted(avoid))}." if avoid else "")
    if idea is None:
        return ("No untried idea is queued. Choose one yourself from the session document "
                f"and what has been tried; do not repeat a dead end.{away}\n")
    lines = [f"Try backlog idea [{idea.id}]: {idea.text}"]
    if idea.knobs:
        lines.append("Knob settings: " + " ".join(f"{k}={v}" for k, v in idea.knobs.items()))
    if idea.patch:
        lines.append(f"Patch it names: {idea.patch}")
    if idea.source:
        lines.append(f"Source: {idea.source}")
    lines += [f"Evidence: {e.experiment} {e.profile} delta="
              f"{'n/a' if e.delta is None else f'{e.delta:+.4f}'} {e.status}"
              for e in idea.evidence]
    lines += [f"Note: {n}" for n in idea.notes]
    return "\n".join(lines) + "\n"


def _incumbents_section(rows: list[dict]) -> str:
    """The latest keep per profile of the current session (the session of the last row:
    the history may hold earlier sessions' rows too, whose keeps are not this branch's)."""
    session = next((r.get("session") for r in reversed(rows) if r.get("session")), None)
    best: dict[str, tuple[float, str]] = {}
    for row in rows:
        if row.get("status") != "keep" or row.get("session") != session:
            continue
        for profile, rung in (row.get("rungs") or {}).items():
            value = (rung or {}).get("val_bpb")
            if isinstance(value, (int, float)):
                best[profile] = (float(value), str(row.get("id")))  # the latest keep wins
    if not best:
        return "None measured yet in this session.\n"
    return "\n".join(f"- {p}: val_bpb {v:.4f} ({e})" for p, (v, e) in best.items()) + "\n"


def _rows_section(rows: list[dict]) -> str:
    if not rows:
        return "None yet.\n"
    lines = []
    for row in rows:
        profile, delta = row_delta(row)
        shown = f" {profile} delta={delta:+.4f}" if delta is not None else ""
        idea = f" [{row['idea']}]" if row.get("idea") else ""
        reason = _cut(" ".join(str(row.get("reason") or "").split()))
        lines.append(f"- {row.get('id')} {row.get('status')}{shown}{idea}: "
                     f"{' '.join(str(row.get('description') or '').split())} - {reason}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- small helpers


def imported_lines(rows: list[dict]) -> str:
    """One line per imported pi run: its status, pi's metric, what it tried and why not."""
    lines = []
    for row in rows:
        metric = row.get("metric")
        shown = (f" {row.get('metric_name') or 'metric'}={metric:.4f}"
                 if isinstance(metric, (int, float)) else "")
        why = " / ".join(str(row[k]) for k in ("hypothesis", "rollback_reason",
                                               "next_action_hint") if row.get(k))
        lines.append(f"- {row.get('id')} pi {row.get('pi_status')}{shown}: "
                     f"{' '.join(str(row.get('description') or '').split())}"
                     + (f" - {_cut(' '.join(why.split()))}" if why else ""))
    return "\n".join(lines) + "\n"


def _check_command(command: Sequence[str] | str) -> list[str]:
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise AgentConfigError("agent command must be a non-empty list of strings, e.g. "
                               '["claude", "-p", "{prompt}"]')
    for arg in argv:
        for name in _PLACEHOLDER.findall(arg):
            if name not in PLACEHOLDERS:
                raise AgentConfigError(f"agent command: unknown placeholder {{{name}}}; "
                                       f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    if shutil.which(argv[0]) is None:
        raise AgentConfigError(f"agent command {argv[0]!r} not found on PATH (or not "
                               "executable); install it or give its full path")
    return argv


def _fill(arg: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), arg)


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


def _bounded(text: str | None, name: str) -> str | None:
    if text is None or len(text) <= MAX_FILE_CHARS:
        return text
    return (text[:MAX_FILE_CHARS] + f"\n\n(... {len(text) - MAX_FILE_CHARS:,} more characters "
            f"of {name} cut here; read the file in the worktree)\n")


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


def _cut(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
