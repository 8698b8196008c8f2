"""Where the daemon keeps its state, and how a killed daemon's experiment is finished.

`.autogolf/` holds the ledger, the lock, the state file and one folder per experiment
(`Paths`). The state file (`StateFile`) is rewritten, atomically, before every stage of an
experiment, so that after a kill (power, SIGKILL) the next `autogolf run` knows what was in
flight: `recover` records it (a keep already committed stays kept; anything else becomes
`interrupted`, its change undone and its patch kept) and kills the benchmark the dead daemon
left running.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil

from loop.backlog.bookkeeping import BOOKKEEPING_FILES
from loop.store import gitsession
from loop.store.files import atomic_write
from loop.store.gitsession import GitSession, diff_hash
from loop.store.rows import Experiment, commit_message, utc_now
from loop.store.verdict import Verdict


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
    atomic_write(path, json.dumps(state))


class StateFile:
    """The state file of one running daemon: what is in flight, stage by stage."""

    def __init__(self, path: Path, token: str):
        self.path = path
        self.token = token  # in every child's environment: a resumed daemon finds orphans
        self.session: str | None = None

    def stage(self, exp: Experiment, stage: str, nested: Experiment | None = None) -> None:
        """`exp` (or the baseline `nested` inside it) enters `stage`."""
        (nested or exp).stage = stage
        self.write(exp, nested)

    def write(self, exp: Experiment, nested: Experiment | None = None) -> None:
        write_state(self.path, {
            "session": self.session, "pid": os.getpid(), "token": self.token,
            "experiment": exp.state(), "nested": nested.state() if nested else None,
            "stage": (nested or exp).stage, "updated": utc_now(),
        })

    def idle(self) -> None:
        write_state(self.path, {"session": self.session, "pid": os.getpid(),
                                "experiment": None, "stage": "idle"})

    def stopped(self, reason: str) -> None:
        write_state(self.path, {"session": self.session, "experiment": None,
                                "stage": "stopped", "reason": reason})


def recover(paths: Paths, rows: list[dict], record: Callable[[Experiment, dict], None],
            out: Callable[[str], None]) -> None:
    """Finish or undo the experiment a killed daemon left (the state file says which)."""
    state = read_state(paths.state)
    if not state or not state.get("experiment"):
        return
    kill_orphans(state.get("token"))
    git = GitSession.open(paths.repo, state["session"])
    known = {r.get("id") for r in rows if r.get("type") == "experiment"}
    undo_to = None
    for key in ("nested", "experiment"):
        data = state.get(key)
        if data and data.get("id") not in known:
            exp = Experiment.from_state(data)
            commit = _recovered_commit(git, exp)
            code = gitsession.tree_hash(git.worktree, BOOKKEEPING_FILES, commit) \
                if commit else None
            record(exp, exp.row(commit, code))
            out(f"resumed: recorded {exp.id} as {exp.verdict.status}")
            if key == "experiment" and commit is None and not exp.baseline:
                undo_to = exp.head  # e.g. an agent killed with us had committed
    # To the branch head, never further back: a keep recorded before the kill stays.
    git.restore(to=undo_to)
    write_state(paths.state, {"session": state["session"], "experiment": None,
                              "stage": "idle"})


def _recovered_commit(git: GitSession, exp: Experiment) -> str | None:
    """Set exp.verdict for a row left unwritten; returns the kept commit, if any."""
    stage = exp.stage
    won = exp.verdict is not None and exp.verdict.status == "keep"
    if exp.baseline:
        exp.verdict = Verdict("interrupted", f"daemon stopped during the baseline ({stage})")
        return None
    if won and git.head() != exp.head:
        return git.head()  # the kill came after the commit
    if won and diff_hash(git.diff()) == exp.diff_hash:
        return git.commit(commit_message(exp))  # the winning change is still on disk
    if won or exp.verdict is None:
        exp.verdict = Verdict("interrupted",
                              f"daemon stopped during {stage}; change undone, patch kept")
    return None


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


def unique_session_name(existing: list[str]) -> str:
    base = datetime.now().strftime("%Y%m%d-%H%M")
    name, n = base, 1
    while name in existing:
        n += 1
        name = f"{base}-{n}"
    return name
