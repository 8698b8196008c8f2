"""The research repository a command runs in, and its configuration: what every verb of
the command line (loop.ui.cli, loop.workspace.cli) starts from.

It does not parse arguments; a verb passes the `--config` option it was given.
"""

from __future__ import annotations

from pathlib import Path

from loop.config import Config, load_config
from loop.errors import UserError
from loop.store.gitsession import GitError, git, main_checkout


def find_repo(start: Path, require_commit: bool = True) -> Path:
    """The main checkout around `start` (also from inside a daemon worktree)."""
    repo = main_checkout(start)
    if repo is None:
        raise UserError(f"{start} is not inside a git repository: run autogolf from your "
                        "research repo (or `git init && git add -A && git commit -m start`)")
    if require_commit:
        try:
            git(repo, "rev-parse", "--verify", "-q", "HEAD")
        except GitError as exc:
            if "not installed" in str(exc):
                raise UserError("git is not installed or not on PATH; install git first") \
                    from None
            raise UserError(f"the repository {repo} has no commits yet: the loop branches "
                            "from your HEAD, so commit first (`git add -A && git commit -m "
                            "start`)") from None
    return repo


def repo_config(repo: Path, config_option: str | None = None) -> Config:
    """`--config FILE` when given (it must exist), else the repository's autogolf.yaml
    (the defaults when there is none); ConfigError for a bad file."""
    path = Path(config_option).resolve() if config_option else repo / "autogolf.yaml"
    if config_option and not path.is_file():
        raise UserError(f"--config {config_option}: no such file")
    return load_config(path)
