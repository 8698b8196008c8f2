"""Shared helpers for tests that drive the daemon against the FAKE benchmark.

The fake benchmark, checks, config and the scripted proposer are defined in
tests/test_scheduler.py; this module re-exports them and builds such a repository anywhere,
so several repositories (several daemons) can live in one test. Add helpers here; do not
rewrite what others added.
"""

from __future__ import annotations

from pathlib import Path

from test_scheduler import (  # noqa: F401 - re-exported for other test files
    CHECKS_SOURCE,
    CONFIG,
    FAKEBENCH_SOURCE,
    Scripted,
    git,
    run_daemon,
)


def make_fake_repo(root: Path, config: str = CONFIG) -> Path:
    """A committed git repository at `root` whose benchmark is the fake one (see
    test_scheduler); the caller sets AUTOGOLF_CACHE_ROOT (the `cache_root` fixture's path)."""
    root.mkdir(parents=True)
    files = {
        ".gitignore": ".autogolf/\nlogs/\n", "autogolf.yaml": config, "notes.md": "notes\n",
        "fakebench.py": FAKEBENCH_SOURCE, "checks.py": CHECKS_SOURCE,
        "knobs.sh": "LR=0.04\nBONUS_BREADTH=0\nBONUS_CONFIRM=0\nMODE=ok\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "test")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    return root
