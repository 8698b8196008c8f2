"""The daemon's bookkeeping in the session worktree (SPEC 5's last step).

After every experiment the daemon records evidence for the idea it tested in the ideas
backlog, keeps the "What has been tried" section of the session document current, and
commits both as their own commits on the session branch (the code hash, hence the
incumbents, ignores them). It does so as a subscriber of the loop's events (proposing,
recorded, nothing_proposed); nothing here decides anything about a run.

A person may edit the backlog meanwhile (`autogolf ideas add`): those uncommitted edits
survive the restores and commits of an experiment, through `edits`, `restore_keeping` and
`put_back`, which the loop uses when it commits or restores the worktree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loop.backlog import ideas, tried
from loop.events import RunEvents
from loop.store import gitsession
from loop.store.gitsession import GitSession

IDEAS_FILE = "autoresearch.ideas.md"  # the backlog; the daemon's live copy is the worktree's
SESSION_DOC = "autoresearch.md"  # its "What has been tried" section is kept current
# Files the daemon itself updates after each experiment (separate bookkeeping commits on the
# session branch). They are not measured code: code hashes, hence incumbents, ignore them.
BOOKKEEPING_FILES = (IDEAS_FILE, SESSION_DOC)


class Bookkeeping(RunEvents):
    """The bookkeeping files of one session worktree.

    `git` is the session; `repo` is where saved patches are found; `proposer` reports the
    ideas it could not apply; `tried_rows` gives the rows the tried section lists; `warn`
    shows one warning line (without the "warning: " prefix).
    """

    def __init__(self, git: GitSession, repo: Path, proposer: Any,
                 tried_rows: Callable[[], list[dict]], warn: Callable[[str], None]):
        self.git = git
        self.repo = repo
        self.proposer = proposer
        self._tried_rows = tried_rows
        self._warn = warn
        self._warned: set[str] = set()  # bookkeeping warnings already shown this run

    # ---- the loop's events

    def proposing(self, exp_id: str, proposer: str) -> None:
        self.commit()  # e.g. a person's `autogolf ideas add` since the last experiment

    def nothing_proposed(self) -> None:
        self.report_skipped()
        self.commit()

    def recorded(self, row: dict) -> None:
        if row.get("status") == "agent_touched_git" or row.get("baseline"):
            return  # no more git in a repository the agent may have rigged
        self.record(row)

    # ---- the records

    def record(self, row: dict) -> None:
        """Evidence for the idea the experiment tested and the tried section, committed."""
        if row.get("idea"):
            self._step(IDEAS_FILE, ideas.record_experiment, self.git.worktree / IDEAS_FILE, row)
        self.report_skipped()
        self.commit(f"autogolf: record {row['id']} in the backlog")

    def report_skipped(self) -> None:
        """Ideas the ideas proposer could not apply (an unknown knob, a patch that does not
        apply): a warning, and the idea marked invalid with the reason in the backlog."""
        skipped = self.proposer.skipped_ideas() if self.proposer is not None else {}
        for idea_id, why in skipped.items():
            if idea_id not in self._warned:
                self._warned.add(idea_id)
                self._warn(f"idea {idea_id} cannot be applied: {why}")
                self._step(IDEAS_FILE, mark_invalid, self.git.worktree / IDEAS_FILE,
                           idea_id, why)

    def commit(self, message: str | None = None) -> None:
        """Bring the tried section up to date, then commit changes to the bookkeeping files
        (the daemon's own or a person's) as their own commit, which leaves the code hash and
        so the incumbents as they are."""
        self._step(SESSION_DOC, tried.update_tried_section, self.git.worktree / SESSION_DOC,
                   self._tried_rows())
        changed = self.git.changed_files()
        if changed and set(changed) <= set(BOOKKEEPING_FILES):
            self.git.commit(message or f"autogolf: update {' and '.join(changed)}")
        elif changed:  # not the daemon's: the worktree starts every experiment at the head
            self._warn(f"unexpected changes in the worktree, undone: {', '.join(changed)}")
            self.restore_keeping(self.edits(None))
            self.commit(message)

    def _step(self, name: str, step: Callable[..., Any], *args: Any) -> None:
        try:
            step(*args)
        except (OSError, ideas.IdeasError) as exc:
            # The backlog and the session document are a person's: never stop the loop.
            if f"{name}: {exc}" not in self._warned:
                self._warned.add(f"{name}: {exc}")
                self._warn(f"could not update {name} in the worktree: {exc}")

    def edits(self, patch: str | None) -> dict[str, bytes | None]:
        """Bookkeeping files changed in the worktree that the candidate's patch (a path
        relative to the repo; None: no candidate) does not touch (a person's `autogolf ideas
        add` meanwhile): path -> content (None: deleted)."""
        text = ""
        if patch:
            with contextlib.suppress(OSError):
                text = (self.repo / patch).read_text(errors="replace")
        changed = set(self.git.changed_files())
        return {name: read_bytes(self.git.worktree / name) for name in BOOKKEEPING_FILES
                if name in changed and f"diff --git a/{name} b/{name}\n" not in text}

    def restore_keeping(self, saved: dict[str, bytes | None], to: str | None = None) -> None:
        """Restore the worktree (to the head, or `to`), then put the saved files back."""
        self.git.restore(to=to)
        self.put_back(saved)

    def put_back(self, saved: dict[str, bytes | None]) -> None:
        write_files(self.git.worktree, saved)

    def reset_files(self, saved: dict[str, bytes | None]) -> None:
        """Put the saved files back to their content at the head (before a commit)."""
        for name in saved:
            try:
                gitsession.git(self.git.worktree, "checkout", "HEAD", "--", name)
            except gitsession.GitError:
                (self.git.worktree / name).unlink(missing_ok=True)  # not in the head


def tried_rows(history: list[dict], session: str | None) -> list[dict]:
    """This session's experiments and the dead ends of earlier sessions on this dataset
    (their keeps are not part of this branch's incumbent)."""
    return [r for r in history if r.get("session") == session or r.get("status") != "keep"]


def mark_invalid(path: Path, idea_id: str, why: str) -> None:
    backlog = ideas.IdeasFile.load(path)
    backlog.mark(idea_id, "invalid", note=f"autogolf: cannot be applied: {why}")
    backlog.save()


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_files(root: Path, saved: dict[str, bytes | None]) -> None:
    for name, data in saved.items():
        if data is None:
            (root / name).unlink(missing_ok=True)
        else:
            (root / name).write_bytes(data)
