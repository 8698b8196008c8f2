"""What an agent may not do to the repository, checked: a snapshot of the git metadata
(refs, the git dirs' files, the worktree's `.git` file and HEAD, nested repositories) taken
before the agent runs and compared after; undoing commits the agent made itself.

It does not judge the agent's edits (loop/proposers/agent.py validates those as a diff).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from loop.store.gitsession import GitError, git

# Files under a git dir that ordinary read-only git use or our own commit/reset rewrite:
# not evidence that the agent tampered with the repository.
_VOLATILE_DIRS = frozenset({"objects", "logs", "refs"})  # refs are compared by for-each-ref
_VOLATILE_FILES = frozenset({"index", "ORIG_HEAD", "FETCH_HEAD", "COMMIT_EDITMSG", "AUTO_MERGE",
                             "packed-refs", "gc.pid", "gc.log", "sharedindex"})


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


def undo_commits(worktree: Path, old_head: str) -> str | None:
    """Move the session branch back to `old_head`, keeping the files; the agent's head or None."""
    head = _git_out(worktree, "rev-parse", "HEAD")
    if head == old_head:
        return None
    _git_out(worktree, "reset", "-q", "--mixed", old_head)
    return head


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
