"""The daemon's git session: a branch and a worktree of its own, never the user's checkout.

`GitSession.open(repo, session)` creates branch `autogolf/<session>` from the user's HEAD
(once) and a worktree for it at `<repo>/.autogolf/worktrees/<session>`; a later open reuses
both (resume). Keeping a change is a commit on that branch; discarding restores the worktree
exactly to the branch head. Every command runs inside the worktree, so the user's branch,
index and uncommitted edits are never touched. Shells out to the `git` CLI.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Used only when the user has no identity configured: a commit must never fail overnight
# because `git config user.email` was never set on this machine.
_FALLBACK_IDENTITY = {"user.name": "autogolf", "user.email": "autogolf@localhost"}
# Variables that would point git at another repository or index than the one we name.
_REDIRECTING_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")


class GitError(Exception):
    """A git operation failed; the message says which and what git answered."""


def git(cwd: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
        ok: tuple[int, ...] = (0,), timeout: float | None = None) -> str:
    """Run `git args` in `cwd` and return stdout; GitError with git's message on failure.

    The daemon's one way to run git. `ok`: exit codes that are answers, not failures (e.g.
    `symbolic-ref -q` exits 1 on a detached HEAD); `timeout`: seconds before GitError.
    """
    child_env = {k: v for k, v in os.environ.items() if k not in _REDIRECTING_ENV}
    child_env.update(env or {})
    child_env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a password at night
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            env=child_env,
            timeout=timeout,
        )
    except FileNotFoundError as exc:
        raise GitError("git is not installed (or not on PATH)") from exc
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"git {' '.join(args[:3])} in {cwd} took over {timeout:g} s") from exc
    if done.returncode not in ok:
        detail = (done.stderr or done.stdout).strip()
        raise GitError(f"git {' '.join(args[:3])} failed in {cwd}: {detail}")
    return done.stdout


def main_checkout(start: Path) -> Path | None:
    """The main checkout owning the git repository that contains `start`, if any: the one
    way the daemon finds it (a session worktree under .autogolf/ belongs to it).

    Read from the `.git` entry directly (no git subprocess): a directory means start is in
    the main checkout; a file means a linked worktree whose gitdir names the common dir.
    """
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return folder
        if dot_git.is_file():
            text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
            if not text.startswith("gitdir:"):
                return None
            gitdir = (folder / text[len("gitdir:"):].strip()).resolve()
            commondir_file = gitdir / "commondir"
            if not commondir_file.is_file():
                return folder  # a submodule or an unusual layout: treat as its own root
            common = (gitdir / commondir_file.read_text(encoding="utf-8").strip()).resolve()
            return common.parent if common.name == ".git" else folder
    return None


def changed_files(tree: Path, timeout: float | None = None) -> list[str]:
    """Paths (relative, sorted) changed in the checkout at `tree` against its HEAD: edits,
    deletions, untracked files, both sides of a rename or copy."""
    out = git(tree, "status", "--porcelain=v1", "-z", "--untracked-files=all",
              timeout=timeout)
    entries = out.split("\0")
    paths: set[str] = set()
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if not entry:
            continue
        paths.add(entry[3:])
        if entry[0] in "RC":  # a rename/copy is followed by its source path
            paths.add(entries[index])
            index += 1
    return sorted(paths)


@dataclass
class GitSession:
    """Branch `autogolf/<session>` checked out in its own worktree."""

    repo: Path
    session: str
    worktree: Path
    branch: str
    _identity: tuple[str, ...] = ()

    @classmethod
    def open(cls, repo: Path, session: str) -> GitSession:
        """Create (first time) or reuse the session branch and worktree of `repo`."""
        root = _toplevel(Path(repo))
        branch = f"autogolf/{session}"
        _check_branch_name(root, branch)
        _require_commit(root)
        _ignore_state_dir(root)
        if not _branch_exists(root, branch):
            git(root, "branch", "--no-track", branch, "HEAD")
        worktree = root / ".autogolf" / "worktrees" / session
        _ensure_worktree(root, worktree, branch)
        self = cls(root, session, worktree, branch, _identity_args(worktree))
        self._clear_stale_locks()
        return self

    def head(self) -> str:
        """The sha of the session branch's head."""
        return git(self.worktree, "rev-parse", "HEAD").strip()

    def changed_files(self) -> list[str]:
        """Paths (relative, sorted) changed against the head: edits, deletions, untracked."""
        return changed_files(self.worktree)

    def diff(self, base: str | None = None) -> str:
        """The whole change against `base` (default: the head) as a binary-safe patch,
        untracked files included.

        Stages into a throwaway copy of the index, so the worktree's own index is unchanged.
        """
        with tempfile.TemporaryDirectory(prefix="autogolf-index-") as tmp:
            index = Path(tmp) / "index"
            real_index = Path(git(self.worktree, "rev-parse", "--git-path", "index").strip())
            if not real_index.is_absolute():
                real_index = self.worktree / real_index
            if real_index.exists():
                shutil.copyfile(real_index, index)  # keeps stat data: no full rehash
            env = {"GIT_INDEX_FILE": str(index)}
            git(self.worktree, "add", "-A", env=env)
            return git(self.worktree, "diff", "--cached", "--binary", base or "HEAD", env=env)

    def commit(self, message: str, allow_empty: bool = False) -> str:
        """Commit everything changed (not ignored files); return the new head sha."""
        git(self.worktree, "add", "-A")
        if not allow_empty and not git(self.worktree, "diff", "--cached", "--name-only").strip():
            raise GitError(f"nothing to commit in {self.worktree}")
        # No hooks and no signing: a user's pre-commit hook or a GPG prompt must not block
        # or alter an unattended commit on the daemon's own branch.
        args = [*self._identity, "-c", "commit.gpgsign=false", "commit", "-q", "--no-verify"]
        if allow_empty:
            args.append("--allow-empty")
        git(self.worktree, *args, "-F", "-", stdin=message)
        return self.head()

    def restore(self, to: str | None = None) -> None:
        """Make the worktree exactly the branch head: tracked, untracked and ignored files
        (an agent's files in git-ignored paths such as `data/` or `.upstream/` must not
        survive into the next run; the daemon keeps its logs outside the worktree).

        `to` (a sha) also moves the branch back there, undoing commits a proposer (an
        external agent) may have made itself since the daemon recorded that head.
        """
        git(self.worktree, "reset", "-q", "--hard", to or "HEAD")
        # -ff also removes untracked nested repositories a proposer might have created.
        git(self.worktree, "clean", "-ffdxq")

    def code_hash(self, exclude: Iterable[str] = (), rev: str = "HEAD") -> str:
        """sha256 of the tree of `rev` without the paths in `exclude` (bookkeeping files):
        the same for two commits that differ only in those files, i.e. measure the same code."""
        return tree_hash(self.worktree, exclude, rev)

    def apply_patch(self, patch: str) -> None:
        """Apply a patch (as produced by `diff`) to the worktree; all or nothing."""
        if not patch.strip():
            return
        git(self.worktree, "apply", "--binary", "--whitespace=nowarn", "-", stdin=patch)

    def log(self, n: int = 10) -> list[tuple[str, str]]:
        """The last `n` commits of the session branch as (sha, subject), newest first."""
        out = git(self.worktree, "log", f"-n{n}", "--format=%H%x00%s")
        commits = []
        for line in out.splitlines():
            sha, _, subject = line.partition("\0")
            commits.append((sha, subject))
        return commits

    def _clear_stale_locks(self) -> None:
        """Remove git lock files a killed daemon left in this worktree's private git dir.

        Safe because only the daemon (which holds `.autogolf/lock`) runs git here; left in
        place, `index.lock` would make every later git command in the worktree fail.
        """
        git_dir = Path(git(self.worktree, "rev-parse", "--absolute-git-dir").strip())
        for name in ("index.lock", "HEAD.lock"):
            (git_dir / name).unlink(missing_ok=True)
        common = Path(git(self.worktree, "rev-parse", "--git-common-dir").strip())
        if not common.is_absolute():
            common = self.worktree / common
        (common / "refs" / "heads" / f"{self.branch}.lock").unlink(missing_ok=True)


def diff_hash(diff: str) -> str:
    """sha256 of a diff with `index` lines (abbreviated blob ids) and line endings normalised,
    so the same change hashes the same whatever git's abbreviation length."""
    lines = [
        line.rstrip("\r")
        for line in diff.replace("\r\n", "\n").split("\n")
        if not line.startswith("index ")
    ]
    normalised = "\n".join(lines).strip("\n")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def tree_hash(cwd: Path, exclude: Iterable[str] = (), rev: str = "HEAD") -> str:
    """sha256 over `git ls-tree -r` of `rev` (mode, object id, path per file), minus `exclude`."""
    skip = set(exclude)
    out = git(cwd, "ls-tree", "-r", "-z", "--full-tree", rev)
    kept = [entry for entry in out.split("\0") if entry and entry.split("\t", 1)[1] not in skip]
    return hashlib.sha256("\0".join(kept).encode("utf-8", "surrogateescape")).hexdigest()


def _toplevel(repo: Path) -> Path:
    if not repo.is_dir():
        raise GitError(f"{repo} is not a directory")
    try:
        return Path(git(repo, "rev-parse", "--show-toplevel").strip())
    except GitError as exc:
        raise GitError(f"{repo} is not inside a git repository: {exc}") from exc


def _check_branch_name(root: Path, branch: str) -> None:
    try:
        git(root, "check-ref-format", "--branch", branch)
    except GitError as exc:
        raise GitError(f"session name gives an invalid branch name {branch!r}") from exc


def _require_commit(root: Path) -> None:
    try:
        git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}")
    except GitError as exc:
        raise GitError(
            f"the repository {root} has no commits yet; commit your files first "
            "(git add -A && git commit -m 'initial'), the session branch starts from HEAD"
        ) from exc


def _ignore_state_dir(root: Path) -> None:
    """Keep `.autogolf/` out of `git status` even where `.gitignore` lacks it.

    Writes the repository-local exclude file, which is not part of any checkout or commit.
    """
    try:
        git(root, "check-ignore", "-q", ".autogolf/")
        return
    except GitError:
        pass
    exclude = Path(git(root, "rev-parse", "--git-path", "info/exclude").strip())
    if not exclude.is_absolute():
        exclude = root / exclude
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as handle:
        handle.write("\n# autogolf daemon state\n/.autogolf/\n")


def _branch_exists(root: Path, branch: str) -> bool:
    try:
        git(root, "rev-parse", "--verify", "-q", f"refs/heads/{branch}")
    except GitError:
        return False
    return True


def _ensure_worktree(root: Path, worktree: Path, branch: str) -> None:
    """Reuse the registered worktree of `branch`, or add it (pruning a vanished one)."""
    registered = _worktrees(root)
    if worktree.resolve() in registered and worktree.is_dir():
        actual = registered[worktree.resolve()]
        if actual != f"refs/heads/{branch}":
            raise GitError(f"worktree {worktree} is on {actual or 'a detached HEAD'}, not {branch}")
        return
    git(root, "worktree", "prune")  # forget a registration whose folder was deleted
    if worktree.exists() and any(worktree.iterdir()):
        raise GitError(
            f"{worktree} exists but is not a git worktree of {root}; move it away and retry"
        )
    worktree.parent.mkdir(parents=True, exist_ok=True)
    git(root, "worktree", "add", "-q", str(worktree), branch)


def _worktrees(root: Path) -> dict[Path, str]:
    """Registered worktrees: resolved path -> checked-out ref ("" when detached)."""
    found: dict[Path, str] = {}
    current: Path | None = None
    for line in git(root, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            current = Path(line[len("worktree ") :]).resolve()
            found[current] = ""
        elif line.startswith("branch ") and current is not None:
            found[current] = line[len("branch ") :]
    return found


def _identity_args(worktree: Path) -> tuple[str, ...]:
    """`-c key=value` pairs for the identity fields the user has not configured."""
    args: list[str] = []
    for key, value in _FALLBACK_IDENTITY.items():
        try:
            configured = git(worktree, "config", "--get", key).strip()
        except GitError:
            configured = ""
        if not configured:
            args += ["-c", f"{key}={value}"]
    return tuple(args)
