"""The git session: own branch and worktree, commit = keep, restore = discard, user untouched."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from loop.store.gitsession import GitError, GitSession, diff_hash

USER = ("-c", "user.name=Researcher", "-c", "user.email=researcher@example.com")


def sh(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture(autouse=True)
def no_global_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no user-level or system git config (so no identity unless a test sets one)."""
    empty = tmp_path / "empty-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A user's repository with one commit; `.autogolf/` and `logs/` are git-ignored."""
    root = tmp_path / "repo"
    (root / "benchmark").mkdir(parents=True)
    (root / "autoresearch.sh").write_text("MATRIX_LR=0.04\n")
    (root / "benchmark" / "train.py").write_text("print('train')\n")
    (root / "notes.md").write_text("notes\n")
    (root / ".gitignore").write_text(".autogolf/\nlogs/\n")
    sh(root, "init", "-q", "-b", "main")
    sh(root, "add", "-A")
    sh(root, *USER, "commit", "-q", "-m", "initial")
    return root


@pytest.fixture
def session(repo: Path) -> GitSession:
    return GitSession.open(repo, "s1")


def _user_state(repo: Path) -> dict[str, str]:
    """Everything about the user's checkout the daemon must never change."""
    return {
        "branch": sh(repo, "symbolic-ref", "HEAD"),
        "head": sh(repo, "rev-parse", "HEAD"),
        "status": sh(repo, "status", "--porcelain", "--untracked-files=all"),
        "unstaged": sh(repo, "diff"),
        "staged": sh(repo, "diff", "--cached"),
        "files": "".join(
            f"{p.relative_to(repo)}={p.read_text()}"
            for p in sorted(repo.rglob("*"))
            if p.is_file() and ".git" not in p.parts and ".autogolf" not in p.parts
        ),
    }


def test_open_creates_the_session_branch_from_the_user_head(repo: Path) -> None:
    session = GitSession.open(repo, "s1")
    assert session.branch == "autogolf/s1"
    assert session.head() == sh(repo, "rev-parse", "HEAD").strip()
    assert sh(repo, "rev-parse", "refs/heads/autogolf/s1").strip() == session.head()


def test_open_checks_the_branch_out_in_a_worktree_under_autogolf(repo: Path) -> None:
    session = GitSession.open(repo, "s1")
    assert session.worktree == repo / ".autogolf" / "worktrees" / "s1"
    assert (session.worktree / "autoresearch.sh").read_text() == "MATRIX_LR=0.04\n"
    assert sh(session.worktree, "symbolic-ref", "HEAD").strip() == "refs/heads/autogolf/s1"


def test_open_again_reuses_branch_and_worktree(repo: Path, session: GitSession) -> None:
    (session.worktree / "autoresearch.sh").write_text("MATRIX_LR=0.05\n")
    kept = session.commit("keep")
    again = GitSession.open(repo, "s1")
    assert again.worktree == session.worktree
    assert again.head() == kept


def test_open_from_a_subdirectory_uses_the_repository_root(repo: Path) -> None:
    session = GitSession.open(repo / "benchmark", "s1")
    assert session.worktree == repo / ".autogolf" / "worktrees" / "s1"


def test_open_recreates_a_worktree_whose_folder_was_deleted(repo: Path, session: GitSession):
    (session.worktree / "autoresearch.sh").write_text("MATRIX_LR=0.05\n")
    kept = session.commit("keep")
    subprocess.run(["rm", "-rf", str(session.worktree)], check=True)
    again = GitSession.open(repo, "s1")
    assert again.head() == kept
    assert (again.worktree / "autoresearch.sh").read_text() == "MATRIX_LR=0.05\n"


def test_open_refuses_a_foreign_folder_at_the_worktree_path(repo: Path) -> None:
    path = repo / ".autogolf" / "worktrees" / "s1"
    path.mkdir(parents=True)
    (path / "precious.txt").write_text("mine")
    with pytest.raises(GitError, match="not a git worktree"):
        GitSession.open(repo, "s1")
    assert (path / "precious.txt").read_text() == "mine"


def test_open_refuses_a_repository_without_commits(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    sh(root, "init", "-q")
    with pytest.raises(GitError, match="no commits yet; commit your files first"):
        GitSession.open(root, "s1")


def test_open_refuses_a_folder_that_is_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not inside a git repository"):
        GitSession.open(tmp_path, "s1")


def test_open_refuses_a_session_name_that_is_no_branch_name(repo: Path) -> None:
    with pytest.raises(GitError, match="invalid branch name"):
        GitSession.open(repo, "bad..name")


def test_open_hides_autogolf_from_status_even_without_gitignore(repo: Path) -> None:
    (repo / ".gitignore").write_text("logs/\n")
    sh(repo, "add", ".gitignore")
    sh(repo, *USER, "commit", "-q", "-m", "no autogolf ignore")
    GitSession.open(repo, "s1")
    assert sh(repo, "status", "--porcelain") == ""


def test_open_clears_a_stale_index_lock_left_by_a_killed_daemon(session: GitSession) -> None:
    git_dir = Path(sh(session.worktree, "rev-parse", "--absolute-git-dir").strip())
    (git_dir / "index.lock").write_text("")
    again = GitSession.open(session.repo, "s1")
    (again.worktree / "notes.md").write_text("changed\n")
    again.commit("works again")


def test_user_checkout_index_and_branch_survive_a_whole_session(repo: Path) -> None:
    (repo / "notes.md").write_text("my uncommitted edit\n")
    (repo / "scratch.txt").write_text("my untracked file\n")
    (repo / "autoresearch.sh").write_text("MATRIX_LR=0.09\n")
    sh(repo, "add", "autoresearch.sh")  # something staged in the user's index
    before = _user_state(repo)

    session = GitSession.open(repo, "s1")
    (session.worktree / "benchmark" / "train.py").write_text("print('better')\n")
    (session.worktree / "new.txt").write_text("new\n")
    session.diff()
    session.changed_files()
    session.commit("keep one")
    (session.worktree / "notes.md").write_text("discard me\n")
    session.restore()
    GitSession.open(repo, "s1")

    assert _user_state(repo) == before


def test_session_starts_from_the_commit_not_the_user_uncommitted_edits(repo: Path) -> None:
    (repo / "notes.md").write_text("my uncommitted edit\n")
    session = GitSession.open(repo, "s1")
    assert (session.worktree / "notes.md").read_text() == "notes\n"


def test_changed_files_lists_edits_deletions_and_untracked_files(session: GitSession) -> None:
    wt = session.worktree
    (wt / "autoresearch.sh").write_text("MATRIX_LR=0.05\n")
    (wt / "notes.md").unlink()
    (wt / "ideas").mkdir()
    (wt / "ideas" / "new.patch").write_text("x\n")
    (wt / "logs").mkdir()
    (wt / "logs" / "run.log").write_text("ignored\n")
    assert session.changed_files() == ["autoresearch.sh", "ideas/new.patch", "notes.md"]


def test_changed_files_is_empty_for_a_clean_worktree(session: GitSession) -> None:
    assert session.changed_files() == []


def test_diff_includes_untracked_files(session: GitSession) -> None:
    (session.worktree / "autoresearch.sh").write_text("MATRIX_LR=0.05\n")
    (session.worktree / "brand_new.py").write_text("x = 1\n")
    diff = session.diff()
    assert "+MATRIX_LR=0.05" in diff
    assert "brand_new.py" in diff and "+x = 1" in diff


def test_diff_leaves_the_worktree_index_alone(session: GitSession) -> None:
    (session.worktree / "brand_new.py").write_text("x = 1\n")
    session.diff()
    assert sh(session.worktree, "diff", "--cached", "--name-only") == ""
    assert "?? brand_new.py" in sh(session.worktree, "status", "--porcelain")


def test_diff_of_a_clean_worktree_is_empty(session: GitSession) -> None:
    assert session.diff() == ""


def test_diff_applied_after_restore_reproduces_the_change(session: GitSession) -> None:
    wt = session.worktree
    (wt / "autoresearch.sh").write_text("MATRIX_LR=0.05\n")
    (wt / "notes.md").unlink()
    (wt / "blob.bin").write_bytes(bytes(range(256)) * 4)
    diff = session.diff()
    session.restore()
    session.apply_patch(diff)
    assert (wt / "autoresearch.sh").read_text() == "MATRIX_LR=0.05\n"
    assert not (wt / "notes.md").exists()
    assert (wt / "blob.bin").read_bytes() == bytes(range(256)) * 4


def test_apply_patch_refuses_a_bad_patch_and_changes_nothing(session: GitSession) -> None:
    with pytest.raises(GitError, match="apply"):
        session.apply_patch(
            "diff --git a/nope b/nope\n--- a/nope\n+++ b/nope\n@@ -1 +1 @@\n-a\n+b\n"
        )
    assert session.changed_files() == []


def test_commit_records_everything_changed_and_returns_the_new_head(session: GitSession) -> None:
    before = session.head()
    (session.worktree / "autoresearch.sh").write_text("MATRIX_LR=0.05\n")
    (session.worktree / "added.txt").write_text("added\n")
    sha = session.commit("MATRIX_LR 0.04 -> 0.05\n\nval_bpb: 1.2345")
    assert sha == session.head() != before
    assert sh(session.worktree, "show", "--name-only", "--format=", sha).split() == [
        "added.txt",
        "autoresearch.sh",
    ]
    assert sh(session.worktree, "log", "-1", "--format=%B", sha).startswith(
        "MATRIX_LR 0.04 -> 0.05\n\nval_bpb: 1.2345"
    )
    assert session.changed_files() == []


def test_commit_moves_only_the_session_branch(repo: Path, session: GitSession) -> None:
    user_head = sh(repo, "rev-parse", "main")
    (session.worktree / "autoresearch.sh").write_text("MATRIX_LR=0.05\n")
    sha = session.commit("keep")
    assert sh(repo, "rev-parse", "main") == user_head
    assert sh(repo, "rev-parse", "autogolf/s1").strip() == sha


def test_commit_leaves_ignored_files_out(session: GitSession) -> None:
    (session.worktree / "logs").mkdir()
    (session.worktree / "logs" / "run.log").write_text("log\n")
    (session.worktree / "notes.md").write_text("changed\n")
    sha = session.commit("keep")
    assert sh(session.worktree, "show", "--name-only", "--format=", sha).split() == ["notes.md"]


def test_commit_uses_a_fixed_identity_when_none_is_configured(session: GitSession) -> None:
    (session.worktree / "notes.md").write_text("changed\n")
    sha = session.commit("keep")
    assert sh(session.worktree, "log", "-1", "--format=%an <%ae>", sha).strip() == (
        "autogolf <autogolf@localhost>"
    )


def test_commit_uses_the_configured_identity(repo: Path) -> None:
    sh(repo, "config", "user.name", "Researcher")
    sh(repo, "config", "user.email", "researcher@example.com")
    session = GitSession.open(repo, "s1")
    (session.worktree / "notes.md").write_text("changed\n")
    sha = session.commit("keep")
    assert sh(repo, "log", "-1", "--format=%an", sha).strip() == "Researcher"


def test_commit_bypasses_the_user_commit_hooks(repo: Path, session: GitSession) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    (session.worktree / "notes.md").write_text("changed\n")
    session.commit("keep")
    assert session.changed_files() == []


def test_commit_with_nothing_changed_is_refused(session: GitSession) -> None:
    with pytest.raises(GitError, match="nothing to commit"):
        session.commit("empty")


def test_commit_allow_empty_records_an_empty_commit(session: GitSession) -> None:
    before = session.head()
    assert session.commit("baseline", allow_empty=True) != before


def test_restore_returns_tracked_and_untracked_files_to_the_head(session: GitSession) -> None:
    wt = session.worktree
    (wt / "autoresearch.sh").write_text("MATRIX_LR=0.05\n")
    (wt / "notes.md").unlink()
    (wt / "junk").mkdir()
    (wt / "junk" / "file.txt").write_text("junk\n")
    (wt / "stray.py").write_text("x\n")
    sh(wt, "add", "stray.py")
    session.restore()
    assert session.changed_files() == []
    assert (wt / "autoresearch.sh").read_text() == "MATRIX_LR=0.04\n"
    assert (wt / "notes.md").exists()
    assert not (wt / "junk").exists() and not (wt / "stray.py").exists()


def test_restore_removes_files_in_ignored_paths_too(session: GitSession) -> None:
    (session.worktree / "logs").mkdir()
    (session.worktree / "logs" / "stash.bin").write_text("an agent's file\n")
    session.restore()
    assert not (session.worktree / "logs").exists()


def test_restore_to_a_sha_undoes_commits_made_by_a_proposer(session: GitSession) -> None:
    recorded = session.head()
    (session.worktree / "notes.md").write_text("agent edit\n")
    sh(session.worktree, *USER, "commit", "-q", "-am", "agent committed on its own")
    session.restore(to=recorded)
    assert session.head() == recorded
    assert (session.worktree / "notes.md").read_text() == "notes\n"


def test_log_lists_recent_commits_newest_first(session: GitSession) -> None:
    (session.worktree / "notes.md").write_text("one\n")
    first = session.commit("first keep")
    (session.worktree / "notes.md").write_text("two\n")
    second = session.commit("second keep")
    assert session.log(2) == [(second, "second keep"), (first, "first keep")]


def test_diff_hash_ignores_index_lines() -> None:
    a = "diff --git a/x b/x\nindex 1234567..89abcde 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
    b = a.replace("index 1234567..89abcde", "index 1234567890ab..89abcdef0123")
    assert diff_hash(a) == diff_hash(b)


def test_diff_hash_ignores_line_ending_style() -> None:
    a = "diff --git a/x b/x\n@@ -1 +1 @@\n-a\n+b\n"
    assert diff_hash(a) == diff_hash(a.replace("\n", "\r\n"))


def test_diff_hash_differs_for_different_changes() -> None:
    a = "diff --git a/x b/x\n@@ -1 +1 @@\n-a\n+b\n"
    assert diff_hash(a) != diff_hash(a.replace("+b", "+c"))


def test_same_change_made_twice_has_the_same_diff_hash(session: GitSession) -> None:
    (session.worktree / "autoresearch.sh").write_text("MATRIX_LR=0.05\n")
    first = diff_hash(session.diff())
    session.restore()
    (session.worktree / "autoresearch.sh").write_text("MATRIX_LR=0.05\n")
    assert diff_hash(session.diff()) == first
