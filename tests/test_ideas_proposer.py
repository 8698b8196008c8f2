"""The `ideas` proposer: one queued idea per experiment, knobs or a patch, never a repeat."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from loop.backlog.ideas import IdeasFile
from loop.proposers import Proposer
from loop.proposers.ideas import IdeasProposer
from loop.proposers.search import Knob

SCRIPT = "#!/usr/bin/env bash\nMATRIX_LR=0.04\nNUM_LAYERS=9\nexport MATRIX_LR NUM_LAYERS\n"
TRAINER = "import os\n\nQK_GAIN_INIT = 1.5  # gain\n"
MATRIX_LR = Knob("MATRIX_LR", "autoresearch.sh", "env", "float", 0.001, 0.2, "log")

BACKLOG = """# Ideas
- [I001] (exhausted) Already done.
  knobs: MATRIX_LR=0.08
- [I002] (untried) Needs code, no knobs: for the agent.
- [I003] (untried) Higher Muon learning rate.
  knobs: MATRIX_LR=0.06
- [I004] (untried) Deeper and sharper.
  knobs: NUM_LAYERS=10 QK_GAIN_INIT=2.0
- [I005] (untried) A patch.
  patch: patches/I005.patch
"""

PATCH = """--- a/notes.txt
+++ b/notes.txt
@@ -1 +1 @@
-old
+new
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "benchmark").mkdir(parents=True)
    (tree / "autoresearch.sh").write_text(SCRIPT)
    (tree / "benchmark" / "train_gpt_mlx.py").write_text(TRAINER)
    (tree / "notes.txt").write_text("old\n")
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    return tree


@pytest.fixture
def backlog(tmp_path: Path) -> Path:
    path = tmp_path / "repo" / "autoresearch.ideas.md"
    (path.parent / "patches").mkdir(parents=True)
    (path.parent / "patches" / "I005.patch").write_text(PATCH)
    path.write_text(BACKLOG)
    return path


def rows_testing(*pairs: tuple[str, str]) -> list[dict]:
    return [{"type": "experiment", "id": f"E{n:04d}", "idea": idea, "status": status}
            for n, (idea, status) in enumerate(pairs, 1)]


def test_it_is_a_proposer(backlog: Path) -> None:
    assert isinstance(IdeasProposer(backlog, [MATRIX_LR]), Proposer)


def test_first_untried_idea_with_knobs_is_applied(backlog: Path, worktree: Path) -> None:
    proposal = IdeasProposer(backlog, [MATRIX_LR]).propose(worktree, [])
    assert proposal.idea == "I003"
    assert "MATRIX_LR=0.06\n" in (worktree / "autoresearch.sh").read_text()
    assert proposal.description.startswith("I003 MATRIX_LR 0.04 -> 0.06: Higher Muon")


def test_knobs_of_a_declared_only_idea_are_the_full_configuration(backlog: Path,
                                                                  worktree: Path) -> None:
    proposal = IdeasProposer(backlog, [MATRIX_LR]).propose(worktree, [])
    assert proposal.knobs == {"MATRIX_LR": 0.06}


def test_ideas_tested_in_the_history_are_skipped(backlog: Path, worktree: Path) -> None:
    history = rows_testing(("I003", "discard"))
    proposal = IdeasProposer(backlog, [MATRIX_LR]).propose(worktree, history)
    assert proposal.idea == "I004"


def test_an_interrupted_idea_is_offered_again(backlog: Path, worktree: Path) -> None:
    history = rows_testing(("I003", "interrupted"))
    assert IdeasProposer(backlog, [MATRIX_LR]).propose(worktree, history).idea == "I003"


def test_undeclared_knobs_are_found_in_the_script_and_the_trainer(backlog: Path,
                                                                  worktree: Path) -> None:
    history = rows_testing(("I003", "keep"))
    proposal = IdeasProposer(backlog, [MATRIX_LR]).propose(worktree, history)
    assert proposal.idea == "I004"
    assert "NUM_LAYERS=10\n" in (worktree / "autoresearch.sh").read_text()
    assert "QK_GAIN_INIT = 2.0  # gain" in (worktree / "benchmark/train_gpt_mlx.py").read_text()
    assert proposal.knobs is None  # undeclared knobs: not a search configuration


def test_a_patch_idea_is_applied_with_git_apply(backlog: Path, worktree: Path) -> None:
    history = rows_testing(("I003", "keep"), ("I004", "keep"))
    proposal = IdeasProposer(backlog, [MATRIX_LR]).propose(worktree, history)
    assert proposal.idea == "I005" and proposal.knobs is None
    assert (worktree / "notes.txt").read_text() == "new\n"


def test_none_when_every_applicable_idea_is_tested(backlog: Path, worktree: Path) -> None:
    history = rows_testing(("I003", "keep"), ("I004", "crash"), ("I005", "discard"))
    assert IdeasProposer(backlog, [MATRIX_LR]).propose(worktree, history) is None
    assert git(worktree, "status", "--porcelain") == ""


def test_an_unknown_knob_is_skipped_with_its_reason_and_nothing_written(
        tmp_path: Path, worktree: Path) -> None:
    path = tmp_path / "ideas.md"
    path.write_text("- [I001] (untried) x\n  knobs: MATRIX_LR=0.05 NO_SUCH_KNOB=3\n")
    proposer = IdeasProposer(path, [MATRIX_LR])
    assert proposer.propose(worktree, []) is None
    assert "NO_SUCH_KNOB" in proposer.skipped["I001"]
    assert git(worktree, "status", "--porcelain") == ""


def test_a_patch_that_does_not_apply_is_skipped(backlog: Path, worktree: Path) -> None:
    (worktree / "notes.txt").write_text("something else\n")
    git(worktree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "moved on")
    history = rows_testing(("I003", "keep"), ("I004", "keep"))
    proposer = IdeasProposer(backlog, [MATRIX_LR])
    assert proposer.propose(worktree, history) is None
    assert "does not apply" in proposer.skipped["I005"]


def test_a_fractional_value_for_an_int_knob_is_skipped(tmp_path: Path, worktree: Path) -> None:
    path = tmp_path / "ideas.md"
    path.write_text("- [I001] (untried) x\n  knobs: NUM_LAYERS=9.5\n")
    layers = Knob("NUM_LAYERS", "autoresearch.sh", "env", "int", 1, 32)
    proposer = IdeasProposer(path, [layers])
    assert proposer.propose(worktree, []) is None
    assert "not an integer" in proposer.skipped["I001"]


def test_a_loader_callable_is_accepted(backlog: Path, worktree: Path) -> None:
    proposer = IdeasProposer(lambda: IdeasFile.load(backlog), [MATRIX_LR])
    assert proposer.propose(worktree, []).idea == "I003"


def test_a_missing_backlog_proposes_nothing(tmp_path: Path, worktree: Path) -> None:
    assert IdeasProposer(tmp_path / "none.md").propose(worktree, []) is None
