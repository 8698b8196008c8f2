"""End to end on the real chain: trainer, harness, checks, extractor, daemon, git.

A temporary repository holds a copy of this one's tree (what git would track), committed;
the sample data is shared through AUTOGOLF_CACHE_ROOT (never copied). `autogolf run
--max-experiments 3` climbs the `smoke` ladder; the ledger, the session branch and the
user's checkout are then checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loop.platform import blas_env
from loop.store.ledger import Ledger


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def tracked_files(root: Path) -> list[str]:
    """The files git would commit here (tracked or not ignored), whether or not committed."""
    out = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


# Smoke's steps in a copy whose subject is not what training learns (the chain, a workspace, a
# study, an agent's edit, adopt): the same chain, each run a quarter of the training. The sealed
# session (tests/test_sealed_judge.py) runs smoke as it is: its gains must be learned.
SHORT_SMOKE = 8
SMOKE_STEPS = "    smoke)  # seconds on a 2-core CPU: a tiny model, for tests and the demo\n" \
              "        ITERATIONS=30\n"


def committed_copy(repo_root: Path, dest: Path, *, smoke_iterations: int | None = None,
                   **config_updates: object) -> Path:
    """A committed copy of the current tree at `dest`, with `autogolf.yaml` keys replaced
    and, given `smoke_iterations`, that many steps in autoresearch.sh's smoke profile."""
    for rel in tracked_files(repo_root):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / rel, dest / rel)
    if smoke_iterations is not None:
        script = (dest / "autoresearch.sh").read_text()
        assert script.count(SMOKE_STEPS) == 1, "autoresearch.sh's smoke profile has moved"
        (dest / "autoresearch.sh").write_text(script.replace(
            SMOKE_STEPS, SMOKE_STEPS.replace("=30", f"={smoke_iterations}")))
    config_path = dest / "autogolf.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
    config.update(config_updates)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "config", "user.email", "e2e@example.com")
    git(dest, "config", "user.name", "e2e")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "start")
    return dest


@pytest.fixture
def clone(tmp_path: Path, repo_root: Path) -> Path:
    """A committed copy of the current tree with the smoke ladder configured."""
    # The keep rule is the default's, capped at 2 pairs: its decisions on the real trainer
    # are tests/test_sealed_judge.py's subject; this one is the loop's whole chain.
    return committed_copy(repo_root, tmp_path / "clone", ladder=["smoke"],
                          smoke_iterations=SHORT_SMOKE, keep_rule={"max_runs": 2})


def _subject(repo: Path, sha: str) -> str:
    return git(repo, "log", "-1", "--format=%s", sha).strip()


@pytest.mark.slow
def test_three_experiments_on_the_real_trainer_with_the_smoke_ladder(clone, sample_dataset):
    env = {**os.environ, **blas_env(),
           "AUTOGOLF_CACHE_ROOT": str(Path(sample_dataset.data_path).parents[2])}
    before = (git(clone, "rev-parse", "HEAD"), git(clone, "status", "--porcelain"),
              git(clone, "branch", "--show-current"))

    done = subprocess.run([sys.executable, "-m", "loop.ui.cli", "run", "--max-experiments", "3"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=900)

    assert done.returncode == 0, done.stdout + done.stderr
    rows = Ledger(clone / ".autogolf" / "ledger.jsonl").rows()
    experiments = [r for r in rows if r.get("type") == "experiment"]
    candidates = [r for r in experiments if not r.get("baseline")]
    assert len(candidates) == 3, done.stdout
    assert any(r.get("baseline") and r["status"] == "keep" for r in experiments), done.stdout
    assert all(set(r["rungs"]) <= {"smoke"} for r in experiments)
    assert rows[-1]["type"] == "stop"

    session = next(r["session"] for r in rows if r.get("type") == "session")
    branch = f"autogolf/{session}"
    kept = [r["commit"] for r in candidates if r["status"] == "keep"]
    on_branch = git(clone, "rev-list", f"{before[0]}..{branch}").split()
    bookkeeping = [c for c in on_branch if _subject(clone, c).startswith("autogolf: ")]
    # every keep is a commit there, and the only other commits are the backlog's bookkeeping
    assert sorted(kept) == sorted(set(on_branch) - set(bookkeeping))
    for sha in bookkeeping:
        touched = set(git(clone, "diff-tree", "--no-commit-id", "--name-only", "-r", sha).split())
        assert touched <= {"autoresearch.md", "autoresearch.ideas.md"}, (sha, touched)

    after = (git(clone, "rev-parse", "HEAD"), git(clone, "status", "--porcelain"),
             git(clone, "branch", "--show-current"))
    assert after == before
