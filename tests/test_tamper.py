"""Tamper evidence (loop/daemon/tamper.py, issue 15): a protected file that changes while a
proposer or a benchmark runs stops the run, with a stop row naming the file; nothing from that
experiment is kept. Fake benchmark (tests/scheduler_helpers.py), real git and ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from scheduler_helpers import candidates, git, rows, run_daemon, worktree

from loop.daemon.tamper import Fingerprint, Tampered
from loop.proposers import Proposal


def test_a_proposer_that_edits_the_daemons_config_stops_the_run(repo: Path) -> None:
    def edits_the_config(tree: Path) -> Proposal:
        config = repo / "autogolf.yaml"
        config.write_text(config.read_text() + "# relaxed by the agent\n")
        (tree / "knobs.sh").write_text((tree / "knobs.sh").read_text() + "LR=0.05\n")
        return Proposal("LR=0.05", None)

    reason = run_daemon(repo, edits_the_config, {"LR": 0.06})
    assert reason.startswith("tamper evidence: autogolf.yaml changed during the scripted "
                             "proposer of E0002")
    [row] = candidates(repo)
    assert row["status"] == "interrupted" and row["commit"] is None
    assert rows(repo)[-1] == {**rows(repo)[-1], "type": "stop", "reason": reason}
    assert git(worktree(repo), "status", "--porcelain") == ""


def test_a_benchmark_that_writes_the_ledger_stops_the_run(repo: Path) -> None:
    reason = run_daemon(repo, {"MODE": "tamper", "BONUS_BREADTH": 0.01})
    assert reason.startswith("tamper evidence: .autogolf/ledger.jsonl changed during the "
                             "breadth benchmark of E0002")
    row = candidates(repo)[-1]
    assert row["status"] == "interrupted" and row["commit"] is None
    assert "tamper evidence" in row["reason"]


def test_checks_that_write_the_ledger_stop_the_run(repo: Path) -> None:
    reason = run_daemon(repo, {"CHECKS": "tamper", "BONUS_BREADTH": 0.01})
    assert reason.startswith("tamper evidence: .autogolf/ledger.jsonl changed during the "
                             "checks of E0002")
    row = candidates(repo)[-1]
    assert row["status"] == "interrupted" and row["commit"] is None


def test_an_honest_experiment_leaves_the_fingerprint_alone(repo: Path) -> None:
    assert run_daemon(repo, {"BONUS_BREADTH": 0.01}, max_experiments=1) == (
        "reached --max-experiments 1")


def test_a_new_pth_hook_in_the_venv_is_tamper_evidence(tmp_path):
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    fingerprint = Fingerprint([], tmp_path, [site_dir])
    before = fingerprint.take()
    (site_dir / "zz_faster.pth").write_text("import os\n")
    with pytest.raises(Tampered, match="zz_faster.pth"):
        fingerprint.check(before, "the smoke benchmark of E0002")
